"""AWS Signature Version 4 as AWS reads it: who signed a request, in its ``Authorization`` header or in its query
string (a presigned URL), and whether the signature is right.

``signer`` reads only the access key, region and service of an ``Authorization`` header (what the API gateways need
to name a caller). ``authentication`` reads a whole signature, either form, and refuses what S3 refuses before it
looks at a key: malformed query parameters (``AuthorizationQueryParametersError``), two mechanisms at once, and
Signature Version 2, which S3 no longer accepts. ``check_validity`` refuses a presigned request that has expired or
is not valid yet, ``check_session_token`` a temporary key presented without its token, ``verify`` a signature that
is not the one the secret key makes (``SignatureDoesNotMatch``), and ``check_signed_headers`` the ``x-amz-*``
headers an S3 request carries unsigned.

Followed: S3 API reference, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)",
"Signature Calculations for the Authorization Header", "Error responses"; IAM User Guide, "Create a signed AWS API
request" (canonical request, string to sign, signing key).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES_SECONDS = 604_800
"""A presigned URL lives at most 7 days (X-Amz-Expires)"""
ALLOWED_SKEW = timedelta(minutes=15)
"""How far in the future a request may be dated (AWS's common errors: RequestExpired)"""
QUERY_PARAMETERS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
"""What a presigned URL must carry (X-Amz-Security-Token too, for temporary credentials)"""
_AMZ_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", re.ASCII)
"""X-Amz-Date: ISO 8601's basic format, yyyyMMdd'T'HHmmss'Z'"""
_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/,\s]+)/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/")
_HEADER_FIELDS = re.compile(r"(?P<name>Credential|SignedHeaders|Signature)=(?P<value>[^,\s]*)")
_MISSING = (
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature,"
    " X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
)
_MALFORMED_CREDENTIAL = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting"
    ' "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


class Signer(NamedTuple):
    access_key: str
    region: str
    service: str


def signer(authorization: str) -> Signer | None:
    """The access key, region and service an ``Authorization`` header names (its signature is not checked)."""
    found = _CREDENTIAL.search(authorization)
    return Signer(found["key"], found["region"], found["service"]) if found else None


class Refusal(Exception):
    """What AWS answers instead of serving a request it will not authenticate: HTTP status, error code, message,
    and the further elements S3 puts in its error document (``Expires``, ``ServerTime``, ``HeadersNotSigned``...)."""

    def __init__(self, status: int, code: str, message: str, **details: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Signature:
    """A SigV4 signature as a request carries it."""

    access_key: str
    scope_date: str
    region: str
    service: str
    amz_date: str
    """X-Amz-Date as the request gives it (the string to sign carries it verbatim)"""
    signed_headers: tuple[str, ...]
    value: str
    security_token: str | None
    presigned: bool
    expires: int = 0
    """Seconds from X-Amz-Date the URL is valid (a presigned request)"""
    query: tuple[tuple[str, str], ...] = field(default=())
    """The request's query parameters, decoded, X-Amz-Signature left out (a presigned request signs them all)"""
    algorithm: str = ALGORITHM
    """As the Authorization header names it (another one than AWS4-HMAC-SHA256 is not verified: it never matches)"""

    @property
    def signer(self) -> Signer:
        return Signer(self.access_key, self.region, self.service)

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/aws4_request"


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The query string's parameters in order, percent-decoded (a ``+`` stays a ``+``, as SigV4 reads it)."""
    pairs = []
    for piece in raw_query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def authentication(raw_query: str, headers: Mapping[str, str]) -> Signature | None:
    """The request's SigV4 signature, from its query string (a presigned URL) or its ``Authorization`` header
    (``headers`` by lower-case name); None if it is unsigned, or signed in a way the header's reader cannot read
    (then it is anyone's request, as before). Refuses, as S3 does, a malformed presigned URL, a request that uses
    two mechanisms, and a Signature Version 2 request."""
    query = query_pairs(raw_query)
    names = {name for name, _ in query}
    authorization = headers.get("authorization", "")
    if names & {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"}:
        if authorization:
            raise Refusal(
                400,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string"
                " parameter or the Authorization header should be specified",
                ArgumentName="Authorization",
            )
        return _presigned(query)
    if ({"AWSAccessKeyId", "Signature"} <= names and "SignatureVersion" not in names) or authorization.startswith(
        "AWS "
    ):
        raise Refusal(
            400,
            "InvalidRequest",
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
        )
    return _from_header(authorization, headers) if authorization else None


def _presigned(query: list[tuple[str, str]]) -> Signature:
    given = dict(query)
    if given.get("X-Amz-Algorithm", ALGORITHM) != ALGORITHM:
        raise Refusal(400, "AuthorizationQueryParametersError", f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    if any(name not in given for name in QUERY_PARAMETERS):
        raise Refusal(400, "AuthorizationQueryParametersError", _MISSING)
    credential = given["X-Amz-Credential"].split("/")
    if len(credential) != 5 or not all(credential):
        raise Refusal(400, "AuthorizationQueryParametersError", _MALFORMED_CREDENTIAL)
    access_key, scope_date, region, service, terminal = credential
    amz_date = given["X-Amz-Date"]
    if _parse_date(amz_date) is None:
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        )
    if scope_date != amz_date[:8]:
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            f'Invalid credential date "{scope_date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".',
        )
    if service != "s3":
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            f'Error parsing the X-Amz-Credential parameter; incorrect service "{service}". This endpoint belongs'
            ' to "s3".',
        )
    if terminal != "aws4_request":
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            f'Error parsing the X-Amz-Credential parameter; incorrect terminal "{terminal}". This endpoint uses'
            ' "aws4_request".',
        )
    try:
        expires = int(given["X-Amz-Expires"])
    except ValueError:
        raise Refusal(400, "AuthorizationQueryParametersError", "X-Amz-Expires should be a number") from None
    if expires < 0:
        raise Refusal(400, "AuthorizationQueryParametersError", "X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES_SECONDS:
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES_SECONDS}",
        )
    return Signature(
        access_key=access_key,
        scope_date=scope_date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_headers=tuple(given["X-Amz-SignedHeaders"].split(";")),
        value=given["X-Amz-Signature"],
        security_token=given.get("X-Amz-Security-Token"),
        presigned=True,
        expires=expires,
        query=tuple((name, value) for name, value in query if name != "X-Amz-Signature"),
    )


def _from_header(authorization: str, headers: Mapping[str, str]) -> Signature | None:
    algorithm, _, _ = authorization.partition(" ")
    fields = {found["name"]: found["value"] for found in _HEADER_FIELDS.finditer(authorization)}
    credential = fields.get("Credential", "").split("/")
    if len(credential) != 5:
        return None
    access_key, scope_date, region, service, _ = credential
    return Signature(
        access_key=access_key,
        scope_date=scope_date,
        region=region,
        service=service,
        amz_date=headers.get("x-amz-date", ""),
        signed_headers=tuple(name for name in fields.get("SignedHeaders", "").split(";") if name),
        value=fields.get("Signature", ""),
        security_token=headers.get("x-amz-security-token"),
        presigned=False,
        algorithm=algorithm,
    )


def _parse_date(amz_date: str) -> datetime | None:
    """The time an X-Amz-Date names, or None if it is not one (read without strptime, whose process-wide lock every
    request of the edge's threads would wait for)."""
    parts = _AMZ_DATE.fullmatch(amz_date)
    if parts is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in parts.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # no such day or time
        return None


def signed_at(signature: Signature) -> datetime | None:
    """When the request says it was signed (X-Amz-Date); None if that is unreadable."""
    return _parse_date(signature.amz_date)


def check_validity(signature: Signature, now: datetime) -> None:
    """A presigned request is valid from X-Amz-Date (give or take the allowed skew) for X-Amz-Expires seconds."""
    signed_at = _parse_date(signature.amz_date)
    if not signature.presigned or signed_at is None:
        return
    if signed_at - now > ALLOWED_SKEW:
        raise Refusal(403, "AccessDenied", "Request is not valid yet")
    expires_at = signed_at + timedelta(seconds=signature.expires)
    if now > expires_at:
        raise Refusal(
            403,
            "AccessDenied",
            "Request has expired",
            **{
                "X-Amz-Expires": str(signature.expires),
                "Expires": expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ServerTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )


def check_session_token(signature: Signature, session_token: str | None) -> None:
    """Temporary credentials are valid only with their session token (X-Amz-Security-Token)."""
    if session_token is None or signature.security_token == session_token:
        return
    if signature.security_token is None:
        raise Refusal(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            AWSAccessKeyId=signature.access_key,
        )
    raise Refusal(400, "InvalidToken", "The provided token is malformed or otherwise invalid.")


def check_signed_headers(signature: Signature, headers: Mapping[str, str]) -> None:
    """S3 refuses a request carrying an ``x-amz-*`` header (or Content-MD5) it was not signed with: the signature
    would not cover what that header asks for (an ACL, a checksum, metadata, a copy source...)."""
    signed = set(signature.signed_headers)
    unsigned = sorted(
        name
        for name in headers
        if (name.startswith("x-amz-") or name == "content-md5") and name not in signed and name not in _NEVER_SIGNED
    )
    if unsigned:
        raise Refusal(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )


_NEVER_SIGNED = frozenset({"x-amz-content-sha256", "x-amz-date", "x-amz-security-token"})
"""Headers of the signature itself, whose values are read on their own (the payload hash, the date, the session
token): SigV4 signs them whenever the signer sends them"""


def canonical_request(
    signature: Signature,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    payload_hash: str,
) -> str:
    """The canonical request the signer signed, rebuilt from the request as it arrived. S3 encodes the path once
    (the object key as the request names it); every other service encodes the normalized path again."""
    path = raw_path.split("?", 1)[0] or "/"
    if signature.service == "s3":
        canonical_path = quote(unquote(path), safe="/~")
    else:
        canonical_path = quote(_remove_dot_segments(path), safe="/~")
    pairs = signature.query if signature.presigned else tuple(query_pairs(raw_query))
    canonical_query = "&".join(
        f"{name}={value}" for name, value in sorted((quote(n, safe="-_.~"), quote(v, safe="-_.~")) for n, v in pairs)
    )
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signature.signed_headers
    )
    return "\n".join(
        [method, canonical_path, canonical_query, canonical_headers, ";".join(signature.signed_headers), payload_hash]
    )


def _remove_dot_segments(path: str) -> str:
    """RFC 3986's dot-segment removal, and no empty segments (AWS services' path normalization)."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    last = "/" if path.endswith("/") and segments else ""
    return "/" + "/".join(segments) + last


def string_to_sign(signature: Signature, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{signature.algorithm}\n{signature.amz_date}\n{signature.scope}\n{digest}"


def signing_key(secret_key: str, signature: Signature) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (signature.scope_date, signature.region, signature.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def verify(
    signature: Signature,
    secret_key: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    payload_hash: str,
) -> None:
    """Recomputes the signature with the signer's secret key; refuses the request if it differs (any part of the
    request the signature covers was changed: method, path, query, a signed header's value, or the key)."""
    canonical = canonical_request(signature, method, raw_path, raw_query, headers, payload_hash)
    text = string_to_sign(signature, canonical)
    expected = hmac.new(signing_key(secret_key, signature), text.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.value):
        raise Refusal(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and"
            " signing method.",
            AWSAccessKeyId=signature.access_key,
            StringToSign=text,
            SignatureProvided=signature.value,
            CanonicalRequest=canonical,
        )
