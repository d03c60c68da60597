"""A task's Server-Sent Events, read as curl -N or EventSource reads them: over HTTP, the chunked body parsed as it
comes, through API Gateway's response streaming and Lambda Web Adapter."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import RESOURCE, Service
from tests.e2e.test_push_channels import OTHER_CALLER, THREE

pytestmark = pytest.mark.e2e
FINISHED = "script-execution.finished"


@dataclass
class Event:
    type: str
    id: int | None
    data: dict[str, Any]
    at: float
    """When it arrived (time.monotonic())"""


class EventStream:
    """One GET of a task's events, its frames parsed as they arrive."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def events(self) -> Iterator[Event]:
        """Each event as soon as its frame has come (comments and retry skipped), until the body ends."""
        buffer = b""
        while data := self.response.read1(1 << 16):
            buffer += data
            while b"\n\n" in buffer:
                frame, _, buffer = buffer.partition(b"\n\n")
                fields: dict[str, list[str]] = {}
                for line in frame.decode().split("\n"):
                    if line and not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields.setdefault(name, []).append(value.removeprefix(" "))
                if "data" in fields:
                    event_id = fields.get("id", [None])[-1]
                    yield Event(
                        type=fields.get("event", ["message"])[-1],
                        id=int(event_id) if event_id is not None else None,
                        data=json.loads("\n".join(fields["data"])),
                        at=time.monotonic(),
                    )
        assert buffer == b"", buffer


@contextmanager
def stream(service: Service, task_id: str, **headers: str) -> Iterator[EventStream]:
    """GET .../{task_id}/events with Accept: text/event-stream; the connection closes on leaving."""
    url = urlsplit(f"{service.api}{RESOURCE}/{task_id}/events")
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.netloc, timeout=20)
    try:
        connection.request("GET", url.path, headers={"Accept": "text/event-stream", **headers})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.headers["Content-Type"] == "text/event-stream"
        yield EventStream(response)
    finally:
        connection.close()


def invocations(service: Service) -> int:
    """The stream function's invocations so far, as the local runtime's meter counts them."""
    return int(service.local("meter")["lambdaInvocations"].get("EventStreamFunction", 0))


@pytest.fixture(scope="module")
def warm(service: Service) -> None:
    """An execution environment of the stream's function is ready, so a stream opens right after a submit."""
    missing = service.request("GET", f"{RESOURCE}/{uuid.uuid4()}/events", Accept="text/event-stream")
    assert missing.status == 404, missing.body


def test_a_stream_sends_the_state_then_each_change_and_closes_after_the_end(service: Service, warm: None) -> None:
    before = invocations(service) if service.process else 0
    task = service.submit(**{"device-ids": THREE, "script-url": "scripts/fail-on-db.sh"})
    with stream(service, task["id"]) as events:
        state, *rest = events.events()
        assert events.response.isclosed()  # the server ended the body after the last event
    assert (state.type, state.id, state.data["id"]) == ("state", None, task["id"])
    assert all(e.id == e.data["id"] and e.type == e.data["type"] for e in rest)
    assert [e.id for e in rest] == sorted({e.id for e in rest if e.id is not None})
    changes = [e.data["data"]["status"] for e in rest if e.type == "script-execution.status-changed"]
    statuses = [state.data["status"], *changes]
    assert len(statuses) >= 2 and statuses == ["SUBMITTED", "IN_PROGRESS", "COMPLETE"][-len(statuses) :]
    progress = [e for e in rest if e.type == "script-execution.progress"]
    outcomes = [(device["device-id"], device["status"]) for e in progress for device in e.data["devices"]]
    assert sorted(outcomes) == [("db-1", "FAILED"), ("web-1", "SUCCESS"), ("web-2", "SUCCESS")]
    assert rest[-1].type == FINISHED and rest[-1].data["result"]["failed-on-devices"] == ["db-1"]
    assert rest[-1].at - state.at > 0.2, "the events came all at once, not as they happened"
    if service.process:  # one more invocation of the stream's function, metered as any
        deadline = time.monotonic() + 5
        while invocations(service) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert invocations(service) == before + 1


def test_a_client_that_reconnects_with_its_last_event_id_gets_every_later_event_once(
    service: Service, warm: None
) -> None:
    task = service.submit(**{"device-ids": THREE, "script-url": "scripts/hello.sh"})
    with stream(service, task["id"]) as dropped:
        seen = next(e for e in dropped.events() if e.id is not None)
    assert seen.type != FINISHED
    with stream(service, task["id"], **{"Last-Event-ID": str(seen.id)}) as resumed:
        state, *rest = resumed.events()
    with stream(service, task["id"], **{"Last-Event-ID": "0"}) as replayed:
        kept = [e.id for e in replayed.events() if e.id is not None]
    assert state.type == "state" and rest[-1].type == FINISHED
    ids = [e.id for e in rest]
    assert len(ids) == len(set(ids)), "an event came twice"
    assert ids == [i for i in kept if i > seen.id], "an event was lost"
    assert seen.id in kept
    ended = service.request(  # EventSource reconnects after the end: 204 tells it nothing more will come
        "GET", f"{RESOURCE}/{task['id']}/events", **{"Accept": "text/event-stream", "Last-Event-ID": str(ids[-1])}
    )
    assert ended.status == 204 and ended.body is None


def test_another_callers_task_a_bad_last_event_id_and_no_event_stream_accepted_are_problems(service: Service) -> None:
    path = f"{RESOURCE}/{service.submit()['id']}/events"
    other = service.request("GET", path, caller=OTHER_CALLER, Accept="text/event-stream")
    bad = service.request("GET", path, **{"Accept": "text/event-stream", "Last-Event-ID": "abc"})
    json_only = service.request("GET", path, Accept="application/json")
    for reply, status in ((other, 404), (bad, 400), (json_only, 406)):
        assert (reply.status, reply.body["status"]) == (status, status), reply.body
        assert reply.headers["Content-Type"] == "application/problem+json"
