"""The API's bodies as typed models, named as docs/openapi.json names them (a test in the longrun repository fails
if a model and the document drift apart). Fields the API adds later are kept, not refused."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, PrivateAttr, model_validator


class TaskStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETE, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.TIMED_OUT)


class DeviceStatus(StrEnum):
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


class TaskEventType(StrEnum):
    STATUS_CHANGED = "script-execution.status-changed"
    PROGRESS = "script-execution.progress"
    FINISHED = "script-execution.finished"


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class ApiModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")
    _json: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_json(cls, value: Any, handler: ModelWrapValidatorHandler[ApiModel]) -> ApiModel:
        model = handler(value)
        if isinstance(value, dict):
            model._json = value
        return model

    def body(self) -> dict[str, Any]:
        """The API's JSON this was read from, exactly (or the model as the API spells it, if made here)."""
        if self._json is not None:
            return self._json
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


DeviceId = str | int


class FieldError(ApiModel):
    field: str
    message: str


class Problem(ApiModel):
    """An RFC 9457 problem: every error the API answers."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ScriptExecutionRequest(ApiModel):
    device_ids: list[DeviceId] = Field(alias="device-ids")
    script_url: str = Field(alias="script-url")
    timeout_seconds: int | None = Field(default=None, alias="timeout-seconds")
    max_concurrency: int | str | None = Field(default=None, alias="max-concurrency")
    max_errors: int | str | None = Field(default=None, alias="max-errors")
    deadline_seconds: int | None = Field(default=None, alias="deadline-seconds")


class ResultSummary(ApiModel):
    id: str
    success_on_devices: list[DeviceId] = Field(alias="success-on-devices")
    failed_on_devices: list[DeviceId] = Field(alias="failed-on-devices")
    sys_log_location: str = Field(alias="sys-log-location")
    err_log_location: str = Field(alias="err-log-location")
    href: str


class ScriptExecutionState(ApiModel):
    """A task's state: what a pushed event's ``data`` carries."""

    id: str
    script_url: str = Field(alias="script-url")
    timeout_seconds: int = Field(alias="timeout-seconds")
    max_concurrency: int | str = Field(alias="max-concurrency")
    max_errors: int | str | None = Field(default=None, alias="max-errors")
    deadline_seconds: int | None = Field(default=None, alias="deadline-seconds")
    status: TaskStatus
    status_reason: str | None = Field(default=None, alias="statusReason")
    percentage: int
    current_step: str = Field(alias="currentStep")
    device_counts: dict[str, int] = Field(alias="deviceCounts")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    estimated_completion_at: datetime | None = Field(default=None, alias="estimatedCompletionAt")
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    href: str

    @property
    def device_count(self) -> int:
        return sum(self.device_counts.values())


class ScriptExecution(ScriptExecutionState):
    """A task, as its GET answers."""

    device_ids: list[DeviceId] = Field(alias="device-ids")
    result: ResultSummary | None = None


class ScriptExecutionSummary(ApiModel):
    id: str
    script_url: str = Field(alias="script-url")
    device_count: int = Field(alias="deviceCount")
    status: TaskStatus
    status_reason: str | None = Field(default=None, alias="statusReason")
    created_at: datetime = Field(alias="createdAt")
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    href: str


class ScriptExecutionPage(ApiModel):
    items: list[ScriptExecutionSummary]
    next_token: str | None = Field(default=None, alias="next-token")


class OutputStream(ApiModel):
    location: str | None = None
    head: str
    truncated: bool


class _DeviceRunFields(ApiModel):
    """What the result and the devices route both say of a device's run."""

    device_id: DeviceId = Field(alias="device-id")
    status: DeviceStatus
    reason: str | None = None
    exit_code: int | None = Field(default=None, alias="exitCode")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    ended_at: datetime | None = Field(default=None, alias="endedAt")


class DeviceResult(_DeviceRunFields):
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None


class ScriptExecutionResult(ApiModel):
    id: str
    status: TaskStatus
    devices: list[DeviceResult]
    next_token: str | None = Field(default=None, alias="next-token")


class DeviceState(_DeviceRunFields):
    """A device's current state in a task, running or not."""

    href: str
    stdout: str | None = None
    stderr: str | None = None


class DevicePage(ApiModel):
    items: list[DeviceState]
    next_token: str | None = Field(default=None, alias="next-token")


class ScriptUploadRequest(ApiModel):
    sha256: str
    size: int


class ScriptUpload(ApiModel):
    """How to upload a script: PUT it to ``url`` with exactly ``headers`` (they are signed) before ``expiresAt``."""

    url: str
    method: str = "PUT"
    headers: dict[str, str]
    expires_at: datetime = Field(alias="expiresAt")


class ScriptLocation(ApiModel):
    """Where a script is (what submit's script-url takes), and how to upload it if it is not there yet."""

    script_url: str = Field(alias="script-url")
    upload: ScriptUpload | None


class DeviceOutcome(ApiModel):
    device_id: DeviceId = Field(alias="device-id")
    status: DeviceStatus
    exit_code: int | None = Field(default=None, alias="exitCode")
    reason: str | None = None


class TaskEvent(ApiModel):
    """A change of a task, as the push channels deliver it (docs/task-event.schema.json)."""

    type: TaskEventType
    id: int
    time: datetime
    task_id: str = Field(alias="task-id")
    owner: str
    data: ScriptExecutionState
    devices: list[DeviceOutcome] | None = None
    result: ResultSummary | None = None


class WebhookRequest(ApiModel):
    url: str
    events: list[TaskEventType] | None = None


class Webhook(ApiModel):
    id: str
    url: str
    events: list[TaskEventType]
    enabled: bool
    disabled_reason: str | None = Field(default=None, alias="disabledReason")
    created_at: datetime = Field(alias="createdAt")
    secret: str | None = None
    href: str


class WebhookPage(ApiModel):
    items: list[Webhook]
    next_token: str | None = Field(default=None, alias="next-token")


class DeliveryAttempt(ApiModel):
    time: datetime
    status_code: int | None = Field(default=None, alias="statusCode")
    latency_ms: int = Field(alias="latencyMs")
    error: str | None = None


class WebhookDelivery(ApiModel):
    id: str
    event_type: str = Field(alias="eventType")
    event_id: int | None = Field(default=None, alias="eventId")
    task_id: str | None = Field(default=None, alias="task-id")
    status: DeliveryStatus
    created_at: datetime = Field(alias="createdAt")
    attempts: list[DeliveryAttempt]


class WebhookDeliveryPage(ApiModel):
    items: list[WebhookDelivery]
    next_token: str | None = Field(default=None, alias="next-token")
