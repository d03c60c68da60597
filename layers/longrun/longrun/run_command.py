"""The device fleet as SSM Run Command sees it: finding the managed node behind each device id, sending a script to
a batch of nodes, cancelling it, and reading how each node's run ended.

Scripts run with AWS-RunRemoteScript, a document of several steps: ``downloadContent`` fetches the script from S3,
``runShellScript`` runs it (``runPowerShellScript`` is skipped on Linux). A node's outcome is read step by step from
ListCommandInvocations with Details: the script's own step says how it ran, and a failed download says why it
could not run at all.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from posixpath import basename
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlparse

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from longrun import aws_clients
from longrun.records import CommandOutcome, DeviceStatus, device_key

if TYPE_CHECKING:
    from mypy_boto3_resourcegroupstaggingapi import ResourceGroupsTaggingAPIClient
    from mypy_boto3_ssm import SSMClient

DOCUMENT = "AWS-RunRemoteScript"
RUN_STEP = "runShellScript"
DOWNLOAD_STEP = "downloadContent"
MAX_NODES_PER_COMMAND = 50  # SSM's limit on InstanceIds in one SendCommand
DELIVERY_TIMEOUT_RANGE = (30, 2_592_000)  # SSM's bounds on SendCommand's TimeoutSeconds
NODE_ID = re.compile(r"^(i|mi)-[0-9a-f]{8,17}$")
COMMENT = re.compile(r"^longrun (?P<task>[0-9a-f-]{36}) batch (?P<batch>\d+)$")
TAG_VALUES_PER_LOOKUP = 20  # the tagging API's limit on values in one tag filter
INVOCATIONS_PER_PAGE = 50  # ListCommandInvocations' largest page with Details
CLOCK_SKEW = timedelta(seconds=60)
"""How far SSM's clock may be from the function's when it looks for a command it may have sent"""

_SSM_STATUS = {
    "Success": DeviceStatus.SUCCESS,
    "Failed": DeviceStatus.FAILED,
    "TimedOut": DeviceStatus.TIMED_OUT,
    "Cancelled": DeviceStatus.CANCELLED,
}
"""The final values of an invocation's (or a step's) Status; StatusDetails says more (Undeliverable, ...)"""
NOT_STARTED_SSM_STATUSES = ("Pending", "Delayed")
THROTTLED = ("ThrottlingException", "TooManyUpdates", "RequestLimitExceeded")
REFUSED_NODES = re.compile(r"\b(?:mi|i)-[0-9a-f]{8,17}\b")


class MaybeSent(Exception):
    """SendCommand failed without saying whether it sent the command (a server error, a throttle, a connection that
    closed or timed out before the answer): look for the command (``sent_command``) before sending it again."""


class NodesNotManaged(Exception):
    """SendCommand refused the command (InvalidInstanceId): some of its nodes are not managed nodes SSM can send to
    (not registered, not running, or terminated)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.named = set(REFUSED_NODES.findall(message))
        """The nodes SSM's message names, if it names them"""


@cache
def _ssm() -> SSMClient:
    return cast("SSMClient", aws_clients.client("ssm"))


@cache
def _ssm_sending() -> SSMClient:
    """For SendCommand, which has no idempotency token: the SDK must not repeat a call that may have sent the command
    (each repeat would run the script again on every node), so it makes one attempt and the caller looks before it
    sends again."""
    return cast("SSMClient", aws_clients.client("ssm", retries={"total_max_attempts": 1, "mode": "standard"}))


@cache
def _tagging() -> ResourceGroupsTaggingAPIClient:
    return cast("ResourceGroupsTaggingAPIClient", aws_clients.client("resourcegroupstaggingapi"))


@dataclass(frozen=True)
class Resolution:
    nodes: dict[str | int, str]
    """device id -> managed node id"""
    unknown: dict[str | int, str]
    """device id -> why no managed node was found"""


def resolve_devices(device_ids: Sequence[str | int], tag_key: str) -> Resolution:
    """Find the managed node of each device: an id that looks like a node id names the node itself, any other id
    is the value of the node's ``tag_key`` tag. A node must be registered with SSM: an EC2 instance whose agent is
    not, though tagged, is no managed node (SendCommand would refuse the whole command)."""
    direct = [d for d in device_ids if isinstance(d, str) and NODE_ID.match(d)]
    tagged = [d for d in device_ids if d not in direct]
    candidates: dict[str | int, str] = {d: str(d) for d in direct}
    unknown: dict[str | int, str] = {}
    by_tag = _nodes_by_tag([device_key(d) for d in tagged], tag_key)
    for device_id in tagged:
        found = by_tag.get(device_key(device_id), [])
        if len(found) == 1:
            candidates[device_id] = found[0]
        elif not found:
            unknown[device_id] = f"no SSM managed node is tagged {tag_key}={device_id}"
        else:
            unknown[device_id] = f"{len(found)} managed nodes are tagged {tag_key}={device_id}: {', '.join(found)}"
    registered = registered_nodes(list(candidates.values()))
    nodes: dict[str | int, str] = {}
    for device_id, node_id in candidates.items():
        if node_id in registered:
            nodes[device_id] = node_id
        elif device_id in direct:
            unknown[device_id] = f"{node_id} is not an SSM managed node of this account and region"
        else:
            unknown[device_id] = not_managed(node_id, f"tagged {tag_key}={device_id}")
    return Resolution(nodes=nodes, unknown=unknown)


def not_managed(node_id: str, described: str) -> str:
    return f"{node_id} ({described}) is not an SSM managed node: its SSM Agent is not running or not registered"


def registered_nodes(node_ids: Sequence[str]) -> set[str]:
    """Which of these nodes SSM knows as managed nodes."""
    found: set[str] = set()
    for start in range(0, len(node_ids), MAX_NODES_PER_COMMAND):
        chunk = list(node_ids[start : start + MAX_NODES_PER_COMMAND])
        paginator = _ssm().get_paginator("describe_instance_information")
        for page in paginator.paginate(Filters=[{"Key": "InstanceIds", "Values": chunk}]):
            found.update(info["InstanceId"] for info in page["InstanceInformationList"])
    return found


def _nodes_by_tag(values: Sequence[str], tag_key: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for start in range(0, len(values), TAG_VALUES_PER_LOOKUP):
        chunk = list(values[start : start + TAG_VALUES_PER_LOOKUP])
        paginator = _tagging().get_paginator("get_resources")
        pages = paginator.paginate(
            TagFilters=[{"Key": tag_key, "Values": chunk}],
            ResourceTypeFilters=["ec2:instance", "ssm:managed-instance"],
        )
        for page in pages:
            for resource in page["ResourceTagMappingList"]:
                node_id = resource["ResourceARN"].rsplit("/", 1)[-1]
                for tag in resource.get("Tags", []):
                    if tag["Key"] == tag_key:
                        found.setdefault(tag["Value"], []).append(node_id)
    return found


def batch_comment(task_id: str, batch: int) -> str:
    return f"longrun {task_id} batch {batch}"


def parse_comment(comment: str) -> tuple[str, int] | None:
    match = COMMENT.match(comment or "")
    return (match["task"], int(match["batch"])) if match else None


def command_line(key: str) -> str:
    """How the document runs the downloaded script: the file's name quoted for POSIX sh, whatever it holds."""
    script = shlex.quote(f"./{basename(key)}")
    return f"chmod +x {script} && {script}"


def send_script(
    *,
    node_ids: Sequence[str],
    bucket: str,
    key: str,
    timeout_seconds: int,
    start_within_seconds: int,
    max_concurrency: int,
    max_errors: int | None,
    output_prefix: str,
    comment: str,
) -> str:
    """Run the script at s3://bucket/key on up to 50 nodes with one command; answer the command id. A node that has
    not started the script within ``start_within_seconds`` never does; once more than ``max_errors`` nodes have
    failed or timed out, SSM starts no further node. Raises NodesNotManaged if SSM refuses a node, MaybeSent if the
    call failed in a way that may have sent the command."""
    if not 0 < len(node_ids) <= MAX_NODES_PER_COMMAND:
        raise ValueError(f"a command takes 1 to {MAX_NODES_PER_COMMAND} nodes, not {len(node_ids)}")
    region = _ssm().meta.region_name
    try:
        response = _ssm_sending().send_command(
            InstanceIds=list(node_ids),
            DocumentName=DOCUMENT,
            Comment=comment,
            Parameters={
                "sourceType": ["S3"],
                "sourceInfo": [json.dumps({"path": f"https://s3.{region}.amazonaws.com/{bucket}/{quote(key)}"})],
                "commandLine": [command_line(key)],
                "executionTimeout": [str(timeout_seconds)],
            },
            TimeoutSeconds=min(max(start_within_seconds, DELIVERY_TIMEOUT_RANGE[0]), DELIVERY_TIMEOUT_RANGE[1]),
            MaxConcurrency=str(max_concurrency),
            MaxErrors="100%" if max_errors is None else str(max_errors),
            OutputS3BucketName=bucket,
            OutputS3KeyPrefix=output_prefix,
        )
    except ClientError as error:
        if error.response["Error"]["Code"] == "InvalidInstanceId":
            raise NodesNotManaged(str(error)) from error
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or error.response["Error"]["Code"] in THROTTLED:
            raise MaybeSent(str(error)) from error
        raise
    except (ConnectionClosedError, ReadTimeoutError, EndpointConnectionError) as error:
        raise MaybeSent(str(error)) from error
    return response["Command"]["CommandId"]


def sent_command(comment: str, since: datetime) -> str | None:
    """The command sent with this comment since a moment (a step that died before it recorded what it sent)."""
    after = (since - CLOCK_SKEW).isoformat(timespec="seconds").replace("+00:00", "Z")
    filters: Any = [{"key": "DocumentName", "value": DOCUMENT}, {"key": "InvokedAfter", "value": after}]
    for page in _ssm().get_paginator("list_commands").paginate(Filters=filters):
        for command in page["Commands"]:
            if command.get("Comment") == comment:
                return command["CommandId"]
    return None


def commands_going(task_id: str, since: datetime) -> list[str]:
    """The task's commands SSM has not finished (Pending or InProgress), sent since a moment."""
    after = (since - CLOCK_SKEW).isoformat(timespec="seconds").replace("+00:00", "Z")
    filters: Any = [{"key": "DocumentName", "value": DOCUMENT}, {"key": "InvokedAfter", "value": after}]
    going = []
    for page in _ssm().get_paginator("list_commands").paginate(Filters=filters):
        for command in page["Commands"]:
            origin = parse_comment(command.get("Comment", ""))
            if origin and origin[0] == task_id and command["Status"] in ("Pending", "InProgress"):
                going.append(command["CommandId"])
    return going


def cancel(command_id: str, node_ids: Sequence[str] | None = None) -> None:
    """Stop a command on the given nodes (all of them by default); a command that already ended is left alone."""
    try:
        if node_ids:
            _ssm().cancel_command(CommandId=command_id, InstanceIds=list(node_ids))
        else:
            _ssm().cancel_command(CommandId=command_id)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("InvalidCommandId", "DuplicateInstanceId"):
            raise


@dataclass(frozen=True)
class CommandRuns:
    """How a command's runs stand, by node."""

    ended: dict[str, CommandOutcome]
    going: dict[str, bool]
    """node -> whether its run has started (InProgress) rather than waiting to (Pending, Delayed)"""


def command_runs(command_id: str, node_id: str | None = None) -> CommandRuns:
    """How each node's run of a command stands (one node's, if given): read step by step from SSM."""
    query: dict[str, Any] = {"CommandId": command_id, "Details": True, "MaxResults": INVOCATIONS_PER_PAGE}
    if node_id is not None:
        query["InstanceId"] = node_id
    ended: dict[str, CommandOutcome] = {}
    going: dict[str, bool] = {}
    for page in _ssm().get_paginator("list_command_invocations").paginate(**query):
        for invocation in page["CommandInvocations"]:
            outcome = outcome_of(dict(invocation))
            if outcome is not None:
                ended[outcome.node_id] = outcome
            else:
                going[invocation["InstanceId"]] = invocation["Status"] not in NOT_STARTED_SSM_STATUSES
    return CommandRuns(ended=ended, going=going)


def waiting_nodes(command_id: str) -> set[str]:
    """The nodes whose run of a command SSM has not started yet (Pending, Delayed): its rate control holds them
    back. One page per 50 nodes, without the steps' details."""
    waiting: set[str] = set()
    query: dict[str, Any] = {"CommandId": command_id, "MaxResults": INVOCATIONS_PER_PAGE}
    for page in _ssm().get_paginator("list_command_invocations").paginate(**query):
        waiting.update(i["InstanceId"] for i in page["CommandInvocations"] if i["Status"] in NOT_STARTED_SSM_STATUSES)
    return waiting


def outcome_of(invocation: dict[str, Any]) -> CommandOutcome | None:
    """One node's finished run of the command, from its invocation and its steps; None while it runs."""
    ssm_status = invocation["Status"]
    if ssm_status not in _SSM_STATUS:
        return None
    steps = {plugin["Name"]: plugin for plugin in invocation.get("CommandPlugins", [])}
    run, download = steps.get(RUN_STEP, {}), steps.get(DOWNLOAD_STEP, {})
    started: datetime | None = run.get("ResponseStartDateTime") or download.get("ResponseStartDateTime")
    ended: datetime | None = run.get("ResponseFinishDateTime") or download.get("ResponseFinishDateTime")
    stdout_url = _s3_url(run.get("StandardOutputUrl")) if run.get("ResponseStartDateTime") else None
    common = {
        "command_id": invocation["CommandId"],
        "node_id": invocation["InstanceId"],
        "comment": invocation.get("Comment", ""),
        "started_at": started,
        "ended_at": ended,
        "stdout_url": stdout_url,
    }
    if download.get("Status") == "Failed":
        why = _first_line(download.get("Output")) or download.get("StatusDetails", "Failed")
        return CommandOutcome(**common, status=DeviceStatus.FAILED, reason=f"the script could not be downloaded: {why}")
    # The script's step says how it ran; if it never reached a final status, the invocation's says why
    step_status = run.get("Status") if run.get("Status") in _SSM_STATUS else ssm_status
    status = _SSM_STATUS[step_status]
    if started is None and status in (DeviceStatus.CANCELLED, DeviceStatus.TIMED_OUT):
        status = DeviceStatus.NOT_STARTED  # cancelled or out of time before it began: it never ran
    exit_code = run.get("ResponseCode")
    exit_code = None if exit_code is None or exit_code < 0 else exit_code
    details = invocation.get("StatusDetails") or ssm_status
    return CommandOutcome(**common, status=status, reason=_reason(status, details, exit_code), exit_code=exit_code)


def command_comment(command_id: str) -> str:
    commands = _ssm().list_commands(CommandId=command_id)["Commands"]
    return commands[0].get("Comment", "") if commands else ""


def _first_line(text: str | None) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def _reason(status: DeviceStatus, details: str, exit_code: int | None) -> str | None:
    if status is DeviceStatus.SUCCESS:
        return None
    if status is DeviceStatus.FAILED and exit_code is not None:
        return f"the script exited with code {exit_code}"
    return {
        DeviceStatus.TIMED_OUT: "the script ran past its time limit and was stopped",
        DeviceStatus.CANCELLED: "the task was cancelled while the script ran",
        DeviceStatus.NOT_STARTED: f"the script never started on the device (SSM: {details})",
    }.get(status, f"SSM reported {details}")


def _s3_url(url: str | None) -> str | None:
    """SSM gives output locations as https URLs; clients read them as s3://bucket/key."""
    if not url:
        return None
    parsed = urlparse(url)
    host = parsed.netloc.split(".")
    path = parsed.path.lstrip("/")
    if host[0] == "s3" or host[0].startswith("s3-"):
        return f"s3://{path}"
    if len(host) > 1 and host[1].startswith("s3"):
        return f"s3://{host[0]}/{path}"
    return url
