"""Lambda Web Adapter, locally: a function behind the adapter's layer runs as a web app in each of its execution
environments, and each invocation reaches the app over HTTP, its response read as the app writes it.

A function is run this way when its layers include the adapter's (``LambdaAdapterLayerX86`` or ``...Arm64``,
published from account 753240598075) and its environment sets ``AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap``, as the
adapter's README asks. An execution environment is then its handler script (``$LAMBDA_TASK_ROOT/$_HANDLER``, which
the layer's /opt/bootstrap execs) started as a process of its own with what the Lambda bridge gives any function
(lambdas.py: the template's variables, Lambda's reserved ones, its role's credentials, its code and layers on
PYTHONPATH, its own log stream), a ``python3`` first on PATH that is this interpreter without site-packages (as the
runtime's own python3), and the traffic port (AWS_LWA_PORT, or PORT) moved from 8080 to a free port of its own. It
is ready once the adapter's readiness check passes: a GET of AWS_LWA_READINESS_CHECK_PATH ("/") every 10 ms until a
status in AWS_LWA_READINESS_CHECK_HEALTHY_STATUS (100-499) comes, or a TCP connect with
AWS_LWA_READINESS_CHECK_PROTOCOL=tcp, within Lambda's 10 s init limit, or the invocation fails. An invocation is the
request the adapter makes of the app from the proxy event: its method, path, query, headers and body, with API
Gateway's request context in ``x-amzn-request-context`` and the invocation's context in ``x-amzn-lambda-context``
(a client cannot set either). One invocation at a time per environment, as in Lambda; an environment whose response
did not end as HTTP says is discarded. Each invocation writes START, END and REPORT to its environment's log stream
and counts in the meter.

Only AWS_LWA_INVOKE_MODE=response_stream is played (API Gateway's streamed integrations, api_gateway.py); an
adapter setting the runtime does not play (AWS_LWA_ASYNC_INIT, AWS_LWA_REMOVE_BASE_PATH, ...) is refused, as is a
function without a traffic port to move, rather than run as the adapter would not run it.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from local_runtime import meter
from local_runtime.lambdas import EnvironmentPool, LambdaBridge, LogStream, trace_id
from local_runtime.launcher import free_port
from local_runtime.template import Function

LAYER = re.compile(r"^arn:aws[\w-]*:lambda:[\w-]+:753240598075:layer:LambdaAdapterLayer(X86|Arm64):\d+$")
EXEC_WRAPPER = "/opt/bootstrap"
INIT_LIMIT_SECONDS = 10.0
"""Lambda's limit on an execution environment's init (its extensions, the adapter among them, and its runtime)"""
READINESS_INTERVAL_SECONDS = 0.01
PLAYED = {
    "AWS_LWA_PORT", "AWS_LWA_INVOKE_MODE", "AWS_LWA_READINESS_CHECK_PATH", "AWS_LWA_READINESS_CHECK_PROTOCOL",
    "AWS_LWA_READINESS_CHECK_HEALTHY_STATUS",
}  # fmt: skip
"""The adapter's settings the runtime plays; a function setting another AWS_LWA_ variable is refused"""
DEPRECATED = {
    "READINESS_CHECK_PORT", "READINESS_CHECK_PATH", "READINESS_CHECK_PROTOCOL", "REMOVE_BASE_PATH", "ASYNC_INIT",
}  # fmt: skip
"""The adapter's older names of its settings (still read by it), refused as the settings they name"""
_NOT_FORWARDED = {"connection", "content-length", "keep-alive", "transfer-encoding", "x-amzn-request-context",
                  "x-amzn-lambda-context"}  # fmt: skip
"""Request headers of the event the adapter does not pass on as they came (it sets the context headers itself)"""


class InvocationFailed(Exception):
    """The invocation failed before the app answered: the environment did not start, or the app broke off."""


@dataclass(frozen=True)
class Settings:
    """How the adapter runs a function's web app, from the function's environment."""

    port_variables: tuple[str, ...]
    """AWS_LWA_PORT and/or PORT: the traffic port, moved to each environment's own"""
    readiness_path: str
    readiness_tcp: bool
    healthy: frozenset[int]

    @classmethod
    def of(cls, function: Function) -> Settings:
        """ValueError if ``function`` is not behind the adapter, or sets what the runtime does not play."""
        environment = function.environment
        if not any(LAYER.match(arn) for arn in function.external_layers) or (
            environment.get("AWS_LAMBDA_EXEC_WRAPPER") != EXEC_WRAPPER
        ):
            raise ValueError(
                f"{function.logical_id} is not behind Lambda Web Adapter (its layer, and AWS_LAMBDA_EXEC_WRAPPER="
                f"{EXEC_WRAPPER}): the local runtime streams a response only through it"
            )
        unplayed = {name for name in environment if name in DEPRECATED or name.startswith("AWS_LWA_")} - PLAYED
        if unplayed:
            raise ValueError(f"{function.logical_id}: Lambda Web Adapter's {', '.join(sorted(unplayed))} not played")
        ports = tuple(name for name in ("AWS_LWA_PORT", "PORT") if name in environment)
        if not ports:
            raise ValueError(f"{function.logical_id}: set AWS_LWA_PORT, the port each environment's app listens on")
        if environment.get("AWS_LWA_INVOKE_MODE") != "response_stream":
            raise ValueError(
                f"{function.logical_id}: a streamed route needs AWS_LWA_INVOKE_MODE=response_stream (buffered, the "
                "adapter answers a proxy response, not the stream API Gateway reads)"
            )
        protocol = environment.get("AWS_LWA_READINESS_CHECK_PROTOCOL", "http")
        if protocol not in ("http", "tcp"):
            raise ValueError(f"{function.logical_id}: AWS_LWA_READINESS_CHECK_PROTOCOL is http or tcp")
        return cls(
            ports,
            environment.get("AWS_LWA_READINESS_CHECK_PATH", "/"),
            protocol == "tcp",
            healthy_statuses(environment.get("AWS_LWA_READINESS_CHECK_HEALTHY_STATUS", "100-499")),
        )


def healthy_statuses(text: str) -> frozenset[int]:
    """AWS_LWA_READINESS_CHECK_HEALTHY_STATUS: status codes and ranges, e.g. "200-399,404"."""
    statuses: set[int] = set()
    for part in text.split(","):
        found = re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", part)
        if found is None:
            raise ValueError(f"AWS_LWA_READINESS_CHECK_HEALTHY_STATUS: {part!r} is not a status or a range")
        statuses.update(range(int(found[1]), int(found[2] or found[1]) + 1))
    return frozenset(statuses)


@dataclass(eq=False)
class _WebApp:
    """One execution environment: the handler script's process (a process group of its own) and its port."""

    process: subprocess.Popen[bytes]
    port: int
    log: LogStream

    def close(self) -> None:
        if self.process.returncode is None:  # not reaped yet, so the process group is still the script's
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the script and whatever it started
            self.process.wait()

    def max_memory_mb(self) -> int:
        """The app's peak resident memory (VmHWM), 0 once it has exited."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(found[1]) // 1024 if found else 0


class WebAdapter:
    """Runs the given functions (those of API Gateway's streamed routes) as the adapter runs them."""

    def __init__(self, lambdas: LambdaBridge, functions: Iterable[Function]) -> None:
        self._lambdas = lambdas
        self._settings = {function.logical_id: Settings.of(function) for function in functions}
        self._pools: dict[str, EnvironmentPool[_WebApp]] = defaultdict(EnvironmentPool)
        self._apps: weakref.WeakSet[_WebApp] = weakref.WeakSet()
        """Every environment not yet discarded, idle or streaming"""
        self._bin = Path(tempfile.mkdtemp(prefix="local-runtime-python-"))
        """The runtime's own bin directory, first on the apps' PATH: a python3 without site-packages"""
        python3 = self._bin / "python3"
        python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        python3.chmod(0o755)

    def invoke(self, function: Function, event: dict[str, Any], until: float) -> Streaming:
        """Forward a proxy event to an environment of ``function``, and answer once the app's status and headers
        have come; TimeoutError if they did not by ``until`` (time.monotonic()); InvocationFailed if the
        environment did not start or the app failed before it answered."""
        settings = self._settings[function.logical_id]
        pool = self._pools[function.logical_id]
        app = pool.acquire(lambda: self._start(function, settings), max(0.0, until - time.monotonic()))
        invocation = Streaming(function, pool, app)
        try:
            invocation.send(event, until)
        except BaseException:
            invocation.close()
            raise
        return invocation

    def close(self) -> None:
        """Stop every environment, its streams cut short."""
        for pool in self._pools.values():
            pool.close()
        for app in list(self._apps):
            app.close()
        shutil.rmtree(self._bin, ignore_errors=True)

    def _start(self, function: Function, settings: Settings) -> _WebApp:
        """A cold environment: the handler script, as /opt/bootstrap execs it, ready once the readiness check passes
        (within Lambda's init limit)."""
        environ, log_stream = self._lambdas.sandbox(function)
        port = free_port()
        environ |= dict.fromkeys(settings.port_variables, str(port))
        environ["PATH"] = os.pathsep.join([str(self._bin), environ["PATH"]])
        started = time.monotonic()
        try:
            with log_stream.path.open("ab") as log_file:
                process = subprocess.Popen(
                    [str(function.code_dir / function.handler)],
                    cwd=function.code_dir,
                    env=environ,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:  # not there, not executable, no interpreter
            raise InvocationFailed(f"{function.handler} could not be started: {error}") from error
        app = _WebApp(process, port, log_stream)
        self._apps.add(app)
        if not _ready(app, settings, started + INIT_LIMIT_SECONDS):
            why = f"exited ({process.returncode})" if process.poll() is not None else "was not ready in time"
            app.close()
            raise InvocationFailed(f"{function.handler} {why}: see {log_stream.path}")
        log_stream.init_ms = (time.monotonic() - started) * 1000
        return app


def _ready(app: _WebApp, settings: Settings, deadline: float) -> bool:
    """The adapter's readiness check, repeated until it passes, the app exits or the deadline passes."""
    while app.process.poll() is None and time.monotonic() < deadline:
        timeout = max(0.01, deadline - time.monotonic())
        try:
            if settings.readiness_tcp:
                socket.create_connection(("127.0.0.1", app.port), timeout=timeout).close()
                return True
            connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=timeout)
            try:
                connection.request("GET", settings.readiness_path)
                if connection.getresponse().status in settings.healthy:
                    return True
            finally:
                connection.close()
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(READINESS_INTERVAL_SECONDS)
    return False


class Streaming:
    """One invocation of a web app: the request forwarded, its response read as it arrives. ``close()`` ends the
    invocation: it counts in the meter, its REPORT line is written, and its environment is kept for the next
    invocation only if the response was read to its end."""

    status: int
    headers: dict[str, list[str]]

    def __init__(self, function: Function, pool: EnvironmentPool[_WebApp], app: _WebApp) -> None:
        self._function = function
        self._pool = pool
        self._app = app
        self._request_id = str(uuid.uuid4())
        self._started = time.monotonic()
        self.deadline = self._started + function.timeout
        """When the function times out (time.monotonic()), which ends its response"""
        self.complete = False
        """Whether the response was read to its end"""
        self._aborted = False
        self._socket: socket.socket | None = None
        self._response: http.client.HTTPResponse | None = None
        self._closed = threading.Lock()
        app.log.start(self._request_id)

    def send(self, event: dict[str, Any], until: float) -> None:
        """Make the request of the app and read its status and headers (by ``until`` at the latest)."""
        function = self._function
        query = urlencode(
            [(name, value) for name, values in (event.get("multiValueQueryStringParameters") or {}).items()
             for value in values]
        )  # fmt: skip
        headers = [
            (name, value)
            for name, values in (event.get("multiValueHeaders") or {}).items()
            if name.lower() not in _NOT_FORWARDED
            for value in values
        ]
        lambda_context = {
            "request_id": self._request_id,
            "deadline": int((time.time() + function.timeout) * 1000),
            "invoked_function_arn": function.arn,
            "xray_trace_id": trace_id(),
            "client_context": None,
            "identity": None,
            "env_config": {
                "function_name": function.name,
                "memory": function.memory,
                "version": "$LATEST",
                "log_stream": self._app.log.name,
                "log_group": f"/aws/lambda/{function.name}",
            },
        }
        headers += [
            ("x-amzn-request-context", json.dumps(event["requestContext"])),
            ("x-amzn-lambda-context", json.dumps(lambda_context)),
        ]
        body = event.get("body") or ""
        data = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        timeout = max(0.001, min(until, self.deadline) - time.monotonic())
        try:
            self._socket = socket.create_connection(("127.0.0.1", self._app.port), timeout=timeout)
            connection = http.client.HTTPConnection("127.0.0.1", self._app.port)
            connection.sock = self._socket
            connection.putrequest(
                event["httpMethod"], event["path"] + (f"?{query}" if query else ""), True, skip_accept_encoding=True
            )
            for name, value in headers:
                connection.putheader(name, value)
            if data:
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data or None)
            self._response = connection.getresponse()
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException) as error:
            raise InvocationFailed(f"the app did not answer: {error!r}") from error
        self.status = self._response.status
        self.headers = {}
        for name, value in self._response.getheaders():
            self.headers.setdefault(name, []).append(value)
        self.headers.pop("Transfer-Encoding", None)  # the adapter passes the body on, not its framing

    def read(self, timeout: float) -> bytes:
        """The next piece of the body as soon as it has come; b"" once it has ended (``complete`` says whether as
        HTTP says, or broken off); TimeoutError if nothing came within ``timeout``."""
        assert self._socket is not None and self._response is not None
        try:
            self._socket.settimeout(max(0.001, timeout))
            data = self._response.read1(1 << 16)
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException, ValueError):  # broken off, or aborted
            return b""
        self.complete = not data and not self._aborted
        return data

    def abort(self) -> None:
        """Close the connection to the app (from any thread): a read in progress ends."""
        self._aborted = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """End the invocation (once)."""
        if not self._closed.acquire(blocking=False):
            return
        if self._response is not None:
            self._response.close()
        if self._socket is not None:
            self._socket.close()
        function, app = self._function, self._app
        duration_ms = (time.monotonic() - self._started) * 1000
        exited = app.process.poll() is not None
        error_type = None
        if exited:
            error_type = "Runtime.ExitError"
        elif not self.complete and time.monotonic() >= self.deadline:
            error_type = "Sandbox.Timedout"
        app.log.report(self._request_id, duration_ms, app.max_memory_mb(), error_type)
        meter.count_invocation(function.logical_id, duration_ms)
        self._pool.release(app, self.complete and not exited)
