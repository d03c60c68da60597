"""Cold start: each function's init (a fresh process importing its handler module, with the environment the
template gives it) against a bare ``import boto3`` in a fresh process, interleaved in the same run.

    python -m bench.cold_start [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from bench.common import save
from local_runtime.launcher import ROOT
from local_runtime.template import load

MEASURE = """
import importlib.util, sys, time
started = time.perf_counter()
{body}
print(time.perf_counter() - started)
"""
BARE = "import boto3"
HANDLER = """
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""


def once(body: str, env: dict[str, str], *argv: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE.format(body=body), *argv], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip()) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    stack = load(ROOT, "longrun", "us-east-1")
    base_env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    samples: dict[str, list[float]] = {"import boto3": []}
    for _ in range(args.rounds):
        samples["import boto3"].append(once(BARE, base_env))
        for function in stack.functions.values():
            env = {**base_env, **function.environment, "PYTHONPATH": str(ROOT / "layers" / "longrun")}
            samples.setdefault(function.logical_id, []).append(once(HANDLER, env, str(function.code_dir / "app.py")))
    medians = {name: round(statistics.median(values), 1) for name, values in samples.items()}
    baseline = medians["import boto3"]
    save(
        "cold_start",
        {
            "rounds": args.rounds,
            "medianMilliseconds": medians,
            "ratioToBareBoto3": {
                name: round(ms / baseline, 2) for name, ms in medians.items() if name != "import boto3"
            },
            "target": 1.3,
        },
    )


if __name__ == "__main__":
    main()
