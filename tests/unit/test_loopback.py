"""The runtime's own calls to the edge without a socket (local_runtime.loopback): the app sees the environ the edge's
HTTP server would make of the same request, and botocore reads the same answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from local_runtime.loopback import LOOPBACK, EdgeTransport, connect

SOCKET_ONLY = {
    "wsgi.input",
    "wsgi.errors",
    "werkzeug.socket",
    "REMOTE_PORT",
    "werkzeug.request",
    "werkzeug.proxy_fix.orig",
}


class Recorder:
    """A WSGI app that notes what it was given and answers with a fixed S3 error (so botocore parses an answer)."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], bytes]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.seen.append(({k: v for k, v in environ.items() if k not in SOCKET_ONLY}, body))
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "5")])
            return [b"hello"]
        start_response("200 OK", [("ETag", '"x"'), ("Content-Length", "0")])
        return []


@pytest.fixture
def served() -> Iterator[tuple[Recorder, int]]:
    app = Recorder()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_port
    server.shutdown()


def _s3(port: int) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="ASIAEXAMPLE",
        aws_secret_access_key="secret",
        aws_session_token="token",
    )


def test_a_request_reaches_the_app_as_over_http(served: tuple[Recorder, int]) -> None:
    app, port = served
    over_http, loopback = _s3(port), connect(_s3(port), EdgeTransport(("127.0.0.1", port), app))
    answers = []
    for client in (over_http, loopback):
        client.put_object(Bucket="bucket", Key="a key/with_odd+chars", Body=b"payload", Metadata={"x_y": "1"})
        answers.append(client.get_object(Bucket="bucket", Key="k", Range="bytes=0-4")["Body"].read())
    assert answers == [b"hello", b"hello"]
    (put_http, get_http, put_loop, get_loop) = app.seen
    for sent_over_http, sent_over_loopback in ((put_http, put_loop), (get_http, get_loop)):
        (http_environ, http_body), (loop_environ, loop_body) = sent_over_http, sent_over_loopback
        assert loop_body == http_body
        varying = {"HTTP_AUTHORIZATION", "HTTP_X_AMZ_DATE", "HTTP_AMZ_SDK_INVOCATION_ID", "HTTP_AMZ_SDK_REQUEST"}
        assert loop_environ.pop(LOOPBACK) is True  # the only difference: the request says it is the runtime's own
        assert {k for k in loop_environ if k not in varying} == {k for k in http_environ if k not in varying}
        for key, value in http_environ.items():
            if key not in varying:
                assert loop_environ[key] == value, key


def test_an_app_that_fails_answers_500(served: tuple[Recorder, int]) -> None:
    def failing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    _, port = served
    client = connect(_s3(port), EdgeTransport(("127.0.0.1", port), failing))
    with pytest.raises(Exception, match="500"):
        client.head_object(Bucket="bucket", Key="k")
