"""Who signed an AWS request, read from its SigV4 Authorization header (the signature itself is not checked)."""

from __future__ import annotations

import re
from typing import NamedTuple

_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/,\s]+)/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/")


class Signer(NamedTuple):
    access_key: str
    region: str
    service: str


def signer(authorization: str) -> Signer | None:
    found = _CREDENTIAL.search(authorization)
    return Signer(found["key"], found["region"], found["service"]) if found else None
