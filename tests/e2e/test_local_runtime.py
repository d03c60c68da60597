"""The local runtime as `make run` uses it: it stops everything it started."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from local_runtime import fleet_process, template
from local_runtime.api_callers import LOCAL_SECRET
from local_runtime.identities import Identities
from local_runtime.lambdas import function_site
from tests.conftest import ROOT
from tests.e2e.conftest import BUCKET, RESOURCE, LocalRuntimeProcess, Reply, Service

pytestmark = pytest.mark.e2e


def test_sigterm_stops_the_runtime_and_every_running_script() -> None:
    runtime = LocalRuntimeProcess.start()
    try:
        task = runtime.service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": "scripts/slow.sh"})
        deadline = time.monotonic() + 15
        while len(runtime.service.scripts_running()) < 2:
            assert time.monotonic() < deadline, "the scripts did not start"
            time.sleep(0.1)
        assert runtime.service.request("GET", f"{RESOURCE}/{task['id']}").body["status"] == "IN_PROGRESS"
    finally:
        runtime.stop()  # asserts a clean exit and that no script survived
    text = runtime.log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "longrun local runtime stopped" in text


def test_a_runtime_killed_outright_leaves_no_script_running() -> None:
    """The fleet runs in a process of its own: when the runtime's process dies without stopping it, the fleet still
    kills its scripts and ends."""
    runtime = LocalRuntimeProcess.start()
    assert runtime.service.process is not None
    everything = runtime.service.process.children(recursive=True)
    try:
        runtime.service.submit(**{"device-ids": ["web-1", "web-2"], "script-url": "scripts/slow.sh"})
        deadline = time.monotonic() + 15
        while len(runtime.service.scripts_running()) < 2:
            assert time.monotonic() < deadline, "the scripts did not start"
            time.sleep(0.1)
        scripts = runtime.service.scripts_running()
        everything = runtime.service.process.children(recursive=True)
        fleet = [p for p in runtime.service.process.children() if fleet_process.MODULE in p.cmdline()]
        assert len(fleet) == 1
        runtime.runtime.process.kill()
        runtime.runtime.process.wait()
        _, alive = psutil.wait_procs(scripts + fleet, timeout=20)
        assert not alive, f"outlived the runtime: {alive}"
    finally:
        for process in everything:  # the functions' execution environments, whatever happened
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_a_commands_end_records_devices_whose_own_events_were_lost() -> None:
    runtime = LocalRuntimeProcess.start("--drop-events", "invocation")
    try:
        service = runtime.service
        task = service.submit(**{"device-ids": ["web-1", "db-1", "nope", 3], "script-url": "scripts/fail-on-db.sh"})
        done = service.wait(task["id"])
        assert done["status"] == "COMPLETE"
        assert done["deviceCounts"] == {**done["deviceCounts"], "SUCCESS": 2, "FAILED": 2, "RUNNING": 0}
        devices = {d["device-id"]: d for d in service.request("GET", f"{RESOURCE}/{task['id']}/result").body["devices"]}
        assert devices["db-1"]["exitCode"] == 3 and devices["web-1"]["stdout"]["head"] == "patched web-1\n"
    finally:
        runtime.stop()


LAMBDA_VARIABLES = {
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_EXECUTION_ENV",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_XRAY_CONTEXT_MISSING", "LAMBDA_TASK_ROOT", "LANG", "PATH", "PYTHONPATH", "TZ", "_HANDLER",
    "_X_AMZN_TRACE_ID", "AWS_ENDPOINT_URL",
}  # fmt: skip
"""What Lambda sets in every function's environment (and the edge's address, the local runtime's network)"""


def test_each_function_runs_in_processes_of_its_own_with_only_its_environment(service: Service) -> None:
    task = service.wait(service.submit()["id"])
    assert task["status"] == "COMPLETE"
    stack = template.load(ROOT, "longrun-local", "us-east-1")
    assert service.process is not None
    environments = [
        p for p in service.process.children(recursive=True) if any("lambda_bootstrap" in a for a in p.cmdline())
    ]
    seen: dict[str, set[str]] = {}
    for process in environments:
        environ = process.environ()
        function = next(f for f in stack.functions.values() if f.name == environ["AWS_LAMBDA_FUNCTION_NAME"])
        assert set(environ) - LAMBDA_VARIABLES == set(function.environment), function.logical_id
        seen.setdefault(function.logical_id, set()).add(environ["AWS_ACCESS_KEY_ID"])
    assert {"ApiFunction", "StartRunFunction", "RunBatchFunction", "CommandEventsFunction"} <= set(seen)
    keys = [key for found in seen.values() for key in found]
    assert all(len(found) == 1 for found in seen.values()) and len(set(keys)) == len(seen)  # a role each
    assert "test" not in keys  # not the runtime's own credentials


REPORT = re.compile(
    r"(?P<function>\w+) REPORT RequestId: [0-9a-f-]{36}\tDuration: [0-9.]+ ms\tBilled Duration: \d+ ms\t"
    r"Memory Size: (?P<memory>\d+) MB\tMax Memory Used: \d+ MB(?P<init>\tInit Duration: [0-9.]+ ms)?"
)


def test_the_runtime_log_reports_each_invocation_as_lambda_does(service: Service) -> None:
    """Init (once per execution environment) and duration per invocation, as Lambda's REPORT line; and each
    environment's output in a log stream of its own."""
    service.wait(service.submit()["id"])
    assert service.log is not None
    reports = [found.groupdict() for found in REPORT.finditer(service.log.read_text())]
    cold = {r["function"] for r in reports if r["init"]}
    warm = {r["function"] for r in reports if not r["init"]}
    assert {"ApiFunction", "StartRunFunction", "RunBatchFunction", "CommandEventsFunction"} <= cold
    assert "ApiFunction" in warm  # a warm environment is reused, without paying init again
    assert {r["memory"] for r in reports if r["function"] == "CommandEventsFunction"} == {"128"}
    streams = list((service.log.parent / "logs" / "longrun-local-ApiFunction").glob("*.log"))
    assert streams and "START RequestId" in streams[0].read_text()


def test_a_permission_missing_from_the_template_is_refused_naming_who_what_and_where(tmp_path: Path) -> None:
    """Removing a permission the code needs makes the calls that need it fail with AccessDenied, as in AWS."""
    text = (ROOT / "template.yaml").read_text()
    granted = "              Action: ssm:SendCommand\n"
    assert granted in text
    (tmp_path / "template.yaml").write_text(text.replace(granted, "              Action: ssm:ListDocuments\n"))
    runtime = LocalRuntimeProcess.start("--template", str(tmp_path / "template.yaml"))
    try:
        task = runtime.service.submit(**{"device-ids": ["web-1"], "script-url": "scripts/hello.sh"})
        done = runtime.service.wait(task["id"], timeout=30)
    finally:
        refused = runtime.stop(refusals_expected=True)
    assert done["status"] == "FAILED"
    assert done["statusReason"] == (
        "the workflow failed: States.ExceedToleratedFailureThreshold:"
        " The specified tolerated failure threshold was exceeded"
    )
    document = "arn:aws:ssm:us-east-1::document/AWS-RunRemoteScript"
    assert {(d["principal"], d["action"], d["resource"]) for d in refused} == {
        ("RunBatchFunction", "ssm:SendCommand", document)
    }
    assert refused[0]["message"] == (
        "User: arn:aws:sts::123456789012:assumed-role/longrun-local-RunBatchFunctionRole/longrun-local-RunBatchFunction"
        f" is not authorized to perform: ssm:SendCommand on resource: {document}"
        " because no identity-based policy allows the ssm:SendCommand action"
    )


def test_s3_answers_a_missing_key_403_to_a_role_that_may_not_list_the_bucket(service: Service) -> None:
    devices = Identities(template.load(ROOT, "longrun-local", "us-east-1")).devices
    as_device = service.aws(
        "s3", access_key=devices.access_key, secret_key=devices.secret_key, session_token=devices.session_token
    )
    assert as_device.get_object(Bucket=BUCKET, Key="scripts/hello.sh")["Body"].read().startswith(b"#!/bin/sh")
    for missing in ("scripts/not-there.sh",):
        with pytest.raises(ClientError) as refused:
            as_device.get_object(Bucket=BUCKET, Key=missing)
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as missing_for_admin:
        service.aws("s3").get_object(Bucket=BUCKET, Key="scripts/not-there.sh")
    assert missing_for_admin.value.response["Error"]["Code"] == "NoSuchKey"
    with pytest.raises(ClientError) as not_theirs:
        as_device.list_objects_v2(Bucket=BUCKET)
    assert not_theirs.value.response["Error"]["Code"] == "AccessDenied"
    service.take_denials()  # these refusals were the point


def test_a_function_imports_only_what_its_layer_requires_and_boto3(service: Service) -> None:
    """As in Lambda: the functions' packages are the layer's requirements and boto3, nothing of the dev tools."""
    # the site the session's runtime installed for template.yaml's functions (built already: found, not rebuilt)
    site = function_site(
        template.load(ROOT, "longrun-local", "us-east-1"), ROOT / ".local-runtime" / "function-packages"
    )
    for module, importable in (("aws_lambda_powertools", True), ("pydantic", True), ("boto3", True), ("moto", False)):
        probe = subprocess.run(
            [sys.executable, "-S", "-c", f"import {module}"],
            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=False,
        )
        assert (probe.returncode == 0) is importable, (module, probe.stderr)


def test_a_method_over_the_stages_throttle_answers_429_with_retry_after() -> None:
    runtime = LocalRuntimeProcess.start(
        "--parameter", "ApiThrottlingBurstLimit=3", "--parameter", "ApiThrottlingRateLimit=1"
    )
    try:
        replies = [runtime.service.request("PUT", RESOURCE) for _ in range(5)]  # the resource's ANY: no function
        other = runtime.service.request("GET", f"{RESOURCE}/0d1c2b3a-0000-4000-8000-000000000001")
    finally:
        runtime.stop()
    assert [reply.status for reply in replies[:3]] == [405, 405, 405]
    throttled = [reply for reply in replies[3:] if reply.status == 429]
    assert throttled, [reply.status for reply in replies]  # one token a second: the last two cannot both pass
    assert throttled[0].headers["Retry-After"] == "1"
    assert throttled[0].headers["Content-Type"] == "application/problem+json"
    assert throttled[0].body["status"] == 429
    assert other.status == 404  # each method has a bucket of its own


def test_signatures_are_verified_and_the_switch_refuses_unsigned_requests() -> None:
    runtime = LocalRuntimeProcess.start("--require-signature")
    service = runtime.service
    body = json.dumps({"device-ids": ["web-1"], "script-url": "scripts/hello.sh"}).encode()
    url = service.api + RESOURCE
    try:
        unsigned = service.request("GET", RESOURCE)
        signed = service.request("GET", RESOURCE, caller="local-operator")
        unknown = service.request("GET", RESOURCE, caller="nobody")
        wrong = _send(service, "GET", url, None, _signed("local-operator", "not-the-secret", "GET", url, None))
        tampered = _send(
            service,
            "POST",
            url,
            body.replace(b"web-1", b"web-2"),
            _signed("local-operator", LOCAL_SECRET, "POST", url, body),
        )
        accepted = _send(service, "POST", url, body, _signed("local-operator", LOCAL_SECRET, "POST", url, body))
    finally:
        runtime.stop()
    assert (unsigned.status, unsigned.body["title"]) == (403, "Missing Authentication Token")
    assert unsigned.headers["Content-Type"] == "application/problem+json"
    assert signed.status == 200
    assert (unknown.status, unknown.body["title"]) == (403, "The security token included in the request is invalid.")
    assert wrong.status == 403 and wrong.body["title"].startswith("The request signature we calculated does not match")
    assert tampered.status == 403 and tampered.body["title"] == wrong.body["title"]
    assert accepted.status == 202
    (callers,) = [line for line in runtime.log.read_text().splitlines() if line.startswith("  callers")]
    assert "local-developer" in callers and "local-operator" in callers and "unsigned requests refused (403)" in callers


def _signed(caller: str, secret: str, method: str, url: str, body: bytes | None) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body or b"", headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(caller, secret), "execute-api", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def _send(service: Service, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), json.loads(response.read() or b"null"))
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), json.loads(error.read() or b"null"))
