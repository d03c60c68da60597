"""Pushes the change feed's events to every channel: the event bus, the task's WebSocket subscribers and its owner's
webhook endpoints; and keeps them so a subscriber can resume.

A batch of the table's stream is published task by task. If a channel fails for a task, the batch is reported
failed from that task's first record, so Lambda hands it over again from there: delivery is at least once, and a
change keeps its event id when it comes again, so receivers drop the repeats.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger

from longrun import change_feed, channels, scripts, views
from longrun.change_feed import TaskEvent, View
from longrun.config import Settings
from longrun.links import Links
from longrun.records import Task, TaskEventType, TaskStateChange
from longrun.store import TaskStore, utc_now

logger = Logger(child=True)
KEPT_ALWAYS = (TaskEventType.STATUS_CHANGED, TaskEventType.FINISHED)


class Publisher:
    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config
        self._links = Links(base=config.api_url.rstrip("/"))

    def publish(self, records: list[dict[str, Any]]) -> str | None:
        """Publish the events of a batch of stream records; answer the sequence number to retry from, if any."""
        by_task: dict[str, list[TaskStateChange]] = defaultdict(list)
        for change in self._store.read_stream(records):
            by_task[change.task_id].append(change)
        retry_from: str | None = None
        for task_id, changes in by_task.items():
            try:
                self._publish_task(task_id, changes)
            except Exception:
                logger.exception("could not publish a task's events", extra={"task_id": task_id})
                first = changes[0].sequence
                retry_from = first if retry_from is None or int(first) < int(retry_from) else retry_from
        return retry_from

    def _publish_task(self, task_id: str, changes: list[TaskStateChange]) -> None:
        task = self._store.get_task(task_id)
        if task is None:
            return
        events = change_feed.task_events(task, changes, self._links, self._finished_lists)
        if not events:
            return
        # Kept before the subscribers are read: a client subscribing meanwhile reads what it missed from the kept
        # events once its subscription is written, so an event is either kept before that read or posted to it
        bodies = [event.body() for event in events]  # each event's JSON, as every channel sends it
        for event, body in zip(events, bodies, strict=True):
            if event.type in KEPT_ALWAYS or task.events_kept:
                self._store.keep_event(task_id, event.id, body)
        self._to_subscribers(task_id, bodies)
        self._to_webhooks(task, events, bodies)
        self._to_bus(changes[0], events)

    def _finished_lists(self, task: Task) -> tuple[View | None, list[View]]:
        found = self._store.get_task_with_devices(task.id)
        if found is None:
            return None, []
        devices = found[1]
        skipped = change_feed.not_started(devices.outcomes)
        recorded = self._store.recorded_between(task.id, skipped[0], skipped[-1]) if skipped else set()
        return (
            views.result_summary(task, devices, self._links, self._output_location(task.id)),
            change_feed.never_started(devices.ids, devices.outcomes, recorded),
        )

    def _output_location(self, task_id: str) -> str:
        return scripts.output_location(self._config.scripts_bucket, self._config.output_prefix, task_id)

    def _to_subscribers(self, task_id: str, bodies: list[str]) -> None:
        if not self._config.websocket_connections_url:
            return
        for connection in self._store.subscribers(task_id):
            send_to_connection(self._store, self._config, connection, bodies)

    def _to_webhooks(self, task: Task, events: list[TaskEvent], bodies: list[str]) -> None:
        queue = self._config.webhook_delivery_queue_url
        if not queue:
            return
        messages = [
            delivery_message(endpoint.owner_key, endpoint.id, delivery_id(event), event.type, body, event)
            for endpoint in self._store.webhooks_of(task.owner_key)
            if endpoint.disabled_at is None
            for event, body in zip(events, bodies, strict=True)
            if event.type in endpoint.events
        ]
        if messages:
            channels.queue_messages(queue, messages)

    def _to_bus(self, first: TaskStateChange, events: list[TaskEvent]) -> None:
        if not self._config.event_bus_name:
            return
        before = first.previous_counts
        previous = None if before is None else views.percentage_of(before)
        worthy = []
        for event in events:
            if change_feed.bus_worthy(event, previous):
                worthy.append(event)
            if event.type is TaskEventType.PROGRESS:
                previous = event.data["percentage"]
        if worthy:
            channels.put_on_bus(self._config.event_bus_name, worthy)


def send_to_connection(store: TaskStore, config: Settings, connection_id: str, messages: list[str]) -> bool:
    """Send a WebSocket connection messages in order; False, and the connection forgotten, once API Gateway says it
    is gone."""
    url = config.websocket_connections_url
    if not url:
        return True
    for message in messages:
        if not channels.post_to_connection(url, connection_id, message):
            store.remove_connection(connection_id)
            return False
    return True


def delivery_id(event: TaskEvent) -> str:
    """The webhook-id of an event's delivery: the same on every attempt and for every endpoint."""
    return f"msg_{event.task_id}_{event.id}"


def ping_delivery_id() -> str:
    return f"msg_ping_{uuid.uuid4().hex}"


def delivery_message(
    owner_key: str,
    webhook_id: str,
    message_id: str,
    event_type: str,
    payload: str,
    event: TaskEvent | None = None,
    queued_at: datetime | None = None,
) -> str:
    """A queued delivery: to which endpoint, under which webhook-id, when it was queued, what (and which task event
    it is)."""
    message: dict[str, Any] = {
        "owner-key": owner_key,
        "webhook-id": webhook_id,
        "id": message_id,
        "queued-at": (queued_at or utc_now()).isoformat(),
        "type": event_type,
        "payload": payload,
    }
    if event is not None:
        message |= {"task-id": event.task_id, "event-id": event.id}
    return channels.dumps(message)
