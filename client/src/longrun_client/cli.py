"""``longrun``: run scripts on device fleets from a terminal or a script.

Exit status: 0 every device succeeded (or the command did what it was asked), 1 some device failed or timed out
(or the API refused: no such task, a conflict), 2 the task was cancelled, 3 the task failed or passed its deadline,
4 authentication or authorisation refused, 64 usage error (including a request the API found invalid), 69 the API
could not be reached, 130 interrupted without cancelling."""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.shell_completion import get_completion_class
from rich.console import Console
from rich.table import Table
from rich.text import Text

from longrun_client.client import Client
from longrun_client.errors import (
    ApiError,
    AuthenticationError,
    ConnectionFailed,
    InvalidRequest,
    LongrunError,
)
from longrun_client.events import Progress
from longrun_client.models import (
    ApiModel,
    DeviceStatus,
    ScriptExecution,
    ScriptExecutionState,
    TaskEventType,
    TaskStatus,
)
from longrun_client.watch import STYLES, WatchView, counts_line, eta, finished_of

EXIT_OK = 0
EXIT_DEVICES_FAILED = 1
EXIT_CANCELLED = 2
EXIT_TASK_FAILED = 3
EXIT_AUTH = 4
EXIT_USAGE = 64
EXIT_UNREACHABLE = 69
EXIT_INTERRUPTED = 130
CONFIG_FILE = Path("longrun") / "config.toml"
DEVICE_SUCCESS = {DeviceStatus.SUCCESS.value}
F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
for _console in (out, err):
    if not _console.is_terminal:  # a pipe or a file: do not cut lines at 80 columns
        _console.width = 200


@dataclass
class Settings:
    api_url: str | None
    websocket_url: str | None
    token: str | None
    profile: str | None
    region: str | None

    def client(self) -> Client:
        if not self.api_url:
            raise click.UsageError(
                "no API URL: give --api, set LONGRUN_API_URL, or put api_url in "
                f"{config_path()} (make run prints it; on AWS it is the stack's ApiUrl output)"
            )
        return Client(
            self.api_url,
            websocket_url=self.websocket_url,
            token=self.token,
            profile=self.profile,
            region=self.region,
        )


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / CONFIG_FILE


def _config() -> dict[str, Any]:
    """~/.config/longrun/config.toml: api_url, websocket_url, profile, region (flags and the environment win)."""
    path = config_path()
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise click.UsageError(f"{path} is not valid TOML: {error}") from error


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON bodies and nothing else.")(
        command
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--api", envvar="LONGRUN_API_URL", help="The API's URL (the stack's ApiUrl output) [$LONGRUN_API_URL].")
@click.option(
    "--ws-url",
    envvar="LONGRUN_WEBSOCKET_URL",
    help="The WebSocket API's URL (WebSocketUrl output) for live updates; without it, watch polls "
    "[$LONGRUN_WEBSOCKET_URL].",
)
@click.option("--token", envvar="LONGRUN_TOKEN", help="A bearer token, for a JWT authorizer [$LONGRUN_TOKEN].")
@click.option("--profile", help="The AWS profile to sign requests with, as the AWS CLI names it.")
@click.option("--region", help="The AWS region to sign for (default: from the API's URL or the profile).")
@click.version_option(package_name="longrun-client", prog_name="longrun")
@click.pass_context
def cli(
    context: click.Context,
    api: str | None,
    ws_url: str | None,
    token: str | None,
    profile: str | None,
    region: str | None,
) -> None:
    """Run scripts on fleets of devices with longrun: submit, watch live, read results, cancel.

    Requests are signed with SigV4 from the standard AWS credential chain (profile, environment, SSO, instance
    role), or carry --token. Settings come from flags, then the environment, then ~/.config/longrun/config.toml.

    \b
    Exit status: 0 all devices succeeded, 1 some device failed or timed out (or the API refused),
    2 cancelled, 3 the task failed or passed its deadline, 4 authentication refused,
    64 usage error, 69 API unreachable, 130 interrupted.
    """
    config = _config() if context.invoked_subcommand != "completion" else {}
    context.obj = Settings(
        api_url=api or config.get("api_url"),
        websocket_url=ws_url or config.get("websocket_url"),
        token=token or config.get("token"),
        profile=profile or config.get("profile"),
        region=region or config.get("region"),
    )


def _client() -> Client:
    settings: Settings = click.get_current_context().find_object(Settings)  # type: ignore[assignment]
    return settings.client()


def _print_json(body: Any) -> None:
    out.out(json.dumps(body, ensure_ascii=False), highlight=False)


def _limit(value: str | None) -> int | str | None:
    """max-concurrency and max-errors: a number, or a percentage of the devices."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


# --- tasks ------------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("script")
@click.option(
    "-d",
    "--device",
    "devices",
    multiple=True,
    help="A device id (an SSM managed node id or device-id tag); repeat it, or separate ids with commas.",
)
@click.option(
    "--devices-file", type=click.File("r"), help="A file of device ids, one per line ('-' reads standard input)."
)
@click.option("--timeout-seconds", type=click.IntRange(min=1), help="Each device's time limit.")
@click.option("--max-concurrency", help="Devices running at once: a number or a percentage such as 10%.")
@click.option("--max-errors", help="Stop starting devices after this many failures: a number or a percentage.")
@click.option("--deadline-seconds", type=click.IntRange(min=1), help="The whole task's time limit.")
@click.option("--idempotency-key", help="Send this Idempotency-Key (default: a new one).")
@click.option("--wait", "wait_", is_flag=True, help="Then watch it until it finishes; the exit status says how.")
@json_option
def submit(
    script: str,
    devices: tuple[str, ...],
    devices_file: Any,
    timeout_seconds: int | None,
    max_concurrency: str | None,
    max_errors: str | None,
    deadline_seconds: int | None,
    idempotency_key: str | None,
    wait_: bool,
    as_json: bool,
) -> int:
    """Run SCRIPT on devices: a local file (uploaded first) or a stored script (scripts/... or s3://...)."""
    device_ids = [item.strip() for value in devices for item in value.split(",") if item.strip()]
    if devices_file is not None:
        device_ids += [line.strip() for line in devices_file if line.strip() and not line.startswith("#")]
    if not device_ids:
        raise click.UsageError("no devices: give -d/--device or --devices-file")
    with _client() as client:
        if Path(script).is_file():
            script_url = client.upload_script(script)
            if not as_json:
                err.print(f"uploaded {script} as {script_url}")
        elif script.startswith(("scripts/", "s3://")):
            script_url = script
        else:
            raise click.UsageError(f"{script} is not a file here, nor a stored script (scripts/... or s3://...)")
        task = client.submit(
            device_ids,
            script_url,
            timeout_seconds=timeout_seconds,
            max_concurrency=_limit(max_concurrency),
            max_errors=_limit(max_errors),
            deadline_seconds=deadline_seconds,
            idempotency_key=idempotency_key,
        )
        if as_json:
            _print_json(task.body())
        else:
            out.print(f"submitted task [bold]{task.id}[/]: {len(task.device_ids)} devices, {task.script_url}")
        if not wait_:
            if not as_json:
                err.print(f"watch it: longrun watch {task.id}")
            return EXIT_OK
        return _watch(client, task.id, as_json, None)


@cli.command()
@click.argument("task_id", metavar="TASK")
@json_option
def status(task_id: str, as_json: bool) -> int:
    """A task's status and progress."""
    with _client() as client:
        task = client.get(task_id)
    if as_json:
        _print_json(task.body())
        return EXIT_OK
    _describe(task)
    return EXIT_OK


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.option("--timeout", type=float, help="Give up (exit 1) after this many seconds; the task goes on.")
@json_option
def watch(task_id: str, timeout: float | None, as_json: bool) -> int:
    """Follow a task live until it finishes; the exit status says how it ended.

    On a terminal Ctrl-C asks whether to cancel the task; otherwise it leaves the task running (exit 130).
    With --json, one event per line (NDJSON), then the final task."""
    with _client() as client:
        return _watch(client, task_id, as_json, timeout)


@cli.command()
@click.argument("task_id", metavar="TASK")
@json_option
def result(task_id: str, as_json: bool) -> int:
    """Each device's outcome, with the start of its output, once the task has finished."""
    with _client() as client:
        task = client.get(task_id)
        devices = list(client.result(task_id))
    if as_json:
        _print_json({"id": task.id, "status": task.status.value, "devices": [device.body() for device in devices]})
        return outcome_code(task)
    table = _table("DEVICE", "STATUS", "EXIT", "OUTPUT")
    for device in devices:
        stream = device.stdout if device.status.value in DEVICE_SUCCESS else (device.stderr or device.stdout)
        first = _first_line(stream.head if stream else "") or (device.reason or "")
        exit_code = "" if device.exit_code is None else str(device.exit_code)
        table.add_row(
            str(device.device_id), Text(device.status.value, STYLES.get(device.status.value, "")), exit_code, first
        )
    out.print(table)
    out.print(_ending(task))
    return outcome_code(task)


@cli.command()
@click.argument("task_id", metavar="TASK")
@json_option
def cancel(task_id: str, as_json: bool) -> int:
    """Cancel a task (asking again is harmless): no device starts any more and running scripts are stopped."""
    with _client() as client:
        task = client.cancel(task_id)
    if as_json:
        _print_json(task.body())
    else:
        out.print(f"task {task.id} is {task.status.value}" + (f": {task.status_reason}" if task.status_reason else ""))
    return EXIT_OK


@cli.command(name="list")
@click.option("--status", type=click.Choice([status.value for status in TaskStatus]), help="Only tasks in it.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@json_option
def list_tasks(status: str | None, limit: int, as_json: bool) -> int:
    """Your tasks, newest first."""
    with _client() as client:
        tasks = _first(client.list(status, page_size=min(limit, 100)), limit)
    if as_json:
        _print_json({"items": [task.body() for task in tasks]})
        return EXIT_OK
    table = _table("TASK", "STATUS", "DEVICES", "CREATED", "SCRIPT")
    for task in tasks:
        created = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            task.id, Text(task.status.value, _task_style(task.status)), str(task.device_count), created, task.script_url
        )
    out.print(table)
    return EXIT_OK


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.argument("device_id", metavar="DEVICE")
@click.option("--stderr", is_flag=True, help="The device's stderr instead of its stdout.")
def logs(task_id: str, device_id: str, stderr: bool) -> int:
    """A device's whole stdout (or --stderr), as the script wrote it."""
    with _client() as client:
        for chunk in client.iter_logs(task_id, device_id, "stderr" if stderr else "stdout"):
            sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    return EXIT_OK


@cli.command()
@click.argument("task_id", metavar="TASK")
@click.option("--status", type=click.Choice([status.value for status in DeviceStatus]), help="Only devices in it.")
@json_option
def devices(task_id: str, status: str | None, as_json: bool) -> int:
    """Each device's state now, running or finished, in the order the task lists them."""
    with _client() as client:
        found = list(client.devices(task_id, status))
    if as_json:
        _print_json({"items": [device.body() for device in found]})
        return EXIT_OK
    table = _table("DEVICE", "STATUS", "EXIT", "REASON")
    for device in found:
        exit_code = "" if device.exit_code is None else str(device.exit_code)
        table.add_row(
            str(device.device_id),
            Text(device.status.value, STYLES.get(device.status.value, "")),
            exit_code,
            device.reason or "",
        )
    out.print(table)
    return EXIT_OK


# --- webhooks ---------------------------------------------------------------------------------------------------


@cli.group()
def webhooks() -> None:
    """Endpoints that receive your tasks' events, signed as Standard Webhooks says."""


@webhooks.command(name="add")
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice([kind.value for kind in TaskEventType]),
    help="An event type to deliver (repeat it; default: all).",
)
@json_option
def add_webhook(url: str, events: tuple[str, ...], as_json: bool) -> int:
    """Add an endpoint; its signing secret is shown now only."""
    with _client() as client:
        webhook = client.add_webhook(url, [TaskEventType(kind) for kind in events] or None)
    if as_json:
        _print_json(webhook.body())
    else:
        out.print(f"webhook {webhook.id} -> {webhook.url}\nsecret {webhook.secret}  (shown only now: keep it)")
    return EXIT_OK


@webhooks.command(name="list")
@json_option
def list_webhooks(as_json: bool) -> int:
    """Your webhook endpoints."""
    with _client() as client:
        found = list(client.webhooks())
    if as_json:
        _print_json({"items": [webhook.body() for webhook in found]})
        return EXIT_OK
    table = _table("WEBHOOK", "URL", "ENABLED", "EVENTS")
    for webhook in found:
        enabled = "yes" if webhook.enabled else f"no: {webhook.disabled_reason}"
        table.add_row(webhook.id, webhook.url, enabled, ", ".join(webhook.events))
    out.print(table)
    return EXIT_OK


@webhooks.command(name="rm")
@click.argument("webhook_id", metavar="WEBHOOK")
def remove_webhook(webhook_id: str) -> int:
    """Remove an endpoint."""
    with _client() as client:
        client.remove_webhook(webhook_id)
    err.print(f"removed webhook {webhook_id}")
    return EXIT_OK


@webhooks.command(name="test")
@click.argument("webhook_id", metavar="WEBHOOK")
@json_option
def test_webhook(webhook_id: str, as_json: bool) -> int:
    """Send an endpoint a webhook.ping."""
    with _client() as client:
        delivery = client.test_webhook(webhook_id)
    if as_json:
        _print_json(delivery.body())
    else:
        out.print(f"delivery {delivery.id} queued; see it: longrun webhooks deliveries {webhook_id}")
    return EXIT_OK


@webhooks.command(name="deliveries")
@click.argument("webhook_id", metavar="WEBHOOK")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
def webhook_deliveries(webhook_id: str, limit: int, as_json: bool) -> int:
    """An endpoint's deliveries, newest first, with every attempt."""
    with _client() as client:
        found = _first(client.deliveries(webhook_id), limit)
    if as_json:
        _print_json({"items": [delivery.body() for delivery in found]})
        return EXIT_OK
    for delivery in found:
        out.print(
            f"{delivery.id}  {delivery.event_type}  {delivery.status.value}  {delivery.created_at:%Y-%m-%d %H:%M:%S}"
        )
        for attempt in delivery.attempts:
            answer = attempt.status_code if attempt.status_code is not None else attempt.error
            out.print(f"    {attempt.time:%H:%M:%S}  {answer}  {attempt.latency_ms} ms")
    return EXIT_OK


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> int:
    """Print the shell completion script: eval "$(longrun completion bash)"."""
    complete = get_completion_class(shell)
    assert complete is not None
    out.out(complete(cli, {}, "longrun", "_LONGRUN_COMPLETE").source(), highlight=False)
    return EXIT_OK


# --- watching -----------------------------------------------------------------------------------------------------


def _watch(client: Client, task_id: str, as_json: bool, timeout: float | None) -> int:
    interactive = sys.stdin.isatty() and out.is_terminal
    follow = _Follower(client, task_id, as_json, live=out.is_terminal and not as_json)
    while True:
        try:
            task = follow.run(timeout)
            break
        except KeyboardInterrupt:
            follow.view.stop()
            if not (interactive and click.confirm(f"\nCancel task {task_id}?", default=False, err=True)):
                err.print(f"left task {task_id} running")
                return EXIT_INTERRUPTED
            cancelled = client.cancel(task_id)
            err.print(f"task {task_id} is {cancelled.status.value}")
    if as_json:
        _print_json(task.body())
        return outcome_code(task)
    follow.view.stop()
    follow.failures(task)
    out.print(_ending(task))
    return outcome_code(task)


class _Follower:
    """Shows each device once, as it finishes: from the pushed events, and, for devices that finished before it
    started (or while it polled), from the devices route."""

    def __init__(self, client: Client, task_id: str, as_json: bool, live: bool) -> None:
        self._client = client
        self._task_id = task_id
        self._as_json = as_json
        self._shown: set[str] = set()
        self._listed_at = -1
        self.view = WatchView(out if not as_json else err, task_id, live)

    def run(self, timeout: float | None) -> ScriptExecution:
        with self.view:
            for progress in self._client.follow(self._task_id, timeout):
                self._show(progress)
        return self._client.get(self._task_id)

    def _show(self, progress: Progress) -> None:
        if self._as_json:
            _print_json(progress.event.body() if progress.event else progress.state.body())
            return
        for device in progress.devices:
            self._device(device.device_id, device.status.value, device.exit_code, device.reason)
        if progress.event is None:  # a state read on subscribing or polling: devices may have finished unseen
            self._catch_up(progress.state)
        self.view.update(progress.state)

    def _catch_up(self, state: ScriptExecutionState) -> None:
        finished = finished_of(state)
        if finished <= len(self._shown) or finished == self._listed_at:
            return
        self._listed_at = finished
        for device in self._client.devices(self._task_id):
            if device.status.finished:
                self._device(device.device_id, device.status.value, device.exit_code, device.reason)

    def _device(self, device_id: str | int, status: str, exit_code: int | None, reason: str | None) -> None:
        if str(device_id) in self._shown:
            return
        self._shown.add(str(device_id))
        self.view.device(device_id, status, exit_code, reason)

    def failures(self, task: ScriptExecution) -> None:
        """The first line of each failed device's stderr, from the result."""
        failed = sum(n for status, n in task.device_counts.items() if status not in DEVICE_SUCCESS)
        if not failed or not task.status.finished:
            return
        lines: list[Text] = []
        for device in self._client.result(self._task_id):
            if device.status.value in DEVICE_SUCCESS or device.status is DeviceStatus.NOT_STARTED:
                continue
            first = _first_line(device.stderr.head if device.stderr else "")
            line = Text(f"  {device.device_id!s:<24} ", style="bold")
            line.append(device.status.value, style=STYLES.get(device.status.value, ""))
            if device.exit_code is not None:
                line.append(f" exit {device.exit_code}", style="red")
            line.append(f"  {first or device.reason or ''}")
            lines.append(line)
        if lines:
            out.print(Text("\nfailed devices (first line of stderr):", style="bold red"))
            for line in lines:
                out.print(line)


# --- shaping ----------------------------------------------------------------------------------------------------


def outcome_code(task: ScriptExecution) -> int:
    """How a task ended, as an exit status."""
    if task.status is TaskStatus.CANCELLED:
        return EXIT_CANCELLED
    if task.status in (TaskStatus.FAILED, TaskStatus.TIMED_OUT):
        return EXIT_TASK_FAILED
    if any(n for status, n in task.device_counts.items() if status not in DEVICE_SUCCESS):
        return EXIT_DEVICES_FAILED
    return EXIT_OK


def _describe(task: ScriptExecution) -> None:
    status = Text(task.status.value, style=_task_style(task.status))
    if task.status_reason:
        status.append(f"  ({task.status_reason})", style="dim")
    rows: list[tuple[str, Text | str]] = [
        ("task", task.id),
        ("status", status),
        ("progress", f"{task.percentage}% of {len(task.device_ids)} devices" + (f"  {eta(task)}" if eta(task) else "")),
        ("devices", counts_line(task.device_counts)),
        ("step", task.current_step),
        ("script", task.script_url),
        ("created", f"{task.created_at.astimezone():%Y-%m-%d %H:%M:%S}"),
    ]
    if task.completed_at:
        rows.append(("finished", f"{task.completed_at.astimezone():%Y-%m-%d %H:%M:%S}"))
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def _ending(task: ScriptExecution) -> Text:
    line = Text("\n")
    line.append(task.status.value, style=_task_style(task.status))
    succeeded = task.device_counts.get(DeviceStatus.SUCCESS.value, 0)
    line.append(f": {succeeded} of {len(task.device_ids)} devices succeeded")
    others = {status: n for status, n in task.device_counts.items() if n and status not in DEVICE_SUCCESS}
    if others:
        line.append("; " + ", ".join(f"{n} {status}" for status, n in others.items()))
    if task.status_reason:
        line.append(f"  ({task.status_reason})", style="dim")
    return line


def _table(*columns: str) -> Table:
    """A plain table with these column headings, as every listing prints."""
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _task_style(status: TaskStatus) -> str:
    return {
        TaskStatus.COMPLETE: "green",
        TaskStatus.FAILED: "bold red",
        TaskStatus.TIMED_OUT: "bold red",
        TaskStatus.CANCELLED: "yellow",
        TaskStatus.CANCELLING: "yellow",
    }.get(status, "cyan")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


T = TypeVar("T", bound=ApiModel)


def _first(items: Iterable[T], limit: int) -> list[T]:
    found: list[T] = []
    for item in items:
        if len(found) >= limit:
            break
        found.append(item)
    return found


def _fail(label: str, message: str, code: int) -> int:
    text = Text(f"{label}: ", style="bold red")
    text.append(message)
    err.print(text)
    return code


def main(argv: list[str] | None = None) -> None:
    """The ``longrun`` command: runs a subcommand and exits with the status it stands for."""
    try:
        code = cli.main(args=argv, prog_name="longrun", standalone_mode=False)
    except click.exceptions.Exit as done:
        code = done.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("interrupted")
        code = EXIT_INTERRUPTED
    except click.UsageError as error:
        error.show()
        code = EXIT_USAGE
    except click.ClickException as error:
        error.show()
        code = EXIT_DEVICES_FAILED
    except AuthenticationError as error:
        code = _fail("refused", error.describe(), EXIT_AUTH)
    except InvalidRequest as error:
        code = _fail("invalid request", error.describe(), EXIT_USAGE)
    except ApiError as error:
        code = _fail("error", error.describe(), EXIT_DEVICES_FAILED)
    except ConnectionFailed as error:
        code = _fail("unreachable", str(error), EXIT_UNREACHABLE)
    except LongrunError as error:
        code = _fail("error", str(error), EXIT_DEVICES_FAILED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
