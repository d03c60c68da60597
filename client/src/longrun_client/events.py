"""Following a task over the WebSocket API: subscribe, read its events as they are pushed, and resume when the
connection drops (API Gateway closes idle connections after 10 minutes and any after 2 hours) or the subscription
fails. A subscription sends the kept events the client missed, then ``caught-up``: until then, events the publisher
pushes meanwhile can come before kept ones they follow, so the client resumes after the id its last ``caught-up``
gave (and after every event it got since), never simply after the largest id it has seen."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from longrun_client.auth import AwsCredentials
from longrun_client.errors import LongrunError, WaitTimeout, error_for
from longrun_client.models import DeviceOutcome, Problem, ScriptExecutionState, TaskEvent, TaskEventType

RECONNECT_ATTEMPTS = 5
"""Reconnections in a row, with no message between them, before the WebSocket is given up for polling"""
RECONNECT_BACKOFF = (0.5, 8.0)
OPEN_TIMEOUT = 10.0
CAUGHT_UP_WAIT = 35.0
"""Seconds to wait for a subscription's caught-up: longer than the subscribe function may run (30 s; API Gateway
gives up on it after 29 s). Without it by then, the function died midway: subscribe again."""


class SubscribeAgain(Exception):
    """The WebSocket API's subscription met a fault (an error of status 5xx): the client subscribes again, as after a
    dropped connection."""


@dataclass
class Progress:
    """One change of a followed task: its state now, and the devices whose outcome the change recorded."""

    state: ScriptExecutionState
    devices: list[DeviceOutcome] = field(default_factory=list)
    event: TaskEvent | None = None
    """The pushed event, when the change came over the WebSocket"""

    @property
    def finished(self) -> bool:
        """The last change: a pushed ``finished`` event (which follows the final status change and lists the
        devices that never started), or a finished state read by polling or on subscribing."""
        if self.event is not None:
            return self.event.type is TaskEventType.FINISHED
        return self.state.status.finished


class Unavailable(LongrunError):
    """The WebSocket could not be opened, or kept dropping: follow the task by polling instead."""


class Subscription:
    def __init__(
        self,
        url: str,
        task_id: str,
        credentials: AwsCredentials,
        token: str | None,
        deadline: float | None,
    ) -> None:
        self._url = url
        self._task_id = task_id
        self._credentials = credentials
        self._token = token
        self._deadline = deadline
        self._after: int | None = None
        """Where to resume: every event up to it has been received"""
        self._seen: set[int] = set()
        self._finished = False

    def follow(self) -> Iterator[Progress]:
        """The task's changes until its ``finished`` event, once the subscription has caught up (or until a finished
        state on subscribing); each event once, whatever the channel repeats."""
        failures = 0
        opened = False
        while True:
            try:
                with self._open() as websocket:
                    opened = True
                    for progress in self._read(websocket):
                        failures = 0
                        yield progress
                    return
            except (ConnectionClosed, InvalidHandshake, OSError, SubscribeAgain) as error:
                failures += 1
                if not opened or failures > RECONNECT_ATTEMPTS:
                    raise Unavailable(f"the WebSocket at {self._url} is unavailable: {error}") from error
                first, largest = RECONNECT_BACKOFF
                time.sleep(random.uniform(0, min(largest, first * 2 ** (failures - 1))))  # noqa: S311 - jitter

    def _open(self) -> ClientConnection:
        headers: dict[str, str] = {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        else:  # $connect is IAM-authorized: the upgrade request is signed like any other
            signed_url = self._url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
            headers = self._credentials.sign("GET", signed_url, {})
        return connect(self._url, additional_headers=headers, open_timeout=OPEN_TIMEOUT)

    def _read(self, websocket: ClientConnection) -> Iterator[Progress]:
        """One subscription's changes; it ends once the task has finished and the subscription has caught up."""
        subscribe: dict[str, Any] = {"action": "subscribe", "task-id": self._task_id}
        if self._after is not None:
            subscribe["after"] = self._after
        websocket.send(json.dumps(subscribe))
        caught_up = False
        received: list[int] = []
        while True:
            message = self._next(websocket, caught_up)
            kind = message.get("type")
            if kind == "error":
                status = int(message.get("status", 400))
                if status >= 500:  # subscribing met a fault: subscribe again, from where the last one caught up
                    raise SubscribeAgain(message.get("detail") or message.get("title") or "subscribe again")
                raise error_for(
                    Problem(title=message.get("title", "Refused"), status=status, detail=message.get("detail"))
                )
            if kind == "subscribed":
                progress = Progress(state=ScriptExecutionState.model_validate(message["data"]))
                yield progress
                if progress.finished:
                    return
            elif kind == "caught-up":
                caught_up = True
                self._after = max([self._after or 0, int(message["after"]), *received])
                if self._finished:
                    return
            elif kind in set(TaskEventType):
                event = TaskEvent.model_validate(message)
                received.append(event.id)
                if caught_up:  # from now on the publisher's events come in order
                    self._after = max(self._after or 0, event.id)
                if event.id in self._seen:
                    continue
                self._seen.add(event.id)
                progress = Progress(state=event.data, devices=event.devices or [], event=event)
                yield progress
                self._finished = self._finished or progress.finished
                if self._finished and caught_up:
                    return

    def _next(self, websocket: ClientConnection, caught_up: bool) -> dict[str, Any]:
        """The next message; until the subscription has caught up, waiting for it no longer than CAUGHT_UP_WAIT."""
        remaining = self._remaining()
        catching_up = not caught_up and (remaining is None or remaining > CAUGHT_UP_WAIT)
        try:
            return dict(json.loads(websocket.recv(timeout=CAUGHT_UP_WAIT if catching_up else remaining)))
        except TimeoutError as error:
            if catching_up:
                raise SubscribeAgain("the subscription did not catch up in time") from error
            raise WaitTimeout(f"task {self._task_id} had not finished in time") from error

    def _remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
