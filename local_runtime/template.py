"""template.yaml as CloudFormation would deploy it, named for one local deployment.

The SAM template goes through the SAM translator (the library ``sam deploy`` and CloudFormation's
``AWS::Serverless`` transform use), so the local runtime sees what AWS would create: the functions' generated
roles with SAM's policy templates expanded, the REST API's OpenAPI body with its gateway responses, the EventBridge
rules and their Lambda permissions, the state machine with its role. The translator is the one SAM CLI installs in
its own environment (.venv-sam, as SAM CLI pins pydantic and boto3), so it runs there, in a process of its own; its
output is cached by the template's content. Local code paths stand in for the artifacts ``sam deploy`` would upload.
Intrinsic functions are resolved with the parameters' defaults (or the values given), local names and ARNs under
one account.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import secrets as secrets_module
import string
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"
ANY_STREAM_LABEL = "*"
"""The label !GetAtt Table.StreamArn resolves with. DynamoDB names a table's stream when it creates the table, so
before then the ARN names any stream of the table: as an IAM resource it matches the table's stream, and an event
source mapping reads the stream's real ARN (DescribeTable's LatestStreamArn) once the table exists."""
CODE_BUCKET = "local-code"
"""Where SAM would have uploaded each code folder; its keys are the folders' paths in this repository."""
DEFAULT_INTEGRATION_TIMEOUT_MS = 29_000
"""An integration's timeoutInMillis when the API does not set it"""
MAX_STREAMED_TIMEOUT_MS = 15 * 60 * 1000
"""API Gateway streams a response for at most 15 minutes: a streamed integration's timeoutInMillis is 50 ms to 15 min"""
SAM_PYTHON = "LONGRUN_SAM_PYTHON"
"""Names the Python of SAM CLI's environment (by default .venv-sam/bin/python in the repository)"""
_TRANSFORM = """
import json, logging, sys
import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

logging.getLogger("samtranslator").setLevel(logging.ERROR)
request = json.load(sys.stdin)
document = yaml_parse(request["template"])
for resource in document["Resources"].values():
    props = resource.get("Properties", {})
    for name in ("CodeUri", "ContentUri", "DefinitionUri"):  # local folders stand in for uploaded artifacts
        if isinstance(props.get(name), str) and not props[name].startswith("s3://"):
            props[name] = "s3://" + request["codeBucket"] + "/" + props[name]
defaults = {name: str(spec.get("Default", "")) for name, spec in document.get("Parameters", {}).items()}
parameters = {**defaults, **request["parameters"]}
translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=request["region"]))
# The translator asks IAM for managed policy ARNs only when a template names one by bare name; ours do not.
deployed = translator.translate(document, parameter_values=dict(parameters), get_managed_policy_map=dict)
json.dump({"template": deployed, "parameters": parameters}, sys.stdout)
"""


@dataclass(frozen=True)
class TokenAuthorizer:
    """A Lambda authorizer of type TOKEN (api_authorizers.py)."""

    name: str
    function: str
    """The logical id of its function"""
    header: str
    """The request header that carries the token (identitySource method.request.header.NAME)"""
    validation: str | None
    """identityValidationExpression: a token that does not match it is refused without invoking the function"""
    ttl_seconds: int
    """authorizerResultTtlInSeconds: how long a token's result is kept"""


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """API Gateway resource path, e.g. /device-management/script-execution/{task_id}"""
    function: str
    credentials: str | None
    """The integration's credentials: None (the function's resource-based permission) or arn:aws:iam::*:user/*
    (the caller's own credentials invoke the function)"""
    streamed: bool = False
    """responseTransferMode STREAM: the function is invoked with response streaming"""
    timeout_ms: int = DEFAULT_INTEGRATION_TIMEOUT_MS
    """The integration's timeoutInMillis"""
    authorizer: TokenAuthorizer | None = None
    """None: AWS_IAM (SigV4-signed callers, api_callers.py)"""

    def match(self, path: str) -> dict[str, str] | None:
        return path_parameters(self.path, path)


def path_parameters(resource: str, path: str) -> dict[str, str] | None:
    """The path parameters of ``path`` on the API Gateway resource path ``resource``; None if it is not on it."""
    pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource)) + "$"
    found = re.match(pattern, path)
    return found.groupdict() if found else None


@dataclass(frozen=True)
class MockRoute:
    """A resource's ANY method with a mock integration: API Gateway answers it itself, from the integration's
    response for the status its request template selects."""

    path: str
    status: int
    headers: dict[str, str]
    """method.response.header.NAME -> its static value (quotes removed)"""
    templates: dict[str, str]
    authorizer: TokenAuthorizer | None = None
    """None: AWS_IAM (SigV4-signed callers, api_callers.py)"""


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None
    """The response's own status code; None keeps the error's status"""
    headers: dict[str, str]
    templates: dict[str, str]


@dataclass(frozen=True)
class Throttle:
    """A stage's throttling of a method: a token bucket of ``burst`` tokens refilled at ``rate`` a second."""

    rate: float
    burst: int


@dataclass(frozen=True)
class RestApi:
    logical_id: str
    id: str
    stage: str
    routes: list[Route]
    gateway_responses: dict[str, GatewayResponse]
    mocks: list[MockRoute]
    """The resources' ANY methods that are mock integrations (their own methods take precedence)"""
    endpoint_type: str = "EDGE"
    """EDGE (a REST API's default), REGIONAL or PRIVATE"""
    throttling: dict[tuple[str, str], Throttle] = field(default_factory=dict)
    """The stage's method settings: (resource path, method) -> its throttle; ("/*", "*") is every method's default"""

    def throttle_of(self, path: str, method: str) -> Throttle | None:
        """A method's throttle: its own setting, else the stage's default for every method."""
        return self.throttling.get((path, method)) or self.throttling.get(("/*", "*"))


@dataclass(frozen=True)
class WebSocketRoute:
    key: str
    """$connect, $disconnect, $default, or the value the route selection expression selects"""
    function: str
    """The logical id of the function its AWS_PROXY integration invokes"""
    authorization: str
    """NONE or AWS_IAM (API Gateway authorizes only $connect)"""


@dataclass(frozen=True)
class WebSocketApi:
    logical_id: str
    id: str
    stage: str
    route_selection: str
    """The route selection expression, e.g. $request.body.action"""
    routes: dict[str, WebSocketRoute]
    """route key -> route"""


@dataclass(frozen=True)
class EventRule:
    logical_id: str
    arn: str
    pattern: dict[str, Any]
    targets: list[str]
    """The functions (logical ids) it invokes"""
    queues: list[str] = field(default_factory=list)
    """The ARNs of the queues it sends the event to"""


@dataclass(frozen=True)
class Function:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    handler: str
    timeout: int
    memory: int
    environment: dict[str, str]
    role: str
    """The ARN of its execution role"""
    external_layers: tuple[str, ...] = ()
    """ARNs of layers the template does not build (published by others, e.g. Lambda Web Adapter)"""


@dataclass(frozen=True)
class Role:
    logical_id: str
    name: str
    arn: str
    policies: dict[str, dict[str, Any]]
    """policy name (inline) or ARN (managed) -> policy document; AWS managed policies are left to the caller"""


@dataclass(frozen=True)
class LambdaPermission:
    function: str
    principal: str
    source_arn: str | None


@dataclass(frozen=True)
class EventSourceMapping:
    """An AWS::Lambda::EventSourceMapping: a queue, or a table's stream, that Lambda polls for a function."""

    logical_id: str
    function: str
    """The logical id of the function it invokes"""
    source_arn: str
    """The queue's ARN, or the table's stream as !GetAtt Table.StreamArn resolves (see ANY_STREAM_LABEL)"""
    batch_size: int
    batching_window_seconds: int
    starting_position: str | None
    """TRIM_HORIZON or LATEST for a stream; None for a queue"""
    filter_patterns: tuple[str, ...]
    function_response_types: tuple[str, ...]
    bisect_on_function_error: bool
    maximum_retry_attempts: int
    """Retries of a stream's failed batch before its records are discarded; -1: until the records expire"""
    enabled: bool

    @property
    def from_queue(self) -> bool:
        return self.source_arn.startswith("arn:aws:sqs:")


MAPPING_PROPERTIES = {
    "FunctionName", "EventSourceArn", "BatchSize", "MaximumBatchingWindowInSeconds", "StartingPosition",
    "FilterCriteria", "FunctionResponseTypes", "BisectBatchOnFunctionError", "MaximumRetryAttempts", "Enabled",
    "ParallelizationFactor",
}  # fmt: skip
"""The AWS::Lambda::EventSourceMapping properties the local runtime plays; a template using another (an on-failure
destination, a tumbling window, a maximum record age, ...) is refused rather than deployed without it. A stream's
batches are always processed one at a time per shard, whatever ParallelizationFactor says."""
QUEUE_ATTRIBUTES = {
    "ContentBasedDeduplication", "DeduplicationScope", "DelaySeconds", "FifoQueue", "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds", "KmsMasterKeyId", "MaximumMessageSize", "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds", "RedriveAllowPolicy", "RedrivePolicy", "SqsManagedSseEnabled",
    "VisibilityTimeout",
}  # fmt: skip
"""The AWS::SQS::Queue properties that are the queue's attributes in CreateQueue"""


def queue_url_of(queue_arn: str, endpoint: str) -> str:
    """A queue's URL at ``endpoint``, from its ARN."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return f"{endpoint}/{account}/{name}"


@dataclass
class LocalStack:
    """The deployed template's resources, named for one local deployment."""

    root: Path
    stack_name: str
    region: str
    resources: dict[str, dict[str, Any]]
    parameters: dict[str, str]
    outputs: dict[str, Any] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    managed_policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    """ARN -> document of each AWS::IAM::ManagedPolicy the template creates"""
    apis: list[RestApi] = field(default_factory=list)
    websocket_apis: list[WebSocketApi] = field(default_factory=list)
    event_rules: list[EventRule] = field(default_factory=list)
    queue_policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """queue ARN -> the policy documents of the AWS::SQS::QueuePolicy resources that name it"""
    permissions: list[LambdaPermission] = field(default_factory=list)
    event_source_mappings: list[EventSourceMapping] = field(default_factory=list)
    endpoint_url: str | None = None
    """Where the stack's AWS services answer (the local runtime's edge), for the URLs CloudFormation gives (a queue's);
    None: AWS's own endpoints"""
    list_parameters: frozenset[str] = frozenset()
    """The parameters of a list type (CommaDelimitedList, List<...>): !Ref gives their values as a list"""

    # --- what the runtime creates ------------------------------------------------------------

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: res for name, res in self.resources.items() if res["Type"] == kind}

    def tables(self) -> list[dict[str, Any]]:
        tables = []
        for logical_id, resource in self.of_type("AWS::DynamoDB::Table").items():
            props = self.resolve(resource["Properties"])
            keep = (
                "AttributeDefinitions",
                "KeySchema",
                "GlobalSecondaryIndexes",
                "LocalSecondaryIndexes",
                "BillingMode",
            )
            table = {"TableName": self.physical_id(logical_id)} | {k: props[k] for k in keep if k in props}
            if "StreamSpecification" in props:  # CloudFormation's has no StreamEnabled: a view type enables it
                table["StreamSpecification"] = {"StreamEnabled": True} | props["StreamSpecification"]
            tables.append(table)
        return tables

    def time_to_live(self) -> list[tuple[str, dict[str, Any]]]:
        """(table name, TimeToLiveSpecification) of each table that has one."""
        return [
            (self.physical_id(logical_id), self.resolve(resource["Properties"]["TimeToLiveSpecification"]))
            for logical_id, resource in self.of_type("AWS::DynamoDB::Table").items()
            if "TimeToLiveSpecification" in resource["Properties"]
        ]

    def event_buses(self) -> list[str]:
        """The name of each event bus the template creates."""
        return [self.physical_id(logical_id) for logical_id in self.of_type("AWS::Events::EventBus")]

    def queues(self) -> list[tuple[str, dict[str, str]]]:
        """(name, attributes) of each queue, as CreateQueue takes them; dead-letter queues first, as a queue's
        RedrivePolicy must name a queue that exists."""
        queues = []
        for logical_id, resource in self.of_type("AWS::SQS::Queue").items():
            props = self.resolve(resource.get("Properties", {}))
            attributes = {  # a policy as JSON, a boolean as true or false, a number as its digits
                name: json.dumps(value) if isinstance(value, dict | bool) else str(value)
                for name, value in props.items()
                if name in QUEUE_ATTRIBUTES
            }
            queues.append((self.physical_id(logical_id), attributes))
        return sorted(queues, key=lambda queue: "RedrivePolicy" in queue[1])

    def secrets(self) -> list[tuple[str, str]]:
        """(name, value) of each Secrets Manager secret: a value the template generates (GenerateSecretString) is
        made now, of its length from letters and digits, as a new deployment would make it; a given one is kept."""
        secrets = []
        for logical_id, resource in self.of_type("AWS::SecretsManager::Secret").items():
            props = self.resolve(resource.get("Properties", {}))
            value = props.get("SecretString")
            if value is None:
                generate = props.get("GenerateSecretString", {})
                if set(generate) - {"PasswordLength", "ExcludePunctuation"} or not generate.get("ExcludePunctuation"):
                    raise ValueError(f"{logical_id}: the local runtime generates only letters and digits")
                alphabet = string.ascii_letters + string.digits
                value = "".join(secrets_module.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
            secrets.append((self.physical_id(logical_id), str(value)))
        return secrets

    def buckets(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, properties) of each bucket."""
        return [
            (self.physical_id(logical_id), self.resolve(resource.get("Properties", {})))
            for logical_id, resource in self.of_type("AWS::S3::Bucket").items()
        ]

    def state_machines(self) -> list[tuple[str, str, str]]:
        """(name, definition, role ARN) of each state machine: its ASL file with DefinitionSubstitutions applied."""
        machines = []
        for logical_id, resource in self.of_type("AWS::StepFunctions::StateMachine").items():
            props = self.resolve(resource["Properties"])
            definition = (self.root / props["DefinitionS3Location"]["Key"]).read_text()
            for key, value in props.get("DefinitionSubstitutions", {}).items():
                definition = definition.replace("${" + key + "}", str(value))
            machines.append((self.physical_id(logical_id), definition, props["RoleArn"]))
        return machines

    def output(self, name: str) -> str:
        return str(self.resolve(self.outputs[name]["Value"]))

    def serve_apis_at(self, origins: dict[str, str]) -> None:
        """The local stand-in for DNS: in each function's environment, a URL on an API's ``execute-api`` host
        (``https://<api id>.execute-api.<region>.amazonaws.com``) is made a URL on the origin that serves the API
        locally (``origins``: API id -> ``http://host:port``); the stage's path that follows is kept."""
        suffix = self.ref("AWS::URLSuffix")
        hosts = {f"https://{api}.execute-api.{self.region}.{suffix}": origin for api, origin in origins.items()}

        def local(value: str) -> str:
            for host, origin in hosts.items():
                if value == host or value.startswith(host + "/"):
                    return origin + value.removeprefix(host)
            return value

        for logical_id, function in self.functions.items():
            environment = {name: local(value) for name, value in function.environment.items()}
            self.functions[logical_id] = replace(function, environment=environment)

    # --- names -------------------------------------------------------------------------------

    def physical_id(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::S3::Bucket":
            return f"{self.stack_name}-{logical_id}".lower()
        if kind == "AWS::StepFunctions::StateMachine" and "StateMachineName" in props:
            return str(self.resolve(props["StateMachineName"]))
        if kind in ("AWS::ApiGateway::RestApi", "AWS::ApiGatewayV2::Api"):
            return hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).hexdigest()[:10]
        if kind == "AWS::Events::EventBus":
            return str(self.resolve(props["Name"]))
        if kind == "AWS::SQS::Queue":
            return self._queue_name(logical_id, props)
        if kind == "AWS::SecretsManager::Secret" and "Name" in props:
            return str(self.resolve(props["Name"]))
        return f"{self.stack_name}-{logical_id}"

    def _queue_name(self, logical_id: str, props: dict[str, Any]) -> str:
        """Its QueueName, or the name CloudFormation makes up: stack-LogicalId-SUFFIX (here the suffix is derived
        from both, so a stack's names stay the same), at most 80 characters, .fifo for a FIFO queue."""
        if "QueueName" in props:
            return str(self.resolve(props["QueueName"]))
        digest = hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).digest()
        suffix = "-" + base64.b32encode(digest).decode()[:12] + (".fifo" if props.get("FifoQueue") else "")
        return f"{self.stack_name}-{logical_id}"[: 80 - len(suffix)] + suffix

    def arn(self, logical_id: str) -> str:
        kind = self.resources[logical_id]["Type"]
        name = self.physical_id(logical_id)
        prefix = f"arn:aws:{{}}:{self.region}:{ACCOUNT_ID}"
        return {
            "AWS::Lambda::Function": prefix.format("lambda") + f":function:{name}",
            "AWS::Lambda::LayerVersion": prefix.format("lambda") + f":layer:{name}:1",
            "AWS::StepFunctions::StateMachine": prefix.format("states") + f":stateMachine:{name}",
            "AWS::DynamoDB::Table": prefix.format("dynamodb") + f":table/{name}",
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}",
            "AWS::IAM::ManagedPolicy": f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}",
            "AWS::Events::Rule": prefix.format("events") + f":rule/{name}",
            "AWS::Events::EventBus": prefix.format("events") + f":event-bus/{name}",
            "AWS::SQS::Queue": prefix.format("sqs") + f":{name}",
        }.get(kind, prefix.format("local") + f":{logical_id}")

    def queue_url(self, logical_id: str) -> str:
        """What !Ref gives for a queue: its URL, on the edge when the stack is deployed locally."""
        return queue_url_of(self.arn(logical_id), self.endpoint_url or f"https://sqs.{self.region}.amazonaws.com")

    def ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        if kind in ("AWS::StepFunctions::StateMachine", "AWS::Lambda::LayerVersion", "AWS::IAM::ManagedPolicy"):
            return self.arn(name)
        if kind == "AWS::SQS::Queue":
            return self.queue_url(name)
        return self.physical_id(name)

    def get_att(self, name: str, attribute: str) -> str:
        if attribute == "Arn":
            return self.arn(name)
        if attribute == "Name":
            return self.physical_id(name)
        if attribute == "RootResourceId":
            return f"{self.physical_id(name)}-root"
        if attribute == "StreamArn":
            return f"{self.arn(name)}/stream/{ANY_STREAM_LABEL}"
        if attribute == "QueueName":
            return self.physical_id(name)
        if attribute == "QueueUrl":
            return self.queue_url(name)
        raise ValueError(f"the local runtime does not resolve !GetAtt {name}.{attribute}")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            if value["Ref"] in self.list_parameters:
                return self.parameters[value["Ref"]].split(",")
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            target = value["Fn::GetAtt"]
            name, attribute = target.split(".", 1) if isinstance(target, str) else target
            return self.get_att(name, attribute)
        if set(value) == {"Fn::Sub"}:
            spec = value["Fn::Sub"]
            if isinstance(spec, list):
                text, variables = spec
                return self._sub(text, {key: str(self.resolve(item)) for key, item in variables.items()})
            return self._sub(spec, {})
        if set(value) == {"Fn::Join"}:
            separator, items = value["Fn::Join"]
            return separator.join(str(item) for item in self.resolve(items))
        return {key: self.resolve(item) for key, item in value.items()}

    def _sub(self, text: str, variables: dict[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return variables[name]
            if "." in name and not name.startswith("AWS::"):
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            return self.ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)


def load(
    root: Path,
    stack_name: str,
    region: str,
    parameters: dict[str, str] | None = None,
    template_file: Path | None = None,
    endpoint_url: str | None = None,
) -> LocalStack:
    """The template (root/template.yaml unless ``template_file``) as CloudFormation would deploy it after the SAM
    transform, under ``stack_name``; code paths are relative to ``root``; queue URLs on ``endpoint_url`` (the edge)
    rather than AWS's."""
    text = (template_file or root / "template.yaml").read_text()
    deployed, values = _sam_transform(root, text, parameters or {}, region)
    stack = LocalStack(
        root=root,
        stack_name=stack_name,
        region=region,
        resources=deployed["Resources"],
        parameters=values,
        outputs=deployed.get("Outputs", {}),
        endpoint_url=endpoint_url,
        list_parameters=frozenset(
            name
            for name, spec in deployed.get("Parameters", {}).items()
            if spec.get("Type") == "CommaDelimitedList" or str(spec.get("Type")).startswith("List<")
        ),
    )
    for logical_id, resource in stack.of_type("AWS::Lambda::Function").items():
        stack.functions[logical_id] = _function(stack, logical_id, resource["Properties"])
    for logical_id, resource in stack.of_type("AWS::IAM::ManagedPolicy").items():
        stack.managed_policies[stack.arn(logical_id)] = stack.resolve(resource["Properties"]["PolicyDocument"])
    for logical_id, resource in stack.of_type("AWS::IAM::Role").items():
        stack.roles[logical_id] = _role(stack, logical_id, resource["Properties"])
    for logical_id, resource in stack.of_type("AWS::ApiGateway::RestApi").items():
        stack.apis.append(_rest_api(stack, logical_id, resource["Properties"]))
    for logical_id, resource in stack.of_type("AWS::ApiGatewayV2::Api").items():
        if resource["Properties"].get("ProtocolType") == "WEBSOCKET":
            stack.websocket_apis.append(_websocket_api(stack, logical_id, resource["Properties"]))
    functions_by_arn = {function.arn: function.logical_id for function in stack.functions.values()}
    for logical_id, resource in stack.of_type("AWS::Events::Rule").items():
        props = stack.resolve(resource["Properties"])
        arns = [target["Arn"] for target in props.get("Targets", [])]
        targets = [functions_by_arn[arn] for arn in arns if arn in functions_by_arn]
        queues = [arn for arn in arns if arn.startswith("arn:aws:sqs:")]
        stack.event_rules.append(EventRule(logical_id, stack.arn(logical_id), props["EventPattern"], targets, queues))
    queue_arns = {stack.queue_url(logical_id): stack.arn(logical_id) for logical_id in stack.of_type("AWS::SQS::Queue")}
    for resource in stack.of_type("AWS::SQS::QueuePolicy").values():
        props = stack.resolve(resource["Properties"])
        for url in props["Queues"]:
            stack.queue_policies.setdefault(queue_arns[url], []).append(props["PolicyDocument"])
    functions_by_name = {function.name: function.logical_id for function in stack.functions.values()}
    for resource in stack.of_type("AWS::Lambda::Permission").values():
        props = stack.resolve(resource["Properties"])
        function = functions_by_name.get(props["FunctionName"]) or functions_by_arn.get(props["FunctionName"])
        if function is not None:
            stack.permissions.append(LambdaPermission(function, props["Principal"], props.get("SourceArn")))
    for logical_id, resource in stack.of_type("AWS::Lambda::EventSourceMapping").items():
        props = stack.resolve(resource["Properties"])
        function = functions_by_name.get(props["FunctionName"]) or functions_by_arn[props["FunctionName"]]
        stack.event_source_mappings.append(_event_source_mapping(logical_id, function, props))
    return stack


def _event_source_mapping(logical_id: str, function: str, props: dict[str, Any]) -> EventSourceMapping:
    """With Lambda's defaults (Lambda Developer Guide, "Lambda parameters for Amazon DynamoDB event source mappings",
    "Lambda parameters for Amazon SQS event source mappings")."""
    unplayed = sorted(set(props) - MAPPING_PROPERTIES)
    if unplayed:
        raise ValueError(f"the local runtime does not play {', '.join(unplayed)} of {logical_id}")
    from_queue = props["EventSourceArn"].startswith("arn:aws:sqs:")
    return EventSourceMapping(
        logical_id=logical_id,
        function=function,
        source_arn=props["EventSourceArn"],
        batch_size=int(props.get("BatchSize", 10 if from_queue else 100)),
        batching_window_seconds=int(props.get("MaximumBatchingWindowInSeconds", 0)),
        starting_position=props.get("StartingPosition"),
        filter_patterns=tuple(spec["Pattern"] for spec in props.get("FilterCriteria", {}).get("Filters", [])),
        function_response_types=tuple(props.get("FunctionResponseTypes", [])),
        bisect_on_function_error=bool(props.get("BisectBatchOnFunctionError", False)),
        maximum_retry_attempts=int(props.get("MaximumRetryAttempts", -1)),
        enabled=bool(props.get("Enabled", True)),
    )


def _sam_transform(
    root: Path, template: str, parameters: dict[str, str], region: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """(the CloudFormation template SAM makes of ``template``, every parameter's value), from the cache or from the
    SAM translator in SAM CLI's environment."""
    python = os.environ.get(SAM_PYTHON) or str(root / ".venv-sam" / "bin" / "python")
    request = {"template": template, "parameters": parameters, "region": region, "codeBucket": CODE_BUCKET}
    key = hashlib.sha256(json.dumps([request, python, _TRANSFORM], sort_keys=True).encode()).hexdigest()[:32]
    cached = root / ".local-runtime" / "cache" / f"sam-transform-{key}.json"
    if not cached.exists():
        if not Path(python).exists():
            raise RuntimeError(
                f"no SAM CLI environment at {python}: run `make .venv-sam/.installed`, or set {SAM_PYTHON}"
            )
        done = subprocess.run(
            [python, "-c", _TRANSFORM], input=json.dumps(request), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the SAM transform failed:\n{done.stderr}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        partial.write_text(done.stdout)
        partial.replace(cached)
    result = json.loads(cached.read_text())
    return result["template"], result["parameters"]


def _function(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> Function:
    layer_dirs, external_layers = [], []
    for layer in stack.resolve(props.get("Layers", [])):
        layer_id = next((name for name in stack.of_type("AWS::Lambda::LayerVersion") if stack.arn(name) == layer), None)
        if layer_id is None:
            external_layers.append(layer)
            continue
        layer_dirs.append(stack.root / stack.resources[layer_id]["Properties"]["Content"]["S3Key"])
    environment = stack.resolve(props.get("Environment", {}).get("Variables", {}))
    return Function(
        logical_id=logical_id,
        name=stack.physical_id(logical_id),
        arn=stack.arn(logical_id),
        code_dir=stack.root / props["Code"]["S3Key"],
        layer_dirs=tuple(layer_dirs),
        handler=props["Handler"],
        timeout=int(props.get("Timeout", 3)),
        memory=int(props.get("MemorySize", 128)),
        environment={key: str(value) for key, value in environment.items()},
        role=stack.resolve(props["Role"]),
        external_layers=tuple(external_layers),
    )


def _role(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> Role:
    props = stack.resolve(props)
    policies = {policy["PolicyName"]: policy["PolicyDocument"] for policy in props.get("Policies", [])}
    for arn in props.get("ManagedPolicyArns", []):
        policies[arn] = stack.managed_policies.get(arn, {})
    return Role(
        logical_id=logical_id,
        name=stack.physical_id(logical_id),
        arn=stack.arn(logical_id),
        policies=policies,
    )


def _rest_api(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> RestApi:
    body = stack.resolve(props["Body"])
    functions_by_arn = {function.arn: function.logical_id for function in stack.functions.values()}
    routes = []
    mocks = []
    for path, methods in body.get("paths", {}).items():
        for method, spec in methods.items():
            integration = spec["x-amazon-apigateway-integration"]
            authorizer = _authorizer(method, path, spec, body.get("securityDefinitions", {}), functions_by_arn)
            if integration["type"] == "mock":
                mocks.append(dataclasses.replace(_mock_route(method, path, integration), authorizer=authorizer))
                continue
            function = functions_by_arn[_invoked_function(integration["uri"])]
            streamed = integration.get("responseTransferMode") == "STREAM"
            timeout_ms = int(integration.get("timeoutInMillis", DEFAULT_INTEGRATION_TIMEOUT_MS))
            if streamed and not 50 <= timeout_ms <= MAX_STREAMED_TIMEOUT_MS:
                raise ValueError(f"{method.upper()} {path}: a streamed integration times out within 50 ms to 15 min")
            routes.append(
                Route(method.upper(), path, function, integration.get("credentials"), streamed, timeout_ms, authorizer)
            )
    responses = {}
    for kind, spec in body.get("x-amazon-apigateway-gateway-responses", {}).items():
        headers = {
            name.removeprefix("gatewayresponse.header."): value.strip("'")
            for name, value in spec.get("responseParameters", {}).items()
        }
        status = spec.get("statusCode")
        responses[kind] = GatewayResponse(int(status) if status else None, headers, spec.get("responseTemplates", {}))
    stages = [
        stack.resolve(res["Properties"])
        for res in stack.of_type("AWS::ApiGateway::Stage").values()
        if res["Properties"]["RestApiId"] == {"Ref": logical_id}
    ]
    endpoint = stack.resolve(props.get("EndpointConfiguration", {})).get("Types", ["EDGE"])[0]
    throttling = {
        (setting["ResourcePath"].replace("~1", "/"), setting["HttpMethod"]): Throttle(
            float(setting["ThrottlingRateLimit"]), int(setting["ThrottlingBurstLimit"])
        )
        for setting in stages[0].get("MethodSettings", [])
        if "ThrottlingRateLimit" in setting and "ThrottlingBurstLimit" in setting
    }
    return RestApi(
        logical_id,
        stack.physical_id(logical_id),
        stages[0]["StageName"],
        routes,
        responses,
        mocks,
        endpoint,
        throttling,
    )


def _authorizer(
    method: str,
    path: str,
    spec: dict[str, Any],
    definitions: dict[str, Any],
    functions_by_arn: dict[str, str],
) -> TokenAuthorizer | None:
    """The method's Lambda TOKEN authorizer; None for AWS_IAM (or no authorization). Other kinds are not played."""
    for requirement in spec.get("security") or []:
        for name in requirement:
            definition = definitions.get(name, {})
            if definition.get("x-amazon-apigateway-authtype") == "awsSigv4":
                continue
            found = definition.get("x-amazon-apigateway-authorizer", {})
            if found.get("type") != "token":
                raise ValueError(
                    f"{method.upper()} {path}: the local runtime plays AWS_IAM and TOKEN Lambda authorizers only,"
                    f" not {name} ({found.get('type') or definition.get('x-amazon-apigateway-authtype')})"
                )
            return TokenAuthorizer(
                name=name,
                function=functions_by_arn[_invoked_function(found["authorizerUri"])],
                header=definition.get("name", "Authorization"),
                validation=found.get("identityValidationExpression"),
                ttl_seconds=int(found.get("authorizerResultTtlInSeconds", 300)),
            )
    return None


def _mock_route(method: str, path: str, integration: dict[str, Any]) -> MockRoute:
    """A mock integration on a resource's ANY method: the status its request template's ``statusCode`` selects (200
    without one), answered with the integration response whose selection pattern matches it, or the default one."""
    if method != "x-amazon-apigateway-any-method":
        raise ValueError(f"{method.upper()} {path}: the local runtime serves mock integrations on ANY methods only")
    template = integration.get("requestTemplates", {}).get("application/json", "{}")
    status = str(json.loads(template).get("statusCode", 200))
    responses = integration.get("responses", {})
    chosen = next(
        (spec for pattern, spec in responses.items() if pattern != "default" and re.fullmatch(pattern, status)),
        responses.get("default", {}),
    )
    headers = {
        name.removeprefix("method.response.header."): value.strip("'")
        for name, value in chosen.get("responseParameters", {}).items()
    }
    return MockRoute(path, int(chosen.get("statusCode", status)), headers, chosen.get("responseTemplates", {}))


def _websocket_api(stack: LocalStack, logical_id: str, props: dict[str, Any]) -> WebSocketApi:
    """A WebSocket API: its stage, its route selection expression, and each route's function (its AWS_PROXY
    integration's) and authorization type."""
    functions_by_arn = {function.arn: function.logical_id for function in stack.functions.values()}
    integrations = {}
    for name, resource in stack.of_type("AWS::ApiGatewayV2::Integration").items():
        spec = stack.resolve(resource["Properties"])
        if spec["ApiId"] != stack.physical_id(logical_id):
            continue
        if spec["IntegrationType"] != "AWS_PROXY":
            raise ValueError(f"{name}: the local runtime serves only AWS_PROXY integrations of WebSocket routes")
        integrations[stack.physical_id(name)] = functions_by_arn[_invoked_function(spec["IntegrationUri"])]
    routes = {}
    for resource in stack.of_type("AWS::ApiGatewayV2::Route").values():
        spec = stack.resolve(resource["Properties"])
        if spec["ApiId"] == stack.physical_id(logical_id):
            function = integrations[spec["Target"].removeprefix("integrations/")]
            key = spec["RouteKey"]
            routes[key] = WebSocketRoute(key, function, spec.get("AuthorizationType", "NONE"))
    stages = [
        res["Properties"]["StageName"]
        for res in stack.of_type("AWS::ApiGatewayV2::Stage").values()
        if res["Properties"]["ApiId"] == {"Ref": logical_id}
    ]
    return WebSocketApi(logical_id, stack.physical_id(logical_id), stages[0], props["RouteSelectionExpression"], routes)


def _invoked_function(integration_uri: str) -> str:
    """The ARN of the function an API Gateway integration URI invokes
    (arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<function ARN>/invocations, or
    .../2021-11-15/functions/<function ARN>/response-streaming-invocations)."""
    invoked = integration_uri.split("/functions/", 1)[1]
    return invoked.removesuffix("/response-streaming-invocations").removesuffix("/invocations")
