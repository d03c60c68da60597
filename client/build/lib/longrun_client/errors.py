"""What the client raises: every refusal of the API carries its RFC 9457 problem."""

from __future__ import annotations

from longrun_client.models import Problem


class LongrunError(Exception):
    """Anything the client could not do."""


class ApiError(LongrunError):
    """The API refused the request; ``problem`` says why."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.status = problem.status
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.problem.title} ({self.problem.status})"
        if self.problem.detail:
            text += f": {self.problem.detail}"
        for error in self.problem.errors or []:
            text += f"\n  {error.field}: {error.message}"
        return text


class InvalidRequest(ApiError):
    """400 or 422: the request is malformed or does not match the API's schema (``problem.errors`` lists fields)."""


class AuthenticationError(ApiError):
    """401 or 403: no credentials, credentials the API does not accept, or not allowed."""


class NotFound(ApiError):
    """404: no such task, device or webhook for this caller."""


class Conflict(ApiError):
    """409: the task is not in a state that allows this."""


class ServiceUnavailable(ApiError):
    """429 or 5xx, still so after the client's retries."""


class ConnectionFailed(LongrunError):
    """The API could not be reached."""


class WaitTimeout(LongrunError):
    """The task had not finished when ``wait``'s timeout passed."""


def error_for(problem: Problem) -> ApiError:
    status = problem.status
    if status in (400, 422):
        return InvalidRequest(problem)
    if status in (401, 403):
        return AuthenticationError(problem)
    if status == 404:
        return NotFound(problem)
    if status == 409:
        return Conflict(problem)
    if status == 429 or status >= 500:
        return ServiceUnavailable(problem)
    return ApiError(problem)
