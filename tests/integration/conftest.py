"""Integration tests run against AWS APIs: the endpoint in AWS_ENDPOINT_URL when it is set (a LocalStack, for one),
otherwise moto in this process. Resources come from template.yaml, under a stack name of their own per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto import mock_aws

from local_runtime import dynamodb, template
from longrun import config, executions, idempotency, page_tokens, run_command, scripts, services
from longrun.store import TaskStore
from longrun.tasks import ScriptExecutions
from longrun.workflow import Workflow
from tests.conftest import ROOT

REGION = "us-east-1"
CACHED = (
    config.settings,
    services.task_store,
    services.script_executions,
    services.workflow,
    services.webhooks,
    services.publisher,
    services.subscriptions,
    run_command._ssm,
    run_command._tagging,
    executions._sfn,
    scripts._s3,
    scripts._presigner,
    idempotency._config,
    idempotency._persistence,
    page_tokens.sealed_with,
    page_tokens._secrets,
)


@dataclass
class Deployment:
    stack: template.LocalStack
    table: str
    bucket: str
    state_machine_arn: str
    store: TaskStore
    executions: ScriptExecutions
    workflow: Workflow


def _clear_caches() -> None:
    for cached in CACHED:
        cached.cache_clear()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    _clear_caches()
    if os.environ.get("AWS_ENDPOINT_URL"):
        yield
    else:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        dynamodb.install()
        with mock_aws():
            yield
    _clear_caches()


@pytest.fixture
def deployed(aws: None, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """The template's table, bucket and state machine, created for this test, and the functions' environment."""
    stack = template.load(ROOT, f"it-{uuid.uuid4().hex[:10]}", REGION)
    dynamodb = boto3.client("dynamodb")
    for table in stack.tables():
        dynamodb.create_table(**table)
    s3 = boto3.client("s3")
    for bucket, _ in stack.buckets():
        s3.create_bucket(Bucket=bucket)
    for name, value in stack.secrets():
        boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)
    sfn = boto3.client("stepfunctions")
    arns = [
        sfn.create_state_machine(name=name, definition=definition, roleArn=role)["stateMachineArn"]
        for name, definition, role in stack.state_machines()
    ]
    env = {**stack.functions["RunBatchFunction"].environment, **stack.functions["ApiFunction"].environment}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _clear_caches()
    return Deployment(
        stack=stack,
        table=env["TASKS_TABLE"],
        bucket=env["SCRIPTS_BUCKET"],
        state_machine_arn=arns[0],
        store=services.task_store(),
        executions=services.script_executions(),
        workflow=services.workflow(),
    )
