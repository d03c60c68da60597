"""A simulated device fleet that speaks the part of SSM that longrun uses, and really runs the scripts.

Each device is a managed node tagged with its device id: a hybrid node (``mi-`` id), or an EC2 instance (``i-`` id)
when its id is given as ``ec2:NAME``; the fleet can also hold EC2 instances that are tagged but not registered with
SSM (``unmanaged``), which SendCommand refuses as SSM does. SendCommand validates its
input and the document's parameters as SSM does, then runs the document's steps on each node, at most
MaxConcurrency nodes at a time: ``downloadContent`` fetches the script from S3 with the devices' own credentials
(the template's DeviceAccessPolicy), ``runPowerShellScript`` is skipped (the devices are Linux), ``runShellScript``
runs the command line in a subprocess (its own process group, its own working directory, ``DEVICE_ID`` set) until
it ends, executionTimeout passes or CancelCommand kills it. Each step's non-empty stdout and stderr go to S3 under
the step's own key, after the agent has checked the bucket's encryption. Each change of an invocation's and of the
command's status is announced with the EventBridge events SSM sends; any of them can be dropped or delayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import select
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
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local_runtime.identities import Credentials
from local_runtime.ssm_documents import DOCUMENTS, Document, Step
from local_runtime.template import ACCOUNT_ID

log = logging.getLogger("local_runtime.fleet")
STDOUT_CONTENT_CHARS = 24_000  # what GetCommandInvocation returns of stdout, as in SSM
STDERR_CONTENT_CHARS = 8_000  # and of stderr
PLUGIN_OUTPUT_CHARS = 2_500  # ListCommandInvocations' Output of a plugin
MAX_NODES = 50
NODE_ID = re.compile(r"(^i-(\w{8}|\w{17})$)|(^mi-\w{17}$)")
MAX_CONCURRENCY = re.compile(r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$")
MAX_ERRORS = re.compile(r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$")
DELIVERY_TIMEOUT = (30, 2_592_000)
FINAL = ("Success", "Failed", "TimedOut", "Cancelled")
INVOCATION_EVENT = "EC2 Command Invocation Status-change Notification"
COMMAND_EVENT = "EC2 Command Status-change Notification"
EVENT_KINDS = {"invocation": INVOCATION_EVENT, "command": COMMAND_EVENT}
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


def instance_id_for(device_id: str) -> str:
    return "i-" + hashlib.sha256(device_id.encode()).hexdigest()[:17]


def _iso(moment: float | None) -> str:
    if moment is None:
        return ""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class EventFaults:
    """Fault injection on SSM's events: a share of each kind dropped, and a delay before each is sent."""

    drop: dict[str, float] = field(default_factory=dict)
    """event kind (invocation, command) -> share dropped, 0..1"""
    delay: dict[str, float] = field(default_factory=dict)
    """event kind -> seconds"""

    @classmethod
    def parse(cls, drops: list[str], delays: list[str]) -> EventFaults:
        """From ``KIND[:RATE]`` and ``KIND:SECONDS`` options."""

        def split(spec: str, default: float | None) -> tuple[str, float]:
            kind, _, value = spec.partition(":")
            if kind not in EVENT_KINDS or (not value and default is None):
                raise ValueError(f"expected one of {', '.join(EVENT_KINDS)}, then :NUMBER, not {spec!r}")
            return kind, float(value) if value else float(default or 0)

        return cls(drop=dict(split(s, 1.0) for s in drops), delay=dict(split(s, None) for s in delays))


@dataclass
class PluginRun:
    """One step of the document on one node."""

    step: Step
    status: str = "Pending"
    details: str = "Pending"
    code: int = -1
    started: float | None = None
    ended: float | None = None
    stdout: str = ""
    stderr: str = ""

    def end(self, status: str, details: str, code: int) -> None:
        self.status, self.details, self.code = status, details, code
        self.ended = time.time()


@dataclass
class Invocation:
    node_id: str
    plugins: dict[str, PluginRun]
    status: str = "Pending"
    status_details: str = "Pending"
    started: float | None = None
    ended: float | None = None
    process: subprocess.Popen[bytes] | None = None
    cancel_requested: bool = False

    def cancelled(self) -> bool:
        """Whether CancelCommand (from another thread) asked this invocation to stop."""
        return self.cancel_requested

    def end(self, status: str, details: str) -> None:
        self.status, self.status_details = status, details
        self.ended = time.time()
        self.process = None
        for plugin in self.plugins.values():
            if plugin.status not in FINAL:
                plugin.end(status, details, -1)


@dataclass
class Command:
    command_id: str
    document: Document
    comment: str
    parameters: dict[str, list[str]]
    requested: float
    max_concurrency: int
    max_errors: int
    bucket: str | None
    prefix: str
    start_within: float
    """TimeoutSeconds: an invocation that has not started this long after the request never does"""
    raw_limits: tuple[str, str]
    invocations: dict[str, Invocation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    announced: bool = False

    @property
    def errors(self) -> int:
        return sum(i.status in ("Failed", "TimedOut") and i.started is not None for i in self.invocations.values())

    @property
    def status(self) -> str:
        statuses = {i.status for i in self.invocations.values()}
        if not statuses <= set(FINAL):
            return "InProgress"
        if self.errors > self.max_errors:
            return "Failed"  # MaxErrors passed: SSM sent the command to no further node, and the command failed
        for status in ("Cancelled", "TimedOut", "Failed"):
            if status in statuses:
                return status
        return "Success"

    def output_key(self, node_id: str, step: Step, stream: str) -> str:
        prefix = f"{self.prefix}/" if self.prefix else ""
        return f"{prefix}{self.command_id}/{node_id}/{step.output_folder}/{stream}"


class Fleet:
    def __init__(
        self,
        device_ids: list[str],
        tag_key: str,
        region: str,
        s3_endpoint: str,
        credentials: Credentials,
        announce: Callable[[dict[str, Any]], object],
        unmanaged: list[str] | None = None,
        unresponsive: list[str] | None = None,
        faults: EventFaults | None = None,
        work_dir: Path | None = None,
    ) -> None:
        hybrid = [d for d in device_ids if not d.startswith("ec2:")]
        ec2 = [d.removeprefix("ec2:") for d in device_ids if d.startswith("ec2:")]
        self.devices = {node_id_for(d): d for d in hybrid} | {instance_id_for(d): d for d in ec2}
        """managed node id -> device id"""
        self.unmanaged = {instance_id_for(d): d for d in unmanaged or []}
        """EC2 instances tagged with a device id whose SSM Agent is not registered: not managed nodes"""
        self.unresponsive = {node for node, device in self.devices.items() if device in set(unresponsive or [])}
        """Managed nodes whose agent takes a command and then goes silent: it stays InProgress until cancelled"""
        self.tag_key = tag_key
        self.region = region
        self._announce = announce
        self._faults = faults or EventFaults()
        self._random = random.Random()  # noqa: S311 - fault injection, not secrets
        self._commands: dict[str, Command] = {}
        self._s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name=region,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.session_token,
            config=Config(max_pool_connections=MAX_NODES * 4),  # every device of a few commands at once
        )
        self._work_dir = work_dir or Path(tempfile.mkdtemp(prefix="longrun-fleet-"))
        self._owns_work_dir = work_dir is None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

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
        document = self._validate_send(body)
        node_ids: list[str] = body["InstanceIds"]
        concurrency, errors = str(body.get("MaxConcurrency", "50")), str(body.get("MaxErrors", "0"))
        command = Command(
            command_id=str(uuid.uuid4()),
            document=document,
            comment=body.get("Comment", ""),
            parameters=body.get("Parameters", {}),
            requested=time.time(),
            max_concurrency=_share(concurrency, len(node_ids), minimum=1),
            max_errors=_share(errors, len(node_ids), minimum=0),
            bucket=body.get("OutputS3BucketName"),
            prefix=body.get("OutputS3KeyPrefix", ""),
            start_within=float(body.get("TimeoutSeconds", 3600)),
            raw_limits=(concurrency, errors),
            invocations={n: Invocation(n, {s.name: PluginRun(s) for s in document.steps}) for n in node_ids},
        )
        self._commands[command.command_id] = command
        self._start(threading.Thread(target=self._run_command, args=(command,), daemon=True, name="fleet-command"))
        return {"Command": self._describe(command) | {"Status": "Pending", "StatusDetails": "Pending"}}

    def _validate_send(self, body: dict[str, Any]) -> Document:
        """SendCommand's own checks (the API reference's constraints), then the document's parameters."""
        if body.get("Targets"):
            raise FleetError("ValidationException", "the local fleet takes InstanceIds, not Targets")
        node_ids = body.get("InstanceIds") or []
        if not 1 <= len(node_ids) <= MAX_NODES or len(set(node_ids)) != len(node_ids):
            raise FleetError("ValidationException", f"InstanceIds takes 1 to {MAX_NODES} distinct node ids")
        malformed = [n for n in node_ids if not NODE_ID.match(n)]
        if malformed:
            raise FleetError("ValidationException", f"InstanceIds do not match {NODE_ID.pattern}: {malformed}")
        unregistered = [n for n in node_ids if n not in self.devices]
        if unregistered:
            listed = ", ".join(unregistered)
            raise FleetError(
                "InvalidInstanceId", f"Instances [[{listed}]] not in a valid state for account {ACCOUNT_ID}"
            )
        document = DOCUMENTS.get(body.get("DocumentName", ""))
        if document is None:
            raise FleetError("InvalidDocument", f"the local fleet does not have document {body.get('DocumentName')}")
        if len(body.get("Comment", "")) > 100:
            raise FleetError("ValidationException", "Comment is longer than 100 characters")
        timeout = int(body.get("TimeoutSeconds", 3600))
        if not DELIVERY_TIMEOUT[0] <= timeout <= DELIVERY_TIMEOUT[1]:
            raise FleetError(
                "ValidationException", f"TimeoutSeconds must be {DELIVERY_TIMEOUT[0]}..{DELIVERY_TIMEOUT[1]}"
            )
        if not MAX_CONCURRENCY.match(str(body.get("MaxConcurrency", "50"))):
            raise FleetError("ValidationException", f"MaxConcurrency must match {MAX_CONCURRENCY.pattern}")
        if not MAX_ERRORS.match(str(body.get("MaxErrors", "0"))):
            raise FleetError("ValidationException", f"MaxErrors must match {MAX_ERRORS.pattern}")
        if len(body.get("OutputS3KeyPrefix", "")) > 500:
            raise FleetError("ValidationException", "OutputS3KeyPrefix is longer than 500 characters")
        invalid = document.validate(body.get("Parameters", {}))
        if invalid:
            raise FleetError("InvalidParameters", invalid)
        return document

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
        invocation = command.invocations.get(body.get("InstanceId", ""))
        if invocation is None:
            raise FleetError("InvocationDoesNotExist", "no invocation of this command on that node")
        name = body.get("PluginName")
        if name is None:
            if len(command.document.steps) > 1:
                raise FleetError("InvalidPluginName", "The plugin name isn't valid.")  # a step's name is required
            name = command.document.steps[0].name
        plugin = invocation.plugins.get(name)
        if plugin is None:
            raise FleetError("InvalidPluginName", "The plugin name isn't valid.")
        return {
            "CommandId": command.command_id,
            "InstanceId": invocation.node_id,
            "Comment": command.comment,
            "DocumentName": command.document.name,
            "DocumentVersion": "1",
            "PluginName": name,
            "ResponseCode": plugin.code,
            "ExecutionStartDateTime": _iso(plugin.started),
            "ExecutionElapsedTime": _elapsed(plugin.started, plugin.ended),
            "ExecutionEndDateTime": _iso(plugin.ended),
            "Status": plugin.status,
            "StatusDetails": plugin.details,
            "StandardOutputContent": plugin.stdout[:STDOUT_CONTENT_CHARS],
            "StandardOutputUrl": self._url(command, invocation.node_id, plugin.step, "stdout"),
            "StandardErrorContent": plugin.stderr[:STDERR_CONTENT_CHARS],
            "StandardErrorUrl": self._url(command, invocation.node_id, plugin.step, "stderr"),
        }

    def list_commands(self, body: dict[str, Any]) -> dict[str, Any]:
        """One command by id, or the commands its filters select (DocumentName, InvokedAfter, InvokedBefore,
        Status), newest first, in pages."""
        if body.get("CommandId"):
            return {"Commands": [self._describe(self._command(body["CommandId"]))]}
        limit = int(body.get("MaxResults", 50))
        if not 1 <= limit <= 50:
            raise FleetError("ValidationException", "MaxResults must be 1..50")
        commands = sorted(self._commands.values(), key=lambda c: c.requested, reverse=True)
        for spec in body.get("Filters", []):
            key, value = spec["key"], spec["value"]
            if key == "DocumentName":
                commands = [c for c in commands if c.document.name == value]
            elif key in ("InvokedAfter", "InvokedBefore"):
                moment = datetime.fromisoformat(value).timestamp()
                after = key == "InvokedAfter"
                commands = [c for c in commands if (c.requested >= moment) == after]
            elif key == "Status":
                commands = [c for c in commands if c.status == value]
            else:
                raise FleetError("InvalidFilterKey", f"the local fleet does not filter commands by {key}")
        start = int(body.get("NextToken") or 0)
        answer: dict[str, Any] = {"Commands": [self._describe(c) for c in commands[start : start + limit]]}
        if start + limit < len(commands):
            answer["NextToken"] = str(start + limit)
        return answer

    def list_command_invocations(self, body: dict[str, Any]) -> dict[str, Any]:
        command = self._command(body["CommandId"])
        details = bool(body.get("Details"))
        limit = int(body.get("MaxResults", 50))
        if not 1 <= limit <= 50:
            raise FleetError("ValidationException", "MaxResults must be 1..50")
        invocations = list(command.invocations.values())
        if body.get("InstanceId"):
            invocations = [i for i in invocations if i.node_id == body["InstanceId"]]
        start = int(body.get("NextToken") or 0)
        page = invocations[start : start + limit]
        answer: dict[str, Any] = {"CommandInvocations": [self._invocation(command, i, details) for i in page]}
        if start + limit < len(invocations):
            answer["NextToken"] = str(start + limit)
        return answer

    def _invocation(self, command: Command, invocation: Invocation, details: bool) -> dict[str, Any]:
        described: dict[str, Any] = {
            "CommandId": command.command_id,
            "InstanceId": invocation.node_id,
            "InstanceName": self.devices.get(invocation.node_id, ""),
            "Comment": command.comment,
            "DocumentName": command.document.name,
            "DocumentVersion": "1",
            "RequestedDateTime": command.requested,
            "Status": invocation.status,
            "StatusDetails": invocation.status_details,
            "StandardOutputUrl": "",  # only set when the document has one step
            "StandardErrorUrl": "",
            "CommandPlugins": [],
        }
        if details:
            described["CommandPlugins"] = [
                {
                    "Name": plugin.step.name,
                    "Status": plugin.status,
                    "StatusDetails": plugin.details,
                    "ResponseCode": plugin.code,
                    **({"ResponseStartDateTime": plugin.started} if plugin.started else {}),
                    **({"ResponseFinishDateTime": plugin.ended} if plugin.ended else {}),
                    "Output": (plugin.stdout + plugin.stderr)[:PLUGIN_OUTPUT_CHARS],
                    "StandardOutputUrl": self._url(command, invocation.node_id, plugin.step, "stdout"),
                    "StandardErrorUrl": self._url(command, invocation.node_id, plugin.step, "stderr"),
                    "OutputS3Region": self.region,
                    "OutputS3BucketName": command.bucket or "",
                    "OutputS3KeyPrefix": command.prefix,
                }
                for plugin in invocation.plugins.values()
            ]
        return described

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
                    "ResourceType": "EC2Instance" if node_id.startswith("i-") else "ManagedInstance",
                    "ComputerName": self.devices[node_id],
                    "Name": self.devices[node_id],
                }
                for node_id in nodes
            ]
        }

    def get_resources(self, body: dict[str, Any]) -> dict[str, Any]:
        types = body.get("ResourceTypeFilters") or ["ssm:managed-instance", "ec2:instance"]
        wanted: set[str] | None = None
        for tag_filter in body.get("TagFilters", []):
            if tag_filter["Key"] != self.tag_key:
                return {"ResourceTagMappingList": [], "PaginationToken": ""}
            wanted = set(tag_filter.get("Values") or []) or None
        mappings = [
            {"ResourceARN": self._node_arn(node), "Tags": [{"Key": self.tag_key, "Value": device}]}
            for node, device in (self.devices | self.unmanaged).items()
            if (wanted is None or device in wanted)
            and ("ec2:instance" if node.startswith("i-") else "ssm:managed-instance") in types
        ]
        return {"ResourceTagMappingList": mappings, "PaginationToken": ""}

    # --- running ---------------------------------------------------------------------------------

    def _run_command(self, command: Command) -> None:
        self._announce_command(command)
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
            invocation.plugins["runShellScript"].stderr += f"\nlocal fleet: {error}"
            invocation.end("Failed", "Failed")
        finally:
            slots.release()
        if self._closing.is_set():
            return  # the runtime is stopping: nobody is left to tell
        self._store_output(command, invocation)
        self._emit("invocation", self._invocation_event(command, invocation))
        with command.lock:
            last = command.status != "InProgress" and not command.announced
            command.announced = command.announced or last
        if last:
            self._announce_command(command)

    def _execute(self, command: Command, invocation: Invocation) -> None:
        with command.lock:
            if invocation.cancelled():
                invocation.end("Cancelled", "Cancelled")
                return
            if time.time() - command.requested > command.start_within:
                invocation.end("TimedOut", "DeliveryTimedOut")
                return
            if command.errors > command.max_errors:
                invocation.end("Cancelled", "Cancelled")  # SSM sends the command to no further node
                return
            invocation.status = invocation.status_details = "InProgress"
            invocation.started = time.time()
        self._emit("invocation", self._invocation_event(command, invocation))
        if invocation.node_id in self.unresponsive:
            while not invocation.cancelled() and not self._closing.wait(0.1):
                pass
            invocation.end("Cancelled", "Cancelled")
            return
        work = self._work_dir / invocation.node_id / command.command_id
        work.mkdir(parents=True, exist_ok=True)
        for plugin in invocation.plugins.values():
            if invocation.cancelled():
                break
            plugin.started = time.time()
            plugin.status = plugin.details = "InProgress"
            if plugin.step.platform not in (None, "Linux"):
                plugin.stdout = plugin.step.skip_message()
                plugin.end("Success", "Success", 0)
            elif plugin.step.action == "aws:downloadContent":
                self._download(command, plugin, work)
            else:
                self._run_shell(command, invocation, plugin, work)
        plugins = [p.status for p in invocation.plugins.values()]
        if invocation.cancelled() and "TimedOut" not in plugins:
            invocation.end("Cancelled", "Cancelled")
        elif "TimedOut" in plugins:
            invocation.end("TimedOut", "ExecutionTimedOut")
        elif "Failed" in plugins:
            invocation.end("Failed", "Failed")
        else:
            invocation.end("Success", "Success")

    def _download(self, command: Command, plugin: PluginRun, work: Path) -> None:
        """aws:downloadContent from S3, with the devices' credentials."""
        params = command.parameters
        if command.document.value(params, "sourceType") != "S3":
            plugin.stderr = "the local fleet downloads from S3 only"
            plugin.end("Failed", "Failed", 1)
            return
        try:
            url = urlsplit(json.loads(params["sourceInfo"][0]).get("path", ""))
        except ValueError:
            plugin.stderr = "sourceInfo is not valid JSON"
            plugin.end("Failed", "Failed", 1)
            return
        path = unquote(url.path).lstrip("/")  # an S3 URL's key is percent-encoded
        bucket, _, key = path.partition("/")
        if not url.netloc.startswith("s3."):  # virtual-hosted style: bucket.s3.region.amazonaws.com/key
            bucket, key = url.netloc.split(".")[0], path
        try:
            script = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            with SPAWN_LOCK:
                (work / Path(key).name).write_bytes(script)
        except (ClientError, BotoCoreError, OSError) as error:
            plugin.stderr = f"failed to download s3://{bucket}/{key}: {error}"
            plugin.end("Failed", "Failed", 1)
            return
        plugin.stdout = f"Content downloaded to {work}"
        plugin.end("Success", "Success", 0)

    def _run_shell(self, command: Command, invocation: Invocation, plugin: PluginRun, work: Path) -> None:
        """aws:runShellScript: the step's lines with the document's parameters in them, under sh."""
        params = command.parameters
        script = "\n".join(plugin.step.run_command)
        for name in ("commandLine", "workingDirectory", "executionTimeout"):
            script = script.replace("{{ " + name + " }}", command.document.value(params, name))
        timeout = int(command.document.value(params, "executionTimeout"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "DEVICE_ID": self.devices[invocation.node_id],
            "AWS_SSM_INSTANCE_ID": invocation.node_id,
            "AWS_SSM_REGION_NAME": self.region,
        }
        stdout_path, stderr_path = work / "stdout", work / "stderr"
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err, command.lock, SPAWN_LOCK:
            if invocation.cancelled():
                plugin.end("Cancelled", "Cancelled", -1)
                return
            invocation.process = subprocess.Popen(
                ["/bin/sh", "-c", script], cwd=work, env=env, stdout=out, stderr=err, start_new_session=True
            )
        process = invocation.process
        timed_out = not _ends_within(process, timeout)
        if timed_out:
            _kill(process)
        code = process.wait()
        plugin.stdout = stdout_path.read_text(errors="replace")
        plugin.stderr = stderr_path.read_text(errors="replace")
        if timed_out:
            plugin.end("TimedOut", "ExecutionTimedOut", -1)
        elif invocation.cancelled():
            plugin.end("Cancelled", "Cancelled", -1)
        else:
            plugin.end("Success" if code == 0 else "Failed", "Success" if code == 0 else "Failed", code)

    def _store_output(self, command: Command, invocation: Invocation) -> None:
        """As the agent does: non-empty streams only, once it has read the bucket's encryption settings."""
        if not command.bucket:
            return
        streams = [
            (plugin.step, name, text)
            for plugin in invocation.plugins.values()
            if plugin.step.platform in (None, "Linux")
            for name, text in (("stdout", plugin.stdout), ("stderr", plugin.stderr))
            if text
        ]
        if not streams:
            return
        try:
            self._s3.get_bucket_encryption(Bucket=command.bucket)
            for step, name, text in streams:
                self._s3.put_object(
                    Bucket=command.bucket, Key=command.output_key(invocation.node_id, step, name), Body=text.encode()
                )
        except (ClientError, BotoCoreError) as error:
            log.warning(
                "device %s could not upload its output to s3://%s: %s", invocation.node_id, command.bucket, error
            )

    # --- SSM's events --------------------------------------------------------------------------

    def _emit(self, kind: str, event: dict[str, Any]) -> None:
        if self._random.random() < self._faults.drop.get(kind, 0.0):
            log.info("fault injection: dropped a %s event (%s)", kind, event["detail"]["status"])
            return
        delay = self._faults.delay.get(kind, 0.0)
        if delay:
            timer = threading.Timer(delay, self._announce, args=(event,))
            timer.daemon = True
            timer.start()
        else:
            self._announce(event)

    def _announce_command(self, command: Command) -> None:
        self._emit("command", self._command_event(command))

    def _invocation_event(self, command: Command, invocation: Invocation) -> dict[str, Any]:
        return self._envelope(
            INVOCATION_EVENT,
            [self._node_arn(invocation.node_id)],
            {
                "command-id": command.command_id,
                "document-name": command.document.name,
                "instance-id": invocation.node_id,
                "requested-date-time": _iso(command.requested),
                "status": invocation.status,
            },
        )

    def _command_event(self, command: Command) -> dict[str, Any]:
        return self._envelope(
            COMMAND_EVENT,
            [self._node_arn(node) for node in command.invocations],
            {
                "command-id": command.command_id,
                "document-name": command.document.name,
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
            "account": ACCOUNT_ID,
            "time": _iso(time.time()).split(".")[0] + "Z",
            "region": self.region,
            "resources": resources,
            "detail": detail,
        }

    def _node_arn(self, node_id: str) -> str:
        if node_id.startswith("i-"):
            return f"arn:aws:ec2:{self.region}:{ACCOUNT_ID}:instance/{node_id}"
        return f"arn:aws:ssm:{self.region}:{ACCOUNT_ID}:managed-instance/{node_id}"

    def _describe(self, command: Command) -> dict[str, Any]:
        return {
            "CommandId": command.command_id,
            "DocumentName": command.document.name,
            "DocumentVersion": "1",
            "Comment": command.comment,
            "Parameters": command.parameters,
            "InstanceIds": list(command.invocations),
            "RequestedDateTime": command.requested,
            "ExpiresAfter": command.requested + command.start_within,
            "Status": command.status,
            "StatusDetails": command.status,
            "MaxConcurrency": command.raw_limits[0],
            "MaxErrors": command.raw_limits[1],
            "TargetCount": len(command.invocations),
            "CompletedCount": sum(i.status in FINAL for i in command.invocations.values()),
            "ErrorCount": command.errors,
            "OutputS3BucketName": command.bucket or "",
            "OutputS3KeyPrefix": command.prefix,
            "TimeoutSeconds": int(command.start_within),
        }

    def _url(self, command: Command, node_id: str, step: Step, stream: str) -> str:
        if not command.bucket:
            return ""
        return f"https://s3.{self.region}.amazonaws.com/{command.bucket}/{command.output_key(node_id, step, stream)}"

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


def _elapsed(started: float | None, ended: float | None) -> str:
    if started is None:
        return ""
    seconds = (ended or time.time()) - started
    return f"PT{seconds:.3f}S"


def _share(value: str, nodes: int, minimum: int) -> int:
    """MaxConcurrency and MaxErrors: a number, or a percentage of the command's nodes."""
    if value.endswith("%"):
        return max(minimum, nodes * int(value[:-1]) // 100)
    return max(minimum, int(value))


def _ends_within(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the process ends within ``seconds``, seen the moment it does: the thread sleeps on the process's pidfd,
    where Popen.wait with a timeout would wake every 50 ms to ask (late by up to that, and a load on the runtime's
    other threads when a fleet's scripts all wait at once)."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except ProcessLookupError:  # already reaped
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    finally:
        os.close(pidfd)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
