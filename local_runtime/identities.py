"""Who signs each request that reaches the edge, and with which policies.

Each function's process gets its execution role's session credentials, the state machine's calls carry its role's,
and the simulated devices sign with their instance role's (the template's ``DeviceAccessPolicy``). Requests signed
with these keys are checked against the role's policies as the deployed template defines them, and their
signatures against the keys' secrets (``credentials``). Any other access key is the account's administrator (a
developer's own credentials, as ``awslocal`` or the tests use them), is not restricted, and its signature is not
checked (the runtime does not know its secret).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from local_runtime import iam
from local_runtime.iam import Principal
from local_runtime.template import ACCOUNT_ID, Function, LocalStack

DEVICE_ROLE = "longrun-local-device-role"
"""The instance role the simulated devices run under; it carries the template's DeviceAccessPolicy"""
DEVICE_POLICY_OUTPUT = "DeviceAccessPolicyArn"
EVENTS_ROLE = "longrun-local-eventbridge"
"""Who EventBridge's deliveries to queues are signed as"""
ADMINISTRATOR = Principal(arn=f"arn:aws:iam::{ACCOUNT_ID}:root", name="administrator", statements=None)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str


def _session_credentials(role_arn: str, session: str) -> Credentials:
    digest = hashlib.sha256(f"{role_arn}/{session}".encode()).hexdigest().upper()
    return Credentials(f"ASIA{digest[:16]}", digest[16:56], f"local-session-{digest[:32]}")


class Identities:
    def __init__(self, stack: LocalStack) -> None:
        self._stack = stack
        self._principals: dict[str, Principal] = {}
        self._credentials: dict[str, Credentials] = {}
        self._by_role: dict[str, Credentials] = {}
        roles = {role.arn: role for role in stack.roles.values()}
        for function in stack.functions.values():
            role = roles[function.role]
            self._register(role.arn, function.name, function.logical_id, iam.statements(role.policies))
        for name, _, role_arn in stack.state_machines():
            role = roles[role_arn]
            credentials = self._register(role.arn, name, "ScriptExecutionStateMachine", iam.statements(role.policies))
            self._by_role[role.arn] = credentials
        device_policy = stack.output(DEVICE_POLICY_OUTPUT)
        device_role_arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{DEVICE_ROLE}"
        self.devices = self._register(
            device_role_arn,
            "device",
            "devices",
            iam.statements({device_policy: stack.managed_policies[device_policy]}),
        )
        # EventBridge sends a rule's events to a queue as the service (the queue's policy decides: see events.py)
        self.events = self._register(
            f"arn:aws:iam::{ACCOUNT_ID}:role/{EVENTS_ROLE}",
            "events",
            "EventBridge",
            tuple(
                iam.Statement(
                    source=f"queue policy of {queue}", effect="Allow", actions=("sqs:SendMessage",), resources=(queue,)
                )
                for queue in stack.queue_policies
            ),
        )

    def _register(self, role_arn: str, session: str, name: str, statements: tuple[iam.Statement, ...]) -> Credentials:
        credentials = _session_credentials(role_arn, session)
        role_name = role_arn.rsplit("/", 1)[-1]
        arn = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role_name}/{session}"
        self._principals[credentials.access_key] = Principal(arn=arn, name=name, statements=statements)
        self._credentials[credentials.access_key] = credentials
        return credentials

    def for_function(self, function: Function) -> Credentials:
        return _session_credentials(function.role, function.name)

    def for_role(self, role_arn: str) -> Credentials | None:
        """The credentials a state machine's calls carry; None for a role the template does not define."""
        return self._by_role.get(role_arn)

    def credentials(self, access_key: str) -> Credentials | None:
        """The credentials the runtime issued with this access key (secret key, session token), if it did."""
        return self._credentials.get(access_key)

    def principal(self, access_key: str) -> Principal:
        return self._principals.get(access_key, ADMINISTRATOR)

    def restricted(self) -> list[Principal]:
        """Every principal whose policies come from the template (one per function, state machine, the devices)."""
        seen: dict[str, Principal] = {}
        for principal in self._principals.values():
            seen.setdefault(principal.name, principal)
        return list(seen.values())
