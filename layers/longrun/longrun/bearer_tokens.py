"""Bearer tokens, as the API's JWT authorizer takes them: JSON Web Tokens signed by one OpenID Connect issuer (a
Cognito user pool, or any other provider) for one client, whose subject becomes the owner of what the caller makes.

A token is taken when its signature verifies against one of the issuer's published keys (RS256 only: the keys are
read from the ``jwks_uri`` of the issuer's ``/.well-known/openid-configuration``, and read again when a token names a
key not seen yet, as when the issuer rotates its keys), its ``iss`` is the issuer, it has not expired and is not used
before its time (``exp``, ``nbf``, with ``LEEWAY_SECONDS`` for clocks), it has a subject, and it is for the client:
an ID token's ``aud``, or else an access token's ``client_id`` (Cognito's access tokens have no ``aud``)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jwt

ALGORITHMS = ["RS256"]
LEEWAY_SECONDS = 30
FETCH_TIMEOUT_SECONDS = 5
KEYS_LIFESPAN_SECONDS = 3600


class InvalidToken(Exception):
    """The token is not one the API takes; the message says why, for the log (never for the caller)."""


class IssuerUnavailable(Exception):
    """The issuer's keys could not be read, so no token can be checked now."""


@dataclass(frozen=True)
class Bearer:
    subject: str
    name: str
    """How audit lines name the caller: the user name the issuer gives, else the subject"""


def verify(token: str, issuer: str, audience: str) -> Bearer:
    """Who the token is for, if the API takes it (InvalidToken otherwise)."""
    import jwt  # only the JWT authorizer pays for it

    try:
        keys = _keys(issuer)
    except (OSError, ValueError, KeyError) as error:
        raise IssuerUnavailable(f"the keys of {issuer} could not be read: {error}") from error
    try:
        key = keys.get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as error:
        raise IssuerUnavailable(f"the keys of {issuer} could not be read: {error}") from error
    except jwt.PyJWTError as error:
        raise InvalidToken(f"{type(error).__name__}: {error}") from error
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "sub"], "verify_aud": False},
        )
    except jwt.PyJWTError as error:
        raise InvalidToken(f"{type(error).__name__}: {error}") from error
    if "aud" in claims:
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if audience not in audiences:
            raise InvalidToken(f"the token is for {audiences}, not {audience}")
    elif claims.get("client_id") != audience:
        raise InvalidToken(f"the token's client_id is {claims.get('client_id')!r}, not {audience}")
    if claims.get("token_use", "id") not in ("id", "access"):
        raise InvalidToken(f"a token of use {claims['token_use']!r} is neither an ID nor an access token")
    subject = str(claims["sub"])
    name = claims.get("cognito:username") or claims.get("username") or claims.get("preferred_username") or subject
    return Bearer(subject=subject, name=str(name))


@cache
def _keys(issuer: str) -> jwt.PyJWKClient:
    """The issuer's signing keys (one client per issuer, kept with the function's environment)."""
    import jwt

    discovery = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery, timeout=FETCH_TIMEOUT_SECONDS) as reply:  # noqa: S310 - https, or loopback
        configuration = json.load(reply)
    if configuration.get("issuer") != issuer:
        raise ValueError(f"{discovery} names issuer {configuration.get('issuer')!r}")
    return jwt.PyJWKClient(configuration["jwks_uri"], lifespan=KEYS_LIFESPAN_SECONDS, timeout=FETCH_TIMEOUT_SECONDS)
