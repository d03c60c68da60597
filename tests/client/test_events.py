"""Following a task over a WebSocket (a fake API Gateway WebSocket served in-process): signed upgrade, events once
each, resume from where the last subscription caught up when the connection drops or the subscription fails, and
polling when there is no WebSocket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.server import Server, ServerConnection, serve

from longrun_client import Client, NotFound
from longrun_client.models import DeviceStatus, TaskEventType
from tests.client.test_client import API, TASK_ID, task_body


def event(kind: TaskEventType, event_id: int, status: str = "IN_PROGRESS", **extra: Any) -> dict[str, Any]:
    state = {key: value for key, value in task_body(status).items() if key != "device-ids"}
    return {
        "type": kind.value,
        "id": event_id,
        "time": "2026-11-27T10:00:02Z",
        "task-id": TASK_ID,
        "owner": "arn:aws:iam::123456789012:user/alice",
        "data": state,
        **extra,
    }


class FakeGateway:
    """Each connection gets the next script of messages; what clients sent and their upgrade headers are kept."""

    def __init__(self, scripts: list[list[dict[str, Any]]]) -> None:
        self.scripts = scripts
        self.subscribes: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.server: Server = serve(self._connection, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/v1"

    def _connection(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        self.authorizations.append(websocket.request.headers.get("Authorization"))
        self.subscribes.append(json.loads(websocket.recv()))
        for message in self.scripts.pop(0):
            websocket.send(json.dumps(message))
        websocket.close()  # a dropped connection, unless the script ended with finished


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setattr("longrun_client.events.time.sleep", lambda _: None)


@pytest.fixture
def gateway(request: pytest.FixtureRequest) -> Iterator[FakeGateway]:
    fake = FakeGateway(request.param)
    yield fake
    fake.server.shutdown()


def final_get(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=task_body("COMPLETE", SUCCESS=1, FAILED=1))


SUBSCRIBED = {"type": "subscribed", "task-id": TASK_ID, "data": event(TaskEventType.PROGRESS, 0)["data"]}
PROGRESS = event(
    TaskEventType.PROGRESS, 9, devices=[{"device-id": "db-1", "status": "FAILED", "exitCode": 3, "reason": "exit 3"}]
)
FINISHED = event(TaskEventType.FINISHED, 14, "COMPLETE", devices=[])


def caught_up(after: int) -> dict[str, Any]:
    return {"type": "caught-up", "task-id": TASK_ID, "after": after}


@pytest.mark.parametrize(
    "gateway", [[[SUBSCRIBED, PROGRESS, caught_up(9)], [SUBSCRIBED, PROGRESS, FINISHED, caught_up(14)]]], indirect=True
)
def test_a_dropped_connection_resumes_after_the_last_event_and_repeats_are_dropped(gateway: FakeGateway) -> None:
    client = Client(API, websocket_url=gateway.url, transport=httpx.MockTransport(final_get))
    seen: list[Any] = []
    task = client.wait(TASK_ID, timeout=30, on_progress=seen.append)
    assert task.status.value == "COMPLETE"
    assert [s.get("after") for s in gateway.subscribes] == [None, 9]
    events = [progress.event.type for progress in seen if progress.event]
    assert events == [TaskEventType.PROGRESS, TaskEventType.FINISHED]  # event 9 came twice, shown once
    assert seen[1].devices[0].status is DeviceStatus.FAILED and seen[1].devices[0].exit_code == 3
    assert all(header and header.startswith("AWS4-HMAC-SHA256 ") for header in gateway.authorizations)


SUBSCRIBE_AGAIN = {"type": "error", "status": 503, "title": "Subscribe again", "detail": "subscribing did not complete"}


@pytest.mark.parametrize(
    "gateway",
    [
        [
            [SUBSCRIBED, PROGRESS, caught_up(9)],
            [SUBSCRIBED, FINISHED, SUBSCRIBE_AGAIN],
            [SUBSCRIBED, FINISHED, caught_up(14)],
        ]
    ],
    indirect=True,
)
def test_a_subscription_that_met_a_fault_is_made_again_from_where_the_last_caught_up(gateway: FakeGateway) -> None:
    """The publisher's events can come before the kept ones a subscription has still to send: the finished event
    (14) came, but not what the failed subscription would have sent before its caught-up, so the client subscribes
    again after 9, not after 14."""
    client = Client(API, websocket_url=gateway.url, transport=httpx.MockTransport(final_get))
    assert client.wait(TASK_ID, timeout=30).status.value == "COMPLETE"
    assert [s.get("after") for s in gateway.subscribes] == [None, 9, 9]


@pytest.mark.parametrize(
    "gateway", [[[SUBSCRIBED, PROGRESS, FINISHED], [SUBSCRIBED, PROGRESS, FINISHED, caught_up(14)]]], indirect=True
)
def test_the_finished_event_ends_following_only_once_the_subscription_has_caught_up(gateway: FakeGateway) -> None:
    client = Client(API, websocket_url=gateway.url, transport=httpx.MockTransport(final_get))
    seen: list[Any] = []
    assert client.wait(TASK_ID, timeout=30, on_progress=seen.append).status.value == "COMPLETE"
    assert [s.get("after") for s in gateway.subscribes] == [None, None]
    assert [progress.event.id for progress in seen if progress.event] == [9, 14]


@pytest.mark.parametrize(
    "gateway", [[[{"type": "error", "status": 404, "title": "Task not found", "detail": "no task"}]]], indirect=True
)
def test_an_error_frame_raises_the_problem(gateway: FakeGateway) -> None:
    client = Client(API, websocket_url=gateway.url, transport=httpx.MockTransport(final_get))
    with pytest.raises(NotFound, match="no task"):
        client.wait(TASK_ID, timeout=30)


def test_without_a_websocket_to_be_had_it_polls() -> None:
    client = Client(API, websocket_url="ws://127.0.0.1:9/v1", transport=httpx.MockTransport(final_get))
    assert client.wait(TASK_ID, timeout=30).status.value == "COMPLETE"
