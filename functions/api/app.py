"""The REST API of script-execution tasks and webhook endpoints: parse the request, call the domain, shape the
response."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import idempotency, scripts
from longrun.callers import owner_of
from longrun.config import settings
from longrun.errors import InvalidRequest, TaskError, problem_type
from longrun.links import SCRIPTS, TASKS, WEBHOOKS, Links
from longrun.models import (
    DevicePage,
    DeviceState,
    FieldError,
    Problem,
    ScriptExecution,
    ScriptExecutionPage,
    ScriptExecutionRequest,
    ScriptExecutionResult,
    ScriptLocation,
    ScriptUploadRequest,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookPage,
    WebhookRequest,
)
from longrun.records import DeviceStatus, Owner, TaskStatus
from longrun.services import script_executions, webhooks
from longrun.store import WriteConflict, utc_now
from longrun.tasks import DEVICE_SCAN_WINDOW, RESULT_PAGE_MAX, Stream

PROBLEM_JSON = "application/problem+json"
TaskId = Annotated[str, Path(description="The task's id (an id of another form names no task: 404)")]
WebhookId = Annotated[str, Path(description="The endpoint's id (an id of another form names no endpoint: 404)")]
DeviceId = Annotated[
    str,
    Path(
        description="A device id of the task, URL-encoded (as its href has it); an integer id by its decimal form",
        min_length=1,
        max_length=256,
    ),
]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes the request safe to repeat: for 24 hours the same key with the same body answers the first "
        "answer again and does nothing more; with another body 422; while the first is still in progress 409 with "
        "Retry-After. A key belongs to its caller.",
        pattern=idempotency.KEY_PATTERN,
    ),
]

logger = Logger()
metrics = Metrics()
# On a custom domain, the request path starts with the domain's base path mapping: routes start after it.
BASE_PATH = re.compile(r"^/.*?(?=/device-management(?:/|$))")
app = APIGatewayRestResolver(enable_validation=True, strip_prefixes=[BASE_PATH])

PROBLEMS: dict[int, OpenAPIResponse] = {
    status: {"description": title, "content": {PROBLEM_JSON: {"model": Problem}}}
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


def _problems(*statuses: int) -> dict[int, OpenAPIResponse]:
    return {status: PROBLEMS[status] for status in statuses}


def _caller() -> Owner:
    """Who owns what this request makes and sees (longrun.callers)."""
    context = app.current_event.request_context
    authorizer = context.authorizer.raw_event if context.authorizer else None
    owner = owner_of(authorizer, context.identity.caller, context.identity.user_arn, settings().owner_scope)
    if owner is None:
        raise _Unauthenticated()
    return owner


def _audit(owner: Owner, action: str, **what: Any) -> None:
    """The audit line of a change: who (the caller's ARN or principal), what, and when (the line's timestamp). A
    webhook's URL is named by its host only: its path or query may hold a secret."""
    logger.info("audit", extra={"audit": {"who": owner.name, "action": action, **what}})


def _links() -> Links:
    """Links that resolve on the URL the client used: the request's path before the API's own resource path is the
    stage (execute-api URL) or a custom domain's base path."""
    event = app.current_event
    used = (event.request_context.path or event.path).rstrip("/")
    extra = used.count("/") - event.resource.rstrip("/").count("/")
    return Links(base="/".join(used.split("/")[: extra + 1]) if extra > 0 else "")


class _Unauthenticated(Exception):
    pass


def _json(model: Any, status: int, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=model,
        headers=headers or {},
    )


def _json_only(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """A body is JSON: any other Content-Type (a form, text) is refused with 415, before the route runs (Powertools
    reads a form as a body too: if it fails validation, ``_invalid`` answers the same)."""
    content_type = _non_json_content_type()
    if content_type:
        return _unsupported_media_type(content_type)
    return next_middleware(router)


def _non_json_content_type() -> str | None:
    """The request's Content-Type if it says its body is something else than JSON."""
    content_type = app.current_event.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        return content_type
    return None


def _unsupported_media_type(content_type: str) -> Response[Any]:
    return _problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"the body must be JSON (application/json), not {content_type}",
    )


def _with_retry_after(view: ScriptExecution, status: int) -> Response[ScriptExecution]:
    wait = view.retry_after
    return _json(view, status, {"Retry-After": str(wait)} if wait is not None else {})


@app.post(
    TASKS,
    summary="Run a script on a fleet of devices",
    description="Answers at once with 202 and a Location to poll; the script runs on every device in the background.",
    responses={
        202: {"description": "Accepted; poll Location for progress", "headers": {**LOCATION, **RETRY_AFTER}},
        **_problems(400, 401, 415, 422, 503),
    },
    tags=["script-execution"],
    middlewares=[_json_only],
)
def submit(
    request: Annotated[ScriptExecutionRequest, Body()], idempotency_key: IdempotencyKey = None
) -> Response[ScriptExecution]:
    owner = _caller()
    view = script_executions().submit(owner, request, _links(), idempotency_key)
    logger.set_correlation_id(view.id)
    _audit(owner, "submit", task=view.id, devices=len(view.device_ids), script=view.script_url)
    metrics.add_metric(name="TasksSubmitted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="DevicesRequested", unit=MetricUnit.Count, value=len(view.device_ids))
    response = _with_retry_after(view, 202)
    response.headers["Location"] = view.href
    return response


@app.get(
    TASKS,
    summary="List the caller's tasks, newest first",
    responses={200: {"description": "A page of tasks"}, **_problems(400, 401, 422)},
    tags=["script-execution"],
)
def list_tasks(
    status: Annotated[TaskStatus | None, Query(description="Only tasks in this status")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Tasks per page")] = 20,
    next_token: Annotated[str | None, Query(alias="next-token", description="From the previous page")] = None,
) -> Response[ScriptExecutionPage]:
    return _json(script_executions().list(_caller(), status, limit, next_token, _links()), 200)


@app.get(
    f"{TASKS}/<task_id>",
    summary="A task's status and progress",
    responses={200: {"description": "The task", "headers": RETRY_AFTER}, **_problems(401, 404, 422)},
    tags=["script-execution"],
)
def describe(task_id: TaskId) -> Response[ScriptExecution]:
    logger.set_correlation_id(task_id)
    return _with_retry_after(script_executions().describe(_caller(), task_id, _links()), 200)


@app.get(
    f"{TASKS}/<task_id>/result",
    summary="Each device's outcome, once the task has finished",
    responses={200: {"description": "Per-device result"}, **_problems(400, 401, 404, 409, 422)},
    tags=["script-execution"],
)
def result(
    task_id: TaskId,
    limit: Annotated[int, Query(ge=1, le=RESULT_PAGE_MAX, description="Devices per page")] = RESULT_PAGE_MAX,
    next_token: Annotated[str | None, Query(alias="next-token", description="From the previous page")] = None,
) -> Response[ScriptExecutionResult]:
    logger.set_correlation_id(task_id)
    return _json(script_executions().result(_caller(), task_id, limit, next_token), 200)


@app.get(
    f"{TASKS}/<task_id>/devices",
    summary="Each device's current state, while the task runs and after",
    description="Devices in the order the request listed them: PENDING (not sent yet), RUNNING (sent to SSM), or "
    "the outcome recorded for it; once the task has finished, NOT_STARTED for those that never started. With "
    f"`status`, a page looks at up to {DEVICE_SCAN_WINDOW:,} devices of the task, so it may hold fewer than `limit` "
    "devices, or none, and still have a `next-token`: follow it until there is none. A device that has run links "
    "to its whole stdout and stderr.",
    responses={200: {"description": "A page of devices"}, **_problems(400, 401, 404, 422)},
    tags=["script-execution"],
)
def list_devices(
    task_id: TaskId,
    status: Annotated[DeviceStatus | None, Query(description="Only devices in this status now")] = None,
    limit: Annotated[int, Query(ge=1, le=RESULT_PAGE_MAX, description="Devices per page")] = RESULT_PAGE_MAX,
    next_token: Annotated[str | None, Query(alias="next-token", description="From the previous page")] = None,
) -> Response[DevicePage]:
    logger.set_correlation_id(task_id)
    return _json(script_executions().devices(_caller(), task_id, status, limit, next_token, _links()), 200)


@app.get(
    f"{TASKS}/<task_id>/devices/<device_id>",
    summary="A device's current state",
    responses={200: {"description": "The device"}, **_problems(401, 404, 422)},
    tags=["script-execution"],
)
def describe_device(task_id: TaskId, device_id: DeviceId) -> Response[DeviceState]:
    logger.set_correlation_id(task_id)
    return _json(script_executions().device(_caller(), task_id, unquote(device_id), _links()), 200)


def _output(task_id: str, device_id: str, stream: Stream) -> Response[None]:
    logger.set_correlation_id(task_id)
    url = script_executions().device_output(_caller(), task_id, unquote(device_id), stream)
    if url is None:
        return Response(status_code=204)
    return Response(status_code=303, headers={"Location": url})


def _output_route(stream: Stream) -> dict[str, Any]:
    return {
        "rule": f"{TASKS}/<task_id>/devices/<device_id>/{stream}",
        "summary": f"A finished device's whole {stream}",
        "description": f"Answers 303 See Other to a presigned S3 URL of the device's whole {stream}, valid "
        f"{scripts.DOWNLOAD_URL_SECONDS} seconds (fetch it without an Authorization header), or 204 if S3 holds "
        "none of it: the stream was empty (SSM stores nothing then), or it expired (the OutputRetentionDays "
        "parameter). For the task's owner only.",
        "responses": {
            303: {"description": f"The {stream} is at Location", "headers": DOWNLOAD, "content": {}},
            204: {"description": f"The {stream} is empty (or expired)", "content": {}},
            404: {
                "description": "No such task or device, or the device finished without running",
                "content": {PROBLEM_JSON: {"model": Problem}},
            },
            409: {
                "description": "The device has not finished: its output is ready once it has",
                "content": {PROBLEM_JSON: {"model": Problem}},
            },
            **_problems(401, 422),
        },
        "tags": ["script-execution"],
    }


@app.get(**_output_route("stdout"))
def device_stdout(task_id: TaskId, device_id: DeviceId) -> Response[None]:
    return _output(task_id, device_id, "stdout")


@app.get(**_output_route("stderr"))
def device_stderr(task_id: TaskId, device_id: DeviceId) -> Response[None]:
    return _output(task_id, device_id, "stderr")


@app.post(
    SCRIPTS,
    summary="Upload a script: where it goes, and a presigned URL to put it there",
    description="Give the file's SHA-256 and size. If the bucket holds it already, 200 with its `script-url` and "
    "`upload` null; otherwise 201 with the `script-url` and `upload`: PUT the file to `upload.url` with exactly "
    f"`upload.headers` (and no Authorization header) within {scripts.UPLOAD_URL_SECONDS} seconds. S3 refuses a "
    "body of another length or digest. Then submit tasks with the `script-url` as it is.",
    responses={
        200: {"description": "The bucket holds the script already"},
        201: {"description": "Upload the script as `upload` says"},
        **_problems(400, 401, 415, 422),
    },
    tags=["scripts"],
    middlewares=[_json_only],
)
def upload_script(request: Annotated[ScriptUploadRequest, Body()]) -> Response[ScriptLocation]:
    owner = _caller()
    location = scripts.offer_upload(settings().scripts_bucket, request, utc_now())
    _audit(owner, "upload-script", sha256=request.sha256, new=bool(location.upload))
    return _json(location, 201 if location.upload else 200)


@app.delete(
    f"{TASKS}/<task_id>",
    summary="Cancel a task (idempotent)",
    description="202 while running scripts are being stopped, 200 once the task is CANCELLED.",
    responses={
        200: {"description": "The task is cancelled"},
        202: {"description": "Cancelling; poll the task", "headers": RETRY_AFTER},
        **_problems(401, 404, 409, 422, 503),
    },
    tags=["script-execution"],
)
def cancel(task_id: TaskId) -> Response[ScriptExecution]:
    logger.set_correlation_id(task_id)
    owner = _caller()
    view = script_executions().cancel(owner, task_id, _links())
    _audit(owner, "cancel", task=task_id, status=view.status.value)
    return _with_retry_after(view, 200 if view.status is TaskStatus.CANCELLED else 202)


@app.post(
    WEBHOOKS,
    summary="Add a webhook endpoint",
    description="The endpoint receives the caller's task events, signed as Standard Webhooks says. Its secret is "
    "in this answer only.",
    responses={201: {"description": "The endpoint, with its secret"}, **_problems(400, 401, 415, 422)},
    tags=["webhooks"],
    middlewares=[_json_only],
)
def add_webhook(
    request: Annotated[WebhookRequest, Body()], idempotency_key: IdempotencyKey = None
) -> Response[Webhook]:
    owner = _caller()
    endpoint = webhooks().add(owner, request, _links(), idempotency_key)
    _audit(owner, "add-webhook", webhook=endpoint.id, host=urlsplit(endpoint.url).hostname)
    response = _json(endpoint, 201)
    response.headers["Location"] = endpoint.href
    return response


@app.get(
    WEBHOOKS,
    summary="List the caller's webhook endpoints",
    responses={200: {"description": "A page of endpoints"}, **_problems(400, 401, 422)},
    tags=["webhooks"],
)
def list_webhooks(
    limit: Annotated[int, Query(ge=1, le=100, description="Endpoints per page")] = 20,
    next_token: Annotated[str | None, Query(alias="next-token", description="From the previous page")] = None,
) -> Response[WebhookPage]:
    return _json(webhooks().list(_caller(), limit, next_token, _links()), 200)


@app.get(
    f"{WEBHOOKS}/<webhook_id>",
    summary="A webhook endpoint",
    responses={200: {"description": "The endpoint"}, **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def describe_webhook(webhook_id: WebhookId) -> Response[Webhook]:
    return _json(webhooks().describe(_caller(), webhook_id, _links()), 200)


@app.delete(
    f"{WEBHOOKS}/<webhook_id>",
    summary="Remove a webhook endpoint",
    responses={204: {"description": "Removed"}, **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def remove_webhook(webhook_id: WebhookId) -> Response[None]:
    owner = _caller()
    webhooks().remove(owner, webhook_id)
    _audit(owner, "remove-webhook", webhook=webhook_id)
    return Response(status_code=204)


@app.post(
    f"{WEBHOOKS}/<webhook_id>/test",
    summary="Send the endpoint a test event (webhook.ping)",
    responses={202: {"description": "The delivery, queued"}, **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def ping_webhook(webhook_id: WebhookId) -> Response[WebhookDelivery]:
    return _json(webhooks().ping(_caller(), webhook_id), 202)


@app.post(
    f"{WEBHOOKS}/<webhook_id>/rotate-secret",
    summary="Give the endpoint a new secret",
    description="Deliveries are signed with both the new and the previous secret for 24 hours.",
    responses={200: {"description": "The endpoint, with its new secret"}, **_problems(401, 404, 422)},
    tags=["webhooks"],
)
def rotate_webhook_secret(webhook_id: WebhookId) -> Response[Webhook]:
    owner = _caller()
    endpoint = webhooks().rotate_secret(owner, webhook_id, _links())
    _audit(owner, "rotate-webhook-secret", webhook=webhook_id)
    return _json(endpoint, 200)


@app.get(
    f"{WEBHOOKS}/<webhook_id>/deliveries",
    summary="The endpoint's deliveries, newest first, each with every attempt",
    responses={200: {"description": "A page of deliveries"}, **_problems(400, 401, 404, 422)},
    tags=["webhooks"],
)
def list_webhook_deliveries(
    webhook_id: WebhookId,
    limit: Annotated[int, Query(ge=1, le=100, description="Deliveries per page")] = 20,
    next_token: Annotated[str | None, Query(alias="next-token", description="From the previous page")] = None,
) -> Response[WebhookDeliveryPage]:
    return _json(webhooks().deliveries(_caller(), webhook_id, limit, next_token), 200)


def _problem(
    status: int, kind: str, title: str, detail: str | None, errors: list[FieldError] | None = None
) -> Response[Any]:
    problem = Problem(
        type=problem_type(kind),
        title=title,
        status=status,
        detail=detail,
        instance=app.current_event.path,
        errors=errors,
    )
    return Response(status_code=status, content_type=PROBLEM_JSON, body=problem.model_dump_json())


VALIDATOR_TAG = re.compile(r"^(str|int|float|bool|none|constrained-.+|function-.+|.+\[.*\])$")
"""The parts of a validation error's location that name one of pydantic's validators (a member of a union, a
constraint), not a field"""
TYPE_MISMATCHES = {"string_type", "int_type", "float_type", "bool_type", "none_required"}


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def _invalid(error: RequestValidationError) -> Response[Any]:
    """Every field error at once, each at its field as the API spells it (body.device-ids.0). Where a value may take
    one of several types, a type it does not have is left out when another error says what is wrong with it."""
    content_type = _non_json_content_type() if app.current_event.body else None
    if content_type:
        return _unsupported_media_type(content_type)
    found = [
        (".".join(str(part) for part in item["loc"] if not VALIDATOR_TAG.match(str(part))), item)
        for item in error.errors()
    ]
    explained = {field for field, item in found if item["type"] not in TYPE_MISMATCHES}
    errors: list[FieldError] = []
    for field, item in found:
        kept = FieldError(field=field, message=item["msg"])
        if (item["type"] not in TYPE_MISMATCHES or field not in explained) and kept not in errors:
            errors.append(kept)
    if any(item["type"] == "json_invalid" for item in error.errors()):
        return _problem(400, "malformed-request", "Malformed request", "the body is not valid JSON", errors)
    return _problem(422, InvalidRequest.kind, "Invalid request", "the request does not match the API's schema", errors)


@app.exception_handler(UnicodeDecodeError)  # type: ignore[untyped-decorator]
def _not_text(_: UnicodeDecodeError) -> Response[Any]:
    return _problem(400, "malformed-request", "Malformed request", "the body is not UTF-8 encoded JSON")


@app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
def _not_json(_: RequestUnsupportedContentType) -> Response[Any]:
    return _unsupported_media_type(app.current_event.headers.get("content-type", ""))


@app.exception_handler(ValueError)  # type: ignore[untyped-decorator]
def _unreadable_form(error: ValueError) -> Response[Any]:
    """Powertools parses a form body before any route sees it, and fails on one it cannot read (multipart without a
    boundary): a body that is not JSON is a 415 whatever its form. Any other ValueError is a fault, and stays one."""
    content_type = _non_json_content_type()
    if content_type is None:
        raise error
    return _unsupported_media_type(content_type)


@app.exception_handler(RecursionError)  # type: ignore[untyped-decorator]
def _too_deep(_: RecursionError) -> Response[Any]:
    return _problem(400, "malformed-request", "Malformed request", "the body's JSON nests too deeply to be read")


@app.exception_handler(TaskError)  # type: ignore[untyped-decorator]
def _task_error(error: TaskError) -> Response[Any]:
    response = _problem(error.status, error.kind, error.title, error.detail, error.errors)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@app.exception_handler(WriteConflict)  # type: ignore[untyped-decorator]
def _busy(_: WriteConflict) -> Response[Any]:
    response = _problem(
        503, "task-busy", "The task is busy", "the task is being updated by its devices; try again shortly"
    )
    response.headers["Retry-After"] = "1"
    return response


@app.exception_handler(_Unauthenticated)  # type: ignore[untyped-decorator]
def _unauthenticated(_: _Unauthenticated) -> Response[Any]:
    return _problem(
        401, "no-caller-identity", "No caller identity", "the request carries no authorizer principal or IAM caller"
    )


@app.not_found
def _not_found(_: Exception) -> Response[Any]:
    return _problem(
        404, "no-such-resource", "Not found", f"no resource at {app.current_event.http_method} {app.current_event.path}"
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register(context)
    return app.resolve(event, context)
