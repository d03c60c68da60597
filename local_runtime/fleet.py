"""A simulated device fleet that speaks the part of SSM that longrun uses, and really runs the scripts.

Each device is a managed node (``mi-`` id) tagged with its device id. ``SendCommand`` with AWS-RunRemoteScript
downloads the script from S3 into the device's own working directory for that command and runs its command line
in a subprocess (its own process group) with ``DEVICE_ID`` set, at most MaxConcurrency devices at a time. stdout
and stderr go to S3 under the command's output prefix, as the SSM agent would put them; executionTimeout and
CancelCommand kill the process group. Each finished invocation is announced with the same EventBridge event SSM
sends ("EC2 Command Invocation Status-change Notification").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3

log = logging.getLogger("local_runtime.fleet")
OUTPUT_CONTENT_CHARS = 24_000  # what GetCommandInvocation returns of each stream, as in SSM
PLUGIN_PATH = "awsrunShellScript/runShellScript"
FLEET_ACCESS_KEY = "LOCALFLEETAGENT"
"""The devices' agents sign with this key, so the meter tells their S3 requests from the service's."""
FINAL = ("Success", "Failed", "TimedOut", "Cancelled")
SPAWN_LOCK = threading.Lock()
"""Writing a script and starting a process never overlap: a process forked while another thread still has a
script open for writing would hold it open, and exec'ing that script would fail with "Text file busy"."""


class FleetError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def node_id_for(device_id: str) -> str:
    return "mi-" + hashlib.sha256(device_id.encode()).hexdigest()[:17]


def _iso(moment: float | None) -> str:
    if moment is None:
        return ""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Invocation:
    node_id: str
    status: str = "Pending"
    status_details: str = "Pending"
    response_code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: str = ""
    stderr: str = ""
    process: subprocess.Popen[bytes] | None = None
    cancel_requested: bool = False

    def cancelled(self) -> bool:
        """Whether CancelCommand (from another thread) asked this invocation to stop."""
        return self.cancel_requested


@dataclass
class Command:
    command_id: str
    document: str
    comment: str
    parameters: dict[str, list[str]]
    requested: float
    max_concurrency: int
    bucket: str | None
    prefix: str
    max_errors: int
    start_within: float
    """TimeoutSeconds: an invocation that has not started this long after the request never does"""
    invocations: dict[str, Invocation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    announced: bool = False

    @property
    def errors(self) -> int:
        return sum(i.status == "Failed" or i.status_details == "ExecutionTimedOut" for i in self.invocations.values())

    @property
    def status(self) -> str:
        statuses = {i.status for i in self.invocations.values()}
        if not statuses <= set(FINAL):
            return "InProgress"
        for status in ("Cancelled", "TimedOut", "Failed"):
            if status in statuses:
                return status
        return "Success"

    def output_key(self, node_id: str, stream: str) -> str:
        prefix = f"{self.prefix}/" if self.prefix else ""
        return f"{prefix}{self.command_id}/{node_id}/{PLUGIN_PATH}/{stream}"


class Fleet:
    def __init__(
        self,
        device_ids: list[str],
        tag_key: str,
        region: str,
        s3_endpoint: str,
        announce: Callable[[dict[str, Any]], object],
        work_dir: Path | None = None,
        drop_device_events: bool = False,
    ) -> None:
        self.devices = {node_id_for(d): d for d in device_ids}
        self.tag_key = tag_key
        self.region = region
        self._announce = announce
        self._commands: dict[str, Command] = {}
        self._s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name=region,
            aws_access_key_id=FLEET_ACCESS_KEY,
            aws_secret_access_key="local",  # noqa: S106 - moto accepts any secret
        )
        self._work_dir = work_dir or Path(tempfile.mkdtemp(prefix="longrun-fleet-"))
        self._owns_work_dir = work_dir is None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._drop_device_events = drop_device_events
        """Fault injection: announce only whole commands' ends, as if every device's own event were lost."""

    # --- the SSM and tagging actions -----------------------------------------------------------

    def handle(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "SendCommand": self.send_command,
            "CancelCommand": self.cancel_command,
            "GetCommandInvocation": self.get_command_invocation,
            "DescribeInstanceInformation": self.describe_instance_information,
            "ListCommands": self.list_commands,
            "ListCommandInvocations": self.list_command_invocations,
            "GetResources": self.get_resources,
        }
        return actions[action](body)

    def send_command(self, body: dict[str, Any]) -> dict[str, Any]:
        node_ids = body.get("InstanceIds") or []
        if body.get("Targets"):
            raise FleetError("ValidationException", "the local fleet takes InstanceIds, not Targets")
        if not 1 <= len(node_ids) <= 50 or len(set(node_ids)) != len(node_ids):
            raise FleetError("ValidationException", "InstanceIds takes 1 to 50 distinct node ids")
        unknown = [n for n in node_ids if n not in self.devices]
        if unknown:
            raise FleetError("InvalidInstanceId", f"not managed nodes of this fleet: {', '.join(unknown)}")
        if body.get("DocumentName") not in ("AWS-RunRemoteScript", "AWS-RunShellScript"):
            raise FleetError("InvalidDocument", f"the local fleet does not run {body.get('DocumentName')}")
        concurrency = str(body.get("MaxConcurrency", "50"))
        command = Command(
            command_id=str(uuid.uuid4()),
            document=body["DocumentName"],
            comment=body.get("Comment", ""),
            parameters=body.get("Parameters", {}),
            requested=time.time(),
            max_concurrency=_share(concurrency, len(node_ids), minimum=1),
            bucket=body.get("OutputS3BucketName"),
            prefix=body.get("OutputS3KeyPrefix", ""),
            max_errors=_share(str(body.get("MaxErrors", "0")), len(node_ids), minimum=0),
            start_within=float(body.get("TimeoutSeconds", 3600)),
            invocations={n: Invocation(node_id=n) for n in node_ids},
        )
        self._commands[command.command_id] = command
        self._start(threading.Thread(target=self._run_command, args=(command,), daemon=True, name="fleet-command"))
        return {
            "Command": {
                "CommandId": command.command_id,
                "DocumentName": command.document,
                "Comment": command.comment,
                "InstanceIds": node_ids,
                "Parameters": command.parameters,
                "RequestedDateTime": command.requested,
                "Status": "Pending",
                "MaxConcurrency": concurrency,
                "MaxErrors": str(body.get("MaxErrors", "0")),
                "TargetCount": len(node_ids),
                "OutputS3BucketName": command.bucket or "",
                "OutputS3KeyPrefix": command.prefix,
            }
        }

    def cancel_command(self, body: dict[str, Any]) -> dict[str, Any]:
        command = self._command(body["CommandId"])
        targets = body.get("InstanceIds") or list(command.invocations)
        with command.lock:
            for node_id in targets:
                invocation = command.invocations.get(node_id)
                if invocation is None or invocation.status in FINAL:
                    continue
                invocation.cancel_requested = True
                if invocation.process is not None:
                    _kill(invocation.process)
        return {}

    def get_command_invocation(self, body: dict[str, Any]) -> dict[str, Any]:
        command = self._command(body["CommandId"])
        invocation = command.invocations.get(body["InstanceId"])
        if invocation is None:
            raise FleetError("InvocationDoesNotExist", "no invocation of this command on that node")
        bucket = command.bucket
        return {
            "CommandId": command.command_id,
            "InstanceId": invocation.node_id,
            "Comment": command.comment,
            "DocumentName": command.document,
            "PluginName": "runShellScript",
            "ResponseCode": invocation.response_code,
            "ExecutionStartDateTime": _iso(invocation.started),
            "ExecutionEndDateTime": _iso(invocation.ended),
            "Status": invocation.status,
            "StatusDetails": invocation.status_details,
            "StandardOutputContent": invocation.stdout[:OUTPUT_CONTENT_CHARS],
            "StandardErrorContent": invocation.stderr[:OUTPUT_CONTENT_CHARS],
            "StandardOutputUrl": self._url(bucket, command.output_key(invocation.node_id, "stdout")),
            "StandardErrorUrl": self._url(bucket, command.output_key(invocation.node_id, "stderr")),
        }

    def list_commands(self, body: dict[str, Any]) -> dict[str, Any]:
        command = self._command(body["CommandId"])
        return {
            "Commands": [
                {
                    "CommandId": command.command_id,
                    "DocumentName": command.document,
                    "Comment": command.comment,
                    "Status": command.status,
                    "RequestedDateTime": command.requested,
                    "TargetCount": len(command.invocations),
                    "ErrorCount": command.errors,
                }
            ]
        }

    def list_command_invocations(self, body: dict[str, Any]) -> dict[str, Any]:
        command = self._command(body["CommandId"])
        return {
            "CommandInvocations": [
                {
                    "CommandId": command.command_id,
                    "InstanceId": invocation.node_id,
                    "Comment": command.comment,
                    "DocumentName": command.document,
                    "Status": invocation.status,
                    "StatusDetails": invocation.status_details,
                }
                for invocation in command.invocations.values()
            ]
        }

    def describe_instance_information(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted: set[str] | None = None
        for item in body.get("Filters", []) + body.get("InstanceInformationFilterList", []):
            if item.get("Key") in ("InstanceIds", "instanceIds"):
                wanted = set(item.get("Values") or item.get("valueSet") or [])
        nodes = [n for n in self.devices if wanted is None or n in wanted]
        return {
            "InstanceInformationList": [
                {
                    "InstanceId": node_id,
                    "PingStatus": "Online",
                    "PlatformType": "Linux",
                    "PlatformName": "longrun local fleet",
                    "ResourceType": "ManagedInstance",
                    "ComputerName": self.devices[node_id],
                    "Name": self.devices[node_id],
                }
                for node_id in nodes
            ]
        }

    def get_resources(self, body: dict[str, Any]) -> dict[str, Any]:
        types = body.get("ResourceTypeFilters") or ["ssm:managed-instance"]
        if "ssm:managed-instance" not in types:
            return {"ResourceTagMappingList": [], "PaginationToken": ""}
        wanted: set[str] | None = None
        for tag_filter in body.get("TagFilters", []):
            if tag_filter["Key"] != self.tag_key:
                return {"ResourceTagMappingList": [], "PaginationToken": ""}
            wanted = set(tag_filter.get("Values") or []) or None
        mappings = [
            {
                "ResourceARN": f"arn:aws:ssm:{self.region}:123456789012:managed-instance/{node_id}",
                "Tags": [{"Key": self.tag_key, "Value": device_id}],
            }
            for node_id, device_id in self.devices.items()
            if wanted is None or device_id in wanted
        ]
        return {"ResourceTagMappingList": mappings, "PaginationToken": ""}

    # --- running ---------------------------------------------------------------------------------

    def _run_command(self, command: Command) -> None:
        slots = threading.Semaphore(command.max_concurrency)
        runners = []
        for invocation in command.invocations.values():
            slots.acquire()
            if self._closing.is_set():
                slots.release()
                break
            runner = threading.Thread(
                target=self._run_invocation, args=(command, invocation, slots), daemon=True, name="fleet-device"
            )
            self._start(runner)
            runners.append(runner)
        for runner in runners:
            runner.join()

    def _start(self, thread: threading.Thread) -> None:
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _run_invocation(self, command: Command, invocation: Invocation, slots: threading.Semaphore) -> None:
        if self._closing.is_set():
            slots.release()
            return
        try:
            self._execute(command, invocation)
        except Exception as error:
            log.exception("device %s failed to run the command", invocation.node_id)
            invocation.stderr += f"\nlocal fleet: {error}"
            self._end(invocation, "Failed", "Failed", -1)
        finally:
            slots.release()
        if self._closing.is_set():
            return  # the runtime is stopping: nobody is left to tell
        self._store_output(command, invocation)
        if not self._drop_device_events:
            self._announce(self._invocation_event(command, invocation))
        with command.lock:
            last = command.status != "InProgress" and not command.announced
            command.announced = command.announced or last
        if last:
            self._announce(self._command_event(command))

    def _execute(self, command: Command, invocation: Invocation) -> None:
        with command.lock:
            if invocation.cancelled():
                self._end(invocation, "Cancelled", "Cancelled", -1)
                return
            if time.time() - command.requested > command.start_within:
                self._end(invocation, "TimedOut", "DeliveryTimedOut", -1)
                return
            if command.errors > command.max_errors:
                self._end(invocation, "Cancelled", "Cancelled", -1)  # SSM sends the command to no further node
                return
            invocation.status = invocation.status_details = "InProgress"
            invocation.started = time.time()
        device_id = self.devices[invocation.node_id]
        work = self._work_dir / invocation.node_id / command.command_id
        work.mkdir(parents=True, exist_ok=True)
        params = command.parameters
        if command.document == "AWS-RunRemoteScript":
            if not self._download(params, work, invocation):
                return
            command_line = " ".join(params.get("commandLine", [""]))
        else:
            command_line = "\n".join(params.get("commands", []))
        timeout = int((params.get("executionTimeout") or ["3600"])[0])
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "DEVICE_ID": device_id,
            "AWS_SSM_INSTANCE_ID": invocation.node_id,
            "AWS_SSM_REGION_NAME": self.region,
        }
        stdout_path, stderr_path = work / "stdout", work / "stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err, command.lock, SPAWN_LOCK:
            if invocation.cancelled():
                self._end(invocation, "Cancelled", "Cancelled", -1)
                return
            invocation.process = subprocess.Popen(
                ["/bin/sh", "-c", command_line], cwd=work, env=env, stdout=out, stderr=err, start_new_session=True
            )
        process = invocation.process
        try:
            code = process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill(process)
            code, timed_out = process.wait(), True
        invocation.stdout = stdout_path.read_text(errors="replace")
        invocation.stderr = stderr_path.read_text(errors="replace")
        if timed_out:
            self._end(invocation, "TimedOut", "ExecutionTimedOut", -1)
        elif invocation.cancelled():
            self._end(invocation, "Cancelled", "Cancelled", -1)
        else:
            self._end(invocation, "Success" if code == 0 else "Failed", "Success" if code == 0 else "Failed", code)

    def _download(self, params: dict[str, list[str]], work: Path, invocation: Invocation) -> bool:
        source = json.loads((params.get("sourceInfo") or ["{}"])[0])
        url = urlparse(source.get("path", ""))
        bucket, _, key = url.path.lstrip("/").partition("/")
        if not url.netloc.startswith("s3."):  # virtual-hosted style: bucket.s3.region.amazonaws.com/key
            bucket, key = url.netloc.split(".")[0], url.path.lstrip("/")
        try:
            script = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            with SPAWN_LOCK:
                (work / Path(key).name).write_bytes(script)
        except Exception as error:  # noqa: BLE001 - any download failure fails the invocation, as in SSM
            invocation.stderr = f"failed to download s3://{bucket}/{key}: {error}"
            self._end(invocation, "Failed", "Failed", 1)
            return False
        return True

    def _end(self, invocation: Invocation, status: str, details: str, code: int) -> None:
        invocation.status, invocation.status_details, invocation.response_code = status, details, code
        invocation.ended = time.time()
        invocation.process = None

    def _store_output(self, command: Command, invocation: Invocation) -> None:
        if not command.bucket:
            return
        for stream, text in (("stdout", invocation.stdout), ("stderr", invocation.stderr)):
            if text:
                key = command.output_key(invocation.node_id, stream)
                self._s3.put_object(Bucket=command.bucket, Key=key, Body=text.encode())

    def _invocation_event(self, command: Command, invocation: Invocation) -> dict[str, Any]:
        return self._envelope(
            "EC2 Command Invocation Status-change Notification",
            [f"arn:aws:ssm:{self.region}:123456789012:managed-instance/{invocation.node_id}"],
            {
                "command-id": command.command_id,
                "document-name": command.document,
                "instance-id": invocation.node_id,
                "requested-date-time": _iso(command.requested),
                "status": invocation.status,
            },
        )

    def _command_event(self, command: Command) -> dict[str, Any]:
        return self._envelope(
            "EC2 Command Status-change Notification",
            [f"arn:aws:ssm:{self.region}:123456789012:managed-instance/{node}" for node in command.invocations],
            {
                "command-id": command.command_id,
                "document-name": command.document,
                "expire-after": _iso(command.requested + command.start_within),
                "parameters": command.parameters,
                "requested-date-time": _iso(command.requested),
                "status": command.status,
            },
        )

    def _envelope(self, detail_type: str, resources: list[str], detail: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.ssm",
            "account": "123456789012",
            "time": _iso(time.time()).split(".")[0] + "Z",
            "region": self.region,
            "resources": resources,
            "detail": detail,
        }

    def _url(self, bucket: str | None, key: str) -> str:
        return f"https://s3.{self.region}.amazonaws.com/{bucket}/{key}" if bucket else ""

    def _command(self, command_id: str) -> Command:
        command = self._commands.get(command_id)
        if command is None:
            raise FleetError("InvalidCommandId", f"no command {command_id}")
        return command

    def close(self) -> None:
        """Kill every script still running and remove the devices' working directories."""
        self._closing.set()
        for command in list(self._commands.values()):
            with command.lock:
                for invocation in command.invocations.values():
                    invocation.cancel_requested = True
                    if invocation.process is not None:
                        _kill(invocation.process)
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=5)
        if self._owns_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)


def _share(value: str, nodes: int, minimum: int) -> int:
    """MaxConcurrency and MaxErrors: a number, or a percentage of the command's nodes."""
    if value.endswith("%"):
        return max(minimum, nodes * int(value[:-1]) // 100)
    return max(minimum, int(value))


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
