"""Where a task's script lives and where its devices' output goes, in the deployment's own bucket."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

from longrun.errors import InvalidRequest
from longrun.models import FieldError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SCRIPTS_PREFIX = "scripts/"


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
    try:
        _s3().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def output_prefix(base: str, task_id: str) -> str:
    return f"{base}/{task_id}"
