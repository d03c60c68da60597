"""The task's workflow as Step Functions runs it: start an execution, stop it, and hand a waiting step its result."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from longrun import aws_clients

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

GONE_TOKEN_ERRORS = ("TaskTimedOut", "TaskDoesNotExist", "InvalidToken")


@cache
def _sfn() -> SFNClient:
    return cast("SFNClient", aws_clients.client("stepfunctions"))


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN Step Functions gives an execution started with ``name``; known before it starts."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


class NameTaken(Exception):
    """An execution of this name has already ended (or has another input): the name cannot start another for 90
    days."""


def start(state_machine_arn: str, name: str, payload: dict[str, Any]) -> None:
    """Start an execution; starting it again while it runs, with the same input, is no error and starts nothing
    (StartExecution's rule for a repeated name)."""
    try:
        _sfn().start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(payload))
    except ClientError as error:
        if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
            raise NameTaken(str(error)) from error
        raise


def stop(arn: str, cause: str) -> None:
    """Stop an execution; one that already ended or never started is left as it is."""
    try:
        _sfn().stop_execution(executionArn=arn, error="Cancelled", cause=cause)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ExecutionDoesNotExist":
            raise


def resume(task_token: str, output: dict[str, Any]) -> None:
    """Hand a step that waits for ``task_token`` its output; a step that no longer waits (its execution was
    stopped, or it timed out) is left alone."""
    try:
        _sfn().send_task_success(taskToken=task_token, output=json.dumps(output))
    except ClientError as error:
        if error.response["Error"]["Code"] not in GONE_TOKEN_ERRORS:
            raise
