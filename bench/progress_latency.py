"""Progress latency: from a device's script exit to the API showing it. Devices end one after another (device-k
sleeps k x step seconds); a poller reads the task every 50 ms; for the k-th device to end, the latency is the first
poll that counts k finished devices, less the moment its script exited (its endedAt).

    python -m bench.progress_latency [--devices 40] [--step 0.25]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from bench.common import FIGURES, Local, percentile, save


def poll_progress(local: Local, task_id: str, every: float = 0.05) -> list[tuple[float, int]]:
    """(when, devices finished) of each GET of the task, every ``every`` seconds until it has finished."""
    polls: list[tuple[float, int]] = []
    while True:
        state = local.get(task_id)
        counts = state["deviceCounts"]
        polls.append((time.time(), counts["SUCCESS"] + counts["FAILED"]))
        if state["status"] == "COMPLETE":
            return polls
        time.sleep(every)


def shown_after(polls: list[tuple[float, int]], ended: list[float]) -> list[float]:
    """For the k-th device to end, the first poll that counts k finished devices, less the moment it ended."""
    latencies = []
    for k, moment in enumerate(sorted(ended), start=1):
        shown = next(t for t, finished in polls if finished >= k)
        latencies.append(max(0.0, shown - moment))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=40)
    parser.add_argument("--step", type=float, default=0.25)
    args = parser.parse_args()
    local = Local.start("--fleet-size", str(args.devices))
    try:
        script = local.upload_script(
            "bench-staggered.sh", f'#!/bin/sh\nsleep $(awk "BEGIN {{ print ${{DEVICE_ID#device-}} * {args.step} }}")\n'
        )
        task = local.submit(
            **{
                "device-ids": [f"device-{n}" for n in range(1, args.devices + 1)],
                "script-url": script,
                "max-concurrency": args.devices,
            }
        )
        polls = poll_progress(local, task["id"])
        devices = local.devices(task["id"])
    finally:
        local.stop()
    ended = [datetime.fromisoformat(d["endedAt"]).replace(tzinfo=UTC).timestamp() for d in devices]
    latencies = shown_after(polls, ended)
    save(
        "progress_latency",
        {
            "devices": args.devices,
            "polls": len(polls),
            "p50Seconds": round(percentile(latencies, 0.5), 3),
            "p95Seconds": round(percentile(latencies, 0.95), 3),
            "maxSeconds": round(max(latencies), 3),
            "latencies": [round(x, 3) for x in latencies],
        },
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(latencies, bins=20)
    axis.set_xlabel("script exit -> visible in GET (s)")
    axis.set_ylabel("devices")
    axis.set_title("Progress latency on the local runtime")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "progress_latency.png", dpi=110)


if __name__ == "__main__":
    main()
