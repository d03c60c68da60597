"""A typed client of the longrun API, and the ``longrun`` command (longrun_client.cli)."""

from longrun_client.client import Client
from longrun_client.errors import (
    ApiError,
    AuthenticationError,
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    LongrunError,
    NotFound,
    ServiceUnavailable,
    WaitTimeout,
)
from longrun_client.events import Progress

__all__ = [
    "ApiError",
    "AuthenticationError",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "InvalidRequest",
    "LongrunError",
    "NotFound",
    "Progress",
    "ServiceUnavailable",
    "WaitTimeout",
]
