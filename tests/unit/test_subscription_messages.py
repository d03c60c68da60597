"""A WebSocket client's messages: a subscription request, or an answer naming every field that is wrong."""

from __future__ import annotations

import json

import pytest

from longrun.subscriptions import USAGE, InvalidMessage, SubscriptionRequest, parse_message

TASK = "0b8d9c43-1111-4222-8333-944455556666"


@pytest.mark.parametrize(
    ("message", "request_made"),
    [
        ({"action": "subscribe", "task-id": TASK}, SubscriptionRequest("subscribe", TASK)),
        ({"action": "subscribe", "task-id": TASK, "after": 17}, SubscriptionRequest("subscribe", TASK, 17)),
        ({"action": "subscribe", "task-id": TASK, "after": 17.0}, SubscriptionRequest("subscribe", TASK, 17)),
        ({"action": "subscribe", "task-id": TASK, "after": 0}, SubscriptionRequest("subscribe", TASK, 0)),
        ({"action": "unsubscribe", "task-id": TASK, "after": None}, SubscriptionRequest("unsubscribe", TASK)),
    ],
)
def test_a_request_is_read_from_its_message(message: dict[str, object], request_made: SubscriptionRequest) -> None:
    assert parse_message(json.dumps(message)) == request_made


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (None, USAGE),
        ("", USAGE),
        ("{", USAGE),
        ('["subscribe"]', USAGE),
        (json.dumps({"task-id": TASK}), "action: must be subscribe or unsubscribe"),
        (json.dumps({"action": "watch", "task-id": TASK}), "action: must be subscribe or unsubscribe"),
        ('{"action": "subscribe"}', "task-id: must be a task's id"),
        ('{"action": "subscribe", "task-id": 7}', "task-id: must be a task's id"),
        ('{"action": "subscribe", "task-id": "../../x"}', "task-id: must be a task's id"),
        (json.dumps({"action": "subscribe", "task-id": TASK, "after": -1}), "after: must be an event id"),
        (json.dumps({"action": "subscribe", "task-id": TASK, "after": 1.5}), "after: must be an event id"),
        (json.dumps({"action": "subscribe", "task-id": TASK, "after": "3"}), "after: must be an event id"),
        (json.dumps({"action": "subscribe", "task-id": TASK, "after": True}), "after: must be an event id"),
        (json.dumps({"action": "subscribe", "task-id": TASK, "since": 3}), "since: not a field"),
    ],
)
def test_a_message_that_is_not_a_request_is_answered_why(body: str | None, why: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse_message(body)
    assert why in str(refused.value)


def test_every_wrong_field_is_named() -> None:
    with pytest.raises(InvalidMessage) as refused:
        parse_message('{"action": 1, "task-id": null, "after": -2, "x": 0}')
    assert str(refused.value).count(";") == 3
