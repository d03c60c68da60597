"""What ``longrun watch`` shows: on a terminal, a progress bar with the percentage, counts per status, ETA and
current step, redrawn in place, with each device printed above it as it finishes (failures in red with their exit
code and reason); elsewhere, plain lines, one per change."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from longrun_client.models import DeviceStatus, ScriptExecutionState

STYLES = {
    "SUCCESS": "green",
    "FAILED": "bold red",
    "TIMED_OUT": "bold red",
    "CANCELLED": "yellow",
    "NOT_STARTED": "yellow",
    "RUNNING": "cyan",
    "PENDING": "dim",
}
MARKS = {"SUCCESS": "✔", "FAILED": "✘", "TIMED_OUT": "⏱", "CANCELLED": "■", "NOT_STARTED": "·"}
COUNT_ORDER = ("SUCCESS", "FAILED", "TIMED_OUT", "CANCELLED", "NOT_STARTED", "RUNNING", "PENDING")


def device_line(device_id: str | int, status: str, exit_code: int | None, reason: str | None) -> Text:
    """One finished device: ``✘ db-1  FAILED  exit 3  refusing to touch …``."""
    line = Text()
    line.append(f"{MARKS.get(status, ' ')} ", style=STYLES.get(status, ""))
    line.append(f"{device_id!s:<24} ", style="bold")
    line.append(f"{status:<11}", style=STYLES.get(status, ""))
    if exit_code is not None and status != DeviceStatus.SUCCESS:
        line.append(f" exit {exit_code}", style="red")
    if reason and status != DeviceStatus.SUCCESS and reason != f"the script exited with code {exit_code}":
        line.append(f"  {reason}", style="dim")
    return line


def counts_line(counts: dict[str, int]) -> Text:
    line = Text()
    for status in COUNT_ORDER:
        if counts.get(status):
            line.append(f"{status} {counts[status]}", style=STYLES[status])
            line.append("  ")
    return line


def eta(state: ScriptExecutionState, now: datetime | None = None) -> str:
    if state.status.finished or state.estimated_completion_at is None:
        return ""
    seconds = max(0, int((state.estimated_completion_at - (now or datetime.now(UTC))).total_seconds()))
    return f"ETA {seconds // 60}:{seconds % 60:02d}"


def finished_of(state: ScriptExecutionState) -> int:
    return sum(n for status, n in state.device_counts.items() if DeviceStatus(status).finished)


class WatchView:
    """Shows a followed task. ``live`` redraws in place (a terminal); otherwise every change is a plain line."""

    def __init__(self, console: Console, task_id: str, live: bool) -> None:
        self._console = console
        self._task_id = task_id
        self._state: ScriptExecutionState | None = None
        self._live = Live(console=console, refresh_per_second=8, transient=False) if live else None
        self._plain_shown = ""

    def __enter__(self) -> WatchView:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()

    def device(self, device_id: str | int, status: str, exit_code: int | None, reason: str | None) -> None:
        self._console.print(device_line(device_id, status, exit_code, reason), highlight=False)

    def note(self, text: Text | str) -> None:
        self._console.print(text, highlight=False)

    def update(self, state: ScriptExecutionState) -> None:
        self._state = state
        if self._live is not None:
            self._live.update(self._panel(state), refresh=True)
            return
        line = self._plain(state)
        if line != self._plain_shown:
            self._plain_shown = line
            self._console.print(line, highlight=False)

    def _plain(self, state: ScriptExecutionState) -> str:
        counts = counts_line(state.device_counts).plain.strip()
        parts = [state.status.value, f"{state.percentage}%", f"({finished_of(state)}/{state.device_count})", counts]
        if state.current_step:
            parts.append(f"- {state.current_step}")
        if later := eta(state):
            parts.append(later)
        return " ".join(part for part in parts if part)

    def _panel(self, state: ScriptExecutionState) -> RenderableType:
        header = Text()
        header.append("task ", style="dim")
        header.append(self._task_id, style="bold")
        header.append("  ")
        header.append(state.status.value, style=_status_style(state.status.value))
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column()
        done = finished_of(state)
        summary = Text(f"{state.percentage:>3}%  {done}/{state.device_count} devices  ")
        summary.append(eta(state), style="cyan")
        bar.add_row(ProgressBar(total=max(state.device_count, 1), completed=done, width=40), summary)
        return Group(Text(""), header, bar, counts_line(state.device_counts), Text(state.current_step, style="dim"))


def _status_style(status: str) -> str:
    return {
        "COMPLETE": "bold green",
        "FAILED": "bold red",
        "TIMED_OUT": "bold red",
        "CANCELLED": "yellow",
        "CANCELLING": "yellow",
    }.get(status, "bold cyan")
