"""Step Functions as AWS runs it, where moto's interpreter differs.

- Calls made for an execution (Lambda invokes, SDK integrations) carry its state machine's role, so the edge checks
  them against that role's policies. moto signs them all with one fixed key; each call gets the credentials of the
  execution's role instead. A state machine whose role the template does not define (one a client created) keeps
  moto's key, which the edge treats as the administrator's.
- A Distributed Map fails once its failed children exceed its tolerated failures; moto lets it succeed.
- A Lambda task whose function timed out, ran out of memory or exited fails with ``Lambda.Unknown``, as Step
  Functions reports such unhandled errors; moto names the error after the payload's errorType (Sandbox.Timedout).
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from moto.settings import moto_server_port
from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
    DistributedIterationComponent,
)
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

from local_runtime.identities import Identities
from local_runtime.loopback import EdgeTransport, connect

_CALLERS = (
    "moto.stepfunctions.parser.asl.utils.boto_client",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sqs",
)


def sign_as_execution_role(identities: Identities, transport: EdgeTransport | None = None) -> None:
    """``transport``: how the calls reach the edge from the runtime's process (loopback), if not over HTTP. A client
    is made once per region, service and role, and shared by the executions (boto3's clients are thread-safe)."""
    original = getattr(importlib.import_module(_CALLERS[0]), "boto_client_for")  # noqa: B009 - untyped module
    clients: dict[tuple[str, str, str], BaseClient] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> BaseClient:
        role = getattr(state_credentials, "role_arn", None)
        credentials = identities.for_role(role) if role else None
        if credentials is None:
            return original(region, service, state_credentials)  # type: ignore[no-any-return]
        with lock:
            key = (region, service, str(role))
            client = clients.get(key)
            if client is None:
                client = clients[key] = _client(region, service, credentials, transport)
        return client

    for name in _CALLERS:
        module = importlib.import_module(name)
        if getattr(module, "boto_client_for", None) is original:
            setattr(module, "boto_client_for", boto_client_for)  # noqa: B010 - untyped module


def _client(region: str, service: str, credentials: Any, transport: EdgeTransport | None) -> BaseClient:
    client: BaseClient = boto3.client(  # type: ignore[call-overload]
        service,
        region_name=region,
        endpoint_url=f"http://localhost:{moto_server_port()}",
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.session_token,
        config=Config(
            parameter_validation=False,
            retries={"max_attempts": 0, "total_max_attempts": 1},
            read_timeout=99_999,
        ),
    )
    return connect(client, transport)


UNHANDLED_LAMBDA_ERRORS = frozenset({"Sandbox.Timedout", "Runtime.ExitError", "Runtime.OutOfMemory"})
"""What Lambda answers when the function itself could not answer: Step Functions reports these as Lambda.Unknown"""


def name_unhandled_lambda_errors() -> None:
    """A Lambda task's error is the function's errorType (an exception it raised: WriteConflict), except for the
    failures of the function's environment (a timeout, memory, an exit), which Step Functions reports as
    Lambda.Unknown ("Handle Lambda service exceptions", Step Functions Developer Guide): a Retry or Catch has to name
    that, and only that, to handle them."""
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_lambda import (
        StateTaskServiceLambda,
    )

    original = StateTaskServiceLambda._from_error

    def _from_error(self: StateTaskServiceLambda, env: Environment, ex: Exception) -> FailureEvent:
        failure = original(self, env, ex)
        named = failure.error_name.error_name if failure.error_name is not None else None
        if not isinstance(ex, lambda_eval_utils.LambdaFunctionErrorException) or named not in UNHANDLED_LAMBDA_ERRORS:
            return failure
        details: dict[str, Any] = dict(failure.event_details or {})
        if "taskFailedEventDetails" in details:
            details["taskFailedEventDetails"] = {**details["taskFailedEventDetails"], "error": "Lambda.Unknown"}
        return FailureEvent(
            env=env,
            error_name=CustomErrorName("Lambda.Unknown"),
            event_type=failure.event_type,
            event_details=EventDetails(**details),  # type: ignore[typeddict-item]
        )

    StateTaskServiceLambda._from_error = _from_error  # type: ignore[method-assign]


def fail_maps_past_their_tolerated_failures() -> None:
    """A Distributed Map whose failed child executions exceed its tolerated failures fails, with
    States.ExceedToleratedFailureThreshold, as in Step Functions (both thresholds default to 0: any failed child
    fails the Map; with both set, exceeding either fails it). moto counts failed children but carries on."""
    original = DistributedIterationComponent._map_run

    def _map_run(self: DistributedIterationComponent, env: Environment, eval_input: Any) -> None:
        original(self, env, eval_input)
        items = eval_input.map_run_record.item_counter
        failed, total = items.failed.get() + items.timed_out.get(), max(1, items.total.get())
        count, share = eval_input.tolerated_failure_count, eval_input.tolerated_failure_percentage
        limits = [failed > count] if count else []
        limits += [failed * 100 / total > share] if share else []
        if failed and (any(limits) or not limits):
            error = StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold)
            details = MapRunFailedEventDetails(
                error=error.error_name, cause="The specified tolerated failure threshold was exceeded"
            )
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=error,
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(mapRunFailedEventDetails=details),  # type: ignore[typeddict-item]
                )
            )

    DistributedIterationComponent._map_run = _map_run  # type: ignore[method-assign]
