"""Page tokens that are opaque and tamper-evident: the position a page ended at, sealed with an HMAC whose key the
template generates in Secrets Manager (``PAGE_TOKEN_KEY_NAME``), bound to the caller and the query that made it.

A token is ``v1.<position>.<mac>`` (both base64url): the MAC covers the caller's owner digest, the query (the route,
its resource and its filters) and the position, so a token changed in any way, or used by another caller or for
another query, is refused. The key is read from Secrets Manager and kept for ``KEY_CACHE_SECONDS``. Rotating the
secret (a new ``AWSCURRENT`` version) is safe: tokens sealed with the previous version (``AWSPREVIOUS``) still open
until the version after; a function picks the new key up within ``KEY_CACHE_SECONDS``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from functools import cache
from typing import TYPE_CHECKING, cast

from botocore.exceptions import ClientError

from longrun import aws_clients
from longrun.errors import BadRequest

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

KEY_CACHE_SECONDS = 300
MAC_BYTES = 16
VERSION = "v1"


@cache
def _secrets() -> SecretsManagerClient:
    return cast("SecretsManagerClient", aws_clients.client("secretsmanager"))


class PageTokens:
    def __init__(self, secret_name: str | None, keys: tuple[bytes, ...] = ()) -> None:
        """``keys``: keys known already, the current first (then the secret is not read)."""
        self._secret_name = secret_name
        self._keys = keys
        self._read_at = float("inf") if keys else -float("inf")
        self._lock = threading.Lock()

    def seal(self, position: str | None, caller: str, query: str) -> str | None:
        """The token a client is given for the page after ``position`` (None: there is none)."""
        if position is None:
            return None
        body = _b64(position.encode())
        return f"{VERSION}.{body}.{_b64(self._mac(self._current_keys()[0], caller, query, body))}"

    def open(self, token: str | None, caller: str, query: str) -> str | None:
        """The position a token the API issued to ``caller`` for ``query`` holds; 400 for any other token."""
        if token is None:
            return None
        refused = BadRequest("next-token is not a token this API issued for this request")
        version, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        try:
            given = _unb64(mac)
            position = _unb64(body).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise refused from None
        if version != VERSION or not any(
            hmac.compare_digest(given, self._mac(key, caller, query, body)) for key in self._current_keys()
        ):
            raise refused
        return position

    @staticmethod
    def _mac(key: bytes, caller: str, query: str, body: str) -> bytes:
        message = "\n".join((VERSION, caller, query, body)).encode()
        return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def _current_keys(self) -> tuple[bytes, ...]:
        """The current key first, then the previous one if the secret has one."""
        with self._lock:
            if time.monotonic() - self._read_at > KEY_CACHE_SECONDS:
                self._keys = tuple(self._read_keys())
                self._read_at = time.monotonic()
            return self._keys

    def _read_keys(self) -> list[bytes]:
        if not self._secret_name:
            raise RuntimeError("this function is not configured with PAGE_TOKEN_KEY_NAME")
        keys = [_secrets().get_secret_value(SecretId=self._secret_name)["SecretString"].encode()]
        try:
            previous = _secrets().get_secret_value(SecretId=self._secret_name, VersionStage="AWSPREVIOUS")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        else:
            keys.append(previous["SecretString"].encode())
        return keys


@cache
def sealed_with(secret_name: str | None) -> PageTokens:
    """One sealer per key, shared by the function's services (the key is read once for all of them)."""
    return PageTokens(secret_name)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2048 or not text.isascii():
        raise ValueError("not a token")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
