"""How requests prove who sends them: SigV4 for ``execute-api`` with the standard AWS credential chain (profile,
environment, SSO, instance role: botocore finds them as the AWS CLI does), or a bearer token for a deployment behind
a JWT authorizer. Signing is the last thing done to a request, so nothing changes it afterwards."""

from __future__ import annotations

import re
from collections.abc import Generator
from urllib.parse import urlsplit

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.session import Session

EXECUTE_API = "execute-api"
DEFAULT_REGION = "us-east-1"
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")
SIGNED_HEADERS = ("content-type", "idempotency-key")
"""Besides host and the x-amz-* headers SigV4 adds: the headers the signature covers (a proxy may change others)"""


class AwsCredentials:
    """The caller's AWS credentials and region, found once (a profile's SSO or role credentials refresh
    themselves when they expire)."""

    def __init__(self, profile: str | None = None, region: str | None = None, api_url: str | None = None) -> None:
        session = Session(profile=profile)
        self._credentials = session.get_credentials()
        self.region = region or _region_of(api_url) or session.get_config_variable("region") or DEFAULT_REGION

    @property
    def found(self) -> bool:
        return self._credentials is not None

    def frozen(self) -> Credentials | None:
        if self._credentials is None:
            return None
        frozen = self._credentials.get_frozen_credentials()
        if not (frozen.access_key and frozen.secret_key):
            return None
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def sign(self, method: str, url: str, headers: dict[str, str], body: bytes = b"") -> dict[str, str]:
        """The headers that sign this request (none when no credentials were found: it goes unsigned, and the API
        answers 403 if it requires a signature)."""
        credentials = self.frozen()
        if credentials is None:
            return {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(credentials, EXECUTE_API, self.region).add_auth(request)
        return {name: str(value) for name, value in request.headers.items() if name.lower() not in headers}


def _region_of(api_url: str | None) -> str | None:
    found = _EXECUTE_API_HOST.search(urlsplit(api_url).hostname or "") if api_url else None
    return found["region"] if found else None


class SigV4(httpx.Auth):
    """Signs each request with SigV4 for execute-api."""

    requires_request_body = True

    def __init__(self, credentials: AwsCredentials) -> None:
        self.credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        covered = {name: request.headers[name] for name in SIGNED_HEADERS if name in request.headers}
        for name, value in self.credentials.sign(request.method, str(request.url), covered, request.content).items():
            request.headers[name] = value
        yield request


class Bearer(httpx.Auth):
    """``Authorization: Bearer <token>`` (a JWT authorizer's deployments)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request
