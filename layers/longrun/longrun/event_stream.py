"""Server-Sent Events of one task: the current state first, then each of the task's events as the publisher keeps
it (``id:`` the event id, ``event:`` its type, ``data:`` its body), closing after ``script-execution.finished``.

A client that reconnects sends ``Last-Event-ID`` and resumes right after that event. A stream lasts at most about
14 minutes (API Gateway ends a streamed response at 15): the client reconnects with Last-Event-ID, as EventSource
does on its own. The stream reads the task's kept events four times a second; asking for a stream first makes the
publisher keep every event of the task, so none is missed between reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from longrun import change_feed, channels
from longrun.errors import BadRequest, TaskNotFound
from longrun.links import Links
from longrun.records import SCRIPT_EXECUTION, Owner, TaskEventType
from longrun.store import TaskStore, owner_digest
from longrun.views import state_view

POLL_SECONDS = 0.25
"""How often a stream reads the task's kept events: a query (half a read unit) four times a second, $0.0018 an hour.
Reading more often saves little here: a change reaches the kept events a poll of the table's stream after it is made"""
KEEP_ALIVE_SECONDS = 15.0
LONGEST_STREAM_SECONDS = 14 * 60
RETRY_MILLISECONDS = 1000


class EventStream:
    def __init__(self, store: TaskStore, links: Links) -> None:
        self._store = store
        self._links = links

    def open(self, owner: Owner, task_id: str, last_event_id: str | None) -> Iterator[str] | None:
        """Check the caller may read the task (TaskNotFound, BadRequest otherwise), then answer its frames; None when
        nothing is left to send: the task has finished and the client has its last event (a reconnecting EventSource,
        which 204 No Content stops)."""
        after = None
        if last_event_id is not None:
            if not last_event_id.isdigit():
                raise BadRequest("Last-Event-ID is not an event id of this stream")
            after = int(last_event_id)
        task = self._store.get_task(task_id)
        if task is None or task.owner_key != owner_digest(owner.key) or task.kind != SCRIPT_EXECUTION:
            raise TaskNotFound(f"no script-execution task {task_id}")
        if after is not None and task.status.finished and self._has_the_end(task_id, after):
            return None
        if not task.events_kept:
            self._store.keep_events(task_id)
        return self._frames(task_id, after)

    def _has_the_end(self, task_id: str, after: int) -> bool:
        """Whether a client that saw the event ``after`` has the task's end: its finished event is kept (the task's
        row can say it has finished before the publisher has kept its events) and is not after ``after``."""
        last = self._store.last_event(task_id)
        if last is None:
            return False
        event = json.loads(last)
        return event["type"] == TaskEventType.FINISHED.value and int(event["id"]) <= after

    def _frames(self, task_id: str, after: int | None) -> Iterator[str]:
        task = self._store.get_task(task_id)
        if task is None:
            return
        state = channels.dumps(state_view(task, self._links))
        yield f"retry: {RETRY_MILLISECONDS}\nevent: state\ndata: {state}\n\n"
        if after is None:
            after = change_feed.shown_by_state(task)
        started = last_sent = time.monotonic()
        while time.monotonic() - started < LONGEST_STREAM_SECONDS:
            for body in self._store.events_after(task_id, after):
                event = json.loads(body)
                after = int(event["id"])
                last_sent = time.monotonic()
                yield f"id: {after}\nevent: {event['type']}\ndata: {body}\n\n"
                if event["type"] == TaskEventType.FINISHED.value:
                    return
            if time.monotonic() - last_sent > KEEP_ALIVE_SECONDS:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(POLL_SECONDS)
