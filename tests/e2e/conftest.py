"""End-to-end tests drive the service over HTTP exactly as a client would: the API in LONGRUN_API_URL when it is
set (with the edge in AWS_ENDPOINT_URL), otherwise a local runtime started for the session on free ports.

Against the local runtime, any call a function, the state machine or a device made that IAM refused fails the test
that caused it, with AWS's message (who, which action, which resource); and the grants no test used are reported at
the end of the session (see iam_report.py)."""

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

import boto3
import psutil
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_runtime import fleet_process
from local_runtime.api_callers import DEFAULT_CALLERS, LOCAL_SECRET
from local_runtime.launcher import RuntimeProcess
from tests.e2e import iam_report

RESOURCE = "/device-management/script-execution"
BUCKET = "longrun-local-scriptsbucket"
"""The scripts bucket of the local stack (stack name longrun-local)"""
DEVICES = ("web-1", "web-2", "ec2:web-3", "db-1", "3")
"""The simulated fleet: hybrid managed nodes, and web-3 an EC2 instance"""
UNMANAGED = ("lab-9",)
CALLERS = (*DEFAULT_CALLERS, "someone-else", "pager", "mallory", "hook-owner", "alice", "deployer~ci-42")
"""The callers the session's runtime knows (besides the default one, which unsigned requests act as)"""
"""EC2 instances tagged as devices whose SSM Agent is not registered"""


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
    log: Path | None = None
    """The local runtime's log (its functions' log streams are beside it, under logs/)"""
    websocket_url: str | None = None
    """The WebSocket API's URL, as the stack's WebSocketUrl output: wss://<api>.execute-api.<region>.amazonaws.com/v1"""

    @property
    def origin(self) -> str:
        """scheme://host[:port] of the API"""
        parts = urlsplit(self.api)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def base_path(self) -> str:
        """The path before the API's own paths on its URL (the stage)."""
        return urlsplit(self.api).path.rstrip("/")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        caller: str | None = None,
        **headers: str,
    ) -> Reply:
        """A request for an API path (/device-management/...), or for a link the API gave (/v1/device-management/...),
        which resolves on the API's host as a browser would resolve it; signed with SigV4 as ``caller`` if given
        (one of the local runtime's callers), else unsigned (the default caller)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        url = self.api + path
        if path.startswith("http"):
            url = path
        elif self.base_path and path.startswith(self.base_path + "/"):
            url = self.origin + path
        if caller is not None:
            headers = sign_as(caller, method, url, data, headers)
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

    def devices(self, task_id: str) -> dict[str | int, dict[str, Any]]:
        """Each device's result, by device id, from every page of the task's result."""
        found: dict[str | int, dict[str, Any]] = {}
        path = f"{RESOURCE}/{task_id}/result"
        while True:
            page = self.request("GET", path)
            assert page.status == 200, page.body
            found.update({device["device-id"]: device for device in page.body["devices"]})
            if "next-token" not in page.body:
                return found
            path = f"{RESOURCE}/{task_id}/result?next-token={page.body['next-token']}"

    def aws(self, name: str, **credentials: str) -> Any:
        """A client of the AWS edge, as the account's administrator unless other credentials are given."""
        return boto3.client(
            name,
            endpoint_url=self.edge,
            region_name="us-east-1",
            aws_access_key_id=credentials.get("access_key", "test"),
            aws_secret_access_key=credentials.get("secret_key", "test"),
            aws_session_token=credentials.get("session_token"),
        )

    def local(self, report: str) -> dict[str, Any]:
        """One of the local runtime's own reports at the edge: meter, iam."""
        with urllib.request.urlopen(f"{self.edge}/_local/{report}", timeout=10) as reply:
            found: dict[str, Any] = json.load(reply)
        return found

    def iam(self) -> dict[str, Any] | None:
        """The local runtime's IAM report: grants used, denials, unused grants (None against AWS)."""
        return self.local("iam") if self.process is not None else None

    def take_denials(self) -> list[dict[str, str]]:
        """The calls IAM refused since the last time, which are then forgotten."""
        report = self.iam()
        if report is None:
            return []
        request = urllib.request.Request(self.edge + "/_local/iam/denials", method="DELETE")
        urllib.request.urlopen(request, timeout=10).close()
        return list(report["denials"])

    def scripts_running(self) -> list[psutil.Process]:
        """The device scripts this runtime still has running (not its functions' execution environments)."""
        if self.process is None:
            return []
        return [p for p in self.process.children(recursive=True) if _is_alive(p) and not _is_runtime_part(p)]


def sign_as(caller: str, method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
    """The headers with a SigV4 signature for execute-api by ``caller`` (its access key id is its name)."""
    request = AWSRequest(method=method, url=url, data=data or b"", headers=headers)
    SigV4Auth(Credentials(caller, LOCAL_SECRET), "execute-api", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _is_alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_runtime_part(process: psutil.Process) -> bool:
    """One of the runtime's execution environments (lambda_bootstrap.py, or a web app behind Lambda Web Adapter), or
    the fleet's process."""
    try:
        return "AWS_LAMBDA_FUNCTION_NAME" in process.environ() or fleet_process.MODULE in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@dataclass
class LocalRuntimeProcess:
    """``python -m local_runtime`` on free ports, as ``make run`` starts it."""

    runtime: RuntimeProcess
    service: Service
    own_template: bool = False
    """It deploys another template than template.yaml: its grants are not template.yaml's"""

    @property
    def log(self) -> Path:
        return self.runtime.log

    @classmethod
    def start(cls, *options: str) -> LocalRuntimeProcess:
        runtime = RuntimeProcess.start(
            "--devices",
            ",".join(DEVICES),
            "--unmanaged",
            ",".join(UNMANAGED),
            "--log-level",
            "INFO",
            "--callers",
            ",".join(CALLERS),
            *options,
        )
        process = psutil.Process(runtime.process.pid)
        service = Service(
            api=runtime.api, edge=runtime.edge, process=process, log=runtime.log, websocket_url=runtime.websocket
        )
        return cls(runtime, service, "--template" in options)

    def stop(self, refusals_expected: bool = False) -> list[dict[str, str]]:
        """SIGTERM; the runtime must exit cleanly and leave no script running, and IAM must have refused nothing
        (unless expected). Answers what IAM refused."""
        report = self.service.iam() or {"denials": [], "unused": []}
        if not self.own_template:
            iam_report.UNUSED_PER_RUNTIME.append({tuple(grant) for grant in report["unused"]})
        children = self.service.process.children(recursive=True) if self.service.process else []
        code = self.runtime.stop()
        print(f"local runtime log: {self.log}")
        assert code == 0, self.log.read_text()[-5000:]
        assert not [p for p in children if _is_alive(p)], "scripts outlived the runtime"
        assert refusals_expected or not report["denials"], iam_report.refused(report["denials"])
        return list(report["denials"])


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    if os.environ.get("LONGRUN_API_URL"):
        yield Service(
            api=os.environ["LONGRUN_API_URL"].rstrip("/"),
            edge=os.environ.get("AWS_ENDPOINT_URL", ""),
            process=None,
            websocket_url=os.environ.get("LONGRUN_WEBSOCKET_URL"),
        )
        return
    # Every test on it also lives with DynamoDB refusing a share of writes as conflicting, as under load in AWS.
    # Webhook deliveries are retried after 1 s instead of the schedule's 5 s, 5 min, ...
    # device-1..device-60 besides: enough for a task of several commands (test_rolling_schedule.py)
    runtime = LocalRuntimeProcess.start(
        "--transaction-conflict-rate", "0.05", "--parameter", "WebhookRetrySchedule=0,1,1,1", "--fleet-size", "60"
    )
    try:
        yield runtime.service
    finally:
        runtime.stop()


@pytest.fixture(autouse=True)
def nothing_refused(request: pytest.FixtureRequest) -> Iterator[None]:
    """A call IAM refused while a test ran on the session's runtime fails that test, naming who, what and which
    resource, as AWS's AccessDenied does."""
    yield
    if "service" in request.fixturenames:
        denials = request.getfixturevalue("service").take_denials()
        assert not denials, iam_report.refused(denials)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    text = iam_report.summary()
    if text:
        terminalreporter.write_sep("-", "IAM grants no test used")
        terminalreporter.write_line(text)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A grant of template.yaml that no test used, and that is not known to be unusable locally, fails a full run:
    either a test is missing or the grant is broader than the code needs."""
    options = session.config.option
    whole_suite = not options.keyword and not options.markexpr and session.config.args in ([], ["tests"], ["tests/e2e"])
    unexpected = iam_report.unexpected()
    if whole_suite and unexpected and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
