"""Faults the edge injects into the functions' AWS calls (``--fault-rate``, ``--fault-seed``): a share of the requests
that the stack's functions make over HTTP (not the runtime's own calls: its pollers, the state machine, the devices)
is answered with an error AWS can answer, at random from a seeded generator:

- throttling: ``ThrottlingException`` (400; S3: ``SlowDown``, 503), which the AWS SDKs retry;
- a server error: ``InternalFailure`` (500; S3: ``InternalError``), which they retry too;
- a lost answer: the request is served, and its answer replaced by ``InternalFailure`` (500): the SDK retries a
  request that has acted;
- a timeout: no answer at all. The edge holds the request ``TIMEOUT_HOLD_SECONDS``, then closes the connection, as
  when the caller's read timeout runs out or the network drops; half of these requests have acted first, and the
  caller cannot tell which. The SDKs retry a closed connection.

Every injected fault is counted by service, operation and kind (``/_local/faults``). With DynamoDB's conflicting
transactions (``--transaction-conflict-rate``) and lost SSM events (``--drop-events``), these are the fault runs of
``make fuzz`` (fuzz/test_faults.py).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("throttling", "server-error", "lost-answer", "timeout")
TIMEOUT_HOLD_SECONDS = 0.5


@dataclass
class EdgeFaults:
    rate: float = 0.0
    seed: int | None = None
    injected: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _random: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def draw(self, service: str, operation: str) -> str | None:
        """The fault to inject into this request, if any."""
        if self.rate <= 0:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            kind = self._random.choice(KINDS)
            self.injected[(service, operation, kind)] += 1
        return kind

    def acts(self) -> bool:
        """Whether a timed-out request acts before its connection is dropped."""
        with self._lock:
            return self._random.random() < 0.5

    def report(self) -> dict[str, object]:
        with self._lock:
            return {
                "rate": self.rate,
                "seed": self.seed,
                "total": sum(self.injected.values()),
                "byKind": dict(Counter(kind for (_, _, kind) in self.injected.elements())),
                "byCall": {
                    f"{service}:{operation}:{kind}": n for (service, operation, kind), n in self.injected.items()
                },
            }


def error_answer(service: str, kind: str) -> tuple[int, dict[str, str], bytes]:
    """An error AWS answers for ``kind``, in the service's protocol."""
    if service == "s3":
        code, status = ("SlowDown", 503) if kind == "throttling" else ("InternalError", 500)
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
        return status, {"Content-Type": "application/xml"}, body.encode()
    code, status = ("ThrottlingException", 400) if kind == "throttling" else ("InternalFailure", 500)
    body = json.dumps({"__type": code, "message": "Rate exceeded" if status == 400 else "injected server error"})
    return status, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": code}, body.encode()
