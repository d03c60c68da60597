"""What an AWS request asks IAM for: the actions and resource ARNs that the Service Authorization Reference gives
each API operation, read off the request as it arrives at the edge (JSON, REST-JSON and S3's REST protocol).

Operations whose action supports no resource type are checked against ``*``; an operation this module does not
know is checked as ``<service>:<Operation>`` on ``*``, so a policy that does not grant it denies it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.wrappers import Request

from local_runtime.iam import Check
from local_runtime.template import ACCOUNT_ID

IAM_PREFIX = {"tagging": "tag"}
"""Where a service's signing name is not its IAM prefix"""
_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
_STREAMS_TARGET = "DynamoDBStreams_20120810."
"""DynamoDB Streams signs as dynamodb; its operations are told apart by their target"""
_SQS_BATCH_ACTIONS = {
    # the batch operations are authorized as the single-message actions (SQS has no actions of their own)
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def checks(service: str, region: str, request: Request) -> list[Check]:
    """Every action-on-resource the request needs allowed."""
    prefix = IAM_PREFIX.get(service, service)
    target = request.headers.get("X-Amz-Target", "")
    if service == "s3":
        return _s3(request)
    if service == "lambda":
        invoke = _INVOKE.match(request.path)
        if invoke and request.method == "POST":
            return [Check("lambda:InvokeFunction", _function_arn(unquote(invoke["function"]), region))]
        return [Check(f"lambda:{request.method}", "*")]
    if not target:
        action = request.values.get("Action", request.method)
        return [Check(f"{prefix}:{action}", "*")]
    operation = target.rsplit(".", 1)[-1]
    body = _json(request)
    if service == "dynamodb" and target.startswith(_STREAMS_TARGET):
        return [Check(f"dynamodb:{operation}", _stream_arn(body))]
    if service == "dynamodb":
        return _dynamodb(operation, body, region)
    if service == "sqs":
        return [Check(f"sqs:{_SQS_BATCH_ACTIONS.get(operation, operation)}", _queue_arn(body, region))]
    if service == "ssm":
        return _ssm(operation, body, region)
    if service == "states":
        return _states(operation, body)
    if service == "secretsmanager" and "SecretId" in body:
        return [Check(f"secretsmanager:{operation}", _secret_arn(body["SecretId"], region))]
    if service == "events" and operation == "PutEvents":
        buses = {entry.get("EventBusName") or "default" for entry in body.get("Entries", [])}
        return [Check("events:PutEvents", _bus_arn(bus, region)) for bus in sorted(buses)]
    return [Check(f"{prefix}:{operation}", "*")]


def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _table_arn(table: str, region: str, index: str | None = None) -> str:
    arn = table if table.startswith("arn:") else f"arn:aws:dynamodb:{region}:{ACCOUNT_ID}:table/{table}"
    return f"{arn}/index/{index}" if index else arn


def _dynamodb(operation: str, body: dict[str, Any], region: str) -> list[Check]:
    if operation in ("TransactWriteItems", "TransactGetItems"):
        found = []
        for item in body.get("TransactItems", []):
            kind, spec = next(iter(item.items()))
            found.append(Check(f"dynamodb:{_TRANSACT_ACTIONS.get(kind, kind)}", _table_arn(spec["TableName"], region)))
        return found
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [Check(f"dynamodb:{operation}", _table_arn(table, region)) for table in body.get("RequestItems", {})]
    if "TableName" in body:
        return [Check(f"dynamodb:{operation}", _table_arn(body["TableName"], region, body.get("IndexName")))]
    return [Check(f"dynamodb:{operation}", "*")]


def _stream_arn(body: dict[str, Any]) -> str:
    """The stream a DynamoDB Streams request reads: its StreamArn, or the stream its shard iterator was issued for
    (the local iterators begin with the stream's ARN); ``*`` for ListStreams."""
    if "StreamArn" in body:
        return str(body["StreamArn"])
    iterator = str(body.get("ShardIterator", ""))
    return iterator.split("|", 1)[0] if iterator.startswith("arn:") else "*"


def _queue_arn(body: dict[str, Any], region: str) -> str:
    """The queue an SQS request names, by its URL (``<endpoint>/<account>/<name>``) or, for CreateQueue and
    GetQueueUrl, its name; ``*`` for the operations on no queue (ListQueues)."""
    if "QueueUrl" in body:
        account, _, name = urlsplit(str(body["QueueUrl"])).path.strip("/").rpartition("/")
        return f"arn:aws:sqs:{region}:{account or ACCOUNT_ID}:{name}"
    if "QueueName" in body:
        return f"arn:aws:sqs:{region}:{body.get('QueueOwnerAWSAccountId', ACCOUNT_ID)}:{body['QueueName']}"
    return "*"


def _node_arn(node_id: str, region: str) -> str:
    if node_id.startswith("i-"):
        return f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{node_id}"
    return f"arn:aws:ssm:{region}:{ACCOUNT_ID}:managed-instance/{node_id}"


def _document_arn(name: str, region: str) -> str:
    if name.startswith("arn:"):
        return name
    owner = "" if name.startswith(("AWS-", "AWSEC2-", "AWSSupport-", "AmazonCloudWatch-")) else ACCOUNT_ID
    return f"arn:aws:ssm:{region}:{owner}:document/{name}"


def _ssm(operation: str, body: dict[str, Any], region: str) -> list[Check]:
    if operation == "SendCommand":
        resources = [_document_arn(str(body.get("DocumentName", "")), region)]
        resources += [_node_arn(node, region) for node in body.get("InstanceIds", [])]
        return [Check("ssm:SendCommand", resource) for resource in resources]
    return [Check(f"ssm:{operation}", "*")]


def _states(operation: str, body: dict[str, Any]) -> list[Check]:
    for name in ("executionArn", "stateMachineArn"):
        if name in body:
            return [Check(f"states:{operation}", str(body[name]))]
    return [Check(f"states:{operation}", "*")]


def _secret_arn(secret_id: str, region: str) -> str:
    """The secret's ARN: as given, or from its name; a secret's ARN ends in a hyphen and six characters Secrets
    Manager picks, so a policy names it with ``-??????`` (here the six are ``??????``, which only that matches)."""
    if secret_id.startswith("arn:"):
        return secret_id
    return f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{secret_id}-??????"


def _function_arn(name: str, region: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"


def _bus_arn(bus: str, region: str) -> str:
    return bus if bus.startswith("arn:") else f"arn:aws:events:{region}:{ACCOUNT_ID}:event-bus/{bus}"


def s3_location(request: Request) -> tuple[str | None, str | None]:
    """(bucket, key) of an S3 request, path-style or virtual-hosted."""
    host = request.host.split(":")[0]
    path = unquote(request.path)
    if ".s3." in host or host.endswith(".localhost"):
        bucket: str | None = host.split(".")[0]
        key = path.lstrip("/") or None
    else:
        bucket_part, _, key_part = path.lstrip("/").partition("/")
        bucket, key = bucket_part or None, key_part or None
    return bucket, key


_OBJECT_SUBRESOURCES = {
    # (method, subresource) -> action, for requests on an object
    ("GET", "versionId"): "GetObjectVersion",
    ("HEAD", "versionId"): "GetObjectVersion",
    ("DELETE", "versionId"): "DeleteObjectVersion",
    ("GET", "tagging"): "GetObjectTagging",
    ("PUT", "tagging"): "PutObjectTagging",
    ("DELETE", "tagging"): "DeleteObjectTagging",
    ("GET", "acl"): "GetObjectAcl",
    ("PUT", "acl"): "PutObjectAcl",
    ("GET", "attributes"): "GetObjectAttributes",
    ("GET", "uploadId"): "ListMultipartUploadParts",
    ("DELETE", "uploadId"): "AbortMultipartUpload",
    ("PUT", "uploadId"): "PutObject",
    ("POST", "uploadId"): "PutObject",
    ("POST", "uploads"): "PutObject",
}
_OBJECT_ACTIONS = {
    "GET": "GetObject",
    "HEAD": "GetObject",
    "PUT": "PutObject",
    "POST": "PutObject",
    "DELETE": "DeleteObject",
}
_BUCKET_SUBRESOURCES = {
    # subresource -> (action on GET or HEAD, action on PUT, action on DELETE)
    "encryption": ("GetEncryptionConfiguration", "PutEncryptionConfiguration", "PutEncryptionConfiguration"),
    "location": ("GetBucketLocation", "", ""),
    "versions": ("ListBucketVersions", "", ""),
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", ""),
    "policy": ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
    "lifecycle": ("GetLifecycleConfiguration", "PutLifecycleConfiguration", "PutLifecycleConfiguration"),
    "acl": ("GetBucketAcl", "PutBucketAcl", ""),
    "tagging": ("GetBucketTagging", "PutBucketTagging", "PutBucketTagging"),
    "uploads": ("ListBucketMultipartUploads", "", ""),
    "publicAccessBlock": ("GetBucketPublicAccessBlock", "PutBucketPublicAccessBlock", "PutBucketPublicAccessBlock"),
    "notification": ("GetBucketNotification", "PutBucketNotification", ""),
    "cors": ("GetBucketCORS", "PutBucketCORS", "PutBucketCORS"),
}
_LISTING_PARAMETERS = {
    "list-type", "prefix", "delimiter", "max-keys", "continuation-token", "encoding-type", "start-after",
    "fetch-owner", "marker", "x-id",
}  # fmt: skip


def _s3(request: Request) -> list[Check]:
    """An S3 request's action by its method and subresource (a query parameter such as ?tagging): a subresource
    this table does not know asks for an action no policy grants. A presigned URL's own parameters (X-Amz-*) are
    not subresources."""
    bucket, key = s3_location(request)
    if bucket is None:
        return [Check("s3:ListAllMyBuckets", "*")]
    method, query = request.method, {name for name in request.args if not name.lower().startswith("x-amz-")}
    if key is not None:
        arn = f"arn:aws:s3:::{bucket}/{key}"
        subresources = {name for name in query if not name.startswith(("response-", "partNumber", "x-id"))}
        actions = [
            _OBJECT_SUBRESOURCES.get((method, name), f"Unknown{method.capitalize()}{name}") for name in subresources
        ]
        found = [Check(f"s3:{action}", arn) for action in sorted(actions) or [_OBJECT_ACTIONS.get(method, method)]]
        source = request.headers.get("x-amz-copy-source")
        if source:
            found.append(Check("s3:GetObject", f"arn:aws:s3:::{unquote(source).lstrip('/')}"))
        return found
    arn = f"arn:aws:s3:::{bucket}"
    subresources = query - _LISTING_PARAMETERS
    if not subresources:
        bucket_action = {"GET": "ListBucket", "HEAD": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}
        return [Check(f"s3:{bucket_action.get(method, method + 'Bucket')}", arn)]
    name = sorted(subresources)[0]
    get, put, delete = _BUCKET_SUBRESOURCES.get(name, ("", "", ""))
    action = {"GET": get, "HEAD": get, "PUT": put, "DELETE": delete}.get(method, "")
    return [Check(f"s3:{action or method.capitalize() + 'Bucket' + name}", arn)]
