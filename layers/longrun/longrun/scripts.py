"""Where a task's script lives and where its devices' output goes, in the deployment's own bucket; and the
short-lived presigned URLs through which clients read the output and upload scripts without access to the bucket.

A presigned URL acts with the signer's permissions (the function's role) until it expires or the role's session
does. botocore presigns S3 URLs with Signature Version 2 unless told otherwise, which signs no header (an upload's
length and checksum would not bind the body), and names the bucket's global host: presigning is SigV4 on the
bucket's regional host here.
"""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import ClientError

from longrun import aws_clients
from longrun.errors import InvalidRequest
from longrun.records import SCRIPTS_PREFIX
from longrun.views import json_time

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from longrun.api_requests import ScriptDigest

UPLOADS_PREFIX = f"{SCRIPTS_PREFIX}sha256/"
"""Uploaded scripts, by the SHA-256 of their content"""
HEAD_BYTES = 4096
"""How much of each device's stdout and stderr the result shows."""
DOWNLOAD_URL_SECONDS = 300
"""How long a presigned URL of a device's output stays valid"""
UPLOAD_URL_SECONDS = 300
"""How long a presigned upload URL stays valid (S3 checks it when the upload starts)"""
_MISSING = ("404", "NoSuchKey", "NotFound")


@cache
def _s3() -> S3Client:
    return cast("S3Client", aws_clients.client("s3"))


@cache
def _presigner() -> S3Client:
    """A client that presigns with SigV4, on the bucket's regional virtual host in AWS (an endpoint set in the
    environment, such as the local runtime's edge, keeps its own addressing)."""
    if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        return cast("S3Client", aws_clients.client("s3", signature_version="s3v4"))
    return cast("S3Client", aws_clients.client("s3", signature_version="s3v4", s3={"addressing_style": "virtual"}))


def script_key(script_url: str, bucket: str) -> str:
    """The object key a script-url names, which must be under scripts/ in the deployment's bucket."""
    if script_url.startswith("s3://"):
        url_bucket, _, key = script_url.removeprefix("s3://").partition("/")
        if url_bucket != bucket:
            raise _not_allowed(f"scripts must be in this deployment's bucket s3://{bucket}/, not s3://{url_bucket}/")
    else:
        key = script_url
    if not key.startswith(SCRIPTS_PREFIX):
        raise _not_allowed(f"scripts must be under {SCRIPTS_PREFIX} in s3://{bucket}/")
    return key


def _not_allowed(message: str) -> InvalidRequest:
    return InvalidRequest("script-url is not allowed", [{"field": "body.script-url", "message": message}])


def script_exists(bucket: str, key: str) -> bool:
    """Whether longrun can read the script. Reading is all the workflow may do under scripts/ (it may not list the
    bucket), so S3 answers a missing script with 403, as it does one longrun may not read: either way there is no
    script to run."""
    try:
        _s3().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound", "403", "AccessDenied", "Forbidden"):
            return False
        raise
    return True


def output_prefix(base: str, task_id: str) -> str:
    return f"{base}/{task_id}"


def output_location(bucket: str, base: str, task_id: str) -> str:
    """The S3 URL under which a task's devices' output is kept (what its result summary points at)."""
    return f"s3://{bucket}/{output_prefix(base, task_id)}/"


def read_heads(urls: list[str]) -> dict[str, tuple[str, bool]]:
    """The first HEAD_BYTES of each s3:// object, and whether there is more; an object that is not there (SSM
    stores nothing for an empty stream) is left out. Read in parallel."""

    def head(url: str) -> tuple[str, tuple[str, bool] | None]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        try:
            body = _s3().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEAD_BYTES}")["Body"].read()
        except ClientError as error:
            if error.response["Error"]["Code"] in ("NoSuchKey", "404", "InvalidRange"):
                return url, None
            raise
        return url, (body[:HEAD_BYTES].decode("utf-8", errors="replace"), len(body) > HEAD_BYTES)

    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        return {url: found for url, found in pool.map(head, urls) if found is not None}


def _location(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def output_download_url(url: str) -> str | None:
    """A presigned GET URL (DOWNLOAD_URL_SECONDS) of a device's whole output stream at the s3:// ``url``; None when
    S3 holds nothing there (SSM stores nothing for an empty stream)."""
    bucket, key = _location(url)
    try:
        _s3().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in _MISSING:
            return None
        raise
    return _presigner().generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=DOWNLOAD_URL_SECONDS
    )


def upload_key(sha256: str) -> str:
    """Where an uploaded script is kept: content-addressed, so a script is stored once and never changes."""
    return f"{UPLOADS_PREFIX}{sha256}"


def offer_upload(bucket: str, request: ScriptDigest, now: datetime) -> dict[str, Any]:
    """The script-url of the script ``request`` describes, and, unless the bucket already holds it, a presigned PUT
    URL that accepts exactly that content: its length and SHA-256 are signed, so S3 refuses any other body (the
    contract's ScriptLocation)."""
    key = upload_key(request.sha256)
    script_url = f"s3://{bucket}/{key}"
    if _holds(bucket, key, request):
        return {"script-url": script_url, "upload": None}
    checksum = base64.b64encode(bytes.fromhex(request.sha256)).decode()
    url = _presigner().generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ChecksumSHA256": checksum, "ContentLength": request.size},
        ExpiresIn=UPLOAD_URL_SECONDS,
    )
    values = {
        "Content-Length": str(request.size),
        "x-amz-checksum-sha256": checksum,
        "x-amz-sdk-checksum-algorithm": "SHA256",  # signed by some botocore versions
    }
    signed = _signed_headers(url)
    if not {"content-length", "x-amz-checksum-sha256"} <= set(signed) <= {name.lower() for name in values}:
        raise RuntimeError(f"the upload URL signs {sorted(signed)}: not exactly the body's length and checksum")
    headers = {name: value for name, value in values.items() if name.lower() in signed}
    expires_at = now + timedelta(seconds=UPLOAD_URL_SECONDS)
    upload = {"url": url, "method": "PUT", "headers": headers, "expiresAt": json_time(expires_at)}
    return {"script-url": script_url, "upload": upload}


def _signed_headers(url: str) -> list[str]:
    """The headers a presigned URL signed, but the host (the URL names it): the client must send each, with the
    value it was signed with."""
    signed = parse_qs(urlsplit(url).query).get("X-Amz-SignedHeaders", [""])[0].split(";")
    return [name for name in signed if name and name != "host"]


def _holds(bucket: str, key: str, request: ScriptDigest) -> bool:
    """Whether the bucket holds this script already: an object at its key with its length (and its SHA-256, when
    S3 kept one)."""
    try:
        found = _s3().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if error.response["Error"]["Code"] in (*_MISSING, "403", "AccessDenied", "Forbidden"):
            return False
        raise
    checksum = found.get("ChecksumSHA256")
    expected = base64.b64encode(bytes.fromhex(request.sha256)).decode()
    return bool(found.get("ContentLength") == request.size and checksum in (None, expected))
