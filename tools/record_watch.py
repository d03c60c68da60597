"""Record `longrun watch` in a real terminal: start the local runtime with a 50-device fleet, run
``longrun submit examples/scripts/rollout.sh … --wait`` in a tmux session, capture the pane (with its colours)
while the task runs and once it has ended, and render both captures to SVG under docs/:

    .venv/bin/python -m tools.record_watch        (make record-watch)
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from local_runtime.launcher import ROOT, RuntimeProcess

SESSION = "longrun-watch-recording"
COLUMNS, ROWS = 104, 34
FLEET = 50


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def capture() -> str:
    """The pane as the terminal shows it, with its colours (SGR escapes)."""
    return tmux("capture-pane", "-p", "-e", "-t", SESSION)


def render(screen: str, title: str, path: Path) -> None:
    with open(os.devnull, "w") as nowhere:
        console = Console(record=True, width=COLUMNS, force_terminal=True, color_system="truecolor", file=nowhere)
        console.print(Text.from_ansi(screen.rstrip("\n")), crop=False, soft_wrap=True)
        path.write_text(console.export_svg(title=title))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the SVGs go")
    parser.add_argument("--running-at", type=float, default=0.55, help="capture the running task at this share")
    args = parser.parse_args()
    runtime = RuntimeProcess.start("--fleet-size", str(FLEET), "--log-level", "WARNING")
    try:
        devices = ",".join(f"device-{n}" for n in range(1, FLEET + 1))
        command = f"longrun submit examples/scripts/rollout.sh -d {devices} --max-concurrency 20 --wait"
        environment = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "LONGRUN_API_URL": runtime.api,
            "LONGRUN_WEBSOCKET_URL": runtime.websocket or "",
            "AWS_ACCESS_KEY_ID": "operator",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "TERM": "xterm-256color",
            "PS1": "$ ",
        }
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in environment.items())
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True, check=False)
        tmux("new-session", "-d", "-s", SESSION, "-x", str(COLUMNS), "-y", str(ROWS), "-c", str(ROOT), "bash --norc")
        tmux("send-keys", "-t", SESSION, f"export {exports}; clear", "Enter")
        time.sleep(0.5)
        shown = "longrun submit examples/scripts/rollout.sh -d $(seq -s, -f device-%g 1 50) --max-concurrency 20 --wait"
        tmux("send-keys", "-t", SESSION, f"clear; echo '$ {shown}'; {command}", "Enter")
        running = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            screen = capture()
            plain = Text.from_ansi(screen).plain
            if running is None and _share(plain) >= args.running_at:
                running = screen
            if "devices succeeded" in plain and plain.rstrip().endswith("$"):
                break
            time.sleep(0.25)
        else:
            raise SystemExit("the task did not finish in 5 minutes")
        render(running or screen, "longrun watch (running)", args.out / "longrun-watch-running.svg")
        render(screen, "longrun watch", args.out / "longrun-watch.svg")
        print(f"wrote {args.out / 'longrun-watch-running.svg'} and {args.out / 'longrun-watch.svg'}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True, check=False)
        runtime.stop()
    return 0


def _share(screen: str) -> float:
    """How far along the screen's progress line (``… 28%  14/50 devices …``) says the task is (0..1)."""
    for line in screen.splitlines():
        if "devices" in line and "%" in line and "/" in line:
            words = line.split()
            done = next((word for word in words if "/" in word and word.replace("/", "").isdigit()), None)
            if done:
                finished, total = (int(part) for part in done.split("/"))
                return finished / max(total, 1)
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
