"""Every pydantic model of longrun: the API's requests and responses, the events the push channels carry, and the
webhook endpoints' records. (The task's records, which the workflow works on, are dataclasses: longrun.records.)

Field names follow the published contract: request fields and the result summary are kebab-case
(``device-ids``, ``success-on-devices``), status fields are camelCase (``currentStep``, ``createdAt``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    StrictStr,
    field_validator,
    model_serializer,
)

from longrun import api_requests
from longrun.api_requests import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_SECONDS,
    DEVICE_ID_TEXT,
    MAX_DEVICE_TIMEOUT_SECONDS,
    MAX_DEVICES_PER_TASK,
    MAX_INTEGER_DEVICE_ID,
    MAX_SCRIPT_BYTES,
    MAX_SCRIPT_URL_CHARACTERS,
    MAX_TASK_DEADLINE_SECONDS,
    MAX_WEBHOOK_URL_CHARACTERS,
    NONZERO_PERCENTAGE,
    PERCENTAGE,
    SCRIPT_URL_PATTERN,
    SHA256_TEXT,
)
from longrun.records import DeliveryStatus, DeviceStatus, TaskEventType, TaskStatus, device_key

INTEGRAL = BeforeValidator(api_requests.integral)
"""Put after an integer's constraints (Annotated[StrictInt, Field(ge=1), INTEGRAL]), so that the OpenAPI document
still states them as minimum and maximum"""


class Model(BaseModel):
    """Every model's base: its validator and serializer are built the first time it is used, not when the module is
    imported, so that a function's cold start pays only for the models it uses."""

    model_config = ConfigDict(defer_build=True)


# ---------------------------------------------------------------------------------------------
# Requests


def _checked_by(check: Callable[[str, str, api_requests.Problems], object]) -> Callable[[str], str]:
    """A validator of a string that ``check`` (one of longrun.api_requests', which the API uses) checks: its
    message."""

    def validate(value: str) -> str:
        problems = api_requests.Problems()
        check(value, "", problems)
        if problems:
            raise ValueError(problems[0]["message"].removeprefix("Value error, "))
        return value

    return validate


DeviceId = Annotated[
    Annotated[
        StrictStr,
        AfterValidator(_checked_by(api_requests.device_id)),
        Field(json_schema_extra={"pattern": DEVICE_ID_TEXT}),
    ]
    | Annotated[StrictInt, Field(ge=0, le=MAX_INTEGER_DEVICE_ID), INTEGRAL],
    Field(description="An SSM managed node id, or the value of the node's device-id tag"),
]


ConcurrencyLimit = Annotated[StrictInt, Field(ge=1), INTEGRAL] | Annotated[StrictStr, Field(pattern=NONZERO_PERCENTAGE)]
ErrorLimit = Annotated[StrictInt, Field(ge=0), INTEGRAL] | Annotated[StrictStr, Field(pattern=PERCENTAGE)]


class ScriptExecutionRequest(Model):
    """``POST /device-management/script-execution``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    device_ids: list[DeviceId] = Field(
        alias="device-ids",
        min_length=1,
        max_length=MAX_DEVICES_PER_TASK,
        description='Devices to run the script on, each once (3 and "3" name the same device)',
        json_schema_extra={"uniqueItems": True},
    )
    script_url: StrictStr = Field(
        alias="script-url",
        min_length=1,
        max_length=MAX_SCRIPT_URL_CHARACTERS,
        description="A key in the deployment's scripts bucket (scripts/hello.sh) or an s3:// URL inside it",
        json_schema_extra={"pattern": SCRIPT_URL_PATTERN},
    )
    timeout_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_DEVICE_TIMEOUT_SECONDS), INTEGRAL] = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        alias="timeout-seconds",
        description="How long one device's script may run before it is stopped and reported TIMED_OUT",
    )
    max_concurrency: ConcurrencyLimit = Field(
        default=DEFAULT_MAX_CONCURRENCY,
        alias="max-concurrency",
        description="How many devices may run the script at once: a number, or a percentage of the devices",
    )
    max_errors: ErrorLimit | None = Field(
        default=None,
        alias="max-errors",
        description="Once more devices than this have failed or timed out (a number, or a percentage of the devices),"
        " no new device starts; the rest end NOT_STARTED. No limit when absent.",
    )
    deadline_seconds: Annotated[StrictInt, Field(ge=1, le=MAX_TASK_DEADLINE_SECONDS), INTEGRAL] | None = Field(
        default=None,
        alias="deadline-seconds",
        description="The whole task's time limit: at the deadline running scripts are stopped (TIMED_OUT) and"
        " devices not started end NOT_STARTED; the task ends TIMED_OUT",
    )

    @field_validator("device_ids")
    @classmethod
    def _device_ids_are_valid_and_unique(cls, ids: list[str | int]) -> list[str | int]:
        seen: set[str] = set()
        for device_id in ids:
            key = device_key(device_id)
            if key in seen:
                raise ValueError(f"device id {device_id!r} is listed more than once")
            seen.add(key)
        return ids

    _script_url_is_a_key_or_s3_url = field_validator("script_url")(_checked_by(api_requests.script_url))


# ---------------------------------------------------------------------------------------------
# Responses


class ApiModel(Model):
    """A response body: fields by their contract names, and a field with no value is left out (unless the contract
    says it is there as null: ``KEPT_NULLS``)."""

    model_config = ConfigDict(populate_by_name=True)
    KEPT_NULLS: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")  # no return annotation: it would replace the model's schema in the OpenAPI document
    def _omit_empty(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        return {key: value for key, value in handler(self).items() if value is not None or key in self.KEPT_NULLS}


class ResultSummary(ApiModel):
    id: str
    success_on_devices: list[str | int] = Field(alias="success-on-devices")
    failed_on_devices: list[str | int] = Field(
        alias="failed-on-devices", description="Every device that did not succeed: failed, timed out, cancelled"
    )
    sys_log_location: str = Field(alias="sys-log-location", description="S3 prefix holding each device's stdout")
    err_log_location: str = Field(alias="err-log-location", description="S3 prefix holding each device's stderr")
    href: str = Field(description="The detailed per-device result")


class ScriptExecutionSummary(ApiModel):
    """A task in a listing: what it is and where it stands; its href has the progress."""

    id: str
    script_url: str = Field(alias="script-url")
    device_count: int = Field(alias="deviceCount")
    status: TaskStatus
    status_reason: str | None = Field(default=None, alias="statusReason")
    created_at: datetime = Field(alias="createdAt")
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    href: str


class ScriptExecutionState(ApiModel):
    """A script-execution task without its device list and result: what a task's events carry."""

    id: str
    script_url: str = Field(alias="script-url")
    timeout_seconds: int = Field(alias="timeout-seconds")
    max_concurrency: int | str = Field(alias="max-concurrency")
    max_errors: int | str | None = Field(default=None, alias="max-errors")
    deadline_seconds: int | None = Field(default=None, alias="deadline-seconds")
    status: TaskStatus
    status_reason: str | None = Field(default=None, alias="statusReason")
    percentage: int = Field(ge=0, le=100, description="Devices finished / devices in the task; never goes back")
    current_step: str = Field(alias="currentStep")
    device_counts: dict[str, int] = Field(alias="deviceCounts", description="Devices per status; they add up")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    estimated_completion_at: datetime | None = Field(
        default=None,
        alias="estimatedCompletionAt",
        description="When the task should finish at the pace of its devices so far; once a few have finished",
    )
    completed_at: datetime | None = Field(default=None, alias="completedAt")
    href: str


class ScriptExecution(ScriptExecutionState):
    """A script-execution task as a client sees it."""

    device_ids: list[str | int] = Field(alias="device-ids")
    result: ResultSummary | None = None


class ScriptExecutionPage(ApiModel):
    items: list[ScriptExecutionSummary]
    next_token: str | None = Field(default=None, alias="next-token")


class OutputStream(ApiModel):
    location: str | None = Field(
        default=None, description="s3:// URL of the whole stream; absent when SSM stored nothing (an empty stream)"
    )
    head: str = Field(description="The first few KB of the stream")
    truncated: bool


class DeviceOutcomeFields(ApiModel):
    """What the result and the devices route both say of a device's run."""

    device_id: str | int = Field(alias="device-id")
    status: DeviceStatus
    reason: str | None = None
    exit_code: int | None = Field(default=None, alias="exitCode")
    started_at: datetime | None = Field(default=None, alias="startedAt")
    ended_at: datetime | None = Field(default=None, alias="endedAt")


class DeviceResult(DeviceOutcomeFields):
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None


class ScriptExecutionResult(ApiModel):
    id: str
    status: TaskStatus
    devices: list[DeviceResult]
    next_token: str | None = Field(default=None, alias="next-token")


class DeviceState(DeviceOutcomeFields):
    """A device of a task as it stands now: while the task runs (PENDING, RUNNING, or its outcome once it has one)
    and after."""

    href: str = Field(description="This device of the task")
    stdout: str | None = Field(
        default=None,
        description="Where the device's whole stdout is (a 303 to a short-lived download URL); once it ran",
    )
    stderr: str | None = Field(default=None, description="As stdout, for stderr")


class DevicePage(ApiModel):
    items: list[DeviceState]
    next_token: str | None = Field(default=None, alias="next-token")


class FieldError(ApiModel):
    field: str = Field(description="Where the error is, e.g. body.device-ids.1")
    message: str


class Problem(ApiModel):
    """An RFC 9457 problem detail."""

    type: str = Field(
        default="about:blank",
        description="What kind of problem it is: urn:longrun:problem:<kind> (docs/problems.md lists them), or "
        "about:blank for API Gateway's own answers, where the status says it all",
    )
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


# ---------------------------------------------------------------------------------------------
# Scripts: uploads by clients without write access to the bucket


class ScriptUploadRequest(Model):
    """``POST /device-management/scripts``: the script a client is about to upload, by its digest and size."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sha256: StrictStr = Field(pattern=SHA256_TEXT, description="The file's SHA-256, 64 lowercase hex digits")
    size: Annotated[StrictInt, Field(ge=1, le=MAX_SCRIPT_BYTES), INTEGRAL] = Field(
        description="The file's length in bytes"
    )


class ScriptUpload(ApiModel):
    """How to upload the script: one request, exactly as described, before ``expiresAt``."""

    url: str = Field(description="A presigned S3 URL; send no Authorization header with it")
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(
        description="Headers the request must carry, with exactly these values: they are signed into the URL (the"
        " body's length and its SHA-256), so S3 refuses any other body"
    )
    expires_at: datetime = Field(alias="expiresAt", description="The URL is refused from then on")


class ScriptLocation(ApiModel):
    """Where a script is (what ``script-url`` takes), and how to upload it if it is not there yet."""

    KEPT_NULLS: ClassVar[frozenset[str]] = frozenset({"upload"})

    script_url: str = Field(alias="script-url", description="s3://<bucket>/scripts/sha256/<sha256>")
    upload: ScriptUpload | None = Field(description="null when the bucket already holds the script")


# ---------------------------------------------------------------------------------------------
# Task events: what the change feed pushes (WebSocket, webhooks, the event bus), documented


class DeviceOutcome(ApiModel):
    """One device's outcome, in the progress event that follows its recording."""

    device_id: str | int = Field(alias="device-id")
    status: DeviceStatus
    exit_code: int | None = Field(default=None, alias="exitCode")
    reason: str | None = None


class TaskEvent(ApiModel):
    """A change of a task, as every push channel delivers it."""

    type: TaskEventType
    id: int = Field(
        description="Increases with every event of the task (not by one): a receiver drops an id it has seen and"
        " orders by it; the same change keeps its id when it is delivered again"
    )
    time: datetime = Field(description="When the change was recorded")
    task_id: str = Field(alias="task-id")
    owner: str = Field(description="Who owns the task: its caller's IAM ARN, or the user name of its bearer token")
    data: ScriptExecutionState
    devices: list[DeviceOutcome] | None = Field(
        default=None,
        description="progress: the outcomes recorded since the previous progress event; finished: the devices that"
        " never started",
    )
    result: ResultSummary | None = Field(
        default=None,
        description="finished only: the result summary; its device lists are left out (href has them) when they"
        " would make the event larger than 64 KB",
    )


# ---------------------------------------------------------------------------------------------
# Webhooks


class WebhookRequest(Model):
    """``POST /device-management/webhooks``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: StrictStr = Field(
        min_length=1, max_length=MAX_WEBHOOK_URL_CHARACTERS, description="https URL of a public address to POST to"
    )
    events: list[TaskEventType] = Field(
        default_factory=lambda: list(TaskEventType),
        min_length=1,
        description="The event types to deliver, each once (all of them when absent)",
        json_schema_extra={"uniqueItems": True},
    )

    @field_validator("events")
    @classmethod
    def _no_repeats(cls, events: list[TaskEventType]) -> list[TaskEventType]:
        if len(set(events)) != len(events):
            raise ValueError("lists an event type more than once")
        return events


class Webhook(ApiModel):
    id: str
    url: str
    events: list[TaskEventType]
    enabled: bool
    disabled_reason: str | None = Field(default=None, alias="disabledReason")
    created_at: datetime = Field(alias="createdAt")
    secret: str | None = Field(
        default=None, description="whsec_...: shown only when the endpoint is made and when its secret is rotated"
    )
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
    id: str = Field(description="The webhook-id header: the same on every attempt")
    event_type: str = Field(alias="eventType")
    event_id: int | None = Field(default=None, alias="eventId")
    task_id: str | None = Field(default=None, alias="task-id")
    status: DeliveryStatus
    created_at: datetime = Field(alias="createdAt")
    attempts: list[DeliveryAttempt]


class WebhookDeliveryPage(ApiModel):
    items: list[WebhookDelivery]
    next_token: str | None = Field(default=None, alias="next-token")
