"""The longrun API as Python methods: each answers typed models, iterates every page for you, and raises
longrun_client.errors with the API's problem details when it is refused."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from longrun_client import events
from longrun_client.auth import AwsCredentials, Bearer, SigV4
from longrun_client.errors import ConnectionFailed, LongrunError, WaitTimeout, error_for
from longrun_client.events import Progress
from longrun_client.models import (
    DevicePage,
    DeviceResult,
    DeviceState,
    DeviceStatus,
    Problem,
    ScriptExecution,
    ScriptExecutionPage,
    ScriptExecutionRequest,
    ScriptExecutionResult,
    ScriptExecutionSummary,
    ScriptLocation,
    ScriptUploadRequest,
    TaskEventType,
    TaskStatus,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookRequest,
)

TASKS = "device-management/script-execution"
SCRIPTS = "device-management/scripts"
WEBHOOKS = "device-management/webhooks"
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers a request is tried again after (a POST without an Idempotency-Key only after 429 and 503, which say
nothing was done)"""
KEY_IN_PROGRESS = "urn:longrun:problem:idempotency-key-in-progress"
"""The type of the 409 that says the first request with the same Idempotency-Key is still running: repeat it"""
KEY_IN_PROGRESS_WAIT = 60.0
"""How long a request is repeated while its key is in progress (seconds), apart from its attempts: a key stays in
progress until the first request's function would have timed out (30 s) when that request's answer was lost"""
BACKOFF = (0.5, 10.0)
"""Full-jitter exponential backoff between attempts: first ceiling, largest ceiling (seconds)"""
MAX_RETRY_AFTER = 60.0
POLL_DEFAULT = 2.0
"""Seconds between polls when the API gives no Retry-After"""
M = TypeVar("M", bound=BaseModel)


class Client:
    """A client of one longrun deployment.

    ``api_url`` is the stack's ``ApiUrl`` output (``https://<api>.execute-api.<region>.amazonaws.com/v1``), or
    ``make run``'s ``http://127.0.0.1:3000/v1``; ``websocket_url`` its ``WebSocketUrl`` output, which ``wait``
    follows when given (else it polls). Requests are signed with SigV4 from the standard AWS credential chain
    (``profile`` picks a named profile), or carry ``token`` as a bearer token."""

    def __init__(
        self,
        api_url: str,
        *,
        websocket_url: str | None = None,
        token: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self.websocket_url = websocket_url
        self.credentials = AwsCredentials(profile, region, api_url)
        auth: httpx.Auth = Bearer(token) if token else SigV4(self.credentials)
        self._token = token
        self._max_attempts = max(1, max_attempts)
        headers = {"User-Agent": "longrun-client/0.1", "Accept": "application/json"}
        self._http = httpx.Client(auth=auth, timeout=timeout, headers=headers, transport=transport)
        self._plain = httpx.Client(timeout=timeout, transport=transport)
        """For presigned S3 URLs, which carry their own signature and refuse any other"""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    # --- tasks -------------------------------------------------------------------------------------------------

    def submit(
        self,
        device_ids: Sequence[str | int],
        script_url: str,
        *,
        timeout_seconds: int | None = None,
        max_concurrency: int | str | None = None,
        max_errors: int | str | None = None,
        deadline_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> ScriptExecution:
        """Start running ``script_url`` (a script-url the API accepts, or what ``upload_script`` answered) on the
        devices. An ``Idempotency-Key`` goes with it (generated unless given), so a retried submit is one task."""
        request = ScriptExecutionRequest(
            device_ids=list(device_ids),
            script_url=script_url,
            timeout_seconds=timeout_seconds,
            max_concurrency=max_concurrency,
            max_errors=max_errors,
            deadline_seconds=deadline_seconds,
        )
        body = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return self._model(ScriptExecution, self._request("POST", TASKS, json=body, headers=headers))

    def get(self, task_id: str) -> ScriptExecution:
        return self._model(ScriptExecution, self._request("GET", self._task(task_id)))

    def poll(self, task_id: str) -> tuple[ScriptExecution, float]:
        """The task, and how long the API asks to wait before asking again."""
        response = self._request("GET", self._task(task_id))
        return self._model(ScriptExecution, response), _retry_after(response) or POLL_DEFAULT

    def cancel(self, task_id: str) -> ScriptExecution:
        """Cancel the task (asking again is harmless); it is CANCELLING until no script is left running."""
        return self._model(ScriptExecution, self._request("DELETE", self._task(task_id)))

    def list(self, status: TaskStatus | str | None = None, page_size: int = 100) -> Iterator[ScriptExecutionSummary]:
        """The caller's tasks, newest first, every page."""
        params = {"status": str(status)} if status else {}
        for page in self._pages(TASKS, ScriptExecutionPage, params | {"limit": page_size}):
            yield from page.items

    def result(self, task_id: str) -> Iterator[DeviceResult]:
        """Each device's outcome with the head of its output, once the task has finished: every page."""
        for page in self._pages(f"{self._task(task_id)}/result", ScriptExecutionResult, {}):
            yield from page.devices

    def devices(self, task_id: str, status: DeviceStatus | str | None = None) -> Iterator[DeviceState]:
        """Each device's state now, running or not, in request order: every page."""
        params = {"status": str(status)} if status else {}
        for page in self._pages(f"{self._task(task_id)}/devices", DevicePage, params):
            yield from page.items

    def device(self, task_id: str, device_id: str | int) -> DeviceState:
        return self._model(DeviceState, self._request("GET", self._device(task_id, device_id)))

    def iter_logs(self, task_id: str, device_id: str | int, stream: str = "stdout") -> Iterator[bytes]:
        """A device's whole stdout (or stderr), in chunks, from the short-lived S3 URL the API redirects to."""
        response = self._request("GET", f"{self._device(task_id, device_id)}/{stream}")
        if response.status_code == 204:  # the stream is empty: SSM stored nothing
            return
        location = response.headers.get("Location")
        if response.status_code != 303 or not location:
            raise LongrunError(f"expected a redirect to the output, got {response.status_code}")
        with self._plain.stream("GET", location) as output:
            if output.status_code != 200:
                output.read()
                raise LongrunError(f"the output's URL answered {output.status_code}: {output.text[:300]}")
            yield from output.iter_bytes()

    def logs(self, task_id: str, device_id: str | int, stream: str = "stdout") -> bytes:
        return b"".join(self.iter_logs(task_id, device_id, stream))

    # --- scripts -----------------------------------------------------------------------------------------------

    def upload_script(self, path: str | Path) -> str:
        """Store a local script in the deployment's bucket (once: the key is its SHA-256) and answer its
        script-url, with no write access to the bucket: the API hands out a presigned upload."""
        content = Path(path).read_bytes()
        request = ScriptUploadRequest(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
        answer = self._model(ScriptLocation, self._request("POST", SCRIPTS, json=request.body()))
        if answer.upload is not None:
            target = answer.upload
            put = self._plain.request(target.method, target.url, headers=target.headers, content=content)
            if put.status_code >= 300:
                raise LongrunError(f"uploading {path} was refused ({put.status_code}): {put.text[:300]}")
        return answer.script_url

    # --- following a task --------------------------------------------------------------------------------------

    def follow(self, task_id: str, timeout: float | None = None) -> Iterator[Progress]:
        """The task's progress as it happens, ending with its finish: pushed over the WebSocket when there is one
        (resumed after a dropped connection), else polled as often as the API's Retry-After says. Raises
        WaitTimeout if it has not finished within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.websocket_url:
            subscription = events.Subscription(self.websocket_url, task_id, self.credentials, self._token, deadline)
            try:
                yield from subscription.follow()  # it ends once the task has finished and the subscription caught up
                return
            except events.Unavailable:
                pass  # no WebSocket to be had: poll instead, from where it got to
        yield from self._poll(task_id, deadline)

    def wait(
        self, task_id: str, timeout: float | None = None, on_progress: Callable[[Progress], None] | None = None
    ) -> ScriptExecution:
        """Block until the task has finished (calling ``on_progress`` with each change) and answer it."""
        for progress in self.follow(task_id, timeout):
            if on_progress is not None:
                on_progress(progress)
        return self.get(task_id)

    def _poll(self, task_id: str, deadline: float | None) -> Iterator[Progress]:
        shown: tuple[Any, ...] | None = None
        while True:
            task, wait = self.poll(task_id)
            seen = (task.status, tuple(sorted(task.device_counts.items())))
            if seen != shown:
                shown = seen
                yield Progress(state=task)
            if task.status.finished:
                return
            if deadline is not None and time.monotonic() + wait > deadline:
                raise WaitTimeout(f"task {task_id} is still {task.status.value}")
            time.sleep(wait)

    # --- webhooks ----------------------------------------------------------------------------------------------

    def add_webhook(
        self, url: str, events: Sequence[TaskEventType] | None = None, idempotency_key: str | None = None
    ) -> Webhook:
        """Add an endpoint for the caller's task events; the answer holds its signing secret, shown only now. An
        ``Idempotency-Key`` goes with it (generated unless given), so a retried request adds one endpoint."""
        body = WebhookRequest(url=url, events=list(events) if events else None).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return self._model(Webhook, self._request("POST", WEBHOOKS, json=body, headers=headers))

    def webhooks(self) -> Iterator[Webhook]:
        for page in self._pages(WEBHOOKS, WebhookPage, {"limit": 100}):
            yield from page.items

    def webhook(self, webhook_id: str) -> Webhook:
        return self._model(Webhook, self._request("GET", f"{WEBHOOKS}/{quote(webhook_id, safe='')}"))

    def remove_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"{WEBHOOKS}/{quote(webhook_id, safe='')}")

    def test_webhook(self, webhook_id: str) -> WebhookDelivery:
        """Send the endpoint a ``webhook.ping``; the delivery is queued."""
        return self._model(WebhookDelivery, self._request("POST", f"{WEBHOOKS}/{quote(webhook_id, safe='')}/test"))

    def rotate_webhook_secret(self, webhook_id: str) -> Webhook:
        path = f"{WEBHOOKS}/{quote(webhook_id, safe='')}/rotate-secret"
        return self._model(Webhook, self._request("POST", path))

    def deliveries(self, webhook_id: str) -> Iterator[WebhookDelivery]:
        """The endpoint's deliveries, newest first, each with every attempt."""
        path = f"{WEBHOOKS}/{quote(webhook_id, safe='')}/deliveries"
        for page in self._pages(path, WebhookDeliveryPage, {"limit": 100}):
            yield from page.items

    # --- HTTP --------------------------------------------------------------------------------------------------

    def _task(self, task_id: str) -> str:
        return f"{TASKS}/{quote(task_id, safe='')}"

    def _device(self, task_id: str, device_id: str | int) -> str:
        return f"{self._task(task_id)}/devices/{quote(str(device_id), safe='')}"

    def _pages(self, path: str, page: type[M], params: dict[str, Any]) -> Iterator[M]:
        token: str | None = None
        while True:
            answer = self._model(
                page, self._request("GET", path, params=params | ({"next-token": token} if token else {}))
            )
            yield answer
            token = getattr(answer, "next_token", None)
            if not token:
                return

    def _model(self, model: type[M], response: httpx.Response) -> M:
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as error:
            raise LongrunError(f"the API answered a {model.__name__} this client cannot read: {error}") from error

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request, retrying with bounded, jittered backoff (honouring Retry-After) what can safely be
        retried: a connection that could not be made, and 429 or 5xx answers to GET, DELETE and a POST with an
        Idempotency-Key; a POST without a key only after 429 or 503. A POST whose key is in progress is repeated
        for up to ``KEY_IN_PROGRESS_WAIT``, apart from its attempts. Raises the problem the API answered."""
        url = self.api_url + path
        clean = {name: value for name, value in (params or {}).items() if value is not None}
        repeatable = method != "POST" or "Idempotency-Key" in (headers or {})
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            last = attempt >= self._max_attempts
            try:
                response = self._http.request(method, url, json=json, params=clean, headers=headers)
            except httpx.ConnectError as error:
                if last:
                    raise ConnectionFailed(f"could not reach {self.api_url}: {error}") from error
                _sleep(attempt, None)
                continue
            except httpx.TransportError as error:
                if last or not repeatable:
                    raise ConnectionFailed(f"{method} {url} failed: {error}") from error
                _sleep(attempt, None)
                continue
            if (
                response.status_code == 409
                and waited < KEY_IN_PROGRESS_WAIT
                and _problem(response).type == KEY_IN_PROGRESS
            ):
                attempt -= 1  # waiting on the first request is not an attempt of this one
                waited += _sleep(1, _retry_after(response))
                continue
            if not last and _retried(repeatable, response):
                _sleep(attempt, _retry_after(response))
                continue
            if response.status_code >= 400:
                raise error_for(_problem(response))
            return response


def _retried(repeatable: bool, response: httpx.Response) -> bool:
    status = response.status_code
    if not repeatable:
        return status in (429, 503)
    return status in RETRIED_STATUSES


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER) if value.isdigit() else None


def _sleep(attempt: int, retry_after: float | None) -> float:
    first, largest = BACKOFF
    backoff = random.uniform(0, min(largest, first * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not secrets
    pause = max(backoff, retry_after or 0.0)
    time.sleep(pause)
    return pause


def _problem(response: httpx.Response) -> Problem:
    """The problem the API answered; API Gateway's own refusals ({"message": ...}) are made one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "title" in body and "status" in body:
        return Problem.model_validate(body)
    detail = body.get("message") if isinstance(body, dict) else response.text[:500] or None
    return Problem(title=response.reason_phrase or "Error", status=response.status_code, detail=detail)
