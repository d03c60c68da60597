"""The records the data-access module keeps and the workflow works on, as plain dataclasses.

They hold values already checked: the API checks what a client sends by hand (longrun.api_requests) and shapes its
answers from these records as the contract's JSON (longrun.views), both as the pydantic models of longrun.models
document them. No function reads or writes anything but records, so none imports pydantic, whose import and validators
would be about a third of a cold start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

MAX_BATCH_SIZE = 50
"""Devices per SSM command: SendCommand takes at most 50 node ids."""
SCRIPTS_PREFIX = "scripts/"
"""Where scripts are kept in the deployment's bucket"""
SCRIPT_EXECUTION = "script-execution"
"""The kind of task longrun runs so far (a task record's ``kind``)"""


class TaskStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    """The task's deadline-seconds passed before every device had finished."""

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)


class DeviceStatus(StrEnum):
    """A device's outcome. ``PENDING`` and ``RUNNING`` are the two unfinished states."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    NOT_STARTED = "NOT_STARTED"

    @property
    def finished(self) -> bool:
        return self not in (DeviceStatus.PENDING, DeviceStatus.RUNNING)

    @property
    def letter(self) -> str:
        """One letter per status, to keep a finished task's outcome of every device in a few KB."""
        return _LETTERS[self]

    @classmethod
    def from_letter(cls, letter: str) -> DeviceStatus:
        return _STATUS_OF_LETTER[letter]


_LETTERS = {
    DeviceStatus.PENDING: "P",
    DeviceStatus.RUNNING: "R",
    DeviceStatus.SUCCESS: "S",
    DeviceStatus.FAILED: "F",
    DeviceStatus.TIMED_OUT: "T",
    DeviceStatus.CANCELLED: "C",
    DeviceStatus.NOT_STARTED: "N",
}
_STATUS_OF_LETTER = {letter: status for status, letter in _LETTERS.items()}


class TaskEventType(StrEnum):
    STATUS_CHANGED = "script-execution.status-changed"
    PROGRESS = "script-execution.progress"
    FINISHED = "script-execution.finished"


def device_key(device_id: str | int) -> str:
    """The one string form of a device id: ``3`` and ``"3"`` name the same device."""
    return str(device_id)


def moment(value: str | datetime) -> datetime:
    """A stored date (ISO 8601, as the data-access module writes it) as a datetime."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def optional_moment(value: str | datetime | None) -> datetime | None:
    return None if value is None else moment(value)


@dataclass(kw_only=True)
class DeviceCounts:
    """How many of a task's devices are in each state; the fields always add up to the device total."""

    PENDING: int = 0
    RUNNING: int = 0
    SUCCESS: int = 0
    FAILED: int = 0
    TIMED_OUT: int = 0
    CANCELLED: int = 0
    NOT_STARTED: int = 0

    @classmethod
    def of(cls, counts: dict[str, Any]) -> DeviceCounts:
        """The counts a stored map holds (a status it does not name counts 0)."""
        return cls(**{status.value: int(counts.get(status.value, 0)) for status in DeviceStatus})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(getattr(self, status.value) for status in DeviceStatus)

    @property
    def unfinished(self) -> int:
        return self.PENDING + self.RUNNING


@dataclass(frozen=True, kw_only=True)
class Owner:
    """Who a task belongs to: ``key`` decides who sees it (see the README's "Who owns a task"), ``name`` is how it
    is shown (the caller's ARN or principal)."""

    key: str
    name: str


@dataclass(kw_only=True)
class TaskSettings:
    """How a task runs: its request without the device list."""

    script_url: str
    timeout_seconds: int
    max_concurrency: int | str
    max_errors: int | str | None = None
    deadline_seconds: int | None = None

    @classmethod
    def of(cls, settings: dict[str, Any]) -> TaskSettings:
        return cls(
            script_url=settings["script_url"],
            timeout_seconds=settings["timeout_seconds"],
            max_concurrency=settings["max_concurrency"],
            max_errors=settings.get("max_errors"),
            deadline_seconds=settings.get("deadline_seconds"),
        )

    def as_dict(self) -> dict[str, Any]:
        """The settings that have a value."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(kw_only=True)
class Task:
    """A task record as the data-access module stores it; its device list is kept beside it (TaskDevices)."""

    id: str
    kind: str
    owner: str
    """The owner's name (see Owner)"""
    owner_key: str
    """A digest of the owner's key: the same for every request of the same owner"""
    status: TaskStatus
    status_reason: str | None = None
    settings: TaskSettings
    device_count: int
    counts: DeviceCounts
    execution_arn: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    version: int = 1
    """Counts every change of the task's state"""
    events_kept: bool = False
    """Its progress events are kept: it has had a subscriber"""

    @property
    def deadline_at(self) -> datetime | None:
        if self.settings.deadline_seconds is None:
            return None
        return self.created_at + timedelta(seconds=self.settings.deadline_seconds)


@dataclass(kw_only=True)
class ListedTask:
    """A task as a listing of its owner's tasks shows it (what the owner indexes carry)."""

    id: str
    kind: str
    status: TaskStatus
    status_reason: str | None = None
    script_url: str
    device_count: int
    created_at: datetime
    completed_at: datetime | None = None


@dataclass(kw_only=True)
class TaskDevices:
    """A task's devices in request order and, once it has finished, each one's status."""

    ids: list[str | int]
    outcomes: str | None = None
    """One DeviceStatus letter per device, in request order"""

    def status_of(self, index: int) -> DeviceStatus | None:
        return DeviceStatus.from_letter(self.outcomes[index]) if self.outcomes else None


@dataclass(kw_only=True)
class DeviceRun:
    """One device's run of the script, as the data-access module stores it (about 1 KB or less)."""

    index: int
    """The device's position in the request"""
    device_id: str | int
    status: DeviceStatus
    reason: str | None = None
    node_id: str | None = None
    command_id: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stdout_url: str | None = None

    @property
    def stderr_url(self) -> str | None:
        """SSM puts a plugin's stderr beside its stdout."""
        return self.stdout_url.removesuffix("stdout") + "stderr" if self.stdout_url else None


@dataclass(kw_only=True)
class Batch:
    """Up to one SSM command's worth of devices, and the workflow's token that waits for them."""

    task_id: str
    number: int
    start: int
    """The position of the batch's first device in the task"""
    device_ids: list[str | int]
    """The batch's devices, in request order"""
    nodes: dict[str, int] = field(default_factory=dict)
    """managed node id -> device index in the task"""
    task_token: str
    command_id: str | None = None
    cut_by_deadline: bool = False
    """Its scripts' time limit was cut to the deadline"""
    sending_since: datetime | None = None
    """When a step first set out to send its command"""

    @property
    def index_range(self) -> tuple[int, int]:
        """The positions start..end-1 of the batch's devices in the task."""
        return self.start, self.start + len(self.device_ids)

    def device_at(self, index: int) -> str | int:
        return self.device_ids[index - self.start]


@dataclass(frozen=True, kw_only=True)
class RecordedOutcome:
    """A device's outcome as the write to the task's state that records it carries it (for the change feed)."""

    device_id: str | int
    status: DeviceStatus
    exit_code: int | None = None
    reason: str | None = None


@dataclass(kw_only=True)
class TaskStateChange:
    """A write to a task's state, as the table's stream tells it."""

    task_id: str
    sequence: str
    """The stream record's sequence number"""
    version: int
    status: TaskStatus
    previous_status: TaskStatus | None = None
    counts: DeviceCounts
    previous_counts: DeviceCounts | None = None
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    outcomes: list[RecordedOutcome] = field(default_factory=list)
    """Devices whose outcome it records"""


@dataclass(kw_only=True)
class CommandOutcome:
    """What SSM reports about one node's run of a command."""

    command_id: str
    node_id: str
    comment: str
    status: DeviceStatus
    reason: str | None = None
    exit_code: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stdout_url: str | None = None


@dataclass(kw_only=True)
class WebhookEndpoint:
    """A webhook endpoint as the data-access module stores it."""

    id: str
    owner_key: str
    url: str
    events: list[TaskEventType]
    secret: str
    previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def secrets(self, now: datetime) -> list[str]:
        """The secrets a delivery is signed with: the current one, and the previous one for a day after a
        rotation."""
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            return [self.secret, self.previous_secret]
        return [self.secret]


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    """An attempt failed and another is scheduled"""
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    """Every attempt failed, or the endpoint was disabled"""


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt of a webhook delivery (the API shows it as a DeliveryAttempt)."""

    time: datetime
    status_code: int | None = None
    latency_ms: int
    error: str | None = None


@dataclass(kw_only=True)
class Delivery:
    """A webhook delivery and its attempts (the API shows it as a WebhookDelivery)."""

    id: str
    """The webhook-id header: the same on every attempt"""
    event_type: str
    event_id: int | None = None
    task_id: str | None = None
    status: DeliveryStatus
    created_at: datetime
    attempts: list[Attempt] = field(default_factory=list)
