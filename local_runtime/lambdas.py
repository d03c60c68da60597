"""The Lambda service, locally: the template's real handlers run in this process, each loaded once (a warm
container), with the environment the template gives them and the layer's package on the path, as /opt/python."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from local_runtime import meter
from local_runtime.template import Function, LocalStack

log = logging.getLogger("local_runtime.lambda")
ASYNC_RETRIES = 2  # Lambda retries a failed asynchronous invocation twice
ASYNC_WORKERS = 8
"""Event invocations at once: this one process has a GIL and two cores, not Lambda's fleet of workers."""


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    deadline: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Invocation:
    payload: Any
    error: str | None
    """None, or "Unhandled" as Lambda's X-Amz-Function-Error says when the handler raised"""


class LambdaBridge:
    def __init__(self, stack: LocalStack) -> None:
        self._stack = stack
        self._by_name = {f.name: f for f in stack.functions.values()} | {f.arn: f for f in stack.functions.values()}
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._load_lock = threading.Lock()
        self._async = ThreadPoolExecutor(max_workers=ASYNC_WORKERS, thread_name_prefix="lambda-async")
        for layer in stack.of_type("AWS::Serverless::LayerVersion").values():
            path = str(stack.root / layer["Properties"]["ContentUri"])
            if path not in sys.path:
                sys.path.insert(0, path)
        _apply_environment(stack.functions.values())

    def function(self, name_or_arn: str) -> Function | None:
        name = name_or_arn.split(":function:")[-1].split(":")[0] if ":function:" in name_or_arn else name_or_arn
        return self._by_name.get(name) or self._by_name.get(name_or_arn)

    def invoke(self, function: Function, event: Any) -> Invocation:
        handler = self._handler(function)
        context = LambdaContext(
            function_name=function.name,
            invoked_function_arn=function.arn,
            memory_limit_in_mb=function.memory,
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + function.timeout,
        )
        started = time.perf_counter()
        try:
            result = handler(json.loads(json.dumps(event)), context)
            return Invocation(payload=json.loads(json.dumps(result)), error=None)
        except Exception as error:  # the function's error becomes the invocation's, as in Lambda
            log.exception("%s raised", function.logical_id)
            return Invocation(
                payload={
                    "errorMessage": str(error),
                    "errorType": type(error).__name__,
                    "stackTrace": traceback.format_tb(error.__traceback__),
                },
                error="Unhandled",
            )
        finally:
            meter.count_invocation(function.logical_id, (time.perf_counter() - started) * 1000)

    def invoke_async(self, function: Function, event: Any) -> None:
        """An Event invocation: queued, run later, retried twice if the handler raises."""

        def run() -> None:
            for attempt in range(ASYNC_RETRIES + 1):
                if self.invoke(function, event).error is None:
                    return
                time.sleep(0.2 * (attempt + 1))
            log.error("%s failed %d times; the event is dropped", function.logical_id, ASYNC_RETRIES + 1)

        self._async.submit(run)

    def close(self) -> None:
        self._async.shutdown(wait=False, cancel_futures=True)

    def _handler(self, function: Function) -> Callable[..., Any]:
        with self._load_lock:
            if function.logical_id not in self._handlers:
                module_name, attribute = function.handler.rsplit(".", 1)
                module = load_module(f"lambda_{function.logical_id}_{module_name}", function.code_dir, module_name)
                self._handlers[function.logical_id] = getattr(module, attribute)
            return self._handlers[function.logical_id]


def load_module(unique_name: str, code_dir: os.PathLike[str] | str, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(unique_name, f"{code_dir}/{module_name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no module {module_name} in {code_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique_name] = module
    spec.loader.exec_module(module)
    return module


def _apply_environment(functions: Any) -> None:
    """The functions share this process, so their variables must agree: a variable two functions set differently
    would make one of them run with the other's value, and is refused."""
    merged: dict[str, tuple[str, str]] = {}
    for function in functions:
        for key, value in function.environment.items():
            if key in merged and merged[key][1] != value:
                raise RuntimeError(
                    f"{function.logical_id} sets {key}={value!r} but {merged[key][0]} sets {merged[key][1]!r}; "
                    "the local runtime runs every function in one process and needs them to agree"
                )
            merged[key] = (function.logical_id, value)
    os.environ.update({key: value for key, (_, value) in merged.items()})
