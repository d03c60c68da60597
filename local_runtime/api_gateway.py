"""API Gateway, locally: real HTTP in front of the template's Api routes. Each request becomes the REST API proxy
event the deployed API would send (resource, path and query parameters, headers, base64 bodies, request context
with the caller's identity), and the function's answer becomes the HTTP response.

The deployed API uses IAM authorization. Locally a request signed with SigV4 (``curl --aws-sigv4 ... --user
KEY:SECRET``) is attributed to the IAM user named by its access key, without checking the signature; an unsigned
request is attributed to the local default caller.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from local_runtime.lambdas import LambdaBridge
from local_runtime.sigv4 import signer
from local_runtime.template import ACCOUNT_ID, LocalStack

log = logging.getLogger("local_runtime.api")
API_ID = "local"


def caller_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"


class ApiGateway:
    def __init__(self, stack: LocalStack, lambdas: LambdaBridge, default_caller: str) -> None:
        self._stack = stack
        self._lambdas = lambdas
        self._default_caller = default_caller
        self._server: ThreadingHTTPServer | None = None

    def event(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes
    ) -> tuple[str, dict[str, Any]] | None:
        """The (function, proxy event) for a request, or None when no route of the API matches it."""
        url = urlsplit(target)
        for route in self._stack.routes:
            params = route.match(method, url.path)
            if params is None:
                continue
            query = parse_qs(url.query, keep_blank_values=True)
            text, is_base64 = _body(body)
            signed = signer((headers.get("authorization") or [""])[0])
            caller = signed.access_key if signed else self._default_caller
            return route.function, {
                "resource": route.path,
                "path": url.path,
                "httpMethod": method,
                "headers": {name: values[-1] for name, values in headers.items()},
                "multiValueHeaders": headers,
                "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
                "multiValueQueryStringParameters": query or None,
                "pathParameters": params or None,
                "stageVariables": None,
                "requestContext": {
                    "accountId": ACCOUNT_ID,
                    "apiId": API_ID,
                    "resourcePath": route.path,
                    "httpMethod": method,
                    "path": f"/{self._stack.stage}{url.path}",
                    "stage": self._stack.stage,
                    "protocol": "HTTP/1.1",
                    "requestId": str(uuid.uuid4()),
                    "requestTimeEpoch": int(time.time() * 1000),
                    "domainName": (headers.get("host") or ["localhost"])[0],
                    "identity": {
                        "accountId": ACCOUNT_ID,
                        "caller": caller,
                        "user": caller,
                        "userArn": caller_arn(caller),
                        "accessKey": caller if signed else None,
                        "sourceIp": "127.0.0.1",
                        "userAgent": (headers.get("user-agent") or [""])[0],
                    },
                    "authorizer": None,
                },
                "body": text,
                "isBase64Encoded": is_base64,
            }
        return None

    def handle(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes
    ) -> tuple[int, dict[str, list[str]], bytes]:
        routed = self.event(method, target, headers, body)
        if routed is None:
            problem = {
                "type": "about:blank",
                "title": "Missing Authentication Token",
                "status": 403,
                "instance": target,
            }
            return 403, {"Content-Type": ["application/problem+json"]}, json.dumps(problem).encode()
        function, event = routed
        result = self._lambdas.invoke(self._stack.functions[function], event)
        if result.error:
            problem = {"type": "about:blank", "title": "Internal server error", "status": 502, "instance": target}
            return 502, {"Content-Type": ["application/problem+json"]}, json.dumps(problem).encode()
        response = result.payload
        out_headers = {k: [v] for k, v in (response.get("headers") or {}).items()}
        out_headers.update(response.get("multiValueHeaders") or {})
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        return int(response.get("statusCode", 200)), out_headers, data

    def serve(self, host: str, port: int) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                status, out_headers, data = gateway.handle(self.command, self.path, headers, body)
                self.send_response(status)
                for name, values in out_headers.items():
                    if name.lower() in ("content-length", "connection"):
                        continue
                    for value in values:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815 - the stdlib's names

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
                log.info("%s %s", self.address_string(), format % args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="api-gateway").start()

    def close(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


def _body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), True
