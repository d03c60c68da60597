"""What S3 checks of a request's body before it acts on it, which moto does not: that the body is as long as its
Content-Length says, and that it matches the digests the request gives for it (Content-MD5, an
``x-amz-checksum-<algorithm>`` header, the payload hash ``x-amz-content-sha256`` of a header-signed request).

Followed: S3 API reference, "Error responses" (BadDigest, InvalidDigest, IncompleteBody), PutObject and UploadPart
(``x-amz-checksum-crc32``, ``-sha1``, ``-sha256``: base64 of the digest), "Signature Calculations for the
Authorization Header" (x-amz-content-sha256); S3 User Guide, "Checking object integrity for data uploads".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Callable, Mapping

from local_runtime.sigv4 import Refusal

CHECKSUMS: dict[str, Callable[[bytes], bytes]] = {
    "sha256": lambda body: hashlib.sha256(body).digest(),
    "sha1": lambda body: hashlib.sha1(body).digest(),  # noqa: S324 - S3's own choice of checksum, not security
    "crc32": lambda body: zlib.crc32(body).to_bytes(4, "big"),
}
"""The checksums S3 computes over a body, by the header's suffix (CRC32C and CRC64NVME are not checked locally)"""
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check(method: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> None:
    """Refuses (``Refusal``) a body that does not match what the request says of it; ``headers`` by lower-case
    name, as the client sent them."""
    if "aws-chunked" in headers.get("content-encoding", "") or headers.get("x-amz-content-sha256", "").startswith(
        "STREAMING-"
    ):
        return  # the body is in chunks, each signed or followed by its checksum: moto decodes it
    declared_length = headers.get("content-length")
    if declared_length and declared_length.isdigit() and int(declared_length) != len(body):
        raise incomplete_body()
    payload_hash = headers.get("x-amz-content-sha256", "")
    if _HEX_SHA256.match(payload_hash) and hashlib.sha256(body).hexdigest() != payload_hash:
        raise Refusal(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ClientComputedContentSHA256=payload_hash,
            S3ComputedContentSHA256=hashlib.sha256(body).hexdigest(),
        )
    if "content-md5" in headers:
        expected = _digest(headers["content-md5"], 16)
        if expected is None:
            raise Refusal(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        if hashlib.md5(body).digest() != expected:  # noqa: S324 - S3's integrity check, not security
            raise Refusal(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
    if method == "PUT" or (method == "POST" and "uploadId" not in query):
        # (CompleteMultipartUpload's checksum headers describe the whole object, not the request's body)
        for algorithm, compute in CHECKSUMS.items():
            value = headers.get(f"x-amz-checksum-{algorithm}")
            if value is None:
                continue
            calculated = compute(body)
            if _digest(value, len(calculated)) is None:
                raise Refusal(400, "InvalidRequest", f"Value for x-amz-checksum-{algorithm} header is invalid.")
            if _digest(value, len(calculated)) != calculated:
                raise Refusal(
                    400, "BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum."
                )


def incomplete_body() -> Refusal:
    return Refusal(
        400, "IncompleteBody", "You did not provide the number of bytes specified by the Content-Length HTTP header."
    )


def checksum_algorithm(headers: Mapping[str, str]) -> str | None:
    """The algorithm of the ``x-amz-checksum-<algorithm>`` header a request carries, if any (what S3 records with
    the object; moto records a checksum only when the SDK's ``x-amz-sdk-checksum-algorithm`` header names it)."""
    for name in headers:
        algorithm = name.removeprefix("x-amz-checksum-")
        if algorithm != name and algorithm not in ("algorithm", "type", "mode"):
            return algorithm.upper()
    return None


def _digest(value: str, length: int) -> bytes | None:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == length else None
