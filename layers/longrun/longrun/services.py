"""The domain's services wired to the deployment: one of each per warm function, built on first use."""

from __future__ import annotations

import threading
from functools import cache

from longrun.config import settings
from longrun.push import Publisher
from longrun.store import TaskStore
from longrun.subscriptions import Subscriptions
from longrun.tasks import ScriptExecutions
from longrun.webhooks import Deliveries, Webhooks
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


@cache
def webhooks() -> Webhooks:
    return Webhooks(task_store(), settings())


_per_thread = threading.local()


def deliveries() -> Deliveries:
    """One per thread: a batch of deliveries is sent from several threads at once, and a boto3 resource (the store's
    table) must not be shared between threads."""
    if not hasattr(_per_thread, "deliveries"):
        _per_thread.deliveries = Deliveries(TaskStore(settings().tasks_table), settings())
    found: Deliveries = _per_thread.deliveries
    return found


@cache
def publisher() -> Publisher:
    return Publisher(task_store(), script_executions(), settings())


@cache
def subscriptions() -> Subscriptions:
    return Subscriptions(task_store(), settings())
