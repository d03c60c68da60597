"""What API Gateway answers itself, over HTTP: a method a resource does not have (405 with Allow, HEAD and OPTIONS
included), a path the API does not have, a URL too long. Each is a problem (application/problem+json)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import RESOURCE, Service

pytestmark = pytest.mark.e2e
TASK = "0d1c2b3a-0000-4000-8000-000000000001"


def _send(service: Service, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(service.api)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.netloc, timeout=30)
    try:
        connection.request(method, parts.path + path)
        reply = connection.getresponse()
        return reply.status, {name.lower(): value for name, value in reply.getheaders()}, reply.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", RESOURCE, "GET, POST"),
        ("PATCH", f"{RESOURCE}/{TASK}", "GET, DELETE"),
        ("POST", f"{RESOURCE}/{TASK}/result", "GET"),
        ("DELETE", "/device-management/scripts", "POST"),
        ("OPTIONS", f"{RESOURCE}/{TASK}/devices/web-1", "GET"),
        ("TRACE", "/device-management/webhooks", "GET, POST"),
    ],
)
def test_a_method_the_resource_does_not_have_answers_405_with_allow(
    service: Service, method: str, path: str, allowed: str
) -> None:
    status, headers, body = _send(service, method, path)
    assert status == 405
    assert headers["allow"] == allowed
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 405 and problem["title"] == "Method Not Allowed"
    assert problem["instance"].endswith(path)


def test_head_answers_405_with_allow_and_no_body(service: Service) -> None:
    status, headers, body = _send(service, "HEAD", f"{RESOURCE}/{TASK}")
    assert (status, headers["allow"], body) == (405, "GET, DELETE", b"")


def test_a_path_the_api_does_not_have_answers_as_the_deployed_api_does(service: Service) -> None:
    status, headers, body = _send(service, "GET", "/device-management/elsewhere")
    assert status == 403  # API Gateway's Missing Authentication Token, through the template's gateway response
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["title"] == "Missing Authentication Token"


@pytest.mark.parametrize("length", [9_000, 70_000])  # over API Gateway's 8,192; over the HTTP server's own 65,536
def test_a_url_too_long_answers_414_as_a_problem(service: Service, length: int) -> None:
    status, headers, body = _send(service, "GET", f"{RESOURCE}?next-token={'x' * length}")
    assert status == 414
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 414
