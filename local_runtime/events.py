"""EventBridge's default bus, for the events the local fleet emits: each event goes to the functions whose
EventBridge rule in the template matches it, as an asynchronous invocation."""

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
        self._lambdas = lambdas
        self._rules = [
            (stack.functions[rule.function], EventPattern.load(json.dumps(rule.pattern))) for rule in stack.event_rules
        ]

    def put(self, event: dict[str, Any]) -> int:
        """Deliver one event; answer how many rules matched it."""
        matched = 0
        for function, pattern in self._rules:
            if pattern.matches_event(event):  # type: ignore[arg-type]
                matched += 1
                self._lambdas.invoke_async(function, event)
        if not matched:
            log.debug("no rule matches %s", event.get("detail-type"))
        return matched
