"""End-to-end tests drive the service over HTTP exactly as a client would: the API in LONGRUN_API_URL when it is
set (with the edge in AWS_ENDPOINT_URL), otherwise a local runtime started for the session on free ports."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from local_runtime.launcher import RuntimeProcess

RESOURCE = "/device-management/script-execution"
DEVICES = ("web-1", "web-2", "ec2:web-3", "db-1", "3")
"""The simulated fleet: hybrid managed nodes, and web-3 an EC2 instance"""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Service:
    api: str
    """The API's base URL, as the stack's ApiUrl output: https://<api>.execute-api.<region>.amazonaws.com/v1"""
    edge: str
    process: psutil.Process | None

    @property
    def base_path(self) -> str:
        """The path before the API's own paths on its URL (the stage)."""
        return urlsplit(self.api).path.rstrip("/")

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None, **headers: str) -> Reply:
        """A request for an API path (/device-management/...), or for a link the API gave (/v1/device-management/...),
        which resolves on the API's host as a browser would resolve it."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        url = self.api + path
        if self.base_path and path.startswith(self.base_path + "/"):
            parts = urlsplit(self.api)
            url = f"{parts.scheme}://{parts.netloc}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, reply_headers, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, reply_headers, text = error.code, dict(error.headers), error.read()
        return Reply(status, reply_headers, json.loads(text) if text else None)

    def submit(self, **fields: Any) -> dict[str, Any]:
        reply = self.request("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh", **fields})
        assert reply.status == 202, reply.body
        return dict(reply.body)

    def wait(
        self,
        task_id: str,
        until: tuple[str, ...] = ("COMPLETE", "FAILED", "CANCELLED", "TIMED_OUT"),
        timeout: float = 60,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.request("GET", f"{RESOURCE}/{task_id}")
            assert reply.status == 200, reply.body
            if reply.body["status"] in until:
                return dict(reply.body)
            assert time.monotonic() < deadline, f"task stayed {reply.body['status']}: {reply.body}"
            time.sleep(0.2)

    def scripts_running(self) -> list[psutil.Process]:
        """The device scripts this runtime still has running (not its functions' execution environments)."""
        if self.process is None:
            return []
        return [p for p in self.process.children(recursive=True) if _is_alive(p) and not _is_lambda(p)]


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_lambda(process: psutil.Process) -> bool:
    try:
        return any(part.endswith("lambda_bootstrap.py") for part in process.cmdline())
    except psutil.NoSuchProcess:
        return False


@dataclass
class LocalRuntimeProcess:
    """``python -m local_runtime`` on free ports, as ``make run`` starts it."""

    runtime: RuntimeProcess
    service: Service

    @property
    def log(self) -> Path:
        return self.runtime.log

    @classmethod
    def start(cls, *options: str) -> LocalRuntimeProcess:
        runtime = RuntimeProcess.start("--devices", ",".join(DEVICES), "--log-level", "INFO", *options)
        process = psutil.Process(runtime.process.pid)
        return cls(runtime, Service(api=runtime.api, edge=runtime.edge, process=process))

    def stop(self) -> None:
        """SIGTERM; the runtime must exit cleanly and leave no script running."""
        children = self.service.process.children(recursive=True) if self.service.process else []
        code = self.runtime.stop()
        print(f"local runtime log: {self.log}")
        assert code == 0, self.log.read_text()[-5000:]
        assert not [p for p in children if _is_alive(p)], "scripts outlived the runtime"


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    if os.environ.get("LONGRUN_API_URL"):
        yield Service(
            api=os.environ["LONGRUN_API_URL"].rstrip("/"), edge=os.environ.get("AWS_ENDPOINT_URL", ""), process=None
        )
        return
    runtime = LocalRuntimeProcess.start()
    try:
        yield runtime.service
    finally:
        runtime.stop()
