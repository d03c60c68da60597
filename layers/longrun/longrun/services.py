"""The domain's services wired to the deployment: one of each per warm function, built on first use. The store (and
with it the records) is imported with this module, in a function's init; each service's own module only when
the service is first built, so a function never imports the services it does not use."""

from __future__ import annotations

import threading
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING

from longrun.config import settings
from longrun.store import TaskStore

if TYPE_CHECKING:
    from longrun.push import Publisher
    from longrun.subscriptions import Subscriptions
    from longrun.tasks import ScriptExecutions
    from longrun.webhook_deliveries import Deliveries
    from longrun.webhooks import Webhooks
    from longrun.workflow import Workflow


def _new_store() -> TaskStore:
    return TaskStore(settings().tasks_table, timedelta(days=settings().task_retention_days))


@cache
def task_store() -> TaskStore:
    return _new_store()


@cache
def script_executions() -> ScriptExecutions:
    from longrun.tasks import ScriptExecutions

    return ScriptExecutions(task_store(), settings())


@cache
def workflow() -> Workflow:
    from longrun.workflow import Workflow

    return Workflow(task_store(), settings())


@cache
def webhooks() -> Webhooks:
    from longrun.webhooks import Webhooks

    return Webhooks(task_store(), settings())


_per_thread = threading.local()


def deliveries() -> Deliveries:
    """One per thread: a batch of deliveries is sent from several threads at once, and the store's client must not be
    shared between threads (it builds condition expressions with a counter)."""
    from longrun.webhook_deliveries import Deliveries

    if not hasattr(_per_thread, "deliveries"):
        _per_thread.deliveries = Deliveries(_new_store(), settings())
    found: Deliveries = _per_thread.deliveries
    return found


@cache
def publisher() -> Publisher:
    from longrun.push import Publisher

    return Publisher(task_store(), settings())


@cache
def subscriptions() -> Subscriptions:
    from longrun.subscriptions import Subscriptions

    return Subscriptions(task_store(), settings())
