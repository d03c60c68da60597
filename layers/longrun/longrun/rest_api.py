"""A REST API behind API Gateway's Lambda proxy integration: routes declared with their parameters and body, each
request matched to its route, its parameters and body checked (longrun.api_requests), its handler called, and every
mistake answered as an RFC 9457 problem. The declarations are also what tools/openapi.py writes the OpenAPI document
from: a route's parameters carry their JSON Schema, its body and answers name the contract's models
(longrun.models), which the API itself never imports.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from longrun import api_requests
from longrun.api_requests import Problems
from longrun.channels import dumps
from longrun.errors import InvalidRequest, problem

PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
_PARAMETER_TEXT = r"[-._~()'!*:@,;=+&$%<> \[\]{}|^\w]+"
"""What a path parameter may hold: one segment of the path, as API Gateway passes it (still URL-encoded)"""


@dataclass
class Response:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON


def answer(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer."""
    return Response(status, body, dict(headers or {}))


def problem_answer(
    status: int,
    kind: str,
    title: str,
    detail: str | None,
    instance: str | None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(status, problem(status, kind, title, detail, instance, errors), dict(headers or {}), PROBLEM_JSON)


@dataclass
class Param:
    """A path, query or header parameter: ``name`` as the API spells it, ``key`` as the handler takes it, ``check``
    its value (a string) into what the handler takes, ``schema`` what the OpenAPI document says of it."""

    name: str
    where: str
    description: str
    schema: dict[str, Any]
    check: Callable[[str, str, Problems], Any]
    default: Any = None
    key: str = ""

    @property
    def argument(self) -> str:
        return self.key or self.name.lower().replace("-", "_")


def path_parameter(name: str, description: str, min_length: int = 0, max_length: int | None = None) -> Param:
    schema: dict[str, Any] = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length

    def check(value: str, where: str, problems: Problems) -> str | None:
        return api_requests.text(value, where, problems, min_length, max_length)

    return Param(name, "path", description, schema, check)


def integer_query(name: str, description: str, minimum: int, maximum: int, default: int) -> Param:
    def check(value: str, where: str, problems: Problems) -> int | None:
        return api_requests.query_integer(value, where, problems, minimum, maximum)

    schema = {"type": "integer", "minimum": minimum, "maximum": maximum, "default": default}
    return Param(name, "query", description, schema, check, default)


def choice_query(name: str, description: str, choices: type[StrEnum]) -> Param:
    def check(value: str, where: str, problems: Problems) -> StrEnum | None:
        return api_requests.one_of(value, where, problems, choices)

    return Param(name, "query", description, {"$ref": f"#/components/schemas/{choices.__name__}"}, check)


def text_query(name: str, description: str) -> Param:
    return Param(name, "query", description, {"type": "string"}, lambda value, where, problems: value)


def text_header(name: str, description: str, pattern: str, key: str) -> Param:
    compiled = re.compile(pattern)

    def check(value: str, where: str, problems: Problems) -> str | None:
        if not compiled.match(value):
            problems.add(where, f"String should match pattern '{pattern}'")
            return None
        return value

    return Param(name, "header", description, {"type": "string", "pattern": pattern}, check, key=key)


@dataclass
class Body:
    """A route's JSON body: ``model`` names its schema in longrun.models, ``check`` reads it (longrun.api_requests)."""

    model: str
    check: Callable[[Any, Problems], Any]


@dataclass
class Request:
    """What a handler is given of the request besides its checked parameters."""

    event: dict[str, Any]
    path: str
    """The request's path, as the client sent it (a custom domain's base path included)"""

    @property
    def method(self) -> str:
        return str(self.event.get("httpMethod", ""))

    @property
    def request_context(self) -> dict[str, Any]:
        found: dict[str, Any] = self.event.get("requestContext") or {}
        return found

    @cached_property
    def headers(self) -> dict[str, str]:
        """Its headers by their names in lower case (HTTP's names are case-insensitive)."""
        return {name.lower(): value for name, value in (self.event.get("headers") or {}).items()}


Handler = Callable[..., Response]


@dataclass
class Route:
    method: str
    path: str
    """As API Gateway's ``resource`` names it, parameters in braces: /device-management/script-execution/{task_id}"""
    handler: Handler
    params: tuple[Param, ...]
    body: Body | None
    doc: dict[str, Any]
    """What the OpenAPI document says of it besides its parameters and body: summary, description, responses (each
    status with its description, and the model it answers, its headers), tags"""

    def path_values(self, path: str) -> dict[str, str] | None:
        """The path parameters of a request's path (after any base path), as the client sent them (URL-encoded);
        None if the path is not this route's."""
        segments = [
            f"(?P<{segment[1:-1]}>{_PARAMETER_TEXT})" if segment.startswith("{") else re.escape(segment)
            for segment in self.path.split("/")
        ]
        matched = re.fullmatch("/".join(segments), path)
        return matched.groupdict() if matched else None


class RestApi:
    """The routes of an API, and how each failure is answered (``on``)."""

    def __init__(self, base_path: re.Pattern[str]) -> None:
        self.routes: list[Route] = []
        self._by_resource: dict[tuple[str, str], Route] = {}
        self._base_path = base_path
        self._failures: list[tuple[type[BaseException], Callable[[Any, Request], Response]]] = []

    def route(
        self, method: str, path: str, params: tuple[Param, ...] = (), body: Body | None = None, **doc: Any
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            route = Route(method, path, handler, params, body, doc)
            self.routes.append(route)
            self._by_resource[(method, path)] = route
            return handler

        return register

    def on(self, kind: type[BaseException]) -> Callable[[Callable[[Any, Request], Response]], Any]:
        """How an exception of ``kind`` a handler raises is answered (the first registered that matches)."""

        def register(answer_with: Callable[[Any, Request], Response]) -> Any:
            self._failures.append((kind, answer_with))
            return answer_with

        return register

    def resolve(self, event: dict[str, Any]) -> dict[str, Any]:
        """API Gateway's proxy event in, its proxy response out."""
        path = str(event.get("path") or "/")
        request = Request(event, path)
        try:
            response = self._dispatch(request, self._base_path.sub("", path, count=1))
        except Exception as error:
            for kind, answer_with in self._failures:
                if isinstance(error, kind):
                    response = answer_with(error, request)
                    break
            else:
                raise
        return _proxy_response(response)

    def _dispatch(self, request: Request, path: str) -> Response:
        """The route API Gateway matched (the event's ``resource`` and method), given the values of its path
        parameters as the path has them."""
        route = self._by_resource.get((request.method, str(request.event.get("resource") or "")))
        path_values = route.path_values(path) if route else None
        if route is None or path_values is None:
            return problem_answer(
                404, "no-such-resource", "Not found", f"no resource at {request.method} {request.path}", request.path
            )
        return self._call(route, request, path_values)

    def _call(self, route: Route, request: Request, path_values: dict[str, str]) -> Response:
        problems = Problems()
        given = {
            "path": path_values,
            "query": request.event.get("queryStringParameters") or {},
            "header": request.headers,
        }
        arguments: dict[str, Any] = {}
        for param in route.params:
            lookup = param.name.lower() if param.where == "header" else param.name
            value = given[param.where].get(lookup)
            where = f"{param.where}.{lookup}"
            arguments[param.argument] = param.default if value is None else param.check(value, where, problems)
        if route.body is not None:
            refused = _unsupported(request)
            if refused is not None:
                return refused
            body, malformed = _json_body(request)
            if malformed is not None:
                return malformed
            if body is _MISSING:
                problems.add("body", "Field required")
            else:
                arguments["body"] = route.body.check(body, problems)
        if problems:
            detail, errors = "the request does not match the API's schema", list(problems)
            return problem_answer(
                InvalidRequest.status, InvalidRequest.kind, InvalidRequest.title, detail, request.path, errors
            )
        return route.handler(request, **arguments)


_MISSING = object()


def _unsupported(request: Request) -> Response | None:
    """A body is JSON: any other Content-Type (a form, text) is refused with 415 (none at all is taken as JSON)."""
    content_type = str(request.headers.get("content-type", "")).split(";")[0].strip().lower()
    if content_type and content_type != JSON and not content_type.endswith("+json"):
        return problem_answer(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"the body must be JSON (application/json), not {content_type}",
            request.path,
        )
    return None


def _json_body(request: Request) -> tuple[Any, Response | None]:
    """The request's body read as JSON (``_MISSING`` if it has none), or the 400 that says why it cannot be."""
    raw = request.event.get("body")
    if raw is None or raw == "":
        return _MISSING, None
    try:
        data = base64.b64decode(raw, validate=True) if request.event.get("isBase64Encoded") else raw.encode()
        return json.loads(data.decode("utf-8")), None
    except (binascii.Error, UnicodeError):
        why = "the body is not UTF-8 encoded JSON"
    except RecursionError:
        why = "the body's JSON nests too deeply to be read"
    except ValueError:  # not JSON, or a number of more digits than Python reads
        why = "the body is not valid JSON"
    return None, problem_answer(400, "malformed-request", "Malformed request", why, request.path)


def _proxy_response(response: Response) -> dict[str, Any]:
    headers = dict(response.headers)
    body = ""
    if response.body is not None:
        headers["Content-Type"] = response.content_type
        body = dumps(response.body)
    return {"statusCode": response.status, "headers": headers, "body": body, "isBase64Encoded": False}
