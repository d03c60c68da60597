"""The local IAM check: policy evaluation as AWS does it, and every principal's grants in the deployed template (SAM's
policy templates expanded by the SAM translator): each call the code makes is allowed, and neighbouring calls it
does not make are not."""

from __future__ import annotations

from functools import cache

import pytest

from local_runtime import iam, template
from local_runtime.iam import Check, Principal, Statement
from local_runtime.identities import Identities
from tests.conftest import ROOT

REGION, ACCOUNT = "us-east-1", template.ACCOUNT_ID
STACK = "longrun"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{STACK}-TasksTable"
BUCKET = f"arn:aws:s3:::{STACK}-scriptsbucket"
MACHINE = f"{STACK}-script-execution"
TASK = "1a8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
NODE_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:managed-instance/mi-0123456789abcdef0"
INSTANCE_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123456789abcdef0"
DOCUMENT_ARN = f"arn:aws:ssm:{REGION}::document/AWS-RunRemoteScript"
OUTPUT = f"{BUCKET}/output/{TASK}/cmd/mi-0123456789abcdef0/awsrunShellScript/runShellScript/stderr"
SCRIPT = f"{BUCKET}/scripts/patch.sh"
UPLOADED = f"{BUCKET}/scripts/sha256/{'0' * 64}"


def function_arn(logical_id: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{STACK}-{logical_id}"


@cache
def stack() -> template.LocalStack:
    return template.load(ROOT, STACK, REGION)


QUEUE = stack().arn("WebhookDeliveryQueue")
COMMAND_EVENTS = stack().arn("CommandEventsQueue")
STREAM = f"{TABLE}/stream/2026-11-27T12:00:00.000"
BUS = stack().arn("EventBus")
CONNECTION = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{stack().ref('WebSocketApi')}/v1/POST/@connections/abc="


ITEMS = [Check(f"dynamodb:{action}", TABLE) for action in ("Query", "PutItem", "UpdateItem")]
BATCH_READER = [*ITEMS, Check("dynamodb:GetItem", TABLE)]

ALLOWED: dict[str, list[Check]] = {
    "ApiFunction": [
        *ITEMS,
        Check("dynamodb:Query", f"{TABLE}/index/ByOwner"),
        Check("dynamodb:Query", f"{TABLE}/index/ByOwnerStatus"),
        Check("states:StartExecution", f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{MACHINE}"),
        Check("states:StopExecution", f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{MACHINE}:{TASK}"),
        Check("ssm:CancelCommand", "*"),
        Check("s3:GetObject", OUTPUT),
        Check("s3:ListBucket", BUCKET),
        Check("s3:GetObject", UPLOADED),  # HeadObject: is the script there already?
        Check("s3:PutObject", UPLOADED),  # the presigned upload URL acts with the function's permissions
        Check("dynamodb:GetItem", TABLE),
        Check("dynamodb:DeleteItem", TABLE),
        Check("sqs:SendMessage", QUEUE),
    ],
    "StartRunFunction": [*ITEMS, Check("s3:GetObject", SCRIPT), Check("s3:GetObject", UPLOADED)],
    "RunBatchFunction": [
        *BATCH_READER,
        Check("ssm:SendCommand", DOCUMENT_ARN),
        Check("ssm:SendCommand", NODE_ARN),
        Check("ssm:SendCommand", INSTANCE_ARN),
        Check("ssm:DescribeInstanceInformation", "*"),
        Check("ssm:ListCommands", "*"),
        Check("tag:GetResources", "*"),
        Check("ssm:CancelCommand", "*"),
        Check("states:SendTaskSuccess", "*"),
    ],
    "CommandEventsFunction": [
        *BATCH_READER,
        Check("ssm:ListCommands", "*"),
        Check("ssm:ListCommandInvocations", "*"),
        Check("states:SendTaskSuccess", "*"),
        Check("dynamodb:BatchGetItem", TABLE),
        Check("sqs:ReceiveMessage", COMMAND_EVENTS),
        Check("sqs:DeleteMessage", COMMAND_EVENTS),
        Check("sqs:GetQueueAttributes", COMMAND_EVENTS),
    ],
    "ExpireBatchFunction": [*BATCH_READER, Check("ssm:ListCommandInvocations", "*"), Check("ssm:CancelCommand", "*")],
    "FinishRunFunction": [*ITEMS, Check("ssm:CancelCommand", "*")],
    "EventStreamFunction": [Check("dynamodb:Query", TABLE), Check("dynamodb:UpdateItem", TABLE)],
    "PublishEventsFunction": [
        Check("dynamodb:Query", TABLE),
        Check("dynamodb:PutItem", TABLE),
        Check("dynamodb:GetItem", TABLE),
        Check("dynamodb:GetRecords", STREAM),
        Check("dynamodb:GetShardIterator", STREAM),
        Check("dynamodb:DescribeStream", STREAM),
        Check("dynamodb:DeleteItem", TABLE),
        Check("events:PutEvents", BUS),
        Check("execute-api:ManageConnections", CONNECTION),
        Check("sqs:SendMessage", QUEUE),
    ],
    "WebSocketFunction": [
        *BATCH_READER,
        Check("dynamodb:DeleteItem", TABLE),
        Check("execute-api:ManageConnections", CONNECTION),
    ],
    "DeliverWebhooksFunction": [
        Check("dynamodb:GetItem", TABLE),
        Check("dynamodb:PutItem", TABLE),
        Check("dynamodb:UpdateItem", TABLE),
        Check("sqs:ChangeMessageVisibility", QUEUE),
        Check("sqs:ReceiveMessage", QUEUE),
        Check("sqs:DeleteMessage", QUEUE),
        Check("sqs:GetQueueAttributes", QUEUE),
    ],
    "JwtAuthorizerFunction": [],  # it reads the issuer's keys over HTTPS, and calls no AWS API
    "ScriptExecutionStateMachine": [
        Check("lambda:InvokeFunction", function_arn(name))
        for name in ("StartRunFunction", "RunBatchFunction", "ExpireBatchFunction", "FinishRunFunction")
    ],
    "EventBridge": [Check("sqs:SendMessage", COMMAND_EVENTS)],
    "devices": [
        Check("s3:GetObject", SCRIPT),
        Check("s3:GetObject", UPLOADED),  # a script a client uploaded
        Check("s3:PutObject", OUTPUT),
        Check("s3:GetEncryptionConfiguration", BUCKET),
    ],
}

NEVER = [Check("dynamodb:Scan", TABLE), Check("dynamodb:DeleteItem", TABLE), Check("dynamodb:BatchGetItem", TABLE)]
DENIED: dict[str, list[Check]] = {
    "ApiFunction": [
        Check("dynamodb:Scan", TABLE),
        Check("dynamodb:BatchGetItem", TABLE),
        Check("events:PutEvents", BUS),
        Check("ssm:SendCommand", DOCUMENT_ARN),
        Check("s3:GetObject", SCRIPT),
        Check("s3:PutObject", SCRIPT),  # uploads go under scripts/sha256/ only, by their content's digest
        Check("s3:PutObject", f"{BUCKET}/scripts/sha256"),
        Check("s3:DeleteObject", UPLOADED),
        Check("s3:PutObject", OUTPUT),
        Check("lambda:InvokeFunction", function_arn("RunBatchFunction")),
    ],
    "StartRunFunction": [
        *NEVER,
        Check("s3:GetObject", OUTPUT),  # it reads scripts only: not the devices' output, not the bucket's listing
        Check("s3:ListBucket", BUCKET),
        Check("s3:PutObject", UPLOADED),
        Check("dynamodb:Query", f"{TABLE}/index/ByOwner"),
    ],
    "RunBatchFunction": [
        *NEVER,
        Check("ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"),
        Check("s3:GetObject", SCRIPT),
    ],
    "CommandEventsFunction": [
        *NEVER[:2],
        Check("sqs:SendMessage", COMMAND_EVENTS),
        Check("ssm:SendCommand", DOCUMENT_ARN),
        Check("ssm:GetCommandInvocation", "*"),
        Check("dynamodb:Query", f"{TABLE}/index/ByOwner"),
    ],
    "ExpireBatchFunction": [*NEVER, Check("states:SendTaskSuccess", "*")],
    "FinishRunFunction": [*NEVER, Check("dynamodb:GetItem", TABLE), Check("ssm:SendCommand", NODE_ARN)],
    "EventStreamFunction": [
        *NEVER,
        Check("dynamodb:GetItem", TABLE),
        Check("dynamodb:PutItem", TABLE),
        Check("events:PutEvents", BUS),
        Check("execute-api:ManageConnections", CONNECTION),
    ],
    "PublishEventsFunction": [
        Check("dynamodb:Scan", TABLE),
        Check("dynamodb:UpdateItem", TABLE),
        Check("sqs:DeleteMessage", QUEUE),
        Check("execute-api:ManageConnections", CONNECTION.replace("/POST/", "/DELETE/")),
        Check("events:PutEvents", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
    ],
    "WebSocketFunction": [*NEVER[:1], Check("sqs:SendMessage", QUEUE), Check("events:PutEvents", BUS)],
    "JwtAuthorizerFunction": [
        Check("dynamodb:GetItem", TABLE),
        Check("dynamodb:Query", TABLE),
        Check("s3:GetObject", SCRIPT),
        Check("ssm:SendCommand", NODE_ARN),
        Check("secretsmanager:GetSecretValue", "*"),
    ],
    "DeliverWebhooksFunction": [
        *NEVER,
        Check("dynamodb:Query", TABLE),
        Check("sqs:SendMessage", QUEUE),
        Check("events:PutEvents", BUS),
    ],
    "ScriptExecutionStateMachine": [
        Check("lambda:InvokeFunction", function_arn("ApiFunction")),
        Check("lambda:InvokeFunction", function_arn("CommandEventsFunction")),
    ],
    "EventBridge": [
        Check("sqs:SendMessage", QUEUE),
        Check("sqs:ReceiveMessage", COMMAND_EVENTS),
        Check("lambda:InvokeFunction", function_arn("CommandEventsFunction")),
    ],
    "devices": [
        Check("s3:GetObject", OUTPUT),
        Check("s3:PutObject", SCRIPT),
        Check("s3:PutObject", UPLOADED),
        Check("s3:ListBucket", BUCKET),
    ],
}


@cache
def principals() -> dict[str, Principal]:
    identities = Identities(stack())
    return {principal.name: principal for principal in identities.restricted()}


def test_every_principal_of_the_template_is_covered() -> None:
    assert set(principals()) == set(ALLOWED) == set(DENIED)


@pytest.mark.parametrize(("name", "check"), [(n, c) for n, checks in ALLOWED.items() for c in checks])
def test_each_call_the_code_makes_is_allowed(name: str, check: Check) -> None:
    decision = iam.evaluate(principals()[name], check)
    assert decision.allowed, decision.message


@pytest.mark.parametrize(("name", "check"), [(n, c) for n, checks in DENIED.items() for c in checks])
def test_calls_the_code_does_not_make_are_denied_with_aws_s_message(name: str, check: Check) -> None:
    principal = principals()[name]
    decision = iam.evaluate(principal, check)
    assert not decision.allowed
    assert decision.message == (
        f"User: {principal.arn} is not authorized to perform: {check.action} on resource: {check.resource}"
        f" because no identity-based policy allows the {check.action} action"
    )


def principal(*statements: Statement) -> Principal:
    return Principal(arn="arn:aws:sts::123456789012:assumed-role/r/s", name="p", statements=statements)


def test_an_explicit_deny_wins() -> None:
    who = principal(
        Statement("p#0", "Allow", actions=("s3:*",), resources=("*",)),
        Statement("p#1", "Deny", actions=("s3:DeleteObject",), resources=("arn:aws:s3:::b/*",)),
    )
    assert iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::b/k")).allowed
    denied = iam.evaluate(who, Check("s3:DeleteObject", "arn:aws:s3:::b/k"))
    assert not denied.allowed and denied.message.endswith("with an explicit deny in an identity-based policy")


def test_actions_match_without_case_and_resources_with_case_and_wildcards() -> None:
    who = principal(Statement("p#0", "Allow", actions=("S3:get*",), resources=("arn:aws:s3:::b/scripts/?.sh",)))
    assert iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::b/scripts/a.sh")).allowed
    assert not iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::b/scripts/ab.sh")).allowed
    assert not iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::B/scripts/a.sh")).allowed
    assert not iam.evaluate(who, Check("s3:PutObject", "arn:aws:s3:::b/scripts/a.sh")).allowed


def test_not_action_and_not_resource() -> None:
    who = principal(Statement("p#0", "Allow", not_actions=("iam:*",), not_resources=("arn:aws:s3:::secret/*",)))
    assert iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::b/k")).allowed
    assert not iam.evaluate(who, Check("iam:CreateUser", "*")).allowed
    assert not iam.evaluate(who, Check("s3:GetObject", "arn:aws:s3:::secret/k")).allowed


def test_conditions_are_not_evaluated_so_a_conditioned_allow_never_grants() -> None:
    who = principal(Statement("p#0", "Allow", actions=("s3:ListBucket",), resources=("*",), conditional=True))
    assert not iam.evaluate(who, Check("s3:ListBucket", "arn:aws:s3:::b")).allowed


def test_the_ledger_reports_the_grants_no_call_used() -> None:
    who = principal(
        Statement("p#0", "Allow", actions=("s3:GetObject", "s3:PutObject"), resources=("arn:aws:s3:::b/*",))
    )
    ledger = iam.Ledger()
    check = Check("s3:GetObject", "arn:aws:s3:::b/k")
    ledger.record(who, check, iam.evaluate(who, check))
    assert iam.unused_grants([who], ledger.snapshot()["used"]) == [("p", "p#0", "s3:PutObject", "arn:aws:s3:::b/*")]


def test_the_command_events_queue_takes_events_only_from_its_rule() -> None:
    """EventBridge may send to a queue only as its policy allows: the service, the action, the queue and the rule
    (aws:SourceArn) must all match."""
    policies = stack().queue_policies[COMMAND_EVENTS]
    rule = stack().arn("RunCommandEndedRule")
    assert iam.service_allowed(policies, "events.amazonaws.com", "sqs:SendMessage", COMMAND_EVENTS, rule)
    other_rule = rule.replace("RunCommandEndedRule", "SomeOtherRule")
    assert not iam.service_allowed(policies, "events.amazonaws.com", "sqs:SendMessage", COMMAND_EVENTS, other_rule)
    assert not iam.service_allowed(policies, "sns.amazonaws.com", "sqs:SendMessage", COMMAND_EVENTS, rule)
    assert not iam.service_allowed(policies, "events.amazonaws.com", "sqs:SendMessage", QUEUE, rule)
    assert QUEUE not in stack().queue_policies  # no service may send to the webhook queue


def test_a_resource_policy_condition_it_cannot_evaluate_never_grants_and_always_denies() -> None:
    queue, rule = "arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:events:us-east-1:123456789012:rule/r"
    allow = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:*", "Resource": queue}
    unknown = {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}}
    assert iam.service_allowed([{"Statement": [allow]}], "events.amazonaws.com", "sqs:SendMessage", queue, rule)
    conditioned = {"Statement": [allow | {"Condition": unknown}]}
    assert not iam.service_allowed([conditioned], "events.amazonaws.com", "sqs:SendMessage", queue, rule)
    denied = {"Statement": [allow, allow | {"Effect": "Deny", "Condition": unknown}]}
    assert not iam.service_allowed([denied], "events.amazonaws.com", "sqs:SendMessage", queue, rule)
    from_account = {"Statement": [allow | {"Condition": {"StringEquals": {"aws:SourceAccount": "999999999999"}}}]}
    assert not iam.service_allowed([from_account], "events.amazonaws.com", "sqs:SendMessage", queue, rule)
