"""The change feed: a task's state changes (as the table's stream tells them) become numbered events, each made of its
change alone."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from longrun import change_feed, views
from longrun.change_feed import MAX_EVENT_BYTES, View
from longrun.links import Links
from longrun.models import TaskEvent
from longrun.records import (
    DeviceCounts,
    DeviceStatus,
    RecordedOutcome,
    Task,
    TaskDevices,
    TaskEventType,
    TaskSettings,
    TaskStateChange,
    TaskStatus,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LINKS = Links(base="https://api.example.com/v1")
TASK = Task(
    id="0b8d9c43-1111-4222-8333-944455556666",
    kind="script-execution",
    owner="arn:aws:iam::123456789012:user/ops",
    owner_key="k",
    status=TaskStatus.COMPLETE,
    settings=TaskSettings(script_url="scripts/a.sh", timeout_seconds=60, max_concurrency=50),
    device_count=3,
    counts=DeviceCounts(SUCCESS=3),
    created_at=NOW,
    updated_at=NOW,
)
STATUS, PROGRESS, FINISHED = TaskEventType.STATUS_CHANGED, TaskEventType.PROGRESS, TaskEventType.FINISHED


def change(version: int, status: TaskStatus, before: TaskStatus | None, *outcomes: RecordedOutcome, **counts: int):  # type: ignore[no-untyped-def]
    previous = None if before is None else DeviceCounts(PENDING=3)
    return TaskStateChange(
        task_id=TASK.id,
        sequence=str(1000 + version),
        version=version,
        status=status,
        previous_status=before,
        counts=DeviceCounts(**counts),
        previous_counts=previous,
        updated_at=NOW + timedelta(seconds=version),
        outcomes=list(outcomes),
    )


def done(device: str, status: DeviceStatus = DeviceStatus.SUCCESS) -> RecordedOutcome:
    return RecordedOutcome(device_id=device, status=status, exit_code=0 if status is DeviceStatus.SUCCESS else 1)


def no_lists(task: Task) -> tuple[View | None, list[View]]:
    return None, []


IN, OK = TaskStatus.IN_PROGRESS, TaskStatus.COMPLETE


def test_a_whole_run_gives_status_changes_progress_per_change_and_the_end_in_order() -> None:
    changes = [
        change(1, TaskStatus.SUBMITTED, None, PENDING=3),
        change(2, IN, TaskStatus.SUBMITTED, PENDING=3),
        change(3, IN, IN, PENDING=0, RUNNING=3),
        change(4, IN, IN, done("a"), RUNNING=2, SUCCESS=1),
        change(5, IN, IN, done("b", DeviceStatus.FAILED), RUNNING=1, SUCCESS=1, FAILED=1),
        change(6, IN, IN, done("c"), SUCCESS=2, FAILED=1),
        change(7, OK, IN, SUCCESS=2, FAILED=1),
    ]
    events = change_feed.task_events(TASK, changes, LINKS, no_lists)
    assert [(e.type, e.id) for e in events] == [
        (STATUS, 5),
        (STATUS, 9),
        (PROGRESS, 12),
        (PROGRESS, 16),
        (PROGRESS, 20),
        (PROGRESS, 24),
        (STATUS, 29),
        (FINISHED, 30),
    ]
    assert [[d["device-id"] for d in e.devices or []] for e in events[2:6]] == [[], ["a"], ["b"], ["c"]]
    assert events[5].data["percentage"] == 100 and events[5].data["deviceCounts"]["FAILED"] == 1
    assert (
        events[6].data["status"] == OK
        and events[6].data["href"] == f"https://api.example.com/v1/device-management/script-execution/{TASK.id}"
    )
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_a_change_gives_the_same_event_whatever_batch_of_the_stream_brings_it() -> None:
    """Lambda hands a batch again from the change that failed, often with more changes after it: the events of an
    interrupted attempt (kept, or sent to some channels) must be the ones the next attempt makes again."""
    changes = [change(4, IN, IN, done("a"), RUNNING=2, SUCCESS=1), change(5, IN, IN, done("b"), RUNNING=1, SUCCESS=2)]
    alone = change_feed.task_events(TASK, changes[:1], LINKS, no_lists)
    together = change_feed.task_events(TASK, changes, LINKS, no_lists)
    assert [e.body() for e in together[:1]] == [e.body() for e in alone]
    assert [e.id for e in together] == [change_feed.event_id(4, PROGRESS), change_feed.event_id(5, PROGRESS)]


def test_progress_stays_under_64_kb_and_every_outcome_is_sent_once() -> None:
    reason = "x" * 300
    changes = [
        change(
            v,
            IN,
            IN,
            *[RecordedOutcome(device_id=f"d{v}-{n}", status=DeviceStatus.FAILED, reason=reason) for n in range(50)],
            FAILED=v,
        )
        for v in range(10, 20)
    ]
    events = change_feed.task_events(TASK, changes, LINKS, no_lists)
    assert len(events) > 1
    assert all(len(e.body()) <= MAX_EVENT_BYTES for e in events)
    sent = [d["device-id"] for e in events for d in e.devices or []]
    assert len(sent) == len(set(sent)) == 500
    assert [e.id for e in events] == sorted({e.id for e in events})


def test_the_finished_event_carries_the_result_and_leaves_out_lists_that_would_not_fit() -> None:
    ids = [f"device-{n:05d}" for n in range(9000)]
    summary = {
        "id": TASK.id,
        "success-on-devices": ids,
        "failed-on-devices": [],
        "sys-log-location": "s3://b/output/",
        "err-log-location": "s3://b/output/",
        "href": "https://api.example.com/v1/r",
    }
    never = [views.never_started("late")]
    changes = [change(9, OK, IN, SUCCESS=9000)]
    big = change_feed.task_events(TASK, changes, LINKS, lambda task: (summary, never))[-1]
    assert big.type is FINISHED and big.result is not None and big.result["success-on-devices"] == []
    assert big.devices == never and len(big.body()) <= MAX_EVENT_BYTES
    small = summary | {"success-on-devices": ids[:3]}
    fits = change_feed.task_events(TASK, changes, LINKS, lambda task: (small, []))[-1]
    assert fits.result is not None and fits.result["success-on-devices"] == ids[:3]
    body = json.loads(fits.body())
    assert set(body) == {"type", "id", "time", "task-id", "owner", "data", "result"}
    assert "device-ids" not in body["data"]


def test_the_bus_carries_status_changes_and_progress_only_at_each_whole_ten_percent() -> None:
    events = change_feed.task_events(TASK, [change(4, IN, IN, done("a"), PENDING=7, SUCCESS=3)], LINKS, no_lists)
    assert change_feed.bus_worthy(events[0], previous_percentage=25)  # 25% -> 30%
    assert not change_feed.bus_worthy(events[0], previous_percentage=30)
    status = change_feed.task_events(TASK, [change(2, IN, TaskStatus.SUBMITTED, PENDING=3)], LINKS, no_lists)
    assert change_feed.bus_worthy(status[0], previous_percentage=0)


def test_devices_that_never_started_are_named_from_the_outcome_letters() -> None:
    never = change_feed.never_started(["a", "b", 3], "SNN")
    assert [(d["device-id"], d["status"]) for d in never] == [("b", "NOT_STARTED"), (3, "NOT_STARTED")]


def test_a_device_recorded_not_started_is_not_named_again_at_the_end() -> None:
    """SSM never sent it the script: its record told it in a progress event already; the finished event names only
    the devices without a record."""
    never = change_feed.never_started(["a", "b", 3], "SNN", recorded={1})
    assert [d["device-id"] for d in never] == [3]
    assert change_feed.not_started("SNN") == [1, 2]


@pytest.mark.parametrize("finished_at", [NOW, NOW.replace(microsecond=123456), None])
def test_every_event_is_what_the_contract_documents_and_as_the_api_would_write_it(finished_at: datetime | None) -> None:
    """The change feed builds its events without pydantic; longrun.models.TaskEvent documents them: each body
    validates against it, and the model writes it back byte for byte (field names, order, dates, left-out fields)."""
    task = TASK if finished_at is None else replace(TASK, started_at=finished_at, completed_at=finished_at)
    summary = views.result_summary(
        replace(task, status=OK),
        TaskDevices(ids=["a", "é-ü", 3], outcomes="SFN"),
        LINKS,
        "s3://b/output/0b8d9c43-1111-4222-8333-944455556666/",
    )
    changes = [
        change(2, IN, TaskStatus.SUBMITTED, PENDING=3),
        change(4, IN, IN, done("a"), done("é-ü", DeviceStatus.FAILED), RUNNING=1, SUCCESS=1, FAILED=1),
        change(7, OK, IN, SUCCESS=2, FAILED=1),
    ]
    events = change_feed.task_events(task, changes, LINKS, lambda _: (summary, [views.never_started(3)]))
    assert [e.type for e in events] == [STATUS, PROGRESS, STATUS, FINISHED]
    for event in events:
        body = event.body()
        assert TaskEvent.model_validate_json(body).model_dump_json(by_alias=True) == body
