"""Who may call the local APIs (REST and WebSocket), as API Gateway's IAM authorization decides it.

The local runtime has its own IAM users: each caller's access key id is its name (``NAME`` an IAM user, or
``ROLE~SESSION`` a session of the role ROLE), and every caller's secret access key is ``LOCAL_SECRET``. A signed request
(SigV4, in its ``Authorization`` header or its query string) is verified as AWS verifies it: an access key the
runtime does not have answers 403 "The security token included in the request is invalid." (ACCESS_DENIED), a
signature more than 15 minutes off 403 "Signature expired" and a signature that does not match the request 403
(INVALID_SIGNATURE), through the template's gateway responses. An unsigned request acts as the default caller,
unless the runtime requires signatures (``--require-signature``): then it answers 403 "Missing Authentication
Token", as the deployed API does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from local_runtime import sigv4
from local_runtime.template import ACCOUNT_ID

LOCAL_SECRET = "local-secret"  # noqa: S105 - the local runtime's own callers, printed at its start
DEFAULT_CALLERS = ("local-developer", "local-operator")


@dataclass(frozen=True)
class Refused:
    """API Gateway's answer instead of the integration: a gateway response type and its message."""

    kind: str
    message: str


MISMATCH = Refused("INVALID_SIGNATURE", "The request signature we calculated does not match the signature you provided."
                   " Check your AWS Secret Access Key and signing method. Consult the service documentation for"
                   " details.")  # fmt: skip


@dataclass(frozen=True)
class ApiCallers:
    default: str = DEFAULT_CALLERS[0]
    """Who an unsigned request comes from (when the runtime takes them)"""
    names: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_CALLERS))
    secret: str = LOCAL_SECRET
    require_signature: bool = False

    def identify(
        self, method: str, target: str, headers: dict[str, list[str]], body: bytes
    ) -> dict[str, Any] | Refused:
        """requestContext.identity of the request's caller (header names in lower case), or what API Gateway
        answers instead."""
        flat = {name: values[-1] for name, values in headers.items()}
        url = urlsplit(target)
        try:
            signature = sigv4.authentication(url.query, flat)
        except sigv4.Refusal:
            return MISMATCH
        if signature is None:
            if flat.get("authorization"):
                return Refused("INVALID_SIGNATURE", "Authorization header requires 'Credential', 'Signature' and"
                               " 'SignedHeaders' parameters")  # fmt: skip
            if self.require_signature:
                return Refused("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
            return identity(None, self.default, flat)
        if signature.access_key not in self.names:
            return Refused("ACCESS_DENIED", "The security token included in the request is invalid.")
        signed_at = sigv4.signed_at(signature)
        now = datetime.now(UTC)
        if signed_at is None or abs(now - signed_at) > sigv4.ALLOWED_SKEW:
            return Refused("INVALID_SIGNATURE", f"Signature expired: {signature.amz_date} is now earlier or later"
                           f" than {now:%Y%m%dT%H%M%SZ} by more than 15 minutes")  # fmt: skip
        try:
            sigv4.verify(signature, self.secret, method, url.path, url.query, flat, hashlib.sha256(body).hexdigest())
        except sigv4.Refusal:
            return MISMATCH
        return identity(signature.access_key, self.default, flat)

    def describe(self) -> str:
        """The callers, as the runtime prints them at start."""
        unsigned = "refused (403)" if self.require_signature else f"act as {self.default}"
        return (
            f"{', '.join(sorted(self.names))} (access key = the name, secret key {self.secret}); unsigned requests"
            f" {unsigned}"
        )


def anonymous(headers: dict[str, list[str]]) -> dict[str, Any]:
    """requestContext.identity of a request that is not IAM-authorized (a Lambda authorizer's): no caller."""
    return _identity(None, None, None, None, (headers.get("user-agent") or [""])[-1])


def identity(access_key: str | None, default: str, headers: dict[str, str]) -> dict[str, Any]:
    """requestContext.identity as API Gateway fills it for an IAM-authorized request."""
    name = access_key or default
    role, _, session = name.partition("~")
    if session:
        role_id = "AROA" + hashlib.sha256(role.encode()).hexdigest()[:17].upper()
        caller, user_arn = f"{role_id}:{session}", f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{session}"
    else:
        caller = "AIDA" + hashlib.sha256(name.encode()).hexdigest()[:17].upper()
        user_arn = f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"
    return _identity(ACCOUNT_ID, caller, user_arn, access_key, headers.get("user-agent", ""))


def _identity(
    account: str | None, caller: str | None, user_arn: str | None, access_key: str | None, user_agent: str
) -> dict[str, Any]:
    return {
        "accountId": account,
        "caller": caller,
        "user": caller,
        "userArn": user_arn,
        "accessKey": access_key,
        "sourceIp": "127.0.0.1",
        "userAgent": user_agent,
        "cognitoIdentityPoolId": None,
        "cognitoIdentityId": None,
        "cognitoAuthenticationType": None,
        "cognitoAuthenticationProvider": None,
        "principalOrgId": None,
    }
