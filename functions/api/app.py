"""The REST API of script-execution tasks and webhook endpoints: parse the request, call the domain, shape the
response. Its routes, parameters and answers are declared here (longrun.rest_api), and tools/openapi.py writes the
OpenAPI document from them."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import api_requests, cold_start, idempotency, scripts
from longrun.api_requests import DEVICE_SCAN_WINDOW, RESULT_PAGE_MAX
from longrun.callers import owner_of
from longrun.config import settings
from longrun.errors import TaskError
from longrun.links import SCRIPTS, TASKS, WEBHOOKS, Links
from longrun.records import DeviceStatus, Owner, TaskStatus
from longrun.rest_api import (
    PROBLEM_JSON,
    Body,
    Request,
    Response,
    RestApi,
    answer,
    choice_query,
    integer_query,
    path_parameter,
    problem_answer,
    text_header,
    text_query,
)
from longrun.services import script_executions, webhooks
from longrun.store import WriteConflict, utc_now

if TYPE_CHECKING:  # longrun.tasks is imported by the first request that needs it (longrun.services)
    from longrun.tasks import Stream, TaskAnswer

TASK_ID = path_parameter("task_id", "The task's id (an id of another form names no task: 404)")
WEBHOOK_ID = path_parameter("webhook_id", "The endpoint's id (an id of another form names no endpoint: 404)")
DEVICE_ID = path_parameter(
    "device_id",
    "A device id of the task, URL-encoded (as its href has it); an integer id by its decimal form",
    min_length=1,
    max_length=256,
)
IDEMPOTENCY_KEY = text_header(
    "Idempotency-Key",
    "Makes the request safe to repeat: for 24 hours the same key with the same body answers the first answer again "
    "and does nothing more; with another body 422; while the first is still in progress 409 with Retry-After. A key "
    "belongs to its caller.",
    idempotency.KEY_PATTERN,
    key="idempotency_key",
)
NEXT_TOKEN = text_query("next-token", "From the previous page")

logger = Logger()
metrics = Metrics()
# On a custom domain, the request path starts with the domain's base path mapping: routes start after it.
BASE_PATH = re.compile(r"^/.*?(?=/device-management(?:/|$))")
api = RestApi(BASE_PATH)


def schema(model: str) -> dict[str, Any]:
    """A reference to one of the contract's models (longrun.models) in the OpenAPI document."""
    return {"$ref": f"#/components/schemas/{model}"}


def returns(model: str, description: str, **more: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema(model)}}, **more}


PROBLEMS: dict[int, dict[str, Any]] = {
    status: {"description": title, "content": {PROBLEM_JSON: {"schema": schema("Problem")}}}
    for status, title in {
        400: "Malformed request",
        401: "No caller identity",
        404: "No such task, device or webhook",
        409: "The task or device is not in a state that allows this",
        415: "The body is not JSON (Content-Type must be application/json)",
        422: "The request is not valid",
        503: "The workflow could not be started, or the task is busy: retry after Retry-After",
    }.items()
}
RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before polling again; absent once finished",
        "schema": {"type": "integer"},
    }
}
LOCATION: dict[str, Any] = {"Location": {"description": "The task to poll", "schema": {"type": "string"}}}
DOWNLOAD: dict[str, Any] = {
    "Location": {
        "description": f"A presigned S3 GET URL of the whole stream, valid {scripts.DOWNLOAD_URL_SECONDS} seconds;"
        " fetch it without an Authorization header",
        "schema": {"type": "string", "format": "uri"},
    }
}


KEY_IN_PROGRESS: dict[int, dict[str, Any]] = {
    409: {
        "description": "The first request with this Idempotency-Key has not finished: repeat it after Retry-After",
        "content": {PROBLEM_JSON: {"schema": schema("Problem")}},
    }
}
KEY_UNAVAILABLE: dict[int, dict[str, Any]] = {
    503: {
        "description": "The Idempotency-Key's record could not be read or written: retry after Retry-After",
        "content": {PROBLEM_JSON: {"schema": schema("Problem")}},
    }
}


def _problems(*statuses: int) -> dict[int, dict[str, Any]]:
    return {status: PROBLEMS[status] for status in statuses}


def _limit(what: str, maximum: int, default: int) -> Any:
    return integer_query("limit", f"{what} per page", 1, maximum, default)


class _Unauthenticated(Exception):
    pass


def _caller(request: Request) -> Owner:
    """Who owns what this request makes and sees (longrun.callers)."""
    context = request.request_context
    identity = context.get("identity") or {}
    owner = owner_of(context.get("authorizer"), identity.get("caller"), identity.get("userArn"), settings().owner_scope)
    if owner is None:
        raise _Unauthenticated()
    return owner


def _audit(owner: Owner, action: str, **what: Any) -> None:
    """The audit line of a change: who (the caller's ARN or principal), what, and when (the line's timestamp). A
    webhook's URL is named by its host only: its path or query may hold a secret."""
    logger.info("audit", extra={"audit": {"who": owner.name, "action": action, **what}})


def _links(request: Request) -> Links:
    """Links that resolve on the URL the client used: the request's path before the API's own resource path is the
    stage (execute-api URL) or a custom domain's base path."""
    used = str(request.request_context.get("path") or request.path).rstrip("/")
    extra = used.count("/") - str(request.event.get("resource") or "").rstrip("/").count("/")
    return Links(base="/".join(used.split("/")[: extra + 1]) if extra > 0 else "")


def _task(found: TaskAnswer, status: int) -> Response:
    wait = found.retry_after
    return answer(found.view, status, {"Retry-After": str(wait)} if wait is not None else {})


@api.route(
    "POST",
    TASKS,
    params=(IDEMPOTENCY_KEY,),
    body=Body("ScriptExecutionRequest", api_requests.submission),
    summary="Run a script on a fleet of devices",
    description="Answers at once with 202 and a Location to poll; the script runs on every device in the background.",
    responses={
        202: returns("ScriptExecution", "Accepted; poll Location for progress", headers={**LOCATION, **RETRY_AFTER}),
        **_problems(400, 401, 415, 422, 503),
        **KEY_IN_PROGRESS,
    },
    tags=["script-execution"],
)
def submit(request: Request, body: api_requests.Submission, idempotency_key: str | None) -> Response:
    owner = _caller(request)
    found = script_executions().submit(owner, body, _links(request), idempotency_key)
    task_id = found.view["id"]
    logger.set_correlation_id(task_id)
    devices = len(body.device_ids)
    _audit(owner, "submit", task=task_id, devices=devices, script=body.settings.script_url)
    metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="DevicesRequested", unit=MetricUnit.Count, value=devices)
    response = _task(found, 202)
    response.headers["Location"] = found.view["href"]
    return response


@api.route(
    "GET",
    TASKS,
    params=(
        choice_query("status", "Only tasks in this status", TaskStatus),
        _limit("Tasks", 100, 20),
        NEXT_TOKEN,
    ),
    summary="List the caller's tasks, newest first",
    responses={200: returns("ScriptExecutionPage", "A page of tasks"), **_problems(400, 401, 422)},
    tags=["script-execution"],
)
def list_tasks(request: Request, status: TaskStatus | None, limit: int, next_token: str | None) -> Response:
    return answer(script_executions().list(_caller(request), status, limit, next_token, _links(request)))


@api.route(
    "GET",
    f"{TASKS}/{{task_id}}",
    params=(TASK_ID,),
    summary="A task's status and progress",
    responses={200: returns("ScriptExecution", "The task", headers=RETRY_AFTER), **_problems(401, 404, 422)},
    tags=["script-execution"],
)
def describe(request: Request, task_id: str) -> Response:
    logger.set_correlation_id(task_id)
    return _task(script_executions().describe(_caller(request), task_id, _links(request)), 200)


@api.route(
    "GET",
    f"{TASKS}/{{task_id}}/result",
    params=(TASK_ID, _limit("Devices", RESULT_PAGE_MAX, RESULT_PAGE_MAX), NEXT_TOKEN),
    summary="Each device's outcome, once the task has finished",
    responses={200: returns("ScriptExecutionResult", "Per-device result"), **_problems(400, 401, 404, 409, 422)},
    tags=["script-execution"],
)
def result(request: Request, task_id: str, limit: int, next_token: str | None) -> Response:
    logger.set_correlation_id(task_id)
    return answer(script_executions().result(_caller(request), task_id, limit, next_token))


@api.route(
    "GET",
    f"{TASKS}/{{task_id}}/devices",
    params=(
        TASK_ID,
        choice_query("status", "Only devices in this status now", DeviceStatus),
        _limit("Devices", RESULT_PAGE_MAX, RESULT_PAGE_MAX),
        NEXT_TOKEN,
    ),
    summary="Each device's current state, while the task runs and after",
    description="Devices in the order the request listed them: PENDING (not sent yet), RUNNING (sent to SSM), or "
    "the outcome recorded for it; once the task has finished, NOT_STARTED for those that never started. With "
    f"`status`, a page looks at up to {DEVICE_SCAN_WINDOW:,} devices of the task, so it may hold fewer than `limit` "
    "devices, or none, and still have a `next-token`: follow it until there is none. A device that has run links "
    "to its whole stdout and stderr.",
    responses={200: returns("DevicePage", "A page of devices"), **_problems(400, 401, 404, 422)},
    tags=["script-execution"],
)
def list_devices(
    request: Request, task_id: str, status: DeviceStatus | None, limit: int, next_token: str | None
) -> Response:
    logger.set_correlation_id(task_id)
    owner = _caller(request)
    return answer(script_executions().devices(owner, task_id, status, limit, next_token, _links(request)))


@api.route(
    "GET",
    f"{TASKS}/{{task_id}}/devices/{{device_id}}",
    params=(TASK_ID, DEVICE_ID),
    summary="A device's current state",
    responses={200: returns("DeviceState", "The device"), **_problems(401, 404, 422)},
    tags=["script-execution"],
)
def describe_device(request: Request, task_id: str, device_id: str) -> Response:
    logger.set_correlation_id(task_id)
    return answer(script_executions().device(_caller(request), task_id, unquote(device_id), _links(request)))


def _output_route(stream: Stream) -> dict[str, Any]:
    return {
        "method": "GET",
        "path": f"{TASKS}/{{task_id}}/devices/{{device_id}}/{stream}",
        "params": (TASK_ID, DEVICE_ID),
        "summary": f"A finished device's whole {stream}",
        "description": f"Answers 303 See Other to a presigned S3 URL of the device's whole {stream}, valid "
        f"{scripts.DOWNLOAD_URL_SECONDS} seconds (fetch it without an Authorization header), or 204 if S3 holds "
        "none of it: the stream was empty (SSM stores nothing then), or it expired (the OutputRetentionDays "
        "parameter). For the task's owner only.",
        "responses": {
            303: {"description": f"The {stream} is at Location", "headers": DOWNLOAD},
            204: {"description": f"The {stream} is empty (or expired)"},
            404: {
                "description": "No such task or device, or the device finished without running",
                "content": {PROBLEM_JSON: {"schema": schema("Problem")}},
            },
            409: {
                "description": "The device has not finished: its output is ready once it has",
                "content": {PROBLEM_JSON: {"schema": schema("Problem")}},
            },
            **_problems(401, 422),
        },
        "tags": ["script-execution"],
    }


def _output(request: Request, task_id: str, device_id: str, stream: Stream) -> Response:
    logger.set_correlation_id(task_id)
    url = script_executions().device_output(_caller(request), task_id, unquote(device_id), stream)
    if url is None:
        return Response(204)
    return Response(303, headers={"Location": url})


@api.route(**_output_route("stdout"))
def device_stdout(request: Request, task_id: str, device_id: str) -> Response:
    return _output(request, task_id, device_id, "stdout")


@api.route(**_output_route("stderr"))
def device_stderr(request: Request, task_id: str, device_id: str) -> Response:
    return _output(request, task_id, device_id, "stderr")


@api.route(
    "POST",
    SCRIPTS,
    body=Body("ScriptUploadRequest", api_requests.script_digest),
    summary="Upload a script: where it goes, and a presigned URL to put it there",
    description="Give the file's SHA-256 and size. If the bucket holds it already, 200 with its `script-url` and "
    "`upload` null; otherwise 201 with the `script-url` and `upload`: PUT the file to `upload.url` with exactly "
    f"`upload.headers` (and no Authorization header) within {scripts.UPLOAD_URL_SECONDS} seconds. S3 refuses a "
    "body of another length or digest. Then submit tasks with the `script-url` as it is.",
    responses={
        200: returns("ScriptLocation", "The bucket holds the script already"),
        201: returns("ScriptLocation", "Upload the script as `upload` says"),
        **_problems(400, 401, 415, 422),
    },
    tags=["scripts"],
)
def upload_script(request: Request, body: api_requests.ScriptDigest) -> Response:
    owner = _caller(request)
    location = scripts.offer_upload(settings().scripts_bucket, body, utc_now())
    _audit(owner, "upload-script", sha256=body.sha256, new=bool(location["upload"]))
    return answer(location, 201 if location["upload"] else 200)


@api.route(
    "DELETE",
    f"{TASKS}/{{task_id}}",
    params=(TASK_ID,),
    summary="Cancel a task (idempotent)",
    description="202 while running scripts are being stopped, 200 once the task is CANCELLED.",
    responses={
        200: returns("ScriptExecution", "The task is cancelled"),
        202: returns("ScriptExecution", "Cancelling; poll the task", headers=RETRY_AFTER),
        **_problems(401, 404, 409, 422, 503),
    },
    tags=["script-execution"],
)
def cancel(request: Request, task_id: str) -> Response:
    logger.set_correlation_id(task_id)
    owner = _caller(request)
    found = script_executions().cancel(owner, task_id, _links(request))
    _audit(owner, "cancel", task=task_id, status=found.status.value)
    return _task(found, 200 if found.status is TaskStatus.CANCELLED else 202)


@api.route(
    "POST",
    WEBHOOKS,
    params=(IDEMPOTENCY_KEY,),
    body=Body("WebhookRequest", api_requests.new_webhook),
    summary="Add a webhook endpoint",
    description="The endpoint receives the caller's task events, signed as Standard Webhooks says. Its secret is "
    "in this answer only.",
    responses={
        201: returns("Webhook", "The endpoint, with its secret"),
        **_problems(400, 401, 415, 422),
        **KEY_IN_PROGRESS,
        **KEY_UNAVAILABLE,
    },
    tags=["webhooks"],
)
def add_webhook(request: Request, body: api_requests.NewWebhook, idempotency_key: str | None) -> Response:
    owner = _caller(request)
    endpoint = webhooks().add(owner, body, _links(request), idempotency_key)
    _audit(owner, "add-webhook", webhook=endpoint["id"], host=urlsplit(endpoint["url"]).hostname)
    return answer(endpoint, 201, {"Location": endpoint["href"]})


@api.route(
    "GET",
    WEBHOOKS,
    params=(_limit("Endpoints", 100, 20), NEXT_TOKEN),
    summary="List the caller's webhook endpoints",
    responses={200: returns("WebhookPage", "A page of endpoints"), **_problems(400, 401, 422)},
    tags=["webhooks"],
)
def list_webhooks(request: Request, limit: int, next_token: str | None) -> Response:
    return answer(webhooks().list(_caller(request), limit, next_token, _links(request)))


@api.route(
    "GET",
    f"{WEBHOOKS}/{{webhook_id}}",
    params=(WEBHOOK_ID,),
    summary="A webhook endpoint",
    responses={200: returns("Webhook", "The endpoint"), **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def describe_webhook(request: Request, webhook_id: str) -> Response:
    return answer(webhooks().describe(_caller(request), webhook_id, _links(request)))


@api.route(
    "DELETE",
    f"{WEBHOOKS}/{{webhook_id}}",
    params=(WEBHOOK_ID,),
    summary="Remove a webhook endpoint",
    responses={204: {"description": "Removed"}, **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def remove_webhook(request: Request, webhook_id: str) -> Response:
    owner = _caller(request)
    webhooks().remove(owner, webhook_id)
    _audit(owner, "remove-webhook", webhook=webhook_id)
    return Response(204)


@api.route(
    "POST",
    f"{WEBHOOKS}/{{webhook_id}}/test",
    params=(WEBHOOK_ID,),
    summary="Send the endpoint a test event (webhook.ping)",
    responses={202: returns("WebhookDelivery", "The delivery, queued"), **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def ping_webhook(request: Request, webhook_id: str) -> Response:
    return answer(webhooks().ping(_caller(request), webhook_id), 202)


@api.route(
    "POST",
    f"{WEBHOOKS}/{{webhook_id}}/rotate-secret",
    params=(WEBHOOK_ID,),
    summary="Give the endpoint a new secret",
    description="Deliveries are signed with both the new and the previous secret for 24 hours.",
    responses={200: returns("Webhook", "The endpoint, with its new secret"), **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def rotate_webhook_secret(request: Request, webhook_id: str) -> Response:
    owner = _caller(request)
    endpoint = webhooks().rotate_secret(owner, webhook_id, _links(request))
    _audit(owner, "rotate-webhook-secret", webhook=webhook_id)
    return answer(endpoint)


@api.route(
    "GET",
    f"{WEBHOOKS}/{{webhook_id}}/deliveries",
    params=(WEBHOOK_ID, _limit("Deliveries", 100, 20), NEXT_TOKEN),
    summary="The endpoint's deliveries, newest first, each with every attempt",
    responses={200: returns("WebhookDeliveryPage", "A page of deliveries"), **_problems(400, 401, 404, 422)},
    tags=["webhooks"],
)
def list_webhook_deliveries(request: Request, webhook_id: str, limit: int, next_token: str | None) -> Response:
    return answer(webhooks().deliveries(_caller(request), webhook_id, limit, next_token))


@api.on(TaskError)
def _task_error(error: TaskError, request: Request) -> Response:
    retry = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return problem_answer(error.status, error.kind, error.title, error.detail, request.path, error.errors, retry)


@api.on(WriteConflict)
def _busy(_: WriteConflict, request: Request) -> Response:
    return problem_answer(
        503,
        "task-busy",
        "The task is busy",
        "the task is being updated by its devices; try again shortly",
        request.path,
        headers={"Retry-After": "1"},
    )


@api.on(_Unauthenticated)
def _unauthenticated(_: _Unauthenticated, request: Request) -> Response:
    return problem_answer(
        401,
        "no-caller-identity",
        "No caller identity",
        "the request carries no authorizer principal or IAM caller",
        request.path,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return api.resolve(event)


cold_start.init_done()
