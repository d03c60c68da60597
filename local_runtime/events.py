"""EventBridge's default bus, for the events the local fleet emits: each event goes to the targets of the template's
rules that match it: a function as an asynchronous invocation, a queue as a message whose body is the event (sent
from the bus's own threads, so that the fleet never waits for it). As in EventBridge, a rule may invoke a function
only if the function's resource-based policy lets ``events.amazonaws.com`` invoke it from that rule, and send to a
queue only if the queue's policy lets ``events.amazonaws.com`` make sqs:SendMessage on it for that rule; otherwise
the event is not delivered (and the runtime's log says why)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError
from moto.events.models import EventPattern

from local_runtime import iam
from local_runtime.lambdas import LambdaBridge
from local_runtime.template import LocalStack

log = logging.getLogger("local_runtime.events")


EVENTS = "events.amazonaws.com"
SENDERS = 4
"""How many sends to queues are under way at once"""


class EventBus:
    def __init__(self, stack: LocalStack, lambdas: LambdaBridge, send: Callable[[str, str], None]) -> None:
        """``send(queue ARN, body)``: a message to a queue, as EventBridge sends it."""
        self._stack = stack
        self._lambdas = lambdas
        self._send = send
        self._sending = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="event-bus")
        self._rules = [(rule, EventPattern.load(json.dumps(rule.pattern))) for rule in stack.event_rules]

    def put(self, event: dict[str, Any]) -> int:
        """Deliver one event; answer how many targets it went to."""
        delivered = 0
        for rule, pattern in self._rules:
            if not pattern.matches_event(event):  # type: ignore[arg-type]
                continue
            for function in rule.targets:
                if not self._lambdas.permits(function, EVENTS, rule.arn):
                    log.error("rule %s may not invoke %s (no Lambda permission): dropped", rule.logical_id, function)
                    continue
                delivered += 1
                self._lambdas.invoke_async(self._stack.functions[function], event)
            for queue in rule.queues:
                policies = self._stack.queue_policies.get(queue, [])
                if not iam.service_allowed(policies, EVENTS, "sqs:SendMessage", queue, rule.arn):
                    log.error(
                        "rule %s may not send to %s (its queue policy does not allow it): dropped",
                        rule.logical_id,
                        queue,
                    )
                    continue
                delivered += 1
                self._sending.submit(self._send_to, rule.logical_id, queue, json.dumps(event))
        return delivered

    def _send_to(self, rule: str, queue: str, body: str) -> None:
        """Send one event to a queue, apart from the caller's thread (EventBridge delivers asynchronously)."""
        try:
            self._send(queue, body)
        except ClientError as error:  # EventBridge would retry, then drop it (no dead-letter queue here)
            log.error("rule %s could not send to %s: %s; dropped", rule, queue, error)

    def close(self) -> None:
        self._sending.shutdown(wait=True, cancel_futures=True)
