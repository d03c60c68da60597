"""Fan-out overhead: a task of trivial scripts through the local runtime (API, state machine, Lambda handlers,
simulated SSM, DynamoDB) against the same scripts run directly, each in its own directory, with the same
concurrency. Runs alternate (direct, runtime, direct, ...) so that a noisy machine weighs on both.

    python -m bench.fanout_overhead [--devices 1000] [--concurrency 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from bench.common import Local, save
from local_runtime.fleet import SPAWN_LOCK
from local_runtime.launcher import ROOT

SCRIPT = ROOT / "examples" / "scripts" / "hello.sh"


def direct(devices: int, concurrency: int) -> float:
    """What the fleet does for each device, minus the orchestration: a directory, the script, a shell."""
    root = Path(tempfile.mkdtemp(prefix="longrun-direct-"))

    def run(n: int) -> None:
        work = root / f"device-{n}"
        work.mkdir()
        script = SCRIPT.read_bytes()
        with SPAWN_LOCK:  # as the fleet does: no fork while a script is open for writing
            (work / SCRIPT.name).write_bytes(script)
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "DEVICE_ID": f"device-{n}"}
        with SPAWN_LOCK:
            process = subprocess.Popen(
                ["/bin/sh", "-c", f"chmod +x ./{SCRIPT.name} && ./{SCRIPT.name}"],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"device-{n}: exit {process.returncode}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(run, range(1, devices + 1)))
    elapsed = time.perf_counter() - started
    shutil.rmtree(root)
    return elapsed


def through_runtime(local: Local, devices: int, concurrency: int) -> float:
    task = local.submit(
        **{
            "device-ids": [f"device-{n}" for n in range(1, devices + 1)],
            "script-url": "scripts/hello.sh",
            "max-concurrency": concurrency,
        }
    )
    done = local.wait(task["id"], poll=0.2)
    assert done["status"] == "COMPLETE" and done["deviceCounts"]["SUCCESS"] == devices, done
    return (datetime.fromisoformat(done["completedAt"]) - datetime.fromisoformat(done["createdAt"])).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    local = Local.start("--fleet-size", str(args.devices))
    directs, runtimes = [], []
    try:
        for _ in range(args.rounds):
            directs.append(direct(args.devices, args.concurrency))
            runtimes.append(through_runtime(local, args.devices, args.concurrency))
        directs.append(direct(args.devices, args.concurrency))
    finally:
        local.stop()
    direct_s = statistics.median(directs)
    runtime_s = statistics.median(runtimes)
    save(
        "fanout_overhead",
        {
            "devices": args.devices,
            "concurrency": args.concurrency,
            "directSeconds": [round(d, 2) for d in directs],
            "runtimeSeconds": [round(r, 2) for r in runtimes],
            "directMedian": round(direct_s, 2),
            "runtimeMedian": round(runtime_s, 2),
            "ratio": round(runtime_s / direct_s, 2),
            "target": 5.0,
        },
    )


if __name__ == "__main__":
    main()
