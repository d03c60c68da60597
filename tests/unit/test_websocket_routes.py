"""How the local WebSocket API selects a message's route: its route selection expression on the JSON body, as the
API Gateway Developer Guide's "Route selection expressions" evaluates it."""

from __future__ import annotations

import pytest

from local_runtime.websocket_gateway import select_route

MESSAGE = '{"service": "chat", "action": "join", "data": {"room": "room1234", "size": 5}}'


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ("$request.body.action", "join"),
        ("${request.body.action}", "join"),
        ("${request.body.service}/${request.body.action}", "chat/join"),
        ("$request.body.data.room", "room1234"),
        ("$request.body.data.size", "5"),  # a value that is not a string is stringified
        ("$request.body.missing", None),
        ("$request.body.action.deeper", None),
    ],
)
def test_the_expression_selects_from_the_json_body(expression: str, selected: str | None) -> None:
    assert select_route(expression, MESSAGE) == selected


@pytest.mark.parametrize("message", ["not json", b"\x00\xff binary", "", "[1, 2]"])
def test_a_message_the_expression_cannot_evaluate_selects_nothing(message: str | bytes) -> None:
    assert select_route("$request.body.action", message) is None


def test_a_binary_message_holding_json_selects_as_text_does() -> None:
    assert select_route("$request.body.action", MESSAGE.encode()) == "join"
