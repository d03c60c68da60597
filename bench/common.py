"""What the benchmarks share: a client for the API and the edge, the local runtime, and where results go."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from local_runtime.launcher import ROOT, RuntimeProcess

RESOURCE = "/device-management/script-execution"
RESULTS = ROOT / "bench" / "results"
FIGURES = ROOT / "docs" / "benchmarks"
PRICES: dict[str, Any] = json.loads((ROOT / "bench" / "prices.json").read_text())


def request(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers)) as reply:
        text = reply.read()
    return json.loads(text) if text else None


@dataclass
class Local:
    """The local runtime, started for one benchmark."""

    runtime: RuntimeProcess

    @classmethod
    def start(cls, *options: str) -> Local:
        return cls(RuntimeProcess.start(*options, timeout=120))

    def stop(self) -> None:
        self.runtime.stop(timeout=60)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.runtime.edge,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def submit(self, **fields: Any) -> dict[str, Any]:
        return dict(request("POST", self.runtime.api + RESOURCE, fields))

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(request("GET", f"{self.runtime.api}{RESOURCE}/{task_id}"))

    def wait(self, task_id: str, poll: float = 0.5, timeout: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            task = self.get(task_id)
            if task["status"] not in ("SUBMITTED", "IN_PROGRESS", "CANCELLING"):
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['status']}")
            time.sleep(poll)

    def devices(self, task_id: str) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = []
        token = None
        while True:
            query = "?limit=100" + (f"&next-token={token}" if token else "")
            page = request("GET", f"{self.runtime.api}{RESOURCE}/{task_id}/result{query}")
            devices += page["devices"]
            token = page.get("next-token")
            if not token:
                return devices

    def meter(self, reset: bool = False) -> dict[str, Any]:
        return dict(request("POST" if reset else "GET", self.runtime.edge + "/_local/meter"))

    def upload_script(self, name: str, text: str) -> str:
        bucket = "longrun-local-scriptsbucket"
        self.client("s3").put_object(Bucket=bucket, Key=f"scripts/{name}", Body=text.encode())
        return f"scripts/{name}"


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
