"""The fuzzing runs (``make fuzz``, not part of ``make test``): a local runtime started for the session, and the two
local callers the fuzzer acts as."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_runtime.api_callers import DEFAULT_CALLERS, LOCAL_SECRET
from local_runtime.launcher import RuntimeProcess

SEED = int(os.environ.get("FUZZ_SEED", "20261127"))
"""Every run generates the same requests unless FUZZ_SEED says otherwise"""


class SignedAs(requests.auth.AuthBase):
    """SigV4 for execute-api, as an IAM user's access key signs it (the local runtime's callers are named by the
    access key: this one is the IAM user ``name``)."""

    def __init__(self, name: str) -> None:
        self._credentials = Credentials(name, LOCAL_SECRET)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        # requests writes a space in the query as "+", which SigV4 reads as a plus: encode the query as SigV4 does
        # (RFC 3986, %20), so that what is signed is what is sent
        parts = urlsplit(request.url or "")
        query = "&".join(
            f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        )
        request.url = urlunsplit(parts._replace(query=query))
        headers = {name: value for name, value in request.headers.items() if name.lower() != "connection"}
        signed = AWSRequest(method=request.method, url=request.url, data=request.body, headers=headers)
        SigV4Auth(self._credentials, "execute-api", "us-east-1").add_auth(signed)
        request.headers.update(dict(signed.headers.items()))
        return request


@dataclass
class Caller:
    name: str
    session: requests.Session


@dataclass
class Api:
    url: str
    """The stage's URL, e.g. http://127.0.0.1:PORT/v1"""
    callers: tuple[Caller, Caller]
    requests_sent: list[Any]

    def other_than(self, caller: Caller) -> Caller:
        return self.callers[1] if caller is self.callers[0] else self.callers[0]


@pytest.fixture(scope="session")
def api() -> Iterator[Api]:
    runtime = RuntimeProcess.start("--callers", f"{DEFAULT_CALLERS[0]},fuzz-other", timeout=120)
    unsigned = requests.Session()  # the local runtime's default caller (local-developer)
    signed = requests.Session()
    signed.auth = SignedAs("fuzz-other")
    try:
        yield Api(runtime.api, (Caller("local-developer", unsigned), Caller("fuzz-other", signed)), [])
    finally:
        runtime.stop()
