"""SQS as SQS behaves, on top of moto's backend: no message is lost to concurrent requests.

moto deletes a message by rebuilding its queue's list of messages, so a message sent to the queue meanwhile (the
edge serves requests concurrently: a function sending while a poller deletes) would vanish. Here a deletion holds
the queue's lock, the one moto's SendMessage takes to add a message.

Source: SQS Developer Guide, "Amazon SQS standard queues" (at-least-once delivery: a stored message is not lost).
"""

from __future__ import annotations

import functools
from typing import Any

from moto.sqs.models import Queue


def install() -> None:
    """Make moto's SQS behave as above, for this whole process (idempotent)."""
    if getattr(Queue.delete_message, "_locked", False):
        return
    original = Queue.delete_message

    @functools.wraps(original)
    def delete_message(self: Queue, receipt_handle: str) -> Any:
        with self._messages_lock:
            return original(self, receipt_handle)

    delete_message._locked = True  # type: ignore[attr-defined]
    Queue.delete_message = delete_message  # type: ignore[method-assign]
