"""The AWS services events are pushed through: the event bus, WebSocket connections, the webhook delivery queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

from longrun import aws_clients

if TYPE_CHECKING:
    from longrun.change_feed import TaskEvent


BUS_SOURCE = "longrun"
BUS_DETAIL_TYPE = "Script Execution Status Change"
PUT_EVENTS_MAX = 10
SEND_MESSAGES_MAX = 10
SEND_BATCH_MAX_BYTES = 256 * 1024
ATTEMPTS = 3
MAX_VISIBILITY_SECONDS = 43_200


class PushFailed(Exception):
    """A channel kept refusing some of the events: the stream batch is retried (receivers drop repeats by id)."""


@cache
def _client(service: str, endpoint_url: str | None = None) -> Any:
    return aws_clients.client(service, endpoint_url)


def put_on_bus(bus_name: str, events: list[TaskEvent]) -> None:
    """Put events on the bus (source longrun, detail-type Script Execution Status Change, detail = the event),
    again for the entries EventBridge did not take."""
    entries = [
        {"EventBusName": bus_name, "Source": BUS_SOURCE, "DetailType": BUS_DETAIL_TYPE, "Detail": event.body()}
        for event in events
    ]
    for start in range(0, len(entries), PUT_EVENTS_MAX):
        batch = entries[start : start + PUT_EVENTS_MAX]
        for _ in range(ATTEMPTS):
            answer = _client("events").put_events(Entries=batch)
            if not answer.get("FailedEntryCount"):
                break
            batch = [entry for entry, result in zip(batch, answer["Entries"], strict=True) if "ErrorCode" in result]
        else:
            raise PushFailed(f"EventBridge did not take {len(batch)} events: {answer['Entries']}")


def post_to_connection(connections_url: str, connection_id: str, data: str) -> bool:
    """Send a message to a WebSocket client; False if API Gateway says the connection is gone."""
    client = _client("apigatewaymanagementapi", connections_url)
    try:
        client.post_to_connection(ConnectionId=connection_id, Data=data.encode())
    except client.exceptions.GoneException:
        return False
    return True


def queue_messages(queue_url: str, messages: list[str]) -> None:
    """Send messages to a queue, in as few requests as SQS allows, again for those it did not take."""
    for batch in _send_batches(messages):
        entries = [{"Id": str(number), "MessageBody": message} for number, message in enumerate(batch)]
        for _ in range(ATTEMPTS):
            answer = _client("sqs").send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = {failure["Id"] for failure in answer.get("Failed", [])}
            entries = [entry for entry in entries if entry["Id"] in failed]
            if not entries:
                break
        else:
            raise PushFailed(f"SQS did not take {len(entries)} messages: {answer.get('Failed')}")


def hide_message(queue_url: str, receipt_handle: str, seconds: int) -> None:
    """Keep a received message from being received again for ``seconds`` (at most SQS's 12 hours)."""
    _client("sqs").change_message_visibility(
        QueueUrl=queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=min(seconds, MAX_VISIBILITY_SECONDS)
    )


def _send_batches(messages: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for message in messages:
        length = len(message.encode())
        if batch and (len(batch) == SEND_MESSAGES_MAX or size + length > SEND_BATCH_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += length
    if batch:
        yield batch


def dumps(value: Any) -> str:
    """JSON as the API writes it: compact, and UTF-8 as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
