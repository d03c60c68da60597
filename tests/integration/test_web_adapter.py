"""Lambda Web Adapter, locally: a small web app in place of the stream function's, run and invoked as the adapter
runs and invokes it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runtime import lambdas, template, web_adapter
from local_runtime.identities import Identities
from local_runtime.web_adapter import InvocationFailed, Settings, WebAdapter, healthy_statuses
from tests.conftest import ROOT

APP = """
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/ready":
            self.send_response(int(os.environ.get("READY_STATUS", "200")))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        seen = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "pid": os.getpid(),
                "noSite": sys.flags.no_site, "port": os.environ["AWS_LWA_PORT"], "path_": os.environ["PYTHONPATH"]}
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in (json.dumps(seen).encode(), b"later"):
            self.wfile.write(b"%x\\r\\n%b\\r\\n" % (len(piece), piece))
            self.wfile.flush()
            time.sleep(0.4)
        self.wfile.write(b"0\\r\\n\\r\\n")

ThreadingHTTPServer(("127.0.0.1", int(os.environ["AWS_LWA_PORT"])), Handler).serve_forever()
"""
EVENT = {
    "httpMethod": "GET",
    "path": "/things/1",
    "multiValueQueryStringParameters": {"a": ["1", "2"]},
    "multiValueHeaders": {"Accept": ["*/*"], "x-amzn-request-context": ['{"forged": true}']},
    "requestContext": {"path": "/v1/things/1", "identity": {"caller": "AIDAEXAMPLE"}},
    "body": None,
    "isBase64Encoded": False,
}


@pytest.fixture(scope="module")
def stack() -> template.LocalStack:
    return template.load(ROOT, "longrun-local", "us-east-1")


@pytest.fixture
def function(stack: template.LocalStack, tmp_path: Path) -> template.Function:
    """The stream function, its code a small web app that shows what it was given."""
    (tmp_path / "app.py").write_text(APP)
    run = tmp_path / "run.sh"
    run.write_text('#!/bin/sh\nexec python3 "$LAMBDA_TASK_ROOT/app.py"\n')
    run.chmod(0o755)
    streamed = stack.functions["EventStreamFunction"]
    environment = streamed.environment | {"AWS_LWA_READINESS_CHECK_PATH": "/ready"}
    return dataclasses.replace(streamed, code_dir=tmp_path, environment=environment)


@pytest.fixture
def adapter(stack: template.LocalStack, function: template.Function, tmp_path: Path) -> Iterator[WebAdapter]:
    site = lambdas.function_site(stack, ROOT / ".local-runtime" / "function-packages")
    aws = {"AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    bridge = lambdas.LambdaBridge(stack, Identities(stack), aws, tmp_path / "logs", site)
    found = WebAdapter(bridge, [function])
    yield found
    found.close()


def test_an_invocation_is_the_request_the_adapter_makes_and_its_response_comes_as_written(
    adapter: WebAdapter, function: template.Function, tmp_path: Path
) -> None:
    response = adapter.invoke(function, EVENT, time.monotonic() + 10)
    seen = json.loads(response.read(5))
    written = time.monotonic()
    assert response.read(5) == b"later" and time.monotonic() - written > 0.2
    assert response.read(5) == b"" and response.complete
    response.close()
    assert seen["path"] == "/things/1?a=1&a=2"
    assert json.loads(seen["headers"]["x-amzn-request-context"]) == EVENT["requestContext"]
    assert json.loads(seen["headers"]["x-amzn-lambda-context"])["invoked_function_arn"] == function.arn
    assert seen["noSite"] == 1 and seen["port"] != "8080"
    assert str(ROOT / "layers" / "longrun") in seen["path_"].split(":")
    again = adapter.invoke(function, EVENT, time.monotonic() + 10)
    assert json.loads(again.read(5))["pid"] == seen["pid"]  # the warm environment, one invocation at a time
    again.close()  # broken off: that environment is discarded
    logs = "".join(path.read_text() for path in (tmp_path / "logs").rglob("*.log"))
    assert logs.count("START RequestId") == 2 and logs.count("REPORT RequestId") == 2
    assert logs.count("Init Duration") == 1


@pytest.mark.parametrize(("script", "ready_status"), [("#!/bin/sh\nexit 3\n", "200"), (None, "500")])
def test_an_app_that_exits_or_is_never_ready_fails_the_invocation(
    adapter: WebAdapter,
    function: template.Function,
    monkeypatch: pytest.MonkeyPatch,
    script: str | None,
    ready_status: str,
) -> None:
    monkeypatch.setattr(web_adapter, "INIT_LIMIT_SECONDS", 1.0)
    if script is not None:
        (function.code_dir / "run.sh").write_text(script)
    function = dataclasses.replace(function, environment=function.environment | {"READY_STATUS": ready_status})
    started = time.monotonic()
    with pytest.raises(InvocationFailed):
        adapter.invoke(function, EVENT, time.monotonic() + 10)
    assert time.monotonic() - started < 5


def test_a_function_the_runtime_cannot_run_as_the_adapter_would_is_refused(function: template.Function) -> None:
    assert Settings.of(function).port_variables == ("AWS_LWA_PORT",)
    refused = [
        dataclasses.replace(function, external_layers=()),
        dataclasses.replace(function, environment=function.environment | {"AWS_LWA_ASYNC_INIT": "true"}),
        dataclasses.replace(function, environment=function.environment | {"AWS_LWA_INVOKE_MODE": "buffered"}),
    ]
    for unplayable in refused:
        with pytest.raises(ValueError, match=function.logical_id):
            Settings.of(unplayable)
    assert healthy_statuses("200-204, 404") == {200, 201, 202, 203, 204, 404}
