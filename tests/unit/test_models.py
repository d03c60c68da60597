from __future__ import annotations

import pytest
from pydantic import ValidationError

from longrun.models import ScriptExecutionRequest
from longrun.records import DeviceCounts, DeviceStatus, TaskStatus


def request(**fields: object) -> ScriptExecutionRequest:
    return ScriptExecutionRequest.model_validate({"device-ids": ["web-1"], "script-url": "scripts/a.sh", **fields})


def test_device_ids_may_be_strings_or_integers_and_keep_their_type() -> None:
    parsed = request(**{"device-ids": ["web-1", 3, "mi-0123456789abcdef0"]})
    assert parsed.device_ids == ["web-1", 3, "mi-0123456789abcdef0"]
    assert parsed.model_dump(by_alias=True)["device-ids"] == ["web-1", 3, "mi-0123456789abcdef0"]


def test_defaults() -> None:
    parsed = request()
    assert (parsed.timeout_seconds, parsed.max_concurrency) == (600, 50)
    assert (parsed.max_errors, parsed.deadline_seconds) == (None, None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max-concurrency": "10%"}, ("10%", None)),
        ({"max-concurrency": "100%", "max-errors": 0}, ("100%", 0)),
        ({"max-concurrency": 3, "max-errors": "0%"}, (3, "0%")),
    ],
)
def test_limits_are_numbers_or_percentages(fields: dict[str, object], expected: tuple[object, object]) -> None:
    parsed = request(**fields)
    assert (parsed.max_concurrency, parsed.max_errors) == expected


def test_every_status_has_its_own_letter() -> None:
    assert {DeviceStatus.from_letter(s.letter) for s in DeviceStatus} == set(DeviceStatus)


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"device-ids": []}, "device-ids"),
        ({"device-ids": ["a", "a"]}, "device-ids"),
        ({"device-ids": ["3", 3]}, "device-ids"),
        ({"device-ids": [True]}, "device-ids"),
        ({"device-ids": [-1]}, "device-ids"),
        ({"device-ids": [1.5]}, "device-ids"),
        ({"device-ids": ["has space"]}, "device-ids"),
        ({"device-ids": "web-1"}, "device-ids"),
        ({"script-url": ""}, "script-url"),
        ({"script-url": "scripts/../etc/passwd"}, "script-url"),
        ({"script-url": "/scripts/a.sh"}, "script-url"),
        ({"script-url": "s3://bucket-only"}, "script-url"),
        ({"script-url": 7}, "script-url"),
        ({"timeout-seconds": 0}, "timeout-seconds"),
        ({"timeout-seconds": "30"}, "timeout-seconds"),
        ({"timeout-seconds": 28_801}, "timeout-seconds"),  # AWS-RunRemoteScript's executionTimeout: 8 hours at most
        ({"max-concurrency": 0}, "max-concurrency"),
        ({"max-concurrency": "0%"}, "max-concurrency"),
        ({"max-concurrency": "101%"}, "max-concurrency"),
        ({"max-concurrency": "ten"}, "max-concurrency"),
        ({"max-errors": -1}, "max-errors"),
        ({"max-errors": "5"}, "max-errors"),
        ({"deadline-seconds": 0}, "deadline-seconds"),
        ({"deadline-seconds": "60"}, "deadline-seconds"),
        ({"device-ids": ["x" * 65]}, "device-ids"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_requests_name_the_field(fields: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as raised:
        request(**fields)
    assert where in {str(error["loc"][0]) for error in raised.value.errors()}


def test_a_device_may_run_for_eight_hours() -> None:
    assert request(**{"timeout-seconds": 28_800}).timeout_seconds == 28_800


def test_too_many_devices() -> None:
    with pytest.raises(ValidationError):
        request(**{"device-ids": [f"d{i}" for i in range(10_001)]})


def test_counts_total_and_unfinished() -> None:
    counts = DeviceCounts(PENDING=2, RUNNING=1, SUCCESS=3, FAILED=1, NOT_STARTED=1)
    assert (counts.total, counts.unfinished) == (8, 3)


def test_which_statuses_are_finished() -> None:
    finished = {TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT}
    assert {s for s in TaskStatus if s.finished} == finished
    assert {s for s in DeviceStatus if not s.finished} == {DeviceStatus.PENDING, DeviceStatus.RUNNING}
