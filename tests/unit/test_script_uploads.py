"""The presigned upload URL of a script: it must bind the body's length and SHA-256, and the client is told exactly
the headers the URL was signed with."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from longrun import scripts
from longrun.api_requests import ScriptDigest
from longrun.models import ScriptLocation

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SCRIPT = b"#!/bin/sh\necho hi\n"
REQUEST = ScriptDigest(sha256=hashlib.sha256(SCRIPT).hexdigest(), size=len(SCRIPT))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Presigning needs credentials, not AWS: nothing is in the bucket yet."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setattr(scripts, "_holds", lambda *_: False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # an earlier test's session keeps its credentials
    presigner = scripts._presigner
    presigner.cache_clear()
    yield
    presigner.cache_clear()


def test_the_upload_url_signs_the_length_and_checksum_and_the_client_is_told_both(offline: None) -> None:
    location = scripts.offer_upload("my-bucket", REQUEST, NOW)
    key = f"scripts/sha256/{REQUEST.sha256}"
    assert location["script-url"] == f"s3://my-bucket/{key}"
    upload = location["upload"]
    assert upload is not None
    url = urlsplit(upload["url"])
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc, url.path) == ("https", "my-bucket.s3.eu-west-1.amazonaws.com", f"/{key}")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == ["content-length;host;x-amz-checksum-sha256"]
    assert query["X-Amz-Expires"] == [str(scripts.UPLOAD_URL_SECONDS)] and query["X-Amz-Security-Token"] == ["token"]
    assert upload["headers"] == {
        "Content-Length": str(len(SCRIPT)),
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(SCRIPT).digest()).decode(),
    }
    expires_at = NOW + timedelta(seconds=scripts.UPLOAD_URL_SECONDS)
    assert upload["expiresAt"] == expires_at.isoformat().replace("+00:00", "Z")
    assert upload["method"] == "PUT"
    assert ScriptLocation.model_validate(location).model_dump(mode="json", by_alias=True) == location


def test_an_upload_url_that_does_not_bind_the_body_is_never_handed_out(
    offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore presigns S3 with SigV2 unless told s3v4 (no header signed); a URL signing only the host would let
    any body through."""

    class HostOnly:
        def generate_presigned_url(self, *_: Any, **__: Any) -> str:
            return "https://b.s3.amazonaws.com/k?X-Amz-SignedHeaders=host&X-Amz-Signature=0"

    monkeypatch.setattr(scripts, "_presigner", HostOnly)
    with pytest.raises(RuntimeError, match="not exactly the body's length and checksum"):
        scripts.offer_upload("b", REQUEST, NOW)


def test_the_bucket_holding_the_script_needs_no_upload(offline: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts, "_holds", lambda *_: True)
    location = scripts.offer_upload("b", REQUEST, NOW)
    assert (
        ScriptLocation.model_validate(location).model_dump(mode="json", by_alias=True)
        == location
        == {
            "script-url": f"s3://b/scripts/sha256/{REQUEST.sha256}",
            "upload": None,
        }
    )
