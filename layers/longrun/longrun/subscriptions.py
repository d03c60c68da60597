"""WebSocket subscribers of tasks' events: connect, subscribe to a task (resuming after an event id), unsubscribe,
disconnect. The publisher (longrun.push) sends each subscriber its tasks' events as they happen."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from longrun import change_feed, channels
from longrun.config import Settings
from longrun.links import Links
from longrun.push import send_to_connection
from longrun.records import SCRIPT_EXECUTION, Owner
from longrun.store import TaskStore, utc_now
from longrun.views import state_view

logger = Logger(child=True)
CONNECTION_LIFETIME = timedelta(hours=2, minutes=10)
"""API Gateway closes a WebSocket after 2 hours: its records outlive it a little, then expire (TTL)"""
TASK_ID = re.compile(r"[0-9a-f-]{36}")
MESSAGE_FIELDS = ("action", "task-id", "after")
USAGE = 'a message is JSON: {"action": "subscribe" | "unsubscribe", "task-id": "...", "after": <event id>}'


class InvalidMessage(ValueError):
    """A client's message that is not a subscription request: the client is answered why."""


@dataclass(frozen=True)
class SubscriptionRequest:
    """A WebSocket client's message: subscribe to a task's events (after an event id, to resume), or unsubscribe."""

    action: Literal["subscribe", "unsubscribe"]
    task_id: str
    after: int | None = None
    """Resume after this event id"""


def parse_message(body: str | None) -> SubscriptionRequest:
    """The request a client's message makes, or InvalidMessage naming each field that is wrong (a field it does not
    know is wrong too). Checked by hand: the WebSocket function imports no pydantic for three fields."""
    try:
        message = json.loads(body or "")
    except ValueError:
        raise InvalidMessage(USAGE) from None
    if not isinstance(message, dict):
        raise InvalidMessage(USAGE)
    wrong = [f"{name}: not a field of a subscription request" for name in message if name not in MESSAGE_FIELDS]
    action: Any = message.get("action")
    task_id: Any = message.get("task-id")
    after: Any = message.get("after")
    if action not in ("subscribe", "unsubscribe"):
        wrong.append("action: must be subscribe or unsubscribe")
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        wrong.append("task-id: must be a task's id")
    if isinstance(after, float) and after.is_integer():  # 7.0 is the integer 7, as JSON Schema has it
        after = int(after)
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        wrong.append("after: must be an event id, a whole number 0 or more")
    if wrong:
        raise InvalidMessage("; ".join(wrong))
    return SubscriptionRequest(action=action, task_id=task_id, after=after)


class Subscriptions:
    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config
        self._links = Links(base=config.api_url.rstrip("/"))

    def connect(self, connection_id: str, owner: Owner) -> None:
        self._store.add_connection(connection_id, owner, utc_now() + CONNECTION_LIFETIME)

    def disconnect(self, connection_id: str) -> None:
        self._store.remove_connection(connection_id)

    def receive(self, connection_id: str, body: str | None) -> bool:
        """Act on a client's message and answer it. A subscriber gets ``subscribed`` (the task as it is now) first,
        then the kept events after ``after`` (or after what that state shows), then ``caught-up``, and from then on
        every event the publisher sends it; the two can overlap and interleave until ``caught-up``, and the event ids
        tell the repeats. If AWS fails the subscription midway (past the SDK's retries), the client is told to
        subscribe again (503); if the function dies midway, the client gets no ``caught-up``: either way it
        subscribes again after the ``after`` of its last ``caught-up``."""
        try:
            return self._receive(connection_id, body)
        except (BotoCoreError, ClientError):
            logger.exception("subscription not completed", extra={"connection_id": connection_id})
            retry = "subscribing did not complete; subscribe again, after the event id your last caught-up gave"
            return self._send(connection_id, [_error(503, "Subscribe again", retry)])

    def _receive(self, connection_id: str, body: str | None) -> bool:
        try:
            request = parse_message(body)
        except InvalidMessage as error:
            return self._send(connection_id, [_error(400, "Invalid message", str(error))])
        owner_key = self._store.connection_owner(connection_id)
        if owner_key is None:
            return self._send(connection_id, [_error(410, "Connection unknown", "this connection is not registered")])
        task = self._store.get_task(request.task_id)
        if task is None or task.owner_key != owner_key or task.kind != SCRIPT_EXECUTION:
            missing = _error(404, "Task not found", f"no script-execution task {request.task_id}", request.task_id)
            return self._send(connection_id, [missing])
        if request.action == "unsubscribe":
            self._store.unsubscribe(connection_id, task.id)
            return self._send(connection_id, [channels.dumps({"type": "unsubscribed", "task-id": task.id})])
        if not task.events_kept:  # before the state is read: no event after it can go unkept
            self._store.keep_events(task.id)
            task = self._store.get_task(task.id) or task
        subscribed = {
            "type": "subscribed",
            "task-id": task.id,
            "data": state_view(task, self._links),
        }
        after = request.after if request.after is not None else change_feed.shown_by_state(task)
        replay = self._store.events_after(task.id, after)
        if not self._send(connection_id, [channels.dumps(subscribed), *replay]):
            return False
        # Only now does the publisher send this connection events: the kept ones it missed meanwhile come next, and
        # then caught-up, which tells the client it has every kept event up to its id. Until then the publisher's
        # events can arrive before kept ones they follow: a client that resumes goes on from the last caught-up.
        self._store.subscribe(connection_id, task.id, utc_now() + CONNECTION_LIFETIME)
        seen = _last_id(after, replay)
        missed = self._store.events_after(task.id, seen)
        caught_up = _last_id(seen, missed)
        return self._send(connection_id, [*missed, channels.dumps(_caught_up(task.id, caught_up))])

    def _send(self, connection_id: str, messages: list[str]) -> bool:
        return send_to_connection(self._store, self._config, connection_id, messages)


def _last_id(after: int, events: list[str]) -> int:
    """The id of the last of ``events`` (their JSON bodies, in order), or ``after`` if there are none."""
    return max([after, *(int(json.loads(event)["id"]) for event in events)])


def _caught_up(task_id: str, after: int) -> dict[str, Any]:
    """The subscription's last message: every kept event up to ``after`` has been sent; from now on the publisher
    sends each new one as it happens, in order."""
    return {"type": "caught-up", "task-id": task_id, "after": after}


def _error(status: int, title: str, detail: str, task_id: str | None = None) -> str:
    error: dict[str, Any] = {"type": "error", "status": status, "title": title, "detail": detail}
    if task_id is not None:
        error["task-id"] = task_id
    return channels.dumps(error)
