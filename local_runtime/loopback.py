"""The runtime's own AWS calls, without a socket: what the runtime's process asks of the edge (the state machine's
tasks, the event source mappings' pollers, EventBridge's sends to queues) goes from the boto3 client straight to the
edge's WSGI application, in the calling thread.

The request is the one botocore would send over HTTP, byte for byte (signed, with the Host and Accept-Encoding
headers http.client adds), turned into the WSGI environ the edge's HTTP server (moto's request handler on
werkzeug's) would make of it; the answer is read back as botocore reads it off the wire. So the request meets
everything a request over HTTP meets: its signature is verified, its caller's policies are checked, the meter counts
it, and moto answers it; only the loopback connection, the server's thread and the HTTP parsing on both sides are
skipped. Functions and the fleet's devices, in processes of their own, call the edge over HTTP.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
from collections.abc import Callable, Iterable
from http.client import HTTPMessage
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from moto.moto_server.werkzeug_app import MotoRequestHandler
from urllib3 import HTTPHeaderDict, HTTPResponse
from werkzeug.exceptions import InternalServerError

log = logging.getLogger("local_runtime.loopback")
LOOPBACK = "longrun.loopback"
"""Set in the environ of a request that did not come over a socket (the runtime's own)"""
C = TypeVar("C")
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Request(MotoRequestHandler):
    """The edge server's request handler, for one request that did not come over a socket: only what makes the WSGI
    environ (``make_environ``) and the answer's standard headers is used."""

    def __init__(self, server: Any, method: str, target: str, headers: HTTPMessage, body: bytes) -> None:
        # not BaseRequestHandler.__init__: there is no connection to handle
        self.server = server
        self.client_address = ("127.0.0.1", 0)
        self.connection = None  # no socket; werkzeug reads a peer certificate off it only if it has one
        self.command = method
        self.path = target
        self.request_version = "HTTP/1.1"
        self.requestline = f"{method} {target} HTTP/1.1"
        self.headers = headers
        self.rfile = io.BytesIO(body)


class EdgeTransport:
    """A botocore HTTP session (``client._endpoint.http_session``) that hands each request to the edge's app (``bind``)
    as the edge's HTTP server, listening at ``address``, would."""

    def __init__(self, address: tuple[str, int], app: WsgiApp | None = None) -> None:
        self._app = app
        self._server = SimpleNamespace(
            ssl_context=None,
            multithread=True,
            multiprocess=False,
            server_address=address,
            passthrough_errors=False,
            _server_version=f"Werkzeug/{importlib.metadata.version('werkzeug')}",
        )

    def bind(self, app: WsgiApp) -> None:
        self._app = app

    def send(self, request: AWSPreparedRequest) -> AWSResponse:
        url = urlsplit(request.url)
        target = url.path or "/"
        if url.query:
            target += f"?{url.query}"
        body = _body(request.body)
        headers = HTTPMessage()
        for name, value in request.headers.items():
            headers[name] = value if isinstance(value, str) else value.decode("latin-1")
        # what http.client adds to a request that does not carry them (HTTPConnection.putrequest, _send_request)
        if "host" not in headers:
            headers["Host"] = url.netloc
        if "accept-encoding" not in headers:
            headers["Accept-Encoding"] = "identity"
        if "chunked" in (headers.get("transfer-encoding") or "").lower():
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"  # as urllib3 frames it
        elif "content-length" not in headers and (body or request.method.upper() in ("POST", "PUT", "PATCH")):
            headers["Content-Length"] = str(len(body))
        handler = _Request(self._server, request.method, target, headers, body)
        status, response_headers, data = self._call(handler)
        code, _, reason = status.partition(" ")
        raw = HTTPResponse(
            body=io.BytesIO(data),
            headers=HTTPHeaderDict(response_headers),
            status=int(code),
            reason=reason,
            preload_content=False,
            decode_content=False,
            request_method=request.method,
            request_url=request.url,
        )
        response = AWSResponse(request.url, int(code), raw.headers, raw)  # type: ignore[arg-type] # as botocore's own
        if not request.stream_output:
            response.content  # noqa: B018 - read now, as botocore's own session does
        return response

    def _call(self, handler: _Request) -> tuple[str, list[tuple[str, str]], bytes]:
        """The app's answer, with the headers werkzeug's server adds (Server, Date, Content-Length or chunking)."""
        if self._app is None:
            raise RuntimeError("the edge is not serving yet")
        app = self._app
        environ = handler.make_environ()
        environ[LOOPBACK] = True
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            answer.update(status=status, headers=list(headers))
            return lambda data: answer.setdefault("written", []).append(data)

        try:
            chunks = app(environ, start_response)
            try:
                data = b"".join([*answer.get("written", []), *chunks])
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        except Exception:  # as werkzeug's server: a 500 answer, and the error in the log
            log.exception("Error on request %s", handler.requestline)
            answer.clear()
            data = b"".join(InternalServerError()(environ, start_response))
        headers = [("Server", handler.version_string()), ("Date", handler.date_time_string()), *answer["headers"]]
        return answer["status"], headers, data

    def close(self) -> None:
        """Nothing to close: there is no connection."""


def _body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data.encode() if isinstance(data, str) else bytes(data)
    return b"".join(body)


def connect(client: C, transport: EdgeTransport | None) -> C:
    """``client`` (a boto3 client whose endpoint is the edge), sending through ``transport`` if there is one."""
    if transport is not None:
        client._endpoint.http_session = transport  # type: ignore[attr-defined]
    return client
