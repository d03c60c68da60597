"""Step Functions' calls for an execution (Lambda invokes, SDK integrations) carry its state machine's role, as in
AWS, so the edge checks them against that role's policies. moto signs them all with one fixed key; this gives each
call the credentials of the execution's role instead. A state machine whose role the template does not define (one
a client created) keeps moto's key, which the edge treats as the administrator's."""

from __future__ import annotations

import importlib
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from moto.settings import moto_server_port

from local_runtime.identities import Identities

_CALLERS = (
    "moto.stepfunctions.parser.asl.utils.boto_client",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sfn",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sqs",
)


def sign_as_execution_role(identities: Identities) -> None:
    original = getattr(importlib.import_module(_CALLERS[0]), "boto_client_for")  # noqa: B009 - untyped module

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> BaseClient:
        role = getattr(state_credentials, "role_arn", None)
        credentials = identities.for_role(role) if role else None
        if credentials is None:
            return original(region, service, state_credentials)  # type: ignore[no-any-return]
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
        return client

    for name in _CALLERS:
        module = importlib.import_module(name)
        if getattr(module, "boto_client_for", None) is original:
            setattr(module, "boto_client_for", boto_client_for)  # noqa: B010 - untyped module
