"""How the local runtime's Lambda fails, as AWS fails: an environment that timed out is closed once, and Step Functions
names a function's timeout, memory or exit Lambda.Unknown, not after the payload's errorType."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest
from moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils import (
    LambdaFunctionErrorException,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
    StateTaskServiceLambda,
)

from local_runtime import step_functions
from local_runtime.lambdas import _Lines


def test_an_answers_pipe_is_closed_once_and_no_other_descriptor_with_it() -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    lines = _Lines(read_fd)
    lines.close()
    reused, other = os.pipe()  # the descriptor numbers just freed are given out again
    try:
        lines.close()  # the timed-out environment's release closes it a second time
        os.fstat(reused)
        os.fstat(other)
    finally:
        os.close(reused)
        os.close(other)


def _failure(error_type: str) -> Any:
    state = StateTaskServiceLambda.__new__(StateTaskServiceLambda)
    state._get_sfn_resource = lambda: "lambda:invoke"  # type: ignore[method-assign]
    state._get_sfn_resource_type = lambda: "lambda"  # type: ignore[method-assign]
    env = SimpleNamespace(next_state_name="FinishRun", event_history_context=SimpleNamespace(source_event_id=7))
    payload = json.dumps({"errorType": error_type, "errorMessage": "..."})
    return state._from_error(env, LambdaFunctionErrorException("Unhandled", payload))  # type: ignore[arg-type]


@pytest.fixture(scope="module", autouse=True)
def _named() -> None:
    step_functions.name_unhandled_lambda_errors()


@pytest.mark.parametrize("error_type", sorted(step_functions.UNHANDLED_LAMBDA_ERRORS))
def test_a_function_that_could_not_answer_fails_its_task_as_lambda_unknown(error_type: str) -> None:
    failure = _failure(error_type)
    assert failure.error_name.error_name == "Lambda.Unknown"
    assert failure.event_details["taskFailedEventDetails"]["error"] == "Lambda.Unknown"


def test_an_exception_the_handler_raised_keeps_its_name() -> None:
    assert _failure("WriteConflict").error_name.error_name == "WriteConflict"
