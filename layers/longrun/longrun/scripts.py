"""Where a task's script lives and where its devices' output goes, in the deployment's own bucket."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from longrun.errors import InvalidRequest
from longrun.models import FieldError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCRIPTS_PREFIX = "scripts/"
HEAD_BYTES = 4096
"""How much of each device's stdout and stderr the result shows."""


@cache
def _s3() -> S3Client:
    return boto3.client("s3")


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
    return InvalidRequest("script-url is not allowed", [FieldError(field="body.script-url", message=message)])


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
