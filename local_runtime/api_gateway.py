"""API Gateway, locally: real HTTP in front of the template's REST API, answering as the deployed stage would.

The API is served under its stage (``/v1/...``), as on its ``execute-api`` URL; a path outside a stage answers 403
``{"message":"Forbidden"}``. Within the stage, a path or a method the API does not define answers
MISSING_AUTHENTICATION_TOKEN, and every error API Gateway itself produces is rendered through the template's gateway
responses (or API Gateway's defaults) with the ``$context`` variables substituted, so a template that would send
invalid JSON sends it here too. Each request becomes the REST proxy event the deployed API would send (stage path in
the request context, identity of the caller, base64 bodies); the function is invoked the way the integration says:
with its resource-based permission for API Gateway, or with the caller's own credentials (SAM's default for
AWS_IAM), which local callers do not have for Lambda, as API clients normally do not. Integrations time out after 29 s.

A streamed route (responseTransferMode STREAM) invokes its function through Lambda Web Adapter (web_adapter.py) with
the same proxy event, after the same permission check, and streams the response: its status and headers once the
function has sent them, then each piece of the body as soon as it comes (chunked). The stream ends at the
integration's timeoutInMillis (at most 15 minutes) or the function's timeout, or after the idle timeout of the API's
endpoint type (30 s edge-optimized, 5 minutes regional or private) without a byte, counted from the request until
the status and headers too; a stream cut short ends without its last chunk, as API Gateway cuts it. A function that
fails before it answers is a 502, one that does not answer in time a 504; a client that goes away closes the
connection to the function.

Callers: a request signed with SigV4 is verified against the runtime's callers (api_callers.py); an unsigned one acts
as the default caller, or is refused if the runtime requires signatures. The HTTP server, the Lambda proxy
integration and the callers serve the WebSocket API too (websocket_gateway.py).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local_runtime.api_authorizers import Refusal, TokenAuthorizers
from local_runtime.api_callers import ApiCallers, Refused, anonymous
from local_runtime.lambdas import Invocation, LambdaBridge
from local_runtime.template import (
    ACCOUNT_ID,
    Function,
    LocalStack,
    MockRoute,
    RestApi,
    Route,
    Throttle,
    path_parameters,
)
from local_runtime.web_adapter import InvocationFailed, Streaming, WebAdapter

log = logging.getLogger("local_runtime.api")
INTEGRATION_TIMEOUT_SECONDS = 29
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
MAX_URL_CHARACTERS = {"EDGE": 8192, "REGIONAL": 10240, "PRIVATE": 8192}
"""The longest URL API Gateway takes, by the API's endpoint type (REST API quotas)"""
STREAM_IDLE_TIMEOUT_SECONDS = {"EDGE": 30.0, "REGIONAL": 300.0, "PRIVATE": 300.0}
"""How long a streamed response may go without a byte, by the API's endpoint type"""
_NOT_STREAMED = {"connection", "content-length", "date", "keep-alive", "transfer-encoding"}
"""Response headers of the function's that do not reach the client of a stream (sent chunked, dated by the API)"""
CALLER_CREDENTIALS = "arn:aws:iam::*:user/*"
DEFAULT_STATUS = {
    "ACCESS_DENIED": 403,
    "API_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_CONFIGURATION_ERROR": 500,
    "AUTHORIZER_FAILURE": 500,
    "BAD_REQUEST_PARAMETERS": 400,
    "BAD_REQUEST_BODY": 400,
    "EXPIRED_TOKEN": 403,
    "INTEGRATION_FAILURE": 504,
    "INTEGRATION_TIMEOUT": 504,
    "INVALID_API_KEY": 403,
    "INVALID_SIGNATURE": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403,
    "QUOTA_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413,
    "RESOURCE_NOT_FOUND": 404,
    "THROTTLED": 429,
    "UNAUTHORIZED": 401,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "WAF_FILTERED": 403,
}
"""Gateway response types and their default status codes (API Gateway Developer Guide)"""
_DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
_VARIABLE = re.compile(r"\$(?:\{(context(?:\.\w+)+)\}|(context(?:\.\w+)+))")

Reply = tuple[int, dict[str, list[str]], bytes]


class TokenBucket:
    """A method's throttle as API Gateway applies it: ``burst`` requests at once, refilled at ``rate`` a second;
    a request finding the bucket empty is THROTTLED (429)."""

    def __init__(self, throttle: Throttle) -> None:
        self._rate, self._size = throttle.rate, float(throttle.burst)
        self._tokens, self._at = self._size, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._size, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


@dataclass(frozen=True)
class GatewayError:
    kind: str
    message: str
    status: int | None = None
    """The error's own status, for DEFAULT_4XX and DEFAULT_5XX"""

    @property
    def status_code(self) -> int:
        return self.status or DEFAULT_STATUS.get(self.kind, 500)


@dataclass
class Streamed:
    """A streamed integration response: the function's status and headers, then its body as it comes."""

    response: Streaming
    deadline: float
    """When the stream ends at the latest (time.monotonic())"""
    idle_timeout: float
    request: str
    """METHOD path, for the log"""

    def chunks(self) -> Iterator[bytes]:
        """Each piece of the body as soon as it has come, until it ends, or the stream is cut short (``complete``
        says which)."""
        while (left := self.deadline - time.monotonic()) > 0:
            try:
                chunk = self.response.read(min(self.idle_timeout, left))
            except TimeoutError:
                if time.monotonic() < self.deadline:
                    log.info("%s: the stream was idle for %.0f s: cut short", self.request, self.idle_timeout)
                    return
                break
            if not chunk:
                return
            yield chunk
        log.info("%s: the stream reached its integration's or its function's timeout: cut short", self.request)

    @property
    def complete(self) -> bool:
        return self.response.complete


Answer = Callable[[str, str, dict[str, list[str]], bytes], Reply | Streamed]
"""Answers one request: (method, target, headers, body) -> (status, headers, body), or a stream"""


class ApiGateway:
    def __init__(self, stack: LocalStack, lambdas: LambdaBridge, callers: ApiCallers) -> None:
        self._stack = stack
        self._api: RestApi = stack.apis[0]
        self._lambdas = lambdas
        self._callers = callers
        self._server: GatewayServer | None = None
        self._integrations = ThreadPoolExecutor(max_workers=32, thread_name_prefix="api-integration")
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._buckets_lock = threading.Lock()
        streamed = {route.function: stack.functions[route.function] for route in self._api.routes if route.streamed}
        self._adapter = WebAdapter(lambdas, streamed.values())
        self._authorizers = TokenAuthorizers(stack, self._api, lambdas)

    @property
    def stage(self) -> str:
        return self._api.stage

    def handle(self, method: str, target: str, headers: dict[str, list[str]], body: bytes) -> Reply | Streamed:
        if len(target) > MAX_URL_CHARACTERS[self._api.endpoint_type]:
            return problem_reply(
                414, "URI Too Long", f"a URL is at most {MAX_URL_CHARACTERS[self._api.endpoint_type]} characters"
            )
        url = urlsplit(target)
        stage, _, rest = url.path.lstrip("/").partition("/")
        if stage != self._api.stage:
            return 403, {"Content-Type": ["application/json"]}, b'{"message":"Forbidden"}'
        path = "/" + rest
        context = self._context(method, url.path, path, headers)
        if len(body) > MAX_PAYLOAD_BYTES:
            return self._gateway_error(GatewayError("REQUEST_TOO_LARGE", "Request Too Long"), context)
        found, params = self._route(method, path)
        route: Route | MockRoute | None = found or self._mock(path)
        if route is None:
            return self._gateway_error(
                GatewayError("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token"), context
            )
        context["resourcePath"] = route.path
        authorized: dict[str, Any] | None = None
        if route.authorizer is None:
            identity = self._callers.identify(method, target, headers, body)
            if isinstance(identity, Refused):
                return self._gateway_error(GatewayError(identity.kind, identity.message), context)
        else:
            method_arn = f"{self._api_arn()}/{self._api.stage}/{method}{path}"
            outcome = self._authorizers.authorize(route.authorizer, method_arn, headers)
            if isinstance(outcome, Refusal):
                return self._gateway_error(GatewayError(outcome.kind, outcome.message), context)
            identity, authorized = anonymous(headers), outcome
        if not self._admitted(route.path, route.method if isinstance(route, Route) else "ANY"):
            return self._gateway_error(GatewayError("THROTTLED", "Too Many Requests"), context)
        if isinstance(route, MockRoute):
            return mock_reply(route, context)
        if not self._may_invoke(route, method):
            return self._gateway_error(GatewayError("API_CONFIGURATION_ERROR", "Internal server error"), context)
        event = self._event(route, params, method, path, url.query, headers, body, context, identity, authorized)
        if route.streamed:
            return self._stream(route, event, context)
        outcome = invoke_proxy(self._integrations, self._lambdas, self._stack.functions[route.function], event)
        return self._gateway_error(outcome, context) if isinstance(outcome, GatewayError) else outcome

    def _stream(self, route: Route, event: dict[str, Any], context: dict[str, Any]) -> Reply | Streamed:
        """A Lambda proxy integration with response streaming: the function's response once its status and headers
        have come, or the error API Gateway answers instead (the function failed before it answered: 502; it did not
        answer within the integration's timeout or the idle timeout: 504)."""
        started = time.monotonic()
        deadline = started + route.timeout_ms / 1000
        idle_timeout = STREAM_IDLE_TIMEOUT_SECONDS[self._api.endpoint_type]
        request = f"{context['httpMethod']} {context['path']}"
        try:
            response = self._adapter.invoke(
                self._stack.functions[route.function], event, min(deadline, started + idle_timeout)
            )
        except TimeoutError:
            log.info("%s: no answer from %s in time", request, route.function)
            return self._gateway_error(GatewayError("INTEGRATION_TIMEOUT", "Endpoint request timed out"), context)
        except InvocationFailed as error:
            log.warning("%s: %s failed: %s", request, route.function, error)
            return self._gateway_error(GatewayError("DEFAULT_5XX", "Internal server error", 502), context)
        return Streamed(response, min(deadline, response.deadline), idle_timeout, request)

    def _route(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        for route in self._api.routes:
            params = route.match(path)
            if params is not None and route.method == method.upper():
                return route, params
        return None, {}

    def _admitted(self, resource: str, method: str) -> bool:
        """Whether the method's throttle (the stage's method settings) takes one more request now."""
        throttle = self._api.throttle_of(resource, method)
        if throttle is None:
            return True
        with self._buckets_lock:
            bucket = self._buckets.get((resource, method))
            if bucket is None:
                bucket = self._buckets[(resource, method)] = TokenBucket(throttle)
        return bucket.take()

    def _mock(self, path: str) -> MockRoute | None:
        """The ANY method of the resource the path is on, if it is a mock integration: it answers every method the
        resource does not have."""
        return next((mock for mock in self._api.mocks if path_parameters(mock.path, path) is not None), None)

    def _may_invoke(self, route: Route, method: str) -> bool:
        """Whether API Gateway may invoke the function: local callers hold execute-api:Invoke only, so an
        integration that uses the caller's credentials cannot call Lambda; otherwise the function's resource-based
        policy must let this API's route invoke it."""
        if route.credentials == CALLER_CREDENTIALS:
            log.warning(
                "%s %s invokes its function with the caller's credentials, which may not call Lambda",
                method,
                route.path,
            )
            return False
        if route.credentials is not None:
            return True  # an integration role: not evaluated locally
        source = f"{self._api_arn()}/{self._api.stage}/{method}{route.path}"
        source = re.sub(r"\{[^}]+\}", "x", source)
        if self._lambdas.permits(route.function, "apigateway.amazonaws.com", source):
            return True
        log.warning(
            "%s %s: no resource-based permission lets API Gateway invoke %s", method, route.path, route.function
        )
        return False

    def _api_arn(self) -> str:
        return f"arn:aws:execute-api:{self._stack.region}:{ACCOUNT_ID}:{self._api.id}"

    def _context(self, method: str, full_path: str, path: str, headers: dict[str, list[str]]) -> dict[str, Any]:
        host = (headers.get("host") or ["localhost"])[0]
        now = datetime.now(UTC)
        return {
            "accountId": ACCOUNT_ID,
            "apiId": self._api.id,
            "resourcePath": path,
            "httpMethod": method,
            "path": full_path,
            "stage": self._api.stage,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": host,
            "domainPrefix": host.split(".")[0],
        }

    def _event(
        self,
        route: Route,
        params: dict[str, str],
        method: str,
        path: str,
        query_string: str,
        headers: dict[str, list[str]],
        body: bytes,
        context: dict[str, Any],
        identity: dict[str, Any],
        authorized: dict[str, Any] | None,
    ) -> dict[str, Any]:
        query = parse_qs(query_string, keep_blank_values=True)
        text, is_base64 = _body(body)
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": method,
            "headers": {name: values[-1] for name, values in headers.items()},
            "multiValueHeaders": headers,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                **context,
                "identity": identity,
                "authorizer": authorized,
            },
            "body": text,
            "isBase64Encoded": is_base64,
        }

    def _gateway_error(self, error: GatewayError, context: dict[str, Any]) -> Reply:
        return gateway_response(self._api, error, context)

    def serve(self, host: str, port: int) -> None:
        self._server = GatewayServer((host, port), GatewayHandler, self.handle, log)
        self._server.start("api-gateway")

    def close(self) -> None:
        if self._server:
            self._server.stop()
        self._integrations.shutdown(wait=False, cancel_futures=True)
        self._adapter.close()
        self._authorizers.close()


class GatewayServer(ThreadingHTTPServer):
    """HTTP/1.1 on a thread of its own, each request on a thread of its own, answered by ``answer(method, target,
    headers, body)`` (header names in lower case)."""

    daemon_threads = True
    request_queue_size = 1024
    """The listen backlog (socketserver's default, 5, reset connections beyond a handful made at once; a gateway
    takes a burst of them)"""

    def __init__(
        self, address: tuple[str, int], handler: type[GatewayHandler], answer: Answer, logger: logging.Logger
    ) -> None:
        super().__init__(address, handler)
        self.answer = answer
        self.logger = logger

    def start(self, name: str) -> None:
        threading.Thread(target=self.serve_forever, daemon=True, name=name).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GatewayServer

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        reply = self.server.answer(self.command, self.path, headers, body)
        if isinstance(reply, Streamed):
            self._stream(reply)
            return
        status, out_headers, data = reply
        self.send_response(status)
        for name, values in out_headers.items():
            if name.lower() in ("content-length", "connection"):
                continue
            for value in values:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, reply: Streamed) -> None:
        """The status and headers, then each piece of the body as it comes (chunked); a stream cut short ends
        without its last chunk, the connection closed. A client that goes away closes the function's connection."""
        done = threading.Event()
        watcher = threading.Thread(target=_watch, args=(self.connection, reply.response.abort, done), daemon=True)
        watcher.start()
        try:
            self.log_request(reply.response.status)
            self.send_response_only(reply.response.status)
            self.send_header("Date", self.date_time_string())
            for name, values in reply.response.headers.items():
                if name.lower() not in _NOT_STREAMED:
                    for value in values:
                        self.send_header(name, value)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in reply.chunks():
                if self.command != "HEAD":
                    self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if reply.complete and self.command != "HEAD":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.server.logger.info("%s: the client went away", reply.request)
            reply.response.abort()
        finally:
            done.set()
            reply.response.close()
        if not reply.complete:
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        """Every method is the gateway's to answer (do_GET, do_TRACE, ...): one a resource does not have gets its
        ANY method's 405, not the HTTP server's 501."""
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP server's own refusals (a request line or header it cannot read, one too long) as problems."""
        title = message or self.responses.get(code, ("Error",))[0]
        status, headers, data = problem_reply(code, title, explain)
        self.send_response(status, message)
        for name, values in headers.items():
            self.send_header(name, values[0])
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        self.server.logger.debug("%s %s", self.address_string(), format % args)  # --request-log


def _watch(client: socket.socket, gone: Callable[[], None], done: threading.Event) -> None:
    """Call ``gone`` if the client closes its connection before ``done`` is set (it sends nothing meanwhile)."""
    while not done.is_set():
        if select.select([client], [], [], 0.5)[0]:
            try:
                closed = not client.recv(1, socket.MSG_PEEK)
            except OSError:
                closed = True
            if closed:
                gone()
            return


def invoke_proxy(
    integrations: ThreadPoolExecutor, lambdas: LambdaBridge, function: Function, event: Any
) -> Reply | GatewayError:
    """A Lambda proxy integration: the function's proxy response, or the error API Gateway answers instead (the
    function failed, or its answer is not a proxy response: 502; it took longer than the integration timeout: 504)."""
    future = integrations.submit(lambdas.invoke, function, event)
    try:
        result: Invocation = future.result(timeout=INTEGRATION_TIMEOUT_SECONDS)
    except FutureTimeout:
        return GatewayError("INTEGRATION_TIMEOUT", "Endpoint request timed out")
    reply = None if result.error else proxy_reply(result.payload)
    return GatewayError("DEFAULT_5XX", "Internal server error", 502) if reply is None else reply


def gateway_response(api: RestApi, error: GatewayError, context: dict[str, Any]) -> Reply:
    """An error of API Gateway's own, through the API's gateway responses (or API Gateway's defaults), with the
    ``$context`` variables of the template substituted as API Gateway substitutes them."""
    default_status = error.status_code
    family = "DEFAULT_5XX" if default_status >= 500 else "DEFAULT_4XX"
    configured = api.gateway_responses.get(error.kind) or api.gateway_responses.get(family)
    status = default_status
    headers = {"Content-Type": ["application/json"], "x-amzn-ErrorType": [_error_type(error.kind)]}
    template = _DEFAULT_TEMPLATE
    if configured is not None:
        status = configured.status or status
        headers.update({name: [value] for name, value in configured.headers.items()})
        template = configured.templates.get("application/json", template)
    errors = {
        "context.error.message": error.message,
        "context.error.messageString": json.dumps(error.message),
        "context.error.responseType": error.kind,
        "context.error.validationErrorString": "",
    }
    return status, headers, _render(template, context, errors)


def problem_reply(status: int, title: str, detail: str | None = None) -> Reply:
    """An answer of the HTTP front itself (a URL too long, a request line it cannot read), as a problem."""
    body = {"type": "about:blank", "title": title, "status": status} | ({"detail": detail} if detail else {})
    return status, {"Content-Type": ["application/problem+json"]}, json.dumps(body).encode()


def mock_reply(mock: MockRoute, context: dict[str, Any]) -> Reply:
    """A mock integration's answer: its integration response's status, static headers and mapping template (its
    ``$context`` variables substituted; no other Velocity is played)."""
    headers = {"Content-Type": ["application/json"]} | {name: [value] for name, value in mock.headers.items()}
    return mock.status, headers, _render(mock.templates.get("application/json", ""), context, {})


def _render(template: str, context: dict[str, Any], extra: dict[str, str]) -> bytes:
    """A mapping template with its ``$context.NAME`` and ``${context.NAME}`` variables substituted."""
    variables = {f"context.{name}": str(value) for name, value in context.items()} | extra

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return _VARIABLE.sub(substitute, template).encode()


def _error_type(kind: str) -> str:
    """The x-amzn-ErrorType API Gateway sends with a gateway response."""
    special = {
        "MISSING_AUTHENTICATION_TOKEN": "MissingAuthenticationTokenException",
        "AUTHORIZER_CONFIGURATION_ERROR": "AuthorizerConfigurationException",
    }
    return special.get(kind, "".join(part.capitalize() for part in kind.split("_")) + "Exception")


def proxy_reply(response: Any) -> Reply | None:
    """The function's proxy response as HTTP; None if it is not one."""
    if not isinstance(response, dict) or not isinstance(response.get("statusCode", 200), int):
        return None
    out_headers = {k: [str(v)] for k, v in (response.get("headers") or {}).items()}
    out_headers.update(response.get("multiValueHeaders") or {})
    payload = response.get("body") or ""
    data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
    return int(response.get("statusCode", 200)), out_headers, data


def _body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True
