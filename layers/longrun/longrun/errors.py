"""The domain's errors; the API handler turns each into an RFC 9457 problem with its own status."""

from __future__ import annotations

from longrun.models import FieldError


class TaskError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class TaskNotFound(TaskError):
    status = 404
    title = "Task not found"


class WebhookNotFound(TaskError):
    status = 404
    title = "Webhook not found"


class DeviceNotFound(TaskError):
    status = 404
    title = "Device not found"


class NoOutput(TaskError):
    status = 404
    title = "The device has no output"


class DeviceNotFinished(TaskError):
    status = 409
    title = "The device has not finished"


class TaskConflict(TaskError):
    status = 409
    title = "Task is not in a state that allows this"


class InvalidRequest(TaskError):
    status = 422
    title = "Invalid request"


class BadRequest(TaskError):
    status = 400
    title = "Bad request"


class OrchestrationUnavailable(TaskError):
    status = 503
    title = "The workflow could not be started"
