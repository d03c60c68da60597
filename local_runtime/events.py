"""EventBridge's default bus, for the events the local fleet emits: each event goes to the targets of the template's
rules that match it, as asynchronous invocations. As in EventBridge, a rule may invoke a function only if the
function's resource-based policy lets ``events.amazonaws.com`` invoke it from that rule; otherwise the event is not
delivered (and the runtime's log says why)."""

from __future__ import annotations

import json
import logging
from typing import Any

from moto.events.models import EventPattern

from local_runtime.lambdas import LambdaBridge
from local_runtime.template import LocalStack

log = logging.getLogger("local_runtime.events")


class EventBus:
    def __init__(self, stack: LocalStack, lambdas: LambdaBridge) -> None:
        self._stack = stack
        self._lambdas = lambdas
        self._rules = [(rule, EventPattern.load(json.dumps(rule.pattern))) for rule in stack.event_rules]

    def put(self, event: dict[str, Any]) -> int:
        """Deliver one event; answer how many targets it went to."""
        delivered = 0
        for rule, pattern in self._rules:
            if not pattern.matches_event(event):  # type: ignore[arg-type]
                continue
            for function in rule.targets:
                if not self._lambdas.permits(function, "events.amazonaws.com", rule.arn):
                    log.error("rule %s may not invoke %s (no Lambda permission): dropped", rule.logical_id, function)
                    continue
                delivered += 1
                self._lambdas.invoke_async(self._stack.functions[function], event)
        return delivered
