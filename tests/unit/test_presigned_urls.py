"""Presigned S3 URLs at the edge, as S3 takes them: signed by one of the stack's roles, a URL acts with that role's
policies; it is refused once expired, or if its key, method, query or any signed header was changed, or if the body
does not match the checksum it carries. The URLs are real ones (boto3's generate_presigned_url, with the devices'
credentials and the edge as endpoint), sent to the edge's WSGI application with moto behind it."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast
from unittest import mock
from urllib.parse import urlsplit
from xml.etree import ElementTree

import boto3
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from moto import mock_aws
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request

from local_runtime import iam, sigv4, template
from local_runtime.aws_requests import checks
from local_runtime.edge import Edge
from local_runtime.identities import Credentials, Identities
from tests.conftest import ROOT

REGION = "us-east-1"
EDGE = "http://127.0.0.1:4566"
SCRIPT = b"#!/bin/sh\necho hello\n"
OUTPUT = b"patched web-1\n"


@cache
def identities() -> Identities:
    return Identities(template.load(ROOT, "longrun-local", REGION))


@cache
def bucket() -> str:
    return template.load(ROOT, "longrun-local", REGION).physical_id("ScriptsBucket")


def devices() -> Credentials:
    """The simulated devices' instance role: s3:GetObject on scripts/*, s3:PutObject on output/*, no s3:ListBucket."""
    return identities().devices


def presigner(credentials: Credentials | None = None, signature_version: str = "s3v4", region: str = REGION) -> Any:
    given = credentials or Credentials("test", "test", "")
    return boto3.client(
        "s3",
        endpoint_url=EDGE,
        region_name=region,
        aws_access_key_id=given.access_key,
        aws_secret_access_key=given.secret_key,
        aws_session_token=given.session_token or None,
        config=Config(signature_version=signature_version),
    )


def presign(method: str, key: str, expires: int = 300, signed_at: datetime | None = None, **params: Any) -> str:
    client = presigner(params.pop("credentials", devices()), params.pop("signature_version", "s3v4"))
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at or datetime.now(UTC)):
        url: str = client.generate_presigned_url(
            method, Params={"Bucket": bucket(), "Key": key, **params}, ExpiresIn=expires
        )
    return url


@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def code(self) -> str | None:
        return self.element("Code")

    def element(self, name: str) -> str | None:
        """An element of S3's error document."""
        if not self.body.startswith(b"<?xml"):
            return None
        return ElementTree.fromstring(self.body).findtext(name)


@dataclass
class LocalEdge:
    client: Client
    ledger: iam.Ledger

    def send(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """The request as an HTTP client sends a URL: its path and query as they are, its host as the Host header."""
        parts = urlsplit(url)
        response = self.client.open(
            path=parts.path,
            query_string=parts.query,
            method=method,
            base_url=f"{parts.scheme}://{parts.netloc}",
            headers=headers or {},
            data=body,
        )
        return Reply(response.status_code, response.get_data())


@pytest.fixture
def edge() -> Iterator[LocalEdge]:
    """The edge with moto behind it, the stack's bucket holding a script, and an IAM ledger of its own."""
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket())
        s3.put_object(Bucket=bucket(), Key="scripts/hello.sh", Body=SCRIPT)
        ledger = iam.Ledger()
        yield LocalEdge(Client(Edge(cast(Any, None), cast(Any, None), identities(), ledger)), ledger)


def checksum(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def upload_url(key: str, body: bytes, **params: Any) -> str:
    return presign("put_object", key, ChecksumSHA256=checksum(body), ContentLength=len(body), **params)


def upload_headers(body: bytes) -> dict[str, str]:
    return {"Content-Length": str(len(body)), "x-amz-checksum-sha256": checksum(body)}


# --- accepted -----------------------------------------------------------------------------------


def test_a_url_presigned_by_a_role_acts_with_that_role_s_policies(edge: LocalEdge) -> None:
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh"))
    assert (reply.status, reply.body) == (200, SCRIPT)
    used = {(who, action, resource) for who, _, action, resource in edge.ledger.snapshot()["used"]}
    assert ("devices", "s3:GetObject", f"arn:aws:s3:::{bucket()}/scripts/*") in used


def test_an_upload_with_its_signed_length_and_checksum_is_stored_with_its_checksum(edge: LocalEdge) -> None:
    key = "output/cmd/mi-1/awsrunShellScript/runShellScript/stdout"
    reply = edge.send("PUT", upload_url(key, OUTPUT), OUTPUT, upload_headers(OUTPUT))
    assert reply.status == 200, reply.body
    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stored = s3.get_object(Bucket=bucket(), Key=key, ChecksumMode="ENABLED")
    assert stored["Body"].read() == OUTPUT
    assert stored["ChecksumSHA256"] == checksum(OUTPUT)  # S3 keeps the checksum the upload was signed with


def test_an_upload_s_body_is_stored_whatever_its_content_type(edge: LocalEdge) -> None:
    """curl --data-binary and urllib send application/x-www-form-urlencoded: S3 stores the body as it is."""
    headers = {**upload_headers(OUTPUT), "Content-Type": "application/x-www-form-urlencoded"}
    assert edge.send("PUT", upload_url("output/k", OUTPUT), OUTPUT, headers).status == 200
    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stored = s3.get_object(Bucket=bucket(), Key="output/k")
    assert (stored["Body"].read(), stored["ContentType"]) == (OUTPUT, "application/x-www-form-urlencoded")


def test_a_key_is_encoded_once_in_the_canonical_request_as_s3_encodes_it(edge: LocalEdge) -> None:
    key = "output/a b+c/ü=1.txt"
    assert edge.send("PUT", upload_url(key, OUTPUT), OUTPUT, upload_headers(OUTPUT)).status == 200


def test_a_url_dated_a_little_ahead_of_the_edge_s_clock_is_accepted(edge: LocalEdge) -> None:
    url = presign("get_object", "scripts/hello.sh", signed_at=datetime.now(UTC) + timedelta(minutes=10))
    assert edge.send("GET", url).status == 200


# --- expired, or malformed ----------------------------------------------------------------------


def test_an_expired_url_is_refused_as_s3_refuses_it(edge: LocalEdge) -> None:
    signed_at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh", expires=3600, signed_at=signed_at))
    assert (reply.status, reply.code, reply.element("Message")) == (403, "AccessDenied", "Request has expired")
    assert reply.element("X-Amz-Expires") == "3600"
    assert reply.element("Expires") == (signed_at + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert reply.element("ServerTime") is not None


def test_a_url_dated_beyond_the_allowed_skew_is_not_valid_yet(edge: LocalEdge) -> None:
    url = presign("get_object", "scripts/hello.sh", signed_at=datetime.now(UTC) + timedelta(minutes=20))
    reply = edge.send("GET", url)
    assert (reply.status, reply.code, reply.element("Message")) == (403, "AccessDenied", "Request is not valid yet")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("X-Amz-Expires=300", "X-Amz-Expires=604801"),
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ),
        (("X-Amz-Expires=300", "X-Amz-Expires=soon"), "X-Amz-Expires should be a number"),
        (("X-Amz-Expires=300", "X-Amz-Expires=-1"), "X-Amz-Expires must be non-negative"),
        (("X-Amz-Expires=300&", ""), sigv4._MISSING),
        (("X-Amz-Date=", "X-Amz-Date=1"), "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""),
        (("=AWS4-HMAC-SHA256", "=AWS4-HMAC-SHA1"), 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"'),
        (
            ("%2Fs3%2F", "%2Fsqs%2F"),
            'Error parsing the X-Amz-Credential parameter; incorrect service "sqs". This endpoint belongs to "s3".',
        ),
        (("%2Faws4_request", ""), sigv4._MALFORMED_CREDENTIAL),
    ],
)  # fmt: skip
def test_malformed_query_parameters_are_refused_as_s3_refuses_them(
    edge: LocalEdge, change: tuple[str, str], message: str
) -> None:
    url = presign("get_object", "scripts/hello.sh")
    assert change[0] in url
    reply = edge.send("GET", url.replace(*change))
    assert (reply.status, reply.code, reply.element("Message")) == (400, "AuthorizationQueryParametersError", message)


def test_a_credential_dated_otherwise_than_the_request_is_refused(edge: LocalEdge) -> None:
    url = presign("get_object", "scripts/hello.sh")
    date = re.search(r"X-Amz-Date=(\d{8})", url)
    assert date is not None
    reply = edge.send("GET", url.replace(f"%2F{date[1]}%2F", "%2F20200101%2F"))
    assert (reply.status, reply.code) == (400, "AuthorizationQueryParametersError")
    assert reply.element("Message") == (
        f'Invalid credential date "20200101". This date is not the same as X-Amz-Date: "{date[1]}".'
    )


def test_a_url_signed_for_another_region_than_the_bucket_s_is_refused(edge: LocalEdge) -> None:
    client = presigner(devices(), region="eu-west-1")
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": "scripts/hello.sh"})
    reply = edge.send("GET", url)
    assert (reply.status, reply.code, reply.element("Region")) == (400, "AuthorizationQueryParametersError", REGION)


def test_signature_version_2_is_refused(edge: LocalEdge) -> None:
    """boto3 presigns S3 URLs with Signature Version 2 unless told otherwise; S3 accepts only version 4 now."""
    url = presign("get_object", "scripts/hello.sh", signature_version="s3")
    assert "AWSAccessKeyId=" in url
    reply = edge.send("GET", url)
    assert (reply.status, reply.code) == (400, "InvalidRequest")


def test_a_presigned_url_sent_with_an_authorization_header_too_is_refused(edge: LocalEdge) -> None:
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh"), headers={"Authorization": "AWS4-HMAC-SHA256 x"})
    assert (reply.status, reply.code) == (400, "InvalidArgument")


# --- tampered ----------------------------------------------------------------------------------


def test_a_url_whose_key_was_changed_is_refused(edge: LocalEdge) -> None:
    boto3.client("s3", region_name=REGION, aws_access_key_id="t", aws_secret_access_key="t").put_object(
        Bucket=bucket(), Key="scripts/other.sh", Body=b"other"
    )
    url = presign("get_object", "scripts/hello.sh").replace("scripts/hello.sh", "scripts/other.sh")
    reply = edge.send("GET", url)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")
    assert f"/{bucket()}/scripts/other.sh" in (reply.element("CanonicalRequest") or "")


@pytest.mark.parametrize(
    ("method", "change"),
    [
        ("PUT", None),  # the URL signs GET
        ("GET", ("X-Amz-Expires=300", "X-Amz-Expires=600")),  # a longer life
        ("GET", ("?", "?response-content-type=text%2Fhtml&")),  # a parameter the URL did not sign
        ("GET", ("X-Amz-Signature=", "X-Amz-Signature=0")),
    ],
)
def test_a_url_whose_method_or_query_was_changed_is_refused(
    edge: LocalEdge, method: str, change: tuple[str, str] | None
) -> None:
    url = presign("get_object", "scripts/hello.sh")
    reply = edge.send(method, url.replace(*change) if change else url)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_a_url_signed_with_another_secret_is_refused(edge: LocalEdge) -> None:
    forged = Credentials(devices().access_key, "not-the-secret", devices().session_token)
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh", credentials=forged))
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_a_session_s_key_is_valid_only_with_its_token(edge: LocalEdge) -> None:
    wrong_token = Credentials(devices().access_key, devices().secret_key, "local-session-forged")
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh", credentials=wrong_token))
    assert (reply.status, reply.code) == (400, "InvalidToken")
    without_token = Credentials(devices().access_key, devices().secret_key, "")
    reply = edge.send("GET", presign("get_object", "scripts/hello.sh", credentials=without_token))
    assert (reply.status, reply.code) == (403, "InvalidAccessKeyId")


def test_an_administrator_s_url_is_not_verified_but_still_expires(edge: LocalEdge) -> None:
    """The runtime does not know a developer's secret key: such a URL is the administrator's, as a header-signed
    request with that key is, but its expiry and form are checked as for anyone."""
    admin = Credentials("test", "test", "")
    url = presign("get_object", "scripts/hello.sh", credentials=admin)
    assert edge.send("GET", url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status == 200
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    expired = presign("get_object", "scripts/hello.sh", credentials=admin, signed_at=an_hour_ago)
    assert edge.send("GET", expired).code == "AccessDenied"


# --- signed headers, and the body ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Length": str(len(OUTPUT))},  # the signed checksum is missing
        {"Content-Length": str(len(OUTPUT)), "x-amz-checksum-sha256": checksum(b"something else")},
    ],
)
def test_an_upload_without_its_signed_headers_values_is_refused(edge: LocalEdge, headers: dict[str, str]) -> None:
    reply = edge.send("PUT", upload_url("output/k", OUTPUT), OUTPUT, headers)
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_an_upload_of_another_length_than_signed_is_refused(edge: LocalEdge) -> None:
    longer = OUTPUT + b"and more\n"
    reply = edge.send("PUT", upload_url("output/k", OUTPUT), longer, {"x-amz-checksum-sha256": checksum(OUTPUT)})
    assert (reply.status, reply.code) == (403, "SignatureDoesNotMatch")


def test_an_upload_whose_body_does_not_match_its_signed_checksum_is_refused(edge: LocalEdge) -> None:
    other = OUTPUT.upper()  # as long as OUTPUT: the signed length is right
    reply = edge.send("PUT", upload_url("output/k", OUTPUT), other, upload_headers(OUTPUT))
    assert (reply.status, reply.code) == (400, "BadDigest")
    assert reply.element("Message") == "The SHA256 you specified did not match the calculated checksum."


def test_an_unsigned_x_amz_header_is_refused(edge: LocalEdge) -> None:
    headers = {**upload_headers(OUTPUT), "x-amz-meta-owner": "someone", "x-amz-acl": "public-read"}
    reply = edge.send("PUT", upload_url("output/k", OUTPUT), OUTPUT, headers)
    assert (reply.status, reply.code) == (403, "AccessDenied")
    assert reply.element("HeadersNotSigned") == "x-amz-acl, x-amz-meta-owner"


def test_a_body_shorter_than_its_content_length_is_an_incomplete_body(edge: LocalEdge) -> None:
    url = urlsplit(upload_url("output/k", OUTPUT))
    builder = EnvironBuilder(
        method="PUT", path=url.path, query_string=url.query, base_url=EDGE, headers=list(upload_headers(OUTPUT).items())
    )
    environ = builder.get_environ()
    environ["CONTENT_LENGTH"] = str(len(OUTPUT))
    environ["wsgi.input"] = io.BytesIO(OUTPUT[:5])  # the client went away after 5 bytes
    body, status, _ = run_wsgi_app(edge.client.application, environ)
    reply = Reply(int(status.split()[0]), b"".join(body))
    assert (reply.status, reply.code) == (400, "IncompleteBody")


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("x-amz-checksum-sha256", checksum(b"other"), "BadDigest"),
        ("x-amz-checksum-sha256", "not base64", "InvalidRequest"),
        ("x-amz-checksum-crc32", base64.b64encode(b"\0\0\0\0").decode(), "BadDigest"),
        ("Content-MD5", base64.b64encode(hashlib.md5(b"other").digest()).decode(), "BadDigest"),
        ("Content-MD5", "abc", "InvalidDigest"),
    ],
)
def test_a_header_signed_upload_whose_body_does_not_match_its_digest_is_refused(
    edge: LocalEdge, header: str, value: str, code: str
) -> None:
    """Whoever signs (the administrator here), S3 checks the body against the digests it is sent with; moto does
    not."""
    url = f"{EDGE}/{bucket()}/scripts/x.sh"
    request = AWSRequest("PUT", url, data=SCRIPT, headers={header: value})
    S3SigV4Auth(BotoCredentials("test", "test"), "s3", REGION).add_auth(request)
    headers = {name: str(value) for name, value in request.headers.items()}
    reply = edge.send("PUT", url, SCRIPT, headers)
    assert (reply.status, reply.code) == (400, code)


# --- header-signed requests of the stack's roles -------------------------------------------------


def header_signed(method: str, key: str, credentials: Credentials, body: bytes = b"") -> tuple[str, dict[str, str]]:
    url = f"{EDGE}/{bucket()}/{key}"
    request = AWSRequest(method, url, data=body)
    boto = BotoCredentials(credentials.access_key, credentials.secret_key, credentials.session_token)
    S3SigV4Auth(boto, "s3", REGION).add_auth(request)
    return url, {name: str(value) for name, value in request.headers.items()}


def test_a_role_s_header_signed_request_is_verified_too(edge: LocalEdge) -> None:
    url, headers = header_signed("GET", "scripts/hello.sh", devices())
    assert edge.send("GET", url, headers=headers).status == 200
    forged = Credentials(devices().access_key, "not-the-secret", devices().session_token)
    url, headers = header_signed("GET", "scripts/hello.sh", forged)
    assert edge.send("GET", url, headers=headers).code == "SignatureDoesNotMatch"


# --- IAM -----------------------------------------------------------------------------------------


def test_a_url_the_signer_s_policies_do_not_allow_is_refused_with_iam_s_message(edge: LocalEdge) -> None:
    key = "output/cmd/mi-1/awsrunShellScript/runShellScript/stdout"
    reply = edge.send("GET", presign("get_object", key))
    assert (reply.status, reply.code) == (403, "AccessDenied")
    resource = f"arn:aws:s3:::{bucket()}/{key}"
    assert reply.element("Message") == (
        f"User: arn:aws:sts::123456789012:assumed-role/longrun-local-device-role/device is not authorized to perform:"
        f" s3:GetObject on resource: {resource} because no identity-based policy allows the s3:GetObject action"
    )
    assert [(d["principal"], d["action"], d["resource"]) for d in edge.ledger.snapshot()["denials"]] == [
        ("devices", "s3:GetObject", resource)
    ]


def test_a_missing_key_is_403_to_a_signer_that_may_not_list_the_bucket(edge: LocalEdge) -> None:
    reply = edge.send("GET", presign("get_object", "scripts/not-there.sh"))
    assert (reply.status, reply.code) == (403, "AccessDenied")
    admin = presign("get_object", "scripts/not-there.sh", credentials=Credentials("test", "test", ""))
    assert edge.send("GET", admin).code == "NoSuchKey"


def test_presigned_parameters_are_not_subresources() -> None:
    url = urlsplit(presign("get_object", "scripts/hello.sh"))
    request = Request(EnvironBuilder(method="GET", path=url.path, query_string=url.query, base_url=EDGE).get_environ())
    assert checks("s3", REGION, request) == [iam.Check("s3:GetObject", f"arn:aws:s3:::{bucket()}/scripts/hello.sh")]


# --- the signature module alone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "url", "body"),
    [
        ("lambda", f"{EDGE}/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af/invocations", b"{}"),
        ("dynamodb", f"{EDGE}/", b'{"TableName": "t"}'),
        ("lambda", f"{EDGE}/2015-03-31/functions/?Marker=a%20b&MaxItems=5", b""),
    ],
)
def test_botocore_s_header_signatures_verify_and_any_change_does_not(service: str, url: str, body: bytes) -> None:
    """Other services encode the (normalized) path twice, and sign the body's SHA-256."""
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/x-amz-json-1.0"})
    SigV4Auth(BotoCredentials("AKID", "secret", "token"), service, REGION).add_auth(request)
    parts = urlsplit(url)
    headers = {"host": parts.netloc, **{name.lower(): str(value) for name, value in request.headers.items()}}
    signature = sigv4.authentication(parts.query, headers)
    assert signature is not None and signature.signer == sigv4.Signer("AKID", REGION, service)
    payload = hashlib.sha256(body).hexdigest()
    sigv4.verify(signature, "secret", "POST", parts.path, parts.query, headers, payload)
    with pytest.raises(sigv4.Refusal, match="SignatureDoesNotMatch"):
        sigv4.verify(signature, "secret", "POST", parts.path, parts.query, headers, hashlib.sha256(b"x").hexdigest())
    with pytest.raises(sigv4.Refusal, match="SignatureDoesNotMatch"):
        sigv4.verify(signature, "secret", "PUT", parts.path, parts.query, headers, payload)
