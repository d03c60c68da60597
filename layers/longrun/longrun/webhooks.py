"""Webhook endpoints, as a client manages them: add one (its URL checked: https to a public address), list, describe,
remove, rotate its secret (the previous one still signs for a day), send it a ping, read its deliveries. An endpoint
receives its owner's events only; the deliveries themselves are made by longrun.webhook_deliveries, on Standard
Webhooks' schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from longrun import channels, idempotency, page_tokens
from longrun.api_requests import RESOURCE_ID, NewWebhook
from longrun.config import Settings
from longrun.errors import BadRequest, IdempotencyKeyReused, InvalidRequest, WebhookNotFound
from longrun.links import Links
from longrun.push import delivery_message, ping_delivery_id
from longrun.records import Delivery, DeliveryStatus, Owner, WebhookEndpoint
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore, owner_digest, utc_now
from longrun.views import delivery_view, json_time, page, webhook_view
from longrun.webhook_deliveries import UnsafeUrl, resolve_target

SECRET_BYTES = 24
PREVIOUS_SECRET_VALID = timedelta(hours=24)
WEBHOOK_PING = "webhook.ping"


class Webhooks:
    """What a client can do with its webhook endpoints."""

    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config
        self._tokens = page_tokens.sealed_with(config.page_token_key_name)

    def add(
        self, owner: Owner, request: NewWebhook, links: Links, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """The endpoint added (Webhook), its secret included. With an idempotency key, a repeat of an accepted
        request answers the same endpoint, secret included, and adds none (longrun.idempotency)."""
        try:
            resolve_target(request.url, self._config.webhook_allow_loopback_http)
        except UnsafeUrl as error:
            raise InvalidRequest(str(error), [{"field": "body.url", "message": str(error)}]) from error
        if idempotency_key is None:
            return self._add(owner, request, links, str(uuid.uuid4()))
        return idempotency.once(
            "add-webhook",
            owner.key,
            idempotency_key,
            request.as_json(),
            lambda ids: self._add_under_key(owner, request, links, ids),
            kept=dict,
            replayed=dict,
        )

    def _add_under_key(self, owner: Owner, request: NewWebhook, links: Links, ids: Iterator[str]) -> dict[str, Any]:
        """The endpoint an earlier run under the same key added (its function timed out before the key's record was
        marked done), or a new one under the first id no earlier use of the key has taken."""
        for webhook_id in ids:
            with contextlib.suppress(ConditionFailed):  # the id is taken: by an earlier run under the key, or before
                return self._add(owner, request, links, webhook_id)
            found = self._store.get_webhook(owner_digest(owner.key), webhook_id)
            if found is not None and idempotency.within_window(found.created_at):
                return webhook_view(found, links, show_secret=True)
        raise IdempotencyKeyReused("every endpoint id this Idempotency-Key can give is taken; use a new key")

    def _add(self, owner: Owner, request: NewWebhook, links: Links, webhook_id: str) -> dict[str, Any]:
        endpoint = WebhookEndpoint(
            id=webhook_id,
            owner_key=owner_digest(owner.key),
            url=request.url,
            events=request.events,
            secret=new_secret(),
            created_at=utc_now(),
        )
        self._store.add_webhook(endpoint)
        return webhook_view(endpoint, links, show_secret=True)

    def list(self, owner: Owner, limit: int, next_token: str | None, links: Links) -> dict[str, Any]:
        caller = owner_digest(owner.key)
        try:
            endpoints, token = self._store.list_webhooks(
                caller, limit, self._tokens.open(next_token, caller, "webhooks")
            )
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        return page(
            [webhook_view(endpoint, links) for endpoint in endpoints], self._tokens.seal(token, caller, "webhooks")
        )

    def describe(self, owner: Owner, webhook_id: str, links: Links) -> dict[str, Any]:
        return webhook_view(self._owned(owner, webhook_id), links)

    def remove(self, owner: Owner, webhook_id: str) -> None:
        _require_id(webhook_id)
        if not self._store.remove_webhook(owner_digest(owner.key), webhook_id):
            raise WebhookNotFound(f"no webhook {webhook_id}")

    def rotate_secret(self, owner: Owner, webhook_id: str, links: Links) -> dict[str, Any]:
        _require_id(webhook_id)
        until = utc_now() + PREVIOUS_SECRET_VALID
        endpoint = self._store.rotate_webhook_secret(owner_digest(owner.key), webhook_id, new_secret(), until)
        if endpoint is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return webhook_view(endpoint, links, show_secret=True)

    def ping(self, owner: Owner, webhook_id: str) -> dict[str, Any]:
        """Send the endpoint a test event through the same queue and schedule as every delivery."""
        endpoint = self._owned(owner, webhook_id)
        if not self._config.webhook_delivery_queue_url:
            raise WebhookNotFound("this deployment has no webhook delivery queue")
        message_id = ping_delivery_id()
        now = utc_now()
        payload = channels.dumps({"type": WEBHOOK_PING, "time": json_time(now), "webhook-id": endpoint.id})
        message = delivery_message(endpoint.owner_key, endpoint.id, message_id, WEBHOOK_PING, payload, queued_at=now)
        channels.queue_messages(self._config.webhook_delivery_queue_url, [message])
        return delivery_view(
            Delivery(id=message_id, event_type=WEBHOOK_PING, status=DeliveryStatus.PENDING, created_at=now)
        )

    def deliveries(self, owner: Owner, webhook_id: str, limit: int, next_token: str | None) -> dict[str, Any]:
        self._owned(owner, webhook_id)
        caller, query = owner_digest(owner.key), f"deliveries:{webhook_id}"
        try:
            position = self._tokens.open(next_token, caller, query)
            items, token = self._store.list_deliveries(webhook_id, limit, position)
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        return page([delivery_view(item) for item in items], self._tokens.seal(token, caller, query))

    def _owned(self, owner: Owner, webhook_id: str) -> WebhookEndpoint:
        _require_id(webhook_id)
        endpoint = self._store.get_webhook(owner_digest(owner.key), webhook_id)
        if endpoint is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return endpoint


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _require_id(webhook_id: str) -> None:
    if not RESOURCE_ID.fullmatch(webhook_id):
        raise WebhookNotFound("no webhook has this id")
