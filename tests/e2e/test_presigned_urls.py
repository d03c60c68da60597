"""Presigned S3 URLs against the local runtime's edge over HTTP, as a client uses the URLs a function hands out: a URL
signed with one of the stack's roles acts with that role's policies, and is refused, as S3 refuses it, once
expired, when tampered with, or with a body that does not match its signed checksum."""

from __future__ import annotations

import base64
import hashlib
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from xml.etree import ElementTree

import boto3
import pytest
from botocore.config import Config

from local_runtime import template
from local_runtime.identities import Credentials, Identities
from tests.conftest import ROOT
from tests.e2e.conftest import BUCKET, Service

pytestmark = pytest.mark.e2e


def devices() -> Credentials:
    """The devices' instance role: s3:GetObject on scripts/*, s3:PutObject on output/*."""
    return Identities(template.load(ROOT, "longrun-local", "us-east-1")).devices


def presigner(service: Service, credentials: Credentials) -> Any:
    if service.process is None:
        pytest.skip("the local runtime's credentials sign these URLs")
    return boto3.client(
        "s3",
        endpoint_url=service.edge,
        region_name="us-east-1",
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        aws_session_token=credentials.session_token,
        config=Config(signature_version="s3v4"),
    )


def fetch(method: str, url: str, body: bytes | None = None, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def error(body: bytes) -> tuple[str | None, str | None]:
    document = ElementTree.fromstring(body)
    return document.findtext("Code"), document.findtext("Message")


def checksum(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def test_a_url_presigned_by_a_role_downloads_and_uploads_with_that_role_s_policies(service: Service) -> None:
    s3 = presigner(service, devices())
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "scripts/hello.sh"}, ExpiresIn=60)
    status, body = fetch("GET", url)
    assert status == 200 and body.startswith(b"#!/bin/sh")

    output, key = b"patched over a presigned URL\n", f"output/presigned-{uuid.uuid4()}/stdout"
    params = {"Bucket": BUCKET, "Key": key, "ChecksumSHA256": checksum(output), "ContentLength": len(output)}
    upload = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=60)
    status, body = fetch("PUT", upload, output, **{"x-amz-checksum-sha256": checksum(output)})
    assert status == 200, body
    stored = service.aws("s3").get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert stored["Body"].read() == output and stored["ChecksumSHA256"] == checksum(output)


def test_an_expired_tampered_or_mismatched_presigned_request_is_refused(service: Service) -> None:
    s3 = presigner(service, devices())
    with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.now(UTC) - timedelta(minutes=5)):
        expired = s3.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": "scripts/hello.sh"}, ExpiresIn=60
        )
    status, body = fetch("GET", expired)
    assert (status, *error(body)) == (403, "AccessDenied", "Request has expired")

    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "scripts/hello.sh"}, ExpiresIn=60)
    status, body = fetch("GET", url.replace("scripts/hello.sh", "scripts/slow.sh"))
    assert (status, error(body)[0]) == (403, "SignatureDoesNotMatch")

    signed, sent = b"echo one\n", b"echo two\n"
    params = {"Bucket": BUCKET, "Key": f"output/{uuid.uuid4()}", "ChecksumSHA256": checksum(signed)}
    upload = s3.generate_presigned_url("put_object", Params={**params, "ContentLength": len(signed)}, ExpiresIn=60)
    status, body = fetch("PUT", upload, sent, **{"x-amz-checksum-sha256": checksum(signed)})
    mismatch = "The SHA256 you specified did not match the calculated checksum."
    assert (status, *error(body)) == (400, "BadDigest", mismatch)


def test_a_presigned_request_the_signer_s_policies_do_not_allow_is_refused(service: Service) -> None:
    s3 = presigner(service, devices())
    key = f"output/{uuid.uuid4()}/stdout"  # the devices may put their output, not read it
    url = s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=60)
    status, body = fetch("GET", url)
    assert (status, error(body)[0]) == (403, "AccessDenied")
    refused = service.take_denials()  # this refusal was the point
    assert [(d["principal"], d["action"], d["resource"]) for d in refused] == [
        ("devices", "s3:GetObject", f"arn:aws:s3:::{BUCKET}/{key}")
    ]
