"""The API's requests, checked by hand as the OpenAPI document states them: the request bodies (whose pydantic models
in longrun.models document them, and which tests/unit/test_api_requests.py checks these functions against, input by
input) and the query, header and path parameters' kinds (longrun.rest declares them, with their JSON Schema).

A check never stops at the first mistake: each adds every error it finds to ``Problems``, at the field as the API
spells it (``body.device-ids.0``), and the API answers them all at once in one 422. Checking by hand keeps pydantic,
and the time it takes to import and build, out of the API function's cold start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from longrun.records import SCRIPTS_PREFIX, TaskEventType, TaskSettings, device_key

MAX_DEVICES_PER_TASK = 10_000
MAX_DEVICE_TIMEOUT_SECONDS = 28_800
"""AWS-RunRemoteScript's executionTimeout allows at most 8 hours."""
MAX_TASK_DEADLINE_SECONDS = 30 * 24 * 3600
MAX_INTEGER_DEVICE_ID = 2**53 - 1
"""The largest integer a JSON number carries exactly between any two programs (I-JSON, RFC 7493: a double's integer
range); a larger id is sent as a string. (A DynamoDB number, which keeps it, holds 38 digits.)"""
DEVICE_ID_TEXT = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,63}$"
DEVICE_ID_PATTERN = re.compile(DEVICE_ID_TEXT)
RESOURCE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The form of the ids longrun gives tasks and webhook endpoints (a UUID); an id of another form names nothing"""
SCRIPT_KEY_PATTERN = re.compile(r"[A-Za-z0-9._/-]+")
_SEGMENT = r"([A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)"
SCRIPT_URL_PATTERN = rf"^(s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9]/)?scripts(/{_SEGMENT})+$"
"""What a script-url may be, as the OpenAPI document says it: a key under scripts/ of path segments of A-Z a-z 0-9 . _ -
(none of them . or ..), or an s3:// URL of one (whose bucket must be the deployment's, which the document cannot
say); ``script_url`` gives each mistake its own message"""
MAX_SCRIPT_URL_CHARACTERS = 1024
MAX_SCRIPT_BYTES = 1_048_576
"""The largest script a client may upload through POST /device-management/scripts"""
SHA256_TEXT = r"^[0-9a-f]{64}$"
MAX_WEBHOOK_URL_CHARACTERS = 2048
PERCENTAGE = r"^(100|[1-9]?[0-9])%$"
NONZERO_PERCENTAGE = r"^(100|[1-9][0-9]?)%$"
_PERCENTAGE = re.compile(PERCENTAGE)
_NONZERO_PERCENTAGE = re.compile(NONZERO_PERCENTAGE)
_SHA256 = re.compile(SHA256_TEXT)
_QUERY_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
"""An integer in a query string: ASCII digits, with a sign or not (``str.isdigit`` also takes other scripts' digits)"""
RESULT_PAGE_MAX = 100
"""The most devices a page of a task's result or devices holds"""
DEVICE_SCAN_WINDOW = 1_000
"""The most devices one request of the devices route looks at when it filters by status"""
DEFAULT_TIMEOUT_SECONDS = 600
DEFAULT_MAX_CONCURRENCY = 50
Choice = TypeVar("Choice", bound=StrEnum)


class Problems(list[dict[str, str]]):
    """The errors a request has, each ``{"field": ..., "message": ...}`` as the API's problem lists them."""

    def add(self, field: str, message: str) -> None:
        error = {"field": field, "message": message}
        if error not in self:
            self.append(error)


@dataclass
class Submission:
    """``POST /device-management/script-execution``, checked: the devices and how the script runs on them."""

    device_ids: list[str | int]
    settings: TaskSettings

    def as_json(self) -> dict[str, Any]:
        """The request with every field, its defaults filled in: what a repeat under the same Idempotency-Key must
        match."""
        return {
            "device-ids": self.device_ids,
            "script-url": self.settings.script_url,
            "timeout-seconds": self.settings.timeout_seconds,
            "max-concurrency": self.settings.max_concurrency,
            "max-errors": self.settings.max_errors,
            "deadline-seconds": self.settings.deadline_seconds,
        }


@dataclass
class ScriptDigest:
    """``POST /device-management/scripts``: the script a client is about to upload, by its digest and size."""

    sha256: str
    size: int


@dataclass
class NewWebhook:
    """``POST /device-management/webhooks``: where to send which events."""

    url: str
    events: list[TaskEventType]

    def as_json(self) -> dict[str, Any]:
        return {"url": self.url, "events": [event.value for event in self.events]}


# ---------------------------------------------------------------------------------------------
# Values


def integral(value: Any) -> Any:
    """A JSON number with no fraction is an integer, 600.0 as much as 600 (JSON Schema's "integer"); a string or a
    boolean is not one."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any, field: str, problems: Problems, minimum: int, maximum: int | None = None) -> int | None:
    """A JSON integer within ``minimum``..``maximum``."""
    value = integral(value)
    if not _is_integer(value):
        problems.add(field, "Input should be a valid integer")
        return None
    return _within(value, field, problems, minimum, maximum)


def _within(value: int, field: str, problems: Problems, minimum: int, maximum: int | None) -> int | None:
    if value < minimum:
        problems.add(field, f"Input should be greater than or equal to {minimum}")
        return None
    if maximum is not None and value > maximum:
        problems.add(field, f"Input should be less than or equal to {maximum}")
        return None
    return int(value)


def _sized(length: int, field: str, problems: Problems, bounds: tuple[int, int | None], what: tuple[str, str]) -> bool:
    """Whether a string's or a list's ``length`` is within ``bounds``; ``what``: its kind and what it counts."""
    (minimum, maximum), (kind, unit) = bounds, what
    if length < minimum:
        problems.add(field, f"{kind} should have at least {minimum} {unit}{'s' * (minimum != 1)}")
        return False
    if maximum is not None and length > maximum:
        problems.add(field, f"{kind} should have at most {maximum} {unit}s, not {length}")
        return False
    return True


def text(value: Any, field: str, problems: Problems, min_length: int = 0, max_length: int | None = None) -> str | None:
    """A JSON string of ``min_length``..``max_length`` characters."""
    if not isinstance(value, str):
        problems.add(field, "Input should be a valid string")
        return None
    return value if _sized(len(value), field, problems, (min_length, max_length), ("String", "character")) else None


def _limit(value: Any, field: str, problems: Problems, minimum: int, percentage: re.Pattern[str]) -> int | str | None:
    """A number of devices, or a percentage of them."""
    value = integral(value)
    if _is_integer(value):
        return _within(value, field, problems, minimum, None)
    if isinstance(value, str):
        if percentage.match(value):
            return value
        problems.add(field, f"String should match pattern '{percentage.pattern}'")
        return None
    problems.add(field, f"Input should be an integer of at least {minimum}, or a percentage such as '10%'")
    return None


def _array(value: Any, field: str, problems: Problems, min_length: int, max_length: int | None) -> list[Any] | None:
    if not isinstance(value, list):
        problems.add(field, "Input should be a valid list")
        return None
    return value if _sized(len(value), field, problems, (min_length, max_length), ("List", "item")) else None


def _fields(body: Any, known: tuple[str, ...], required: tuple[str, ...], problems: Problems) -> dict[str, Any]:
    """A body's fields: it must be a JSON object of ``known`` fields, with every ``required`` one."""
    if not isinstance(body, dict):
        problems.add("body", "Input should be a valid dictionary or object to extract fields from")
        return {}
    for name in required:
        if name not in body:
            problems.add(f"body.{name}", "Field required")
    for name in body:
        if name not in known:
            problems.add(f"body.{name}", "Extra inputs are not permitted")
    return body


# ---------------------------------------------------------------------------------------------
# Bodies


def device_id(value: Any, field: str, problems: Problems) -> str | int | None:
    """An SSM managed node id or device-id tag value (a string), or an integer id."""
    value = integral(value)
    if _is_integer(value):
        return _within(value, field, problems, 0, MAX_INTEGER_DEVICE_ID)
    if not isinstance(value, str):
        problems.add(field, "Input should be a valid string, or an integer")
        return None
    if not DEVICE_ID_PATTERN.match(value):
        problems.add(
            field,
            "Value error, must be 1-64 characters of letters, digits and ._:@/+=- and start with a letter or digit",
        )
        return None
    return value


def script_url(value: Any, field: str, problems: Problems) -> str | None:
    """A key under scripts/ in the deployment's bucket, or an s3:// URL of one (its bucket is checked when the task
    is submitted: longrun.scripts.script_key)."""
    url = text(value, field, problems, 1, MAX_SCRIPT_URL_CHARACTERS)
    if url is None:
        return None
    key = url.removeprefix("s3://").partition("/")[2] if url.startswith("s3://") else url
    if not key or key.startswith("/") or key.endswith("/"):
        message = "must be an object key such as scripts/hello.sh or an s3://bucket/key URL"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        message = "must not contain empty, '.' or '..' path segments"
    elif not SCRIPT_KEY_PATTERN.fullmatch(key):
        message = "a script's key may hold only the letters A-Z and a-z, digits, '.', '_', '-' and '/'"
    elif not key.startswith(SCRIPTS_PREFIX):
        message = f"scripts must be under {SCRIPTS_PREFIX} in the deployment's bucket"
    else:
        return url
    problems.add(field, f"Value error, {message}")
    return None


SUBMISSION_FIELDS = (
    "device-ids",
    "script-url",
    "timeout-seconds",
    "max-concurrency",
    "max-errors",
    "deadline-seconds",
)


def submission(body: Any, problems: Problems) -> Submission | None:
    """``POST /device-management/script-execution``'s body (ScriptExecutionRequest)."""
    before = len(problems)
    fields = _fields(body, SUBMISSION_FIELDS, ("device-ids", "script-url"), problems)
    ids = _device_ids(fields["device-ids"], problems) if "device-ids" in fields else None
    url = script_url(fields["script-url"], "body.script-url", problems) if "script-url" in fields else None
    timeout = integer(
        fields.get("timeout-seconds", DEFAULT_TIMEOUT_SECONDS), "body.timeout-seconds", problems, 1,
        MAX_DEVICE_TIMEOUT_SECONDS,
    )  # fmt: skip
    concurrency = _limit(
        fields.get("max-concurrency", DEFAULT_MAX_CONCURRENCY), "body.max-concurrency", problems, 1,
        _NONZERO_PERCENTAGE,
    )  # fmt: skip
    errors = fields.get("max-errors")
    max_errors = None if errors is None else _limit(errors, "body.max-errors", problems, 0, _PERCENTAGE)
    deadline = fields.get("deadline-seconds")
    if deadline is not None:
        deadline = integer(deadline, "body.deadline-seconds", problems, 1, MAX_TASK_DEADLINE_SECONDS)
    if len(problems) > before or ids is None or url is None or timeout is None or concurrency is None:
        return None
    settings = TaskSettings(
        script_url=url,
        timeout_seconds=timeout,
        max_concurrency=concurrency,
        max_errors=max_errors,
        deadline_seconds=deadline,
    )
    return Submission(device_ids=ids, settings=settings)


def _device_ids(value: Any, problems: Problems) -> list[str | int] | None:
    listed = _array(value, "body.device-ids", problems, 1, MAX_DEVICES_PER_TASK)
    if listed is None:
        return None
    before = len(problems)
    ids = [device_id(item, f"body.device-ids.{index}", problems) for index, item in enumerate(listed)]
    if len(problems) > before:
        return None
    checked = [found for found in ids if found is not None]
    seen: set[str] = set()
    for found in checked:
        key = device_key(found)
        if key in seen:
            problems.add("body.device-ids", f"Value error, device id {found!r} is listed more than once")
            return None
        seen.add(key)
    return checked


def script_digest(body: Any, problems: Problems) -> ScriptDigest | None:
    """``POST /device-management/scripts``'s body (ScriptUploadRequest)."""
    before = len(problems)
    fields = _fields(body, ("sha256", "size"), ("sha256", "size"), problems)
    sha256 = text(fields["sha256"], "body.sha256", problems) if "sha256" in fields else None
    if sha256 is not None and not _SHA256.match(sha256):
        problems.add("body.sha256", f"String should match pattern '{SHA256_TEXT}'")
        sha256 = None
    size = integer(fields["size"], "body.size", problems, 1, MAX_SCRIPT_BYTES) if "size" in fields else None
    if len(problems) > before or sha256 is None or size is None:
        return None
    return ScriptDigest(sha256=sha256, size=size)


def new_webhook(body: Any, problems: Problems) -> NewWebhook | None:
    """``POST /device-management/webhooks``'s body (WebhookRequest); whether its URL may be sent to is checked when
    the endpoint is added (longrun.webhook_deliveries.resolve_target)."""
    before = len(problems)
    fields = _fields(body, ("url", "events"), ("url",), problems)
    url = text(fields["url"], "body.url", problems, 1, MAX_WEBHOOK_URL_CHARACTERS) if "url" in fields else None
    events: list[TaskEventType] | None = list(TaskEventType)
    if "events" in fields:
        events = _event_types(fields["events"], problems)
    if len(problems) > before or url is None or events is None:
        return None
    return NewWebhook(url=url, events=events)


def _event_types(value: Any, problems: Problems) -> list[TaskEventType] | None:
    listed = _array(value, "body.events", problems, 1, None)
    if listed is None:
        return None
    events = [one_of(item, f"body.events.{index}", problems, TaskEventType) for index, item in enumerate(listed)]
    if any(event is None for event in events):
        return None
    if len(set(events)) != len(events):
        problems.add("body.events", "Value error, lists an event type more than once")
        return None
    return [event for event in events if event is not None]


# ---------------------------------------------------------------------------------------------
# Parameters (query, header, path: always strings)


def one_of(value: Any, field: str, problems: Problems, choices: type[Choice]) -> Choice | None:
    """One of an enumeration's values."""
    try:
        return choices(value)
    except ValueError:
        listed = ", ".join(f"'{choice.value}'" for choice in choices)
        problems.add(field, f"Input should be {listed}")
        return None


def query_integer(value: str, field: str, problems: Problems, minimum: int, maximum: int) -> int | None:
    """An integer query parameter, in decimal."""
    if not _QUERY_INTEGER.fullmatch(value):
        problems.add(field, "Input should be a valid integer, unable to parse string as an integer")
        return None
    return _within(int(value), field, problems, minimum, maximum)
