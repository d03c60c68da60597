"""Start ``python -m local_runtime`` as its own process on free ports and wait until it serves (for the
end-to-end tests and the benchmarks)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(rb"^READY (?P<url>\S+)\n", re.MULTILINE)
WEBSOCKET = re.compile(rb"^  WebSocket +(?P<url>ws://\S+)", re.MULTILINE)
"""The banner's line naming the WebSocket API's URL (when the template has one)"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RuntimeProcess:
    process: subprocess.Popen[bytes]
    api: str
    """The API's base URL: its stage on the local host"""
    edge: str
    log: Path
    websocket: str | None = None
    """The WebSocket API's URL: its stage on the local host"""

    @classmethod
    def start(cls, *options: str, timeout: float = 60) -> RuntimeProcess:
        port, edge_port, ws_port = free_port(), free_port(), free_port()
        work = Path(tempfile.mkdtemp(prefix="longrun-local-"))
        log = work / "local-runtime.log"
        command = [
            sys.executable, "-m", "local_runtime", "--port", str(port), "--edge-port", str(edge_port),
            "--ws-port", str(ws_port),
            "--logs-dir", str(work / "logs"), "--request-log", *options,
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not READY.search(log.read_bytes()):
            if process.poll() is not None:
                raise RuntimeError(f"the local runtime exited:\n{log.read_text()}")
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the local runtime did not start in {timeout} s")
            time.sleep(0.1)
        output = log.read_bytes()
        ready, websocket = READY.search(output), WEBSOCKET.search(output)
        assert ready is not None
        edge = f"http://127.0.0.1:{edge_port}"
        return cls(process, ready["url"].decode(), edge, log, websocket["url"].decode() if websocket else None)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as Ctrl-C or a service manager would; answer the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
