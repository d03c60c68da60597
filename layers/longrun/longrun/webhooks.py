"""Webhook endpoints and their deliveries, signed as the Standard Webhooks specification says (its own library).

An endpoint receives its owner's events only. Each delivery carries ``webhook-id`` (the same on every attempt),
``webhook-timestamp`` and ``webhook-signature`` (both secrets' signatures for a day after a rotation). A delivery that
is not answered 2xx within 15 s is tried again on the deployment's schedule (Standard Webhooks': immediately, 5 s,
5 min, 30 min, 2 h, 5 h, 10 h, 10 h), then kept as failed; ``410 Gone`` disables the endpoint.

Only https URLs to public addresses are accepted (no loopback, private, link-local or metadata addresses), when the
endpoint is made and again at each delivery, after DNS resolution: the request goes to the address that was checked.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import urllib3
from standardwebhooks.webhooks import Webhook as Signer

from longrun import channels, idempotency, page_tokens
from longrun.config import Settings
from longrun.errors import BadRequest, IdempotencyKeyReused, InvalidRequest, WebhookNotFound
from longrun.links import Links
from longrun.models import (
    RESOURCE_ID,
    WEBHOOK_PING,
    DeliveryAttempt,
    DeliveryStatus,
    FieldError,
    Webhook,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookPage,
    WebhookRequest,
)
from longrun.push import delivery_message, ping_delivery_id
from longrun.records import Owner
from longrun.store import ConditionFailed, InvalidPageToken, TaskStore, owner_digest, utc_now

SECRET_BYTES = 24
PREVIOUS_SECRET_VALID = timedelta(hours=24)
DELIVERY_TIMEOUT_SECONDS = 15.0


class UnsafeUrl(ValueError):
    """A webhook URL this deployment will not send to."""


class Webhooks:
    """What a client can do with its webhook endpoints."""

    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config
        self._tokens = page_tokens.sealed_with(config.page_token_key_name)

    def add(self, owner: Owner, request: WebhookRequest, links: Links, idempotency_key: str | None = None) -> Webhook:
        """With an idempotency key, a repeat of an accepted request answers the same endpoint, secret included, and
        adds none (longrun.idempotency)."""
        try:
            resolve_target(request.url, self._config.webhook_allow_loopback_http)
        except UnsafeUrl as error:
            raise InvalidRequest(str(error), [FieldError(field="body.url", message=str(error))]) from error
        if idempotency_key is None:
            return self._add(owner, request, links, str(uuid.uuid4()))
        return idempotency.once(
            "add-webhook",
            owner.key,
            idempotency_key,
            request,
            Webhook,
            lambda ids: self._add_under_key(owner, request, links, ids),
        )

    def _add_under_key(self, owner: Owner, request: WebhookRequest, links: Links, ids: Iterator[str]) -> Webhook:
        """The endpoint an earlier run under the same key added (its function timed out before the key's record was
        marked done), or a new one under the first id no earlier use of the key has taken."""
        for webhook_id in ids:
            with contextlib.suppress(ConditionFailed):  # the id is taken: by an earlier run under the key, or before
                return self._add(owner, request, links, webhook_id)
            found = self._store.get_webhook(owner_digest(owner.key), webhook_id)
            if found is not None and idempotency.within_window(found.created_at):
                return _view(found, links, show_secret=True)
        raise IdempotencyKeyReused("every endpoint id this Idempotency-Key can give is taken; use a new key")

    def _add(self, owner: Owner, request: WebhookRequest, links: Links, webhook_id: str) -> Webhook:
        endpoint = WebhookEndpoint(
            id=webhook_id,
            owner_key=owner_digest(owner.key),
            url=request.url,
            events=request.events,
            secret=new_secret(),
            created_at=utc_now(),
        )
        self._store.add_webhook(endpoint)
        return _view(endpoint, links, show_secret=True)

    def list(self, owner: Owner, limit: int, next_token: str | None, links: Links) -> WebhookPage:
        caller = owner_digest(owner.key)
        try:
            endpoints, token = self._store.list_webhooks(
                caller, limit, self._tokens.open(next_token, caller, "webhooks")
            )
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        return WebhookPage(
            items=[_view(endpoint, links) for endpoint in endpoints],
            next_token=self._tokens.seal(token, caller, "webhooks"),
        )

    def describe(self, owner: Owner, webhook_id: str, links: Links) -> Webhook:
        return _view(self._owned(owner, webhook_id), links)

    def remove(self, owner: Owner, webhook_id: str) -> None:
        _require_id(webhook_id)
        if not self._store.remove_webhook(owner_digest(owner.key), webhook_id):
            raise WebhookNotFound(f"no webhook {webhook_id}")

    def rotate_secret(self, owner: Owner, webhook_id: str, links: Links) -> Webhook:
        _require_id(webhook_id)
        until = utc_now() + PREVIOUS_SECRET_VALID
        endpoint = self._store.rotate_webhook_secret(owner_digest(owner.key), webhook_id, new_secret(), until)
        if endpoint is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return _view(endpoint, links, show_secret=True)

    def ping(self, owner: Owner, webhook_id: str) -> WebhookDelivery:
        """Send the endpoint a test event through the same queue and schedule as every delivery."""
        endpoint = self._owned(owner, webhook_id)
        if not self._config.webhook_delivery_queue_url:
            raise WebhookNotFound("this deployment has no webhook delivery queue")
        message_id = ping_delivery_id()
        now = utc_now()
        payload = channels.dumps(
            {"type": WEBHOOK_PING, "time": now.isoformat().replace("+00:00", "Z"), "webhook-id": endpoint.id}
        )
        message = delivery_message(endpoint.owner_key, endpoint.id, message_id, WEBHOOK_PING, payload, queued_at=now)
        channels.queue_messages(self._config.webhook_delivery_queue_url, [message])
        return WebhookDelivery(
            id=message_id, event_type=WEBHOOK_PING, status=DeliveryStatus.PENDING, created_at=now, attempts=[]
        )

    def deliveries(self, owner: Owner, webhook_id: str, limit: int, next_token: str | None) -> WebhookDeliveryPage:
        self._owned(owner, webhook_id)
        caller, query = owner_digest(owner.key), f"deliveries:{webhook_id}"
        try:
            position = self._tokens.open(next_token, caller, query)
            items, token = self._store.list_deliveries(webhook_id, limit, position)
        except InvalidPageToken as error:
            raise BadRequest(str(error)) from error
        return WebhookDeliveryPage(items=items, next_token=self._tokens.seal(token, caller, query))

    def _owned(self, owner: Owner, webhook_id: str) -> WebhookEndpoint:
        _require_id(webhook_id)
        endpoint = self._store.get_webhook(owner_digest(owner.key), webhook_id)
        if endpoint is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return endpoint


class Deliveries:
    """Makes the queued deliveries: one attempt per receipt of a queued message."""

    def __init__(self, store: TaskStore, config: Settings) -> None:
        self._store = store
        self._config = config

    def attempt(self, message: dict[str, Any], attempt_number: int, receipt_handle: str) -> bool:
        """Make attempt ``attempt_number`` (from 1) of a queued delivery; answer whether the delivery is done
        (delivered or given up). If not, its message stays hidden on the queue until the next attempt is due."""
        wait = self._attempt(message, attempt_number)
        if wait is None:
            return True
        if self._config.webhook_delivery_queue_url:
            channels.hide_message(self._config.webhook_delivery_queue_url, receipt_handle, wait)
        return False

    def _attempt(self, message: dict[str, Any], attempt_number: int) -> int | None:
        """None when the delivery is done, else the seconds to wait before the next attempt."""
        endpoint = self._store.get_webhook(message["owner-key"], message["webhook-id"])
        if endpoint is None:
            return None  # the endpoint was removed: nothing to deliver to, nothing to log
        now = utc_now()
        delivery = WebhookDelivery(
            id=message["id"],
            event_type=message["type"],
            event_id=message.get("event-id"),
            task_id=message.get("task-id"),
            status=DeliveryStatus.PENDING,
            created_at=datetime.fromisoformat(message["queued-at"]),
            attempts=[],
        )
        self._store.add_delivery(endpoint.id, delivery)
        if endpoint.disabled_at is not None:
            attempt = DeliveryAttempt(time=now, latency_ms=0, error=f"endpoint disabled: {endpoint.disabled_reason}")
            self._store.record_attempt(endpoint.id, delivery, attempt, DeliveryStatus.FAILED)
            return None
        attempt = self._send(endpoint, message["id"], message["payload"])
        schedule = self._config.webhook_retry_schedule
        if attempt.status_code is not None and 200 <= attempt.status_code < 300:
            status, wait = DeliveryStatus.SUCCEEDED, None
        elif attempt.status_code == 410:
            status, wait = DeliveryStatus.FAILED, None
            self._store.disable_webhook(endpoint.owner_key, endpoint.id, "the endpoint answered 410 Gone")
        elif attempt_number < len(schedule):
            status, wait = DeliveryStatus.PENDING, schedule[attempt_number]
        else:
            status, wait = DeliveryStatus.FAILED, None
        self._store.record_attempt(endpoint.id, delivery, attempt, status)
        return wait

    def _send(self, endpoint: WebhookEndpoint, message_id: str, payload: str) -> DeliveryAttempt:
        now = utc_now()
        started = time.monotonic()
        signature = " ".join(Signer(secret).sign(message_id, now, payload) for secret in endpoint.secrets(now))
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
            "user-agent": "longrun-webhooks",
        }
        try:
            address = resolve_target(endpoint.url, self._config.webhook_allow_loopback_http)
            status = _post(endpoint.url, address, payload.encode(), headers)
        except (UnsafeUrl, urllib3.exceptions.HTTPError, OSError) as error:
            latency = int((time.monotonic() - started) * 1000)
            return DeliveryAttempt(time=now, latency_ms=latency, error=f"{type(error).__name__}: {error}"[:500])
        return DeliveryAttempt(time=now, status_code=status, latency_ms=int((time.monotonic() - started) * 1000))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def resolve_target(url: str, allow_loopback_http: bool) -> str:
    """The address a webhook URL may be sent to, or UnsafeUrl: https to a public address (every address its host
    resolves to must be public), or, where allowed, http to a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl("must be an https URL")
    if parts.username or parts.password:
        raise UnsafeUrl("must not carry a user name or password")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise UnsafeUrl(f"its host does not resolve: {error}") from error
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in found]
    if allow_loopback_http and all(address.is_loopback for address in addresses):
        return str(addresses[0])
    if parts.scheme != "https":
        raise UnsafeUrl("must be an https URL")
    for address in addresses:
        if not address.is_global or address.is_multicast:
            raise UnsafeUrl(f"its host resolves to {address}, which is not a public address")
    return str(addresses[0])


def _post(url: str, address: str, body: bytes, headers: dict[str, str]) -> int:
    """POST to the checked address (never to what a second DNS lookup might answer), as the URL's host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    timeout = urllib3.Timeout(total=DELIVERY_TIMEOUT_SECONDS)
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address, parts.port or 443, server_hostname=host, assert_hostname=host, timeout=timeout, retries=False
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, parts.port or 80, timeout=timeout, retries=False)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with pool:
        response = pool.urlopen(
            "POST", path, body=body, headers=headers | {"host": parts.netloc}, redirect=False, retries=False
        )
        return int(response.status)


def _view(endpoint: WebhookEndpoint, links: Links, show_secret: bool = False) -> Webhook:
    return Webhook(
        id=endpoint.id,
        url=endpoint.url,
        events=endpoint.events,
        enabled=endpoint.disabled_at is None,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
        secret=endpoint.secret if show_secret else None,
        href=links.webhook(endpoint.id),
    )


def _require_id(webhook_id: str) -> None:
    if not RESOURCE_ID.fullmatch(webhook_id):
        raise WebhookNotFound("no webhook has this id")
