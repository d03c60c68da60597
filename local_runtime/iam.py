"""IAM, locally: identity-based policies and their evaluation, as AWS evaluates them for one account.

A request is allowed when some Allow statement of the principal's policies matches its action and resource and no
Deny statement does (an explicit deny wins; anything not allowed is denied). Action names match case-insensitively
with ``*`` and ``?`` wildcards, resource ARNs case-sensitively; ``NotAction`` and ``NotResource`` are honoured.
Condition keys are not evaluated: an Allow with a Condition never grants here and a Deny with one always applies,
so the local answer is never more lenient than AWS's. Resource-based policies (bucket policies, Lambda
permissions) are not part of this evaluation, except where a service principal is the caller
(``service_allowed``: a queue's policy that lets EventBridge send to it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

AWS_MANAGED_POLICIES: dict[str, dict[str, Any]] = {
    # The AWS managed policies SAM attaches to the roles it generates, as AWS publishes them.
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "*",
            }
        ],
    },
    # SAM adds these for a function's DynamoDB and SQS events: what Lambda's poller needs of the source.
    "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                    "dynamodb:ListStreams",
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ],
                "Resource": "*",
            }
        ],
    },
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                ],
                "Resource": "*",
            }
        ],
    },
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess": {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                    "xray:GetSamplingStatisticSummaries",
                ],
                "Resource": "*",
            }
        ],
    },
}


@dataclass(frozen=True)
class Statement:
    source: str
    """Which policy it comes from, and its position there (e.g. RunBatchFunctionRolePolicy1#0)"""
    effect: str
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] = ()
    conditional: bool = False

    def matches(self, action: str, resource: str) -> bool:
        if self.actions and not any(_action_matches(pattern, action) for pattern in self.actions):
            return False
        if self.not_actions and any(_action_matches(pattern, action) for pattern in self.not_actions):
            return False
        if self.resources and not any(_resource_matches(pattern, resource) for pattern in self.resources):
            return False
        return not (self.not_resources and any(_resource_matches(p, resource) for p in self.not_resources))

    def grants(self) -> Iterable[tuple[str, str]]:
        """Each (action pattern, resource pattern) an Allow statement grants."""
        for action in self.actions or ("NotAction",):
            for resource in self.resources or ("NotResource",):
                yield action, resource


@dataclass(frozen=True)
class Principal:
    arn: str
    """As AWS names it in an error, e.g. arn:aws:sts::123456789012:assumed-role/RoleName/session"""
    name: str
    """Who it is in a report: a function's logical id, the state machine, the devices"""
    statements: tuple[Statement, ...] | None
    """None: the account's administrator (not restricted)"""

    @property
    def restricted(self) -> bool:
        return self.statements is not None


@dataclass(frozen=True)
class Check:
    """One action on one resource, as a request asks for it."""

    action: str
    resource: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    statement: Statement | None
    message: str


def statements(documents: dict[str, dict[str, Any]]) -> tuple[Statement, ...]:
    """The statements of policy documents, by policy name or ARN."""
    found: list[Statement] = []
    for name, document in documents.items():
        document = document or AWS_MANAGED_POLICIES.get(name, {})
        raw = document.get("Statement", [])
        for position, spec in enumerate([raw] if isinstance(raw, dict) else raw):
            found.append(
                Statement(
                    source=f"{_short(name)}#{spec.get('Sid', position)}",
                    effect=spec["Effect"],
                    actions=_strings(spec.get("Action")),
                    not_actions=_strings(spec.get("NotAction")),
                    resources=_strings(spec.get("Resource")),
                    not_resources=_strings(spec.get("NotResource")),
                    conditional="Condition" in spec,
                )
            )
    return tuple(found)


def evaluate(principal: Principal, check: Check) -> Decision:
    if principal.statements is None:
        return Decision(True, None, "")
    matching = [s for s in principal.statements if s.matches(check.action, check.resource)]
    denied = next((s for s in matching if s.effect == "Deny"), None)
    if denied is not None:
        return Decision(False, denied, _denied(principal, check, "with an explicit deny in an identity-based policy"))
    allowed = next((s for s in matching if s.effect == "Allow" and not s.conditional), None)
    if allowed is None:
        return Decision(
            False, None, _denied(principal, check, f"because no identity-based policy allows the {check.action} action")
        )
    return Decision(True, allowed, "")


def _denied(principal: Principal, check: Check, why: str) -> str:
    return f"User: {principal.arn} is not authorized to perform: {check.action} on resource: {check.resource} {why}"


@dataclass
class Ledger:
    """Which grants each principal used, and every denial: the runtime's IAM report."""

    used: set[tuple[str, str, str, str]] = field(default_factory=set)
    """(principal, statement source, action pattern, resource pattern)"""
    denials: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, principal: Principal, check: Check, decision: Decision) -> None:
        with self._lock:
            if decision.allowed and decision.statement is not None:
                statement = decision.statement
                for action, resource in statement.grants():
                    if _action_matches(action, check.action) and _resource_matches(resource, check.resource):
                        self.used.add((principal.name, statement.source, action, resource))
            elif not decision.allowed:
                self.denials.append(
                    {
                        "principal": principal.name,
                        "action": check.action,
                        "resource": check.resource,
                        "message": decision.message,
                    }
                )

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"used": sorted(list(grant) for grant in self.used), "denials": list(self.denials)}

    def clear_denials(self) -> None:
        with self._lock:
            self.denials.clear()


def unused_grants(principals: Iterable[Principal], used: Iterable[Iterable[str]]) -> list[tuple[str, str, str, str]]:
    """Every (principal, statement, action, resource) an Allow statement grants that no recorded call used."""
    seen = {tuple(grant) for grant in used}
    unused = []
    for principal in principals:
        for statement in principal.statements or ():
            if statement.effect != "Allow":
                continue
            for action, resource in statement.grants():
                grant = (principal.name, statement.source, action, resource)
                if grant not in seen:
                    unused.append(grant)
    return unused


def arn_like(pattern: str, arn: str) -> bool:
    """The ArnLike condition a resource-based policy compares a source ARN with (a Lambda permission's SourceArn):
    IAM's wildcards, case-sensitively."""
    return _resource_matches(pattern, arn)


def _string_equals(expected: str, actual: str) -> bool:
    return expected == actual


SOURCE_CONDITIONS: dict[str, Callable[[str, str], bool]] = {
    "ArnEquals": arn_like,  # ArnEquals and ArnLike behave alike: both take IAM's wildcards
    "ArnLike": arn_like,
    "StringEquals": _string_equals,
}
"""The condition operators ``service_allowed`` evaluates, on aws:SourceArn and aws:SourceAccount"""


def service_allowed(documents: Iterable[dict[str, Any]], service: str, action: str, resource: str, source: str) -> bool:
    """Whether resource-based policies let the service principal ``service`` (e.g. events.amazonaws.com) make
    ``action`` on ``resource`` for the resource ``source`` (a rule's ARN): some Allow statement names the service,
    the action and the resource, and its conditions hold, and no Deny statement applies. Only aws:SourceArn and
    aws:SourceAccount are evaluated, with ``SOURCE_CONDITIONS``' operators; an Allow with any other condition does not
    grant, and a Deny with one applies, so the answer is never more lenient than AWS's."""
    account = source.split(":")[4]
    context = {"aws:sourcearn": source, "aws:sourceaccount": account}

    def conditions_hold(condition: dict[str, dict[str, Any]], unknown: bool) -> bool:
        for operator, tests in condition.items():
            compare = SOURCE_CONDITIONS.get(operator)
            for key, expected in tests.items():
                actual = context.get(key.lower())
                if compare is None or actual is None:
                    if not unknown:
                        return False
                    continue
                if not any(compare(value, actual) for value in _strings(expected)):
                    return False
        return True

    allowed = False
    for document in documents:
        raw = document.get("Statement", [])
        for spec in [raw] if isinstance(raw, dict) else raw:
            principal = spec.get("Principal", {})
            services = _strings(principal.get("Service")) if isinstance(principal, dict) else _strings(principal)
            if service not in services and "*" not in services:
                continue
            statement = Statement(
                "queue policy", spec["Effect"], _strings(spec.get("Action")), (), _strings(spec.get("Resource"))
            )
            if not statement.matches(action, resource):
                continue
            deny = spec["Effect"] == "Deny"
            if not conditions_hold(spec.get("Condition", {}), unknown=deny):
                continue
            if deny:
                return False
            allowed = True
    return allowed


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(str(item) for item in value)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name.startswith("arn:") else name


@cache
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM's wildcards: * any run of characters, ? any one; nothing else is special."""
    text = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{text}$", re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _action_matches(pattern: str, action: str) -> bool:
    return bool(_pattern(pattern, True).match(action))


def _resource_matches(pattern: str, resource: str) -> bool:
    return pattern == "*" or bool(_pattern(pattern, False).match(resource))
