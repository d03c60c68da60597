"""The domain's errors; the API handler turns each into an RFC 9457 problem with its own status and type
(docs/problems.md lists them)."""

from __future__ import annotations

from typing import Any

from longrun.views import present

PROBLEM_TYPES = "urn:longrun:problem:"
"""Every problem's type is this followed by its kind, so a client can tell two problems of one status apart"""


def problem_type(kind: str) -> str:
    return PROBLEM_TYPES + kind


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem detail as the contract's JSON (longrun.models.Problem documents it)."""
    return present(
        {
            "type": problem_type(kind),
            "title": title,
            "status": status,
            "detail": detail,
            "instance": instance,
            "errors": errors,
        }
    )


class TaskError(Exception):
    kind = "internal-error"
    status = 500
    title = "Internal error"
    retry_after: int | None = None
    """Seconds after which the same request may succeed (the answer's Retry-After)"""

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        """``errors``: each ``{"field": ..., "message": ...}`` (longrun.models.FieldError documents it)."""
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class TaskNotFound(TaskError):
    kind = "task-not-found"
    status = 404
    title = "Task not found"


class WebhookNotFound(TaskError):
    kind = "webhook-not-found"
    status = 404
    title = "Webhook not found"


class DeviceNotFound(TaskError):
    kind = "device-not-found"
    status = 404
    title = "Device not found"


class NoOutput(TaskError):
    kind = "no-output"
    status = 404
    title = "The device has no output"


class DeviceNotFinished(TaskError):
    kind = "device-not-finished"
    status = 409
    title = "The device has not finished"


class TaskConflict(TaskError):
    kind = "task-state-conflict"
    status = 409
    title = "Task is not in a state that allows this"


class InvalidRequest(TaskError):
    kind = "invalid-request"
    status = 422
    title = "Invalid request"


class BadRequest(TaskError):
    kind = "bad-request"
    status = 400
    title = "Bad request"


class OrchestrationUnavailable(TaskError):
    kind = "workflow-unavailable"
    status = 503
    title = "The workflow could not be started"


class IdempotencyKeyReused(TaskError):
    kind = "idempotency-key-reused"
    status = 422
    title = "The Idempotency-Key was used with another request"


class IdempotencyKeyInProgress(TaskError):
    kind = "idempotency-key-in-progress"
    status = 409
    title = "A request with this Idempotency-Key is still in progress"
    retry_after = 1


class IdempotencyUnavailable(TaskError):
    kind = "idempotency-unavailable"
    status = 503
    title = "The Idempotency-Key could not be checked"
    retry_after = 1
