"""The Lambda service, locally: each function runs in processes of its own, as in Lambda.

An execution environment is a process started with only what Lambda gives a function: the variables the template
sets, Lambda's reserved variables, its execution role's credentials, the function's code and the layer's package
on the path (as /var/task and /opt/python), and no other site-packages than the layer's requirements (installed
as ``sam build`` installs them) and boto3 (which Lambda's Python runtime brings): a package the layer forgets to
require fails to import here as it would in Lambda. A new environment pays its init (importing the handler); a
warm one is reused, one invocation at a time. Each environment writes its own log stream, with START, END and
REPORT lines as Lambda writes them, and the runtime's log carries each REPORT line (duration, billed duration,
memory, init). An invocation that runs past the function's timeout is stopped, and its environment with it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

from local_runtime import iam, meter
from local_runtime.identities import Identities
from local_runtime.template import Function, LocalStack

log = logging.getLogger("local_runtime.lambda")
BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
ASYNC_RETRIES = 2  # Lambda retries a failed asynchronous invocation twice
ENVIRONMENTS_PER_FUNCTION = 16
"""Concurrent executions of one function; beyond it invocations wait (Lambda would scale further). A task's commands
are sent by one RunBatch invocation each, all at once: 16 lets the default settings start up to 800 devices' commands
together (10 for 500 devices), where with 8 the ninth waited for a whole invocation of another to end."""
ASYNC_WORKERS = 8
"""Event invocations handled at once, over all functions."""


@dataclass(frozen=True)
class Invocation:
    payload: Any
    error: str | None
    """None, or "Unhandled" as Lambda's X-Amz-Function-Error says when the handler raised"""


@dataclass
class LogStream:
    """An execution environment's log stream: a file of the logs dir that its process writes to, and where Lambda
    writes START, END and REPORT lines; each REPORT line goes to the runtime's log too."""

    function: Function
    path: Path
    name: str
    """The stream's name, as AWS_LAMBDA_LOG_STREAM_NAME says it"""
    init_ms: float | None = None
    """How long the environment's init took, reported with its first invocation"""

    def start(self, request_id: str) -> None:
        _append(self.path, f"START RequestId: {request_id} Version: $LATEST\n")

    def report(self, request_id: str, duration_ms: float, max_memory_mb: int, error_type: str | None) -> None:
        function = self.function
        line = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {math.ceil(duration_ms)} ms\t"
            f"Memory Size: {function.memory} MB\tMax Memory Used: {max_memory_mb} MB"
        )
        if self.init_ms is not None:
            line += f"\tInit Duration: {self.init_ms:.2f} ms"
            self.init_ms = None
        if error_type:
            line += f"\tStatus: error ({error_type})"
        _append(self.path, f"END RequestId: {request_id}\n{line}\n")
        log.debug("%s %s", function.logical_id, line)  # --request-log


@dataclass
class _Environment:
    """One execution environment: a process running lambda_bootstrap.py."""

    function: Function
    process: subprocess.Popen[str]
    answers: _Lines
    log: LogStream
    init_error: Any = None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.answers.close()


class _Closable(Protocol):
    def close(self) -> None: ...


E = TypeVar("E", bound=_Closable)


class EnvironmentPool(Generic[E]):
    """One function's execution environments: an idle one is reused, one invocation at a time; a new one starts when
    none is idle, up to ENVIRONMENTS_PER_FUNCTION at once, and further invocations wait for one to be free."""

    def __init__(self) -> None:
        self._idle: list[E] = []
        self._running = 0
        self._closed = False
        self._condition = threading.Condition()

    def acquire(self, start: Callable[[], E], timeout: float | None = None) -> E:
        """An idle environment, or a new one from ``start``; TimeoutError if none is free within ``timeout``."""
        with self._condition:
            if not self._condition.wait_for(
                lambda: bool(self._idle) or self._running < ENVIRONMENTS_PER_FUNCTION, timeout
            ):
                raise TimeoutError(f"no execution environment was free within {timeout:.1f} s")
            self._running += 1
            if self._idle:
                return self._idle.pop()
        try:
            return start()
        except BaseException:
            with self._condition:
                self._running -= 1
                self._condition.notify()
            raise

    def release(self, environment: E, reusable: bool) -> None:
        """Done with an invocation: the environment is kept for the next one, or closed."""
        with self._condition:
            self._running -= 1
            if reusable and not self._closed:
                self._idle.append(environment)
            else:
                environment.close()
            self._condition.notify()

    def close(self) -> None:
        """Close the idle environments, and each busy one once it is released."""
        with self._condition:
            self._closed = True
            for environment in self._idle:
                environment.close()
            self._idle.clear()


def function_site(stack: LocalStack, cache: Path) -> Path:
    """The third-party packages a function may import: its layers' requirements.txt and boto3, installed once per
    their content into ``cache`` (pip --target, as sam build does for a layer)."""
    requirements = sorted({path / "requirements.txt" for f in stack.functions.values() for path in f.layer_dirs})
    runtime_packages = [f"boto3=={importlib.metadata.version('boto3')}"]
    digest = hashlib.sha256()
    for path in requirements:
        digest.update(path.read_bytes() if path.exists() else b"")
    digest.update(" ".join([sys.version, *runtime_packages]).encode())
    site = cache / digest.hexdigest()[:16]
    if not site.exists():
        building = cache / f"{site.name}.{os.getpid()}.building"
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"]
        command += [str(building), *runtime_packages]
        for path in requirements:
            if path.exists():
                command += ["-r", str(path)]
        log.warning("installing the functions' packages (the layer's requirements and boto3) into %s", site)
        subprocess.run(command, check=True)
        try:
            building.rename(site)
        except OSError:  # another runtime built it meanwhile
            shutil.rmtree(building, ignore_errors=True)
    return site


class LambdaBridge:
    def __init__(
        self, stack: LocalStack, identities: Identities, aws_environment: dict[str, str], logs_dir: Path, site: Path
    ) -> None:
        self._stack = stack
        self._site = site
        self._identities = identities
        self._aws_environment = aws_environment
        self._logs_dir = logs_dir
        self._by_name = {f.name: f for f in stack.functions.values()} | {f.arn: f for f in stack.functions.values()}
        self._pools: dict[str, EnvironmentPool[_Environment]] = defaultdict(EnvironmentPool)
        self._async = ThreadPoolExecutor(max_workers=ASYNC_WORKERS, thread_name_prefix="lambda-async")
        self._closing = threading.Event()

    def function(self, name_or_arn: str) -> Function | None:
        name = name_or_arn.split(":function:")[-1].split(":")[0] if ":function:" in name_or_arn else name_or_arn
        return self._by_name.get(name) or self._by_name.get(name_or_arn)

    def permits(self, function: str, principal: str, source_arn: str) -> bool:
        """Whether the function's resource-based policy (the template's Lambda permissions) lets the service
        ``principal`` invoke it for ``source_arn`` (a rule, an API's route); a permission's SourceArn may hold
        wildcards (Lambda compares it with ArnLike), and a permission without one allows any source."""
        return any(
            permission.function == function
            and permission.principal == principal
            and iam.arn_like(permission.source_arn or "*", source_arn)
            for permission in self._stack.permissions
        )

    def invoke(self, function: Function, event: Any) -> Invocation:
        """A synchronous (RequestResponse) invocation."""
        request_id = str(uuid.uuid4())
        pool = self._pools[function.logical_id]
        environment = pool.acquire(lambda: self._start(function))
        started = time.perf_counter()
        healthy = False
        try:
            answer, healthy = self._run(environment, request_id, event)
        finally:
            meter.count_invocation(function.logical_id, (time.perf_counter() - started) * 1000)
            pool.release(environment, healthy)
        return Invocation(payload=answer["payload"], error=answer["error"])

    def invoke_async(self, function: Function, event: Any, retries: int = ASYNC_RETRIES) -> None:
        """An Event invocation: queued, run later, retried (twice by default) if the handler fails."""

        def run() -> None:
            for attempt in range(retries + 1):
                if self._closing.is_set():
                    return
                if self.invoke(function, event).error is None:
                    return
                time.sleep(min(0.2 * 2**attempt, 5))
            log.error("%s failed %d times; the event is dropped", function.logical_id, retries + 1)

        self._async.submit(run)

    def close(self) -> None:
        self._closing.set()
        self._async.shutdown(wait=False, cancel_futures=True)
        for pool in self._pools.values():
            pool.close()

    # --- execution environments -------------------------------------------------------------------

    def sandbox(self, function: Function) -> tuple[dict[str, str], LogStream]:
        """What a new execution environment of ``function`` starts with: its process's environment variables (the
        template's, Lambda's reserved ones, its role's credentials, its code and layers on PYTHONPATH), and its new
        log stream."""
        now = datetime.now(UTC)
        stream = f"{now:%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        log_path = self._logs_dir / function.name / (stream.replace("/", "-") + ".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        credentials = self._identities.for_function(function)
        layers = [str(path / "python") if (path / "python").is_dir() else str(path) for path in function.layer_dirs]
        environ = {
            **function.environment,
            **self._aws_environment,
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_SESSION_TOKEN": credentials.session_token,
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "LAMBDA_TASK_ROOT": str(function.code_dir),
            "LANG": "en_US.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join([str(function.code_dir), *layers, str(self._site)]),
            "TZ": ":UTC",
            "_HANDLER": function.handler,
        }
        return environ, LogStream(function, log_path, stream)

    def _start(self, function: Function) -> _Environment:
        """A cold environment: a new process that imports the handler."""
        environ, log_stream = self.sandbox(function)
        read_fd, write_fd = os.pipe()
        with log_stream.path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-S", "-u", str(BOOTSTRAP), str(write_fd), function.arn],  # -S: no site-packages
                cwd=function.code_dir,
                env=environ,
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                text=True,
                start_new_session=True,
            )
        os.close(write_fd)
        environment = _Environment(function, process, _Lines(read_fd), log_stream)
        ready = environment.answers.read(function.timeout + 10)
        if ready is None:
            environment.close()
            raise RuntimeError(f"{function.logical_id} did not start; see {log_stream.path}")
        log_stream.init_ms, environment.init_error = ready["initMs"], ready["error"]
        return environment

    def _run(self, environment: _Environment, request_id: str, event: Any) -> tuple[dict[str, Any], bool]:
        """One invocation in a given environment: (the answer, whether the environment can be reused)."""
        function = environment.function
        deadline = time.time() + function.timeout
        trace = trace_id()
        environment.log.start(request_id)
        assert environment.process.stdin is not None
        try:
            environment.process.stdin.write(
                json.dumps({"requestId": request_id, "event": event, "deadline": deadline, "traceId": trace}) + "\n"
            )
            environment.process.stdin.flush()
            answer = environment.answers.read(function.timeout)
        except (BrokenPipeError, OSError):
            answer = None
        healthy = answer is not None
        if answer is None:
            timed_out = environment.process.poll() is None
            environment.close()
            now = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
            message = (
                f"{now} {request_id} Task timed out after {function.timeout:.2f} seconds"
                if timed_out
                else "Runtime exited without providing a reason"
            )
            answer = {
                "payload": {
                    "errorMessage": message,
                    "errorType": "Sandbox.Timedout" if timed_out else "Runtime.ExitError",
                },
                "error": "Unhandled",
                "durationMs": function.timeout * 1000.0,
                "maxMemoryMB": 0,
            }
        elif environment.init_error is not None:
            healthy = False  # Lambda starts a new environment after a failed init
        error_type = answer["payload"].get("errorType") if answer["error"] else None
        environment.log.report(request_id, float(answer["durationMs"]), answer["maxMemoryMB"], error_type)
        return answer, healthy


def trace_id() -> str:
    """An invocation's X-Ray trace header (_X_AMZN_TRACE_ID), not sampled: X-Ray is not played."""
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _append(path: Path, text: str) -> None:
    with path.open("a") as stream:
        stream.write(text)


class _Lines:
    """The JSON lines an environment answers with, on a pipe of its own."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next line, or None if none comes in time or the process ended."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        """Close the pipe once: an environment that timed out is closed where it failed and again when it is
        released, and a second os.close could close whatever descriptor the number has been given since."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def load_module(unique_name: str, code_dir: os.PathLike[str] | str, module_name: str) -> ModuleType:
    """A handler module loaded into this process (for the in-process tests of handlers)."""
    spec = importlib.util.spec_from_file_location(unique_name, f"{code_dir}/{module_name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no module {module_name} in {code_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique_name] = module
    spec.loader.exec_module(module)
    return module
