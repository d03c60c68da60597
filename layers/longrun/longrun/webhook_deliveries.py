"""Makes the queued webhook deliveries (DeliverWebhooks): one attempt per receipt of a queued message, signed as the
Standard Webhooks specification says (its own library), each attempt recorded with its delivery.

Each delivery carries ``webhook-id`` (the same on every attempt), ``webhook-timestamp`` and ``webhook-signature``
(both secrets' signatures for a day after a rotation). A delivery that is not answered 2xx within 15 s is tried again
on the deployment's schedule, then kept as failed; ``410 Gone`` disables the endpoint. Only https URLs to public
addresses are sent to, checked again at each delivery after DNS resolution: the request goes to the address that was
checked.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from standardwebhooks.webhooks import Webhook as Signer

from longrun import channels
from longrun.config import Settings
from longrun.records import Attempt, Delivery, DeliveryStatus, WebhookEndpoint
from longrun.store import TaskStore, utc_now

DELIVERY_TIMEOUT_SECONDS = 15.0


class UnsafeUrl(ValueError):
    """A webhook URL this deployment will not send to."""


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
        delivery = Delivery(
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
            attempt = Attempt(time=now, latency_ms=0, error=f"endpoint disabled: {endpoint.disabled_reason}")
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

    def _send(self, endpoint: WebhookEndpoint, message_id: str, payload: str) -> Attempt:
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
            return Attempt(time=now, latency_ms=latency, error=f"{type(error).__name__}: {error}"[:500])
        return Attempt(time=now, status_code=status, latency_ms=int((time.monotonic() - started) * 1000))


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
