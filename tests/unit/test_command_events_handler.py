"""CommandEventsFunction's handler: queued SSM events grouped by command, each command's device reports recorded
together, and only the messages to retry reported back to Lambda."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from longrun.workflow import InvocationStillRunning, Recorded
from tests.conftest import function_module
from tests.integration.test_api import Context

INVOCATION = "EC2 Command Invocation Status-change Notification"
COMMAND = "EC2 Command Status-change Notification"


def message(number: int, kind: str, command: str, node: str | None = None) -> dict[str, Any]:
    detail = {"command-id": command, "status": "Success"} | ({"instance-id": node} if node else {})
    return {"messageId": f"m{number}", "body": json.dumps({"detail-type": kind, "detail": detail})}


@dataclass
class Workflow:
    still_running: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    devices: list[set[tuple[str, str]]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    def record_outcomes(self, reports: dict[tuple[str, str], list[str]]) -> Recorded:
        if any(command in self.failing for command, _ in reports):
            raise TimeoutError("DynamoDB did not answer")
        self.devices.append(set(reports))
        return Recorded(frozenset({"task"}), frozenset(run for run in reports if run[1] in self.still_running))

    def record_command(self, command_id: str) -> str:
        if command_id in self.failing:
            raise InvocationStillRunning("SSM still lists a run as going")
        self.commands.append(command_id)
        return "task"


def handle(workflow: Workflow, monkeypatch: pytest.MonkeyPatch, *messages: dict[str, Any]) -> set[str]:
    module = function_module("command_events")
    monkeypatch.setattr(module, "workflow", lambda: workflow)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    answer = module.handler({"Records": list(messages)}, Context())
    return {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}


def test_a_batch_s_device_reports_are_recorded_together_and_a_repeat_once(monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = Workflow()
    failed = handle(
        workflow,
        monkeypatch,
        message(1, INVOCATION, "c1", "mi-1"),
        message(2, INVOCATION, "c2", "mi-7"),
        message(3, INVOCATION, "c1", "mi-2"),
        message(4, INVOCATION, "c1", "mi-1"),  # SQS delivers at least once
        message(5, COMMAND, "c1"),
    )
    assert failed == set()
    assert workflow.devices == [{("c1", "mi-1"), ("c1", "mi-2"), ("c2", "mi-7")}]
    assert workflow.commands == ["c1"]  # after its devices' own reports


def test_only_the_messages_that_cannot_be_recorded_yet_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = Workflow(still_running={"mi-2"}, failing={"c3"})
    failed = handle(
        workflow,
        monkeypatch,
        message(1, INVOCATION, "c1", "mi-1"),
        message(2, INVOCATION, "c1", "mi-2"),  # SSM's record lags its event
        message(3, INVOCATION, "c1", "mi-2"),  # and a repeat of it
        message(5, COMMAND, "c3"),  # a run of it still going
        message(6, COMMAND, "c1"),
    )
    assert failed == {"m2", "m3", "m5"}
    assert workflow.commands == ["c1"]


def test_when_the_devices_cannot_be_recorded_each_of_their_messages_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = Workflow(failing={"c2"})
    failed = handle(workflow, monkeypatch, message(1, INVOCATION, "c1", "mi-1"), message(2, INVOCATION, "c2", "mi-5"))
    assert failed == {"m1", "m2"}
