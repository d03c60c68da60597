"""The change feed: what the table's stream says about a task becomes the events every push channel delivers.

Each write to a task's state counts up its version and carries the outcomes of the devices it records, so each
change is numbered by the task itself: an event's id is ``version * 4 + kind`` (0 progress, 1 status change,
2 finished). Ids increase with the task's changes and stay the same when the stream delivers a change again, so a
receiver drops an id it has seen and orders by id.

Each change that only moves counts is one progress event, carrying the outcomes it recorded (a write records a batch
of outcomes at most: its event stays far below 64 KB); a status change is its status-changed event, then (on a
finishing status) the finished event with the result summary. An event is made of its change alone, never of the
changes the same read of the stream holds: Lambda hands a batch again from the change that failed, often with more
changes after it, and an event made of several changes would then come out with another id, covering other devices,
than the one an interrupted attempt had already kept or sent (a device told twice, a kept event never pushed).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from longrun import channels, views
from longrun.links import Links
from longrun.records import DeviceStatus, RecordedOutcome, Task, TaskEventType, TaskStateChange

MAX_EVENT_BYTES = 64 * 1024
"""No event is larger: a WebSocket message stops at 128 KB, an EventBridge entry at 256 KB"""
EVENT_KINDS = {TaskEventType.PROGRESS: 0, TaskEventType.STATUS_CHANGED: 1, TaskEventType.FINISHED: 2}
IDS_PER_VERSION = 4
View = dict[str, Any]
"""A part of an event as the contract's JSON (longrun.views)"""
FinishedLists = Callable[[Task], tuple[View | None, list[View]]]
"""For a finished task: its result summary, and the devices that never started"""


@dataclass(frozen=True, kw_only=True)
class TaskEvent:
    """A change of a task, as every push channel delivers it: ``body()`` is its JSON, which longrun.models.TaskEvent
    documents (the tests check one against the other)."""

    type: TaskEventType
    id: int
    time: datetime
    task_id: str
    owner: str
    data: View
    """The task's state at the change (views.state_view)"""
    devices: list[View] | None = None
    result: View | None = None

    def body(self) -> str:
        fields = views.present(
            {
                "type": self.type.value,
                "id": self.id,
                "time": views.json_time(self.time),
                "task-id": self.task_id,
                "owner": self.owner,
                "data": self.data,
                "devices": self.devices,
                "result": self.result,
            }
        )
        return channels.dumps(fields)


def event_id(version: int, kind: TaskEventType) -> int:
    return version * IDS_PER_VERSION + EVENT_KINDS[kind]


def shown_by_state(task: Task) -> int:
    """The last event id a client that was shown the task as it is now has no need of: every event of its version
    and before, except that a finished task's status change and end are still sent (its end is the stream's)."""
    if task.status.finished:
        return event_id(task.version, TaskEventType.PROGRESS) - 1
    return event_id(task.version + 1, TaskEventType.PROGRESS) - 1


def task_events(task: Task, changes: list[TaskStateChange], links: Links, finished: FinishedLists) -> list[TaskEvent]:
    """The events of one task's changes (in stream order). ``task`` is the task as it is now: its settings, owner
    and reason; each event shows the state the task had at its change."""
    events: list[TaskEvent] = []
    for change in changes:
        at = _at(task, change)
        if change.previous_status is None or change.status is not change.previous_status:
            events.append(_event(TaskEventType.STATUS_CHANGED, at, change, links))
            if change.status.finished:
                result, never_started = finished(at)
                events.append(_finished(at, change, links, result, never_started))
        else:
            told = [_told(outcome) for outcome in change.outcomes]
            events.append(_event(TaskEventType.PROGRESS, at, change, links, told))
    return events


def bus_worthy(event: TaskEvent, previous_percentage: int | None) -> bool:
    """Whether the event bus carries an event: every status change and end, progress only when it crosses a whole
    ten percent (the bus costs per event; WebSocket and webhooks carry every progress event)."""
    if event.type is not TaskEventType.PROGRESS:
        return True
    return previous_percentage is None or event.data["percentage"] // 10 > previous_percentage // 10


def _at(task: Task, change: TaskStateChange) -> Task:
    return replace(
        task,
        status=change.status,
        counts=change.counts,
        version=change.version,
        updated_at=change.updated_at,
        started_at=change.started_at,
        completed_at=change.completed_at,
    )


def _event(
    kind: TaskEventType,
    task: Task,
    change: TaskStateChange,
    links: Links,
    devices: list[View] | None = None,
    result: View | None = None,
) -> TaskEvent:
    return TaskEvent(
        type=kind,
        id=event_id(change.version, kind),
        time=change.updated_at,
        task_id=task.id,
        owner=task.owner,
        data=views.state_view(task, links),
        devices=devices,
        result=result,
    )


def _told(outcome: RecordedOutcome) -> View:
    return views.device_outcome(outcome.device_id, outcome.status, outcome.exit_code, outcome.reason)


def _finished(
    task: Task,
    change: TaskStateChange,
    links: Links,
    result: View | None,
    never_started: list[View],
) -> TaskEvent:
    event = _event(TaskEventType.FINISHED, task, change, links, never_started or None, result)
    if result is not None and _size(event) > MAX_EVENT_BYTES:
        event = replace(event, result=result | {"success-on-devices": [], "failed-on-devices": []})
    if _size(event) > MAX_EVENT_BYTES:
        event = replace(event, devices=None)  # a huge fleet that never started: the result has it
    return event


def _size(event: TaskEvent) -> int:
    return len(event.body())


def not_started(letters: str | None) -> list[int]:
    """The positions of a finished task's devices that did not start, by its outcome letters."""
    skipped = DeviceStatus.NOT_STARTED.letter
    return [index for index, letter in enumerate(letters or "") if letter == skipped]


def never_started(ids: list[str | int], letters: str | None, recorded: Collection[int] = ()) -> list[View]:
    """The devices of a finished task that never started and have no outcome record of their own (a device recorded
    NOT_STARTED, as SSM never sent it the script, was told in a progress event already)."""
    return [views.never_started(ids[index]) for index in not_started(letters) if index not in recorded]
