"""WebSocket subscribers of tasks' events: connect, subscribe to a task (resuming after an event id), unsubscribe,
disconnect. The publisher (longrun.push) sends each subscriber its tasks' events as they happen."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from longrun import change_feed, channels
from longrun.config import Settings
from longrun.links import Links
from longrun.models import SubscriptionRequest
from longrun.push import send_to_connection
from longrun.records import Owner
from longrun.store import TaskStore, utc_now
from longrun.tasks import KIND, state_view

CONNECTION_LIFETIME = timedelta(hours=2, minutes=10)
"""API Gateway closes a WebSocket after 2 hours: its records outlive it a little, then expire (TTL)"""


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
        then the kept events after ``after`` (or after what that state shows), and from then on every event the
        publisher sends it; the two can overlap, and the event ids tell the repeats."""
        try:
            request = SubscriptionRequest.model_validate(json.loads(body or ""))
        except (ValueError, ValidationError) as error:
            return self._send(connection_id, [_error(400, "Invalid message", _describe(error))])
        owner_key = self._store.connection_owner(connection_id)
        if owner_key is None:
            return self._send(connection_id, [_error(410, "Connection unknown", "this connection is not registered")])
        task = self._store.get_task(request.task_id)
        if task is None or task.owner_key != owner_key or task.kind != KIND:
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
            "data": state_view(task, self._links).model_dump(mode="json", by_alias=True),
        }
        after = request.after if request.after is not None else change_feed.shown_by_state(task)
        replay = self._store.events_after(task.id, after)
        if not self._send(connection_id, [channels.dumps(subscribed), *replay]):
            return False
        # Only now does the publisher send this connection events: the kept ones it missed meanwhile come next
        self._store.subscribe(connection_id, task.id, utc_now() + CONNECTION_LIFETIME)
        seen = max([after, *(json.loads(event)["id"] for event in replay)])
        return self._send(connection_id, self._store.events_after(task.id, seen))

    def _send(self, connection_id: str, messages: list[str]) -> bool:
        return send_to_connection(self._store, self._config, connection_id, messages)


def _error(status: int, title: str, detail: str, task_id: str | None = None) -> str:
    error: dict[str, Any] = {"type": "error", "status": status, "title": title, "detail": detail}
    if task_id is not None:
        error["task-id"] = task_id
    return channels.dumps(error)


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'message'}: {item['msg']}" for item in error.errors()
        )
    return 'a message is JSON: {"action": "subscribe" | "unsubscribe", "task-id": "...", "after": <event id>}'
