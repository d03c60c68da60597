"""Push latency: from a device's script exit to the message that shows it, on each push channel. Devices end one
after another (device-k sleeps 2 + k x step seconds); a WebSocket subscriber, a webhook receiver on loopback and a
Server-Sent Events client note when each device's outcome reaches them (in a progress event's ``devices``); the
latency is that moment less the moment its script exited (its endedAt). A poller GETs the task every 50 ms in the
same run, as the progress-latency benchmark does: the floor every channel starts from (the outcome recorded).

    python -m bench.push_latency [--devices 40] [--step 0.25]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from websockets.sync.client import connect

from bench.common import RESOURCE, Local, percentile, request, save
from bench.progress_latency import poll_progress, shown_after

PROGRESS = "script-execution.progress"
FINISHED = "script-execution.finished"


class Arrivals:
    """When each device's outcome first reached one channel."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def note(self, event: dict[str, Any]) -> None:
        now = time.time()
        with self._lock:
            for device in event.get("devices") or [] if event.get("type") == PROGRESS else []:
                self.at.setdefault(str(device["device-id"]), now)
        if event.get("type") == FINISHED:
            self.finished.set()


def websocket_subscriber(url: str, task_id: str, arrivals: Arrivals) -> None:
    with connect(url) as ws:
        ws.send(json.dumps({"action": "subscribe", "task-id": task_id, "after": 0}))
        while not arrivals.finished.is_set():
            arrivals.note(json.loads(ws.recv(timeout=600)))


def webhook_receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()
            arrivals.note(json.loads(body))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def sse_client(url: str, arrivals: Arrivals) -> None:
    """Reads the stream line by line, reconnecting with Last-Event-ID as EventSource does."""
    last: str | None = None
    while not arrivals.finished.is_set():
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last} if last else {})
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=600) as stream:
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    last = line[4:]
                elif line.startswith("data: "):
                    arrivals.note(json.loads(line[6:]))


def _summary(latencies: list[float]) -> dict[str, float]:
    latencies = [max(0.0, latency) for latency in latencies]
    return {
        "received": len(latencies),
        "p50Seconds": round(percentile(latencies, 0.5), 3),
        "p95Seconds": round(percentile(latencies, 0.95), 3),
        "maxSeconds": round(max(latencies), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--step", type=float, default=0.25)
    args = parser.parse_args()
    local = Local.start("--fleet-size", str(args.devices))
    channels = {"websocket": Arrivals(), "webhook": Arrivals(), "sse": Arrivals()}
    receiver = webhook_receiver(channels["webhook"])
    try:
        api = local.runtime.api
        request("POST", f"{api}/device-management/webhooks", {"url": f"http://127.0.0.1:{receiver.server_port}/"})
        script = local.upload_script(
            "bench-staggered.sh",
            f'#!/bin/sh\nsleep $(awk "BEGIN {{ print 2 + ${{DEVICE_ID#device-}} * {args.step} }}")\n',
        )
        task = local.submit(
            **{
                "device-ids": [f"device-{n}" for n in range(1, args.devices + 1)],
                "script-url": script,
                "max-concurrency": args.devices,
            }
        )
        readers = [
            threading.Thread(
                target=websocket_subscriber, args=(local.runtime.websocket, task["id"], channels["websocket"])
            ),
            threading.Thread(target=sse_client, args=(f"{api}{RESOURCE}/{task['id']}/events", channels["sse"])),
        ]
        for reader in readers:
            reader.start()
        polls = poll_progress(local, task["id"])
        for arrivals in channels.values():
            arrivals.finished.wait(timeout=120)
        for reader in readers:
            reader.join(timeout=30)
        devices = local.devices(task["id"])
    finally:
        receiver.shutdown()
        local.stop()
    ended = {str(d["device-id"]): datetime.fromisoformat(d["endedAt"]).timestamp() for d in devices}
    result: dict[str, Any] = {"devices": args.devices, "stepSeconds": args.step}
    result["poll"] = _summary(shown_after(polls, list(ended.values())))
    for name, arrivals in channels.items():
        result[name] = _summary([arrivals.at[d] - ended[d] for d in ended if d in arrivals.at])
    save("push_latency", result)


if __name__ == "__main__":
    main()
