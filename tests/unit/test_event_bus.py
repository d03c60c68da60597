"""The local default bus: SSM's events reach CommandEventsFunction's queue only as EventBridge would send them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

from local_runtime import template
from local_runtime.events import EventBus
from local_runtime.lambdas import LambdaBridge
from tests.conftest import ROOT

INVOCATION_ENDED = {
    "source": "aws.ssm",
    "detail-type": "EC2 Command Invocation Status-change Notification",
    "detail": {"command-id": "c", "instance-id": "mi-0", "document-name": "AWS-RunRemoteScript", "status": "Success"},
}


def deliveries(stack: template.LocalStack, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []
    bus = EventBus(stack, cast(LambdaBridge, None), lambda queue, body: sent.append((queue, json.loads(body))))
    delivered = bus.put(event)
    bus.close()  # the sends are made apart from the caller: wait for them
    assert delivered == len(sent)
    return sent


def test_a_matching_event_is_sent_to_the_rule_s_queue_as_its_body() -> None:
    stack = template.load(ROOT, "longrun", "us-east-1")
    assert deliveries(stack, INVOCATION_ENDED) == [(stack.arn("CommandEventsQueue"), INVOCATION_ENDED)]
    running = INVOCATION_ENDED | {"detail": INVOCATION_ENDED["detail"] | {"status": "InProgress"}}
    assert deliveries(stack, running) == []


def test_without_the_queue_s_policy_the_event_is_dropped() -> None:
    stack = dataclasses.replace(template.load(ROOT, "longrun", "us-east-1"), queue_policies={})
    assert deliveries(stack, INVOCATION_ENDED) == []
