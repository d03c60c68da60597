"""Following a task over the WebSocket API: subscribe, read its events as they are pushed, and resume after the
last event seen when the connection drops (API Gateway closes idle connections after 10 minutes and any after 2
hours)."""

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
        self._seen: set[int] = set()

    def follow(self) -> Iterator[Progress]:
        """The task's changes until its ``finished`` event; each event once, whatever the channel repeats."""
        failures = 0
        opened = False
        while True:
            try:
                with self._open() as websocket:
                    opened = True
                    for progress in self._read(websocket):
                        failures = 0
                        yield progress
                        if progress.finished:
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
        subscribe: dict[str, Any] = {"action": "subscribe", "task-id": self._task_id}
        if self._after is not None:
            subscribe["after"] = self._after
        websocket.send(json.dumps(subscribe))
        while True:
            try:
                message = json.loads(websocket.recv(timeout=self._remaining()))
            except TimeoutError as error:
                raise WaitTimeout(f"task {self._task_id} had not finished in time") from error
            kind = message.get("type")
            if kind == "error":
                status = int(message.get("status", 400))
                if status >= 500:  # subscribing met a fault: subscribe again, after the last event seen
                    raise SubscribeAgain(message.get("detail") or message.get("title") or "subscribe again")
                raise error_for(
                    Problem(title=message.get("title", "Refused"), status=status, detail=message.get("detail"))
                )
            if kind == "subscribed":
                yield Progress(state=ScriptExecutionState.model_validate(message["data"]))
            elif kind in set(TaskEventType):
                event = TaskEvent.model_validate(message)
                if event.id in self._seen:
                    continue
                self._seen.add(event.id)
                self._after = max(self._after or 0, event.id)
                yield Progress(state=event.data, devices=event.devices or [], event=event)

    def _remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
