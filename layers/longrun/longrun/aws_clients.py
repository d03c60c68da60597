"""How the domain makes its AWS clients: boto3's, configured by the environment (region, credentials, any
``AWS_ENDPOINT_URL``), one at a time.

boto3 is imported when the first client is made, not with the modules that make them: a request answered before it
reaches AWS (the API refusing an invalid body) does not pay for boto3's import, about 200 ms of a cold start. Right
after that import, everything alive is moved out of the garbage collector's generations, as a function's init ends
(longrun.cold_start), so that the collections building the client's model triggers do not walk boto3's modules again
and again.
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

_MAKING = threading.Lock()
"""boto3 must not make two clients at once (its default session is made by the first), and functions make them from
several threads"""


def client(service: str, endpoint_url: str | None = None, **config: Any) -> Any:
    """A new client of ``service``; ``config``: botocore's Config options (``retries``, ``signature_version``,
    ``s3``)."""
    with _MAKING:
        first = "boto3" not in sys.modules
        import boto3
        from botocore.config import Config

        if first:
            gc.freeze()
        settings = Config(**config) if config else None
        return boto3.client(service, endpoint_url=endpoint_url, config=settings)  # type: ignore[call-overload]
