"""The domain's services wired to the deployment: one of each per warm function, built on first use."""

from __future__ import annotations

from functools import cache

from longrun.config import settings
from longrun.store import TaskStore
from longrun.tasks import ScriptExecutions
from longrun.workflow import Workflow


@cache
def task_store() -> TaskStore:
    return TaskStore(settings().tasks_table)


@cache
def script_executions() -> ScriptExecutions:
    return ScriptExecutions(task_store(), settings())


@cache
def workflow() -> Workflow:
    return Workflow(task_store(), settings())
