"""The runtime inside one local Lambda execution environment (a process of its own, as in Lambda).

Started by the Lambda bridge as ``python -u lambda_bootstrap.py ANSWER_FD FUNCTION_ARN`` with the function's
environment only. It imports the handler (the init phase), reports how long that took, then serves invocations one
at a time: one JSON line per request on stdin, one JSON line per answer on the pipe ANSWER_FD. Whatever the function
prints goes to its own log stream (stdout and stderr). This file is run by path, never imported: the function's
process has no access to the local runtime's package.
"""

import importlib
import json
import os
import sys
import time
import traceback


def _error(error: BaseException, error_type: str | None = None) -> dict[str, object]:
    return {
        "errorMessage": str(error),
        "errorType": error_type or type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


class Context:
    """What Lambda's Python runtime hands a handler as ``context``."""

    def __init__(self, request_id: str, deadline: float, function_arn: str) -> None:
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
        self.aws_request_id = request_id
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _max_memory_mb() -> int:
    """The process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [path for path in sys.path if os.path.abspath(path or ".") != here]
    answer_fd, function_arn = int(sys.argv[1]), sys.argv[2]
    channel = os.fdopen(answer_fd, "w", buffering=1)
    module_name, attribute = os.environ["_HANDLER"].rsplit(".", 1)
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
        init_error = None
    except Exception as error:  # noqa: BLE001 - Lambda reports any init failure as the invocation's error
        handler, init_error = None, _error(error, "Runtime.ImportModuleError")
        traceback.print_exc()
    init_ms = (time.perf_counter() - started) * 1000
    channel.write(json.dumps({"initMs": init_ms, "error": init_error}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = request["traceId"]
        started = time.perf_counter()
        answer: dict[str, object]
        if handler is None:
            answer = {"payload": init_error, "error": "Unhandled"}
        else:
            try:
                payload = handler(request["event"], Context(request["requestId"], request["deadline"], function_arn))
                answer = {"payload": json.loads(json.dumps(payload)), "error": None}
            except Exception as error:  # noqa: BLE001 - the handler's error becomes the invocation's, as in Lambda
                traceback.print_exc()
                answer = {"payload": _error(error), "error": "Unhandled"}
        sys.stdout.flush()
        sys.stderr.flush()
        answer["durationMs"] = (time.perf_counter() - started) * 1000
        answer["maxMemoryMB"] = _max_memory_mb()
        channel.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
