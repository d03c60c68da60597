"""Memory, and the 10,000-device run: a task of trivial scripts on 10,000 simulated devices through the local
runtime, sampling every half second the resident memory of the runtime's process and, apart, of its functions'
execution environments (each a process, as in Lambda) and of the fleet's process, and their sum (the peak of the sum
over the runtime's processes is the run's peak memory; the devices' scripts are not counted). The task must end
COMPLETE with its counts adding up to 10,000 and matching its per-device records (the result summary's device lists,
which the workflow fixes from every device's record when the task finishes).

    python -m bench.memory [--devices 10000] [--concurrency 1000]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter

import psutil

from bench.common import Local, save
from local_runtime import fleet_process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1_000)
    args = parser.parse_args()
    local = Local.start("--fleet-size", str(args.devices))
    process = psutil.Process(local.runtime.process.pid)
    samples: list[int] = []
    functions: list[tuple[int, int]] = []
    fleet: list[int] = []
    totals: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            runtime_rss = process.memory_info().rss
            environments = _children(process, "lambda_bootstrap.py")
            environments_rss = sum(_rss(p) for p in environments)
            fleet_rss = sum(_rss(p) for p in _children(process, fleet_process.MODULE))
            samples.append(runtime_rss)
            functions.append((len(environments), environments_rss))
            fleet.append(fleet_rss)
            totals.append(runtime_rss + environments_rss + fleet_rss)
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        idle = process.memory_info().rss
        started = time.monotonic()
        task = local.submit(
            **{
                "device-ids": [f"device-{n}" for n in range(1, args.devices + 1)],
                "script-url": "scripts/hello.sh",
                "max-concurrency": args.concurrency,
            }
        )
        done = local.wait(task["id"], poll=2, timeout=3 * 3600)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        sampler.join()
        local.stop()
    counts = done["deviceCounts"]
    result = done["result"]
    records = Counter(SUCCESS=len(result["success-on-devices"]), NOT_SUCCEEDED=len(result["failed-on-devices"]))
    assert done["status"] == "COMPLETE", done
    assert sum(counts.values()) == args.devices
    assert counts["SUCCESS"] == records["SUCCESS"]
    assert counts["FAILED"] + counts["TIMED_OUT"] + counts["CANCELLED"] == records["NOT_SUCCEEDED"]
    save(
        "memory",
        {
            "devices": args.devices,
            "concurrency": args.concurrency,
            "status": done["status"],
            "deviceCounts": counts,
            "recordsByStatus": dict(records),
            "seconds": round(elapsed, 1),
            "idleRssMiB": round(idle / 2**20, 1),
            "peakRssMiB": round(max(samples) / 2**20, 1),
            "functionsPeakRssMiB": round(max(rss for _, rss in functions) / 2**20, 1),
            "functionsPeakEnvironments": max(count for count, _ in functions),
            "fleetPeakRssMiB": round(max(fleet) / 2**20, 1),
            "totalPeakRssMiB": round(max(totals) / 2**20, 1),
        },
    )


def _rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.NoSuchProcess:
        return 0


def _children(runtime: psutil.Process, program: str) -> list[psutil.Process]:
    """The runtime's processes running ``program`` (its execution environments' bootstrap, or the fleet's module), not
    the devices' scripts."""
    found = []
    for child in runtime.children(recursive=True):
        try:
            if any(part.endswith(program) for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


if __name__ == "__main__":
    main()
