"""Cost model: the project's design and the naive reference, side by side in one run of the local runtime.

Both run the same script (sleep 60 s) on the local fleet. The meter counts every state transition (child
executions of the Distributed Map included), every AWS API call by service and caller, every Lambda invocation with
its duration, and DynamoDB capacity units from the size of each item read or written, by caller. Counts are turned
into dollars with bench/prices.json, per 1,000 and per 10,000 devices: the project's design is measured at two fleet
sizes and extrapolated along the line through them; the naive design grows by device (its cost per device is
measured). Push (the change feed and its channels) is its own line: measured with no subscriber, and again with one
WebSocket subscriber and one webhook endpoint for the whole task. All in adds, to the orchestration and push with no
subscriber, CloudWatch Logs ingestion (the bytes each function's log streams grew by in the local runtime during the
task, START/END/REPORT lines included) and X-Ray (each trace the default sampling rule records: 5% of the task's
trace roots, the rule's reservoir of one a second being the account's, spent by its steady traffic). Then the cost of
10,000 devices over max-concurrency 1 to 1,000, from the commands each setting sends (the former design's and the
rolling one's), plotted.

    python -m bench.cost_model [--seconds 60] [--sizes 100 200] [--naive-size 100]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import FIGURES, PRICES, RESULTS, Local, request, save
from bench.push_latency import Arrivals, webhook_receiver, websocket_subscriber
from local_runtime.fleet import node_id_for
from local_runtime.launcher import ROOT
from local_runtime.template import load

MEMORY_GB = {name: function.memory / 1024 for name, function in load(ROOT, "longrun", "us-east-1").functions.items()}
SCALES = (1_000, 10_000)
PUSH_FUNCTIONS = ("PublishEventsFunction", "WebSocketFunction", "DeliverWebhooksFunction", "EventStreamFunction")
WORKFLOW_STEPS = ("StartRunFunction", "RunBatchFunction", "ExpireBatchFunction", "FinishRunFunction")
"""Invoked by the state machine: their segments join its execution's trace rather than start their own"""
CURVE_DEVICES = 10_000
GATE = 0.05


def log_bytes(local: Local) -> dict[str, int]:
    """How many bytes each function's log streams hold so far (the runtime writes them under its logs dir)."""
    logs = Path(local.runtime.log).parent / "logs"
    found: dict[str, int] = {}
    for path in logs.rglob("*") if logs.exists() else []:
        if path.is_file():
            function = path.relative_to(logs).parts[0]
            found[function] = found.get(function, 0) + path.stat().st_size
    return found


def run_project(local: Local, devices: int, script: str, subscribed: bool = False) -> dict[str, Any]:
    """One task on ``devices`` devices; with ``subscribed``, one WebSocket subscriber and one webhook endpoint
    receive its events from start to end."""
    arrivals = Arrivals()
    receiver = webhook_receiver(Arrivals()) if subscribed else None
    webhook = None
    if receiver is not None:
        url = f"http://127.0.0.1:{receiver.server_port}/"
        webhook = request("POST", f"{local.runtime.api}/device-management/webhooks", {"url": url})
    logged = log_bytes(local)
    local.meter(reset=True)
    started = time.monotonic()
    task = local.submit(
        **{
            "device-ids": [f"device-{i}" for i in range(1, devices + 1)],
            "script-url": script,
            "max-concurrency": devices,
        }
    )
    if subscribed:
        args = (local.runtime.websocket, task["id"], arrivals)
        subscriber = threading.Thread(target=websocket_subscriber, args=args)
        subscriber.start()
    done = local.wait(task["id"], poll=5)
    assert done["status"] == "COMPLETE" and done["deviceCounts"]["SUCCESS"] == devices, done
    if subscribed:
        subscriber.join(timeout=120)
    seconds = round(time.monotonic() - started, 1)
    time.sleep(5)  # the last deliveries
    meter = local.meter()
    grown = {name: size - logged.get(name, 0) for name, size in log_bytes(local).items()}
    if receiver is not None and webhook is not None:
        request("DELETE", f"{local.runtime.api}/device-management/webhooks/{webhook['id']}")
        receiver.shutdown()
    return {"devices": devices, "seconds": seconds, "subscribed": subscribed, "meter": meter, "logBytes": grown}


def run_naive(local: Local, devices: int, key: str) -> dict[str, Any]:
    sfn = local.client("stepfunctions")
    definition = (ROOT / "bench" / "naive_reference.asl.json").read_text()
    arn = sfn.create_state_machine(
        name=f"naive-reference-{devices}", definition=definition, roleArn="arn:aws:iam::123456789012:role/naive"
    )["stateMachineArn"]
    local.meter(reset=True)
    started = time.monotonic()
    execution = sfn.start_execution(
        stateMachineArn=arn,
        input=json.dumps(
            {
                "nodes": [node_id_for(f"device-{i}") for i in range(1, devices + 1)],
                "bucket": "longrun-local-scriptsbucket",
                "sourceInfo": json.dumps(
                    {"path": f"https://s3.us-east-1.amazonaws.com/longrun-local-scriptsbucket/{key}"}
                ),
                "table": "longrun-local-TasksTable",
                "taskKey": f"NAIVE#{devices}",
            }
        ),
    )["executionArn"]
    while (status := sfn.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        time.sleep(5)
    assert status == "SUCCEEDED", sfn.get_execution_history(executionArn=execution)["events"][-3:]
    return {"devices": devices, "seconds": round(time.monotonic() - started, 1), "meter": local.meter()}


def _by_push(counts: dict[str, int], suffix: str) -> int:
    return sum(n for key, n in counts.items() if key.split(":", 1)[0] in PUSH_FUNCTIONS and key.endswith(suffix))


def units(
    meter: dict[str, Any], seconds: float = 0.0, subscribers: int = 0, logged: dict[str, int] | None = None
) -> dict[str, float]:
    """What the bill counts, from one run's meter: the orchestration's units and push's apart, and what all in adds:
    the bytes logged, the trace roots (requests that start a trace: every invocation but the state machine's
    steps', each execution and child execution)."""
    calls, by_caller = meter["calls"], meter.get("byCaller", {"calls": {}, "dynamodb": {}})
    invocations, milliseconds = meter["lambdaInvocations"], meter["lambdaMilliseconds"]
    push_capacity = by_caller["dynamodb"]
    push = {
        "pushLambdaRequests": sum(n for name, n in invocations.items() if name in PUSH_FUNCTIONS),
        "pushLambdaGbSeconds": sum(
            ms / 1000 * MEMORY_GB[name] for name, ms in milliseconds.items() if name in PUSH_FUNCTIONS
        ),
        "pushDynamodbWriteUnits": _by_push(push_capacity, ":writeUnits"),
        "pushDynamodbReadUnits": _by_push(push_capacity, ":readUnits"),
        "pushBusEvents": _by_push(by_caller["calls"], ":events:PutEventsEntries"),
        # Every SQS request but the pollers' empty receives (an idle cost of the deployment, not of a task: see
        # docs/benchmarks.md); a receive that found messages is one per batch deleted.
        "pushSqsRequests": sum(
            n * (2 if key.endswith(("DeleteMessage", "DeleteMessageBatch")) else 1)
            for key, n in by_caller["calls"].items()
            if key.split(":", 1)[0] in PUSH_FUNCTIONS and ":sqs:" in key and not key.endswith("ReceiveMessage")
        ),
        "pushWebSocketMessages": _by_push(by_caller["calls"], ":execute-api:WebSocketMessages") + subscribers,
        "pushWebSocketConnectionMinutes": subscribers * seconds / 60,
    }
    logged = logged or {}
    extra = {
        "logBytes": sum(logged.values()),
        "traceRoots": sum(n for name, n in invocations.items() if name not in WORKFLOW_STEPS)
        + 1
        + invocations.get("RunBatchFunction", 0),
    }
    return (
        extra
        | push
        | {
            "stateTransitions": meter["stateTransitions"],
            "lambdaRequests": sum(invocations.values()) - push["pushLambdaRequests"],
            "lambdaGbSeconds": sum(ms / 1000 * MEMORY_GB[name] for name, ms in milliseconds.items())
            - push["pushLambdaGbSeconds"],
            "dynamodbWriteUnits": meter["dynamodb"].get("writeUnits", 0) - push["pushDynamodbWriteUnits"],
            "dynamodbReadUnits": meter["dynamodb"].get("readUnits", 0) - push["pushDynamodbReadUnits"],
            # SSM's events, queued for CommandEventsFunction: EventBridge's sends, and the poller's receives that found
            # messages (one per batch deleted, as for push)
            "sqsRequests": sum(
                n * (2 if key.endswith(("DeleteMessage", "DeleteMessageBatch")) else 1)
                for key, n in by_caller["calls"].items()
                if key.split(":", 1)[0] not in PUSH_FUNCTIONS and ":sqs:" in key and not key.endswith("ReceiveMessage")
            ),
            "s3Puts": sum(n for call, n in calls.items() if call.startswith("service:s3:") and "Put" in call),
            "s3Gets": sum(n for call, n in calls.items() if call.startswith("service:s3:") and "Put" not in call),
            "deviceS3Puts": sum(n for call, n in calls.items() if call.startswith("device:s3:") and "Put" in call),
            "deviceS3Gets": sum(n for call, n in calls.items() if call.startswith("device:s3:") and "Put" not in call),
        }
    )


def dollars(quantities: dict[str, float]) -> dict[str, float]:
    p = PRICES
    bill = {
        "stepFunctions": quantities["stateTransitions"] * p["step_functions_standard_per_transition"],
        "lambda": quantities["lambdaRequests"] * p["lambda_per_request"]
        + quantities["lambdaGbSeconds"] * p["lambda_x86_per_gb_second"],
        "dynamodb": quantities["dynamodbWriteUnits"] * p["dynamodb_on_demand_per_write_unit"]
        + quantities["dynamodbReadUnits"] * p["dynamodb_on_demand_per_read_unit"],
        "eventbridge": 0.0,  # SSM's status-change events on the default bus, and their rule, cost nothing
        "sqs": quantities["sqsRequests"] * p["sqs_per_request"],
        "s3": quantities["s3Puts"] * p["s3_put_per_request"] + quantities["s3Gets"] * p["s3_get_per_request"],
    }
    bill["orchestration"] = sum(bill.values())
    bill["push"] = (
        quantities["pushLambdaRequests"] * p["lambda_per_request"]
        + quantities["pushLambdaGbSeconds"] * p["lambda_x86_per_gb_second"]
        + quantities["pushDynamodbWriteUnits"] * p["dynamodb_on_demand_per_write_unit"]
        + quantities["pushDynamodbReadUnits"] * p["dynamodb_on_demand_per_read_unit"]
        + quantities["pushBusEvents"] * p["eventbridge_custom_event_per_event"]
        + quantities["pushSqsRequests"] * p["sqs_per_request"]
        + quantities["pushWebSocketMessages"] * p["apigw_websocket_per_message"]
        + quantities["pushWebSocketConnectionMinutes"] * p["apigw_websocket_per_connection_minute"]
    )
    bill["logs"] = quantities.get("logBytes", 0) / 1e9 * p["cloudwatch_logs_ingestion_per_gb"]
    bill["tracing"] = quantities.get("traceRoots", 0) * p["xray_default_sampling_rate"] * p["xray_per_trace_recorded"]
    bill["allIn"] = bill["orchestration"] + bill["push"] + bill["logs"] + bill["tracing"]
    bill["devicesS3"] = (
        quantities["deviceS3Puts"] * p["s3_put_per_request"] + quantities["deviceS3Gets"] * p["s3_get_per_request"]
    )
    return {name: round(value, 6) for name, value in bill.items()}


PER_TASK = ("pushBusEvents",)
"""What does not grow with the fleet: the bus hears each status change and each whole 10 % a task passes (at most
12 events), so a larger fleet has at most the larger run's"""


def extrapolate(small: dict[str, float], large: dict[str, float], n_small: int, n_large: int, n: int) -> dict:
    """Along the line through two measured fleet sizes (``PER_TASK`` quantities: the larger run's)."""
    return {
        name: max(small[name], large[name])
        if name in PER_TASK
        else small[name] + (large[name] - small[name]) * (n - n_small) / (n_large - n_small)
        for name in small
    }


def plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = ["stepFunctions", "lambda", "dynamodb"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, scale in zip(axes, SCALES, strict=True):
        positions = range(len(parts) + 1)
        for offset, (design, label) in enumerate((("project", "longrun"), ("naive", "naive reference"))):
            bill = result[design][str(scale)]["dollars"]
            values = [bill[part] for part in parts] + [bill["orchestration"]]
            axis.bar([p + offset * 0.4 for p in positions], values, width=0.4, label=label)
        axis.set_xticks([p + 0.2 for p in positions], [*parts, "total"])
        axis.set_yscale("log")
        axis.set_title(f"{scale:,} devices, 60 s scripts")
        axis.set_ylabel("USD per task (log)")
    axes[0].legend()
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "cost_model.png", dpi=110)


def measure(seconds: int, small: int, large: int, naive: int) -> dict[str, Any]:
    local = Local.start("--fleet-size", str(max(large, naive)))
    try:
        script = local.upload_script("bench-sleep.sh", f"#!/bin/sh\nsleep {seconds}\necho done on $DEVICE_ID\n")
        return {
            "small": run_project(local, small, script),
            "large": run_project(local, large, script),
            "subscribedSmall": run_project(local, small, script, subscribed=True),
            "subscribedLarge": run_project(local, large, script, subscribed=True),
            "naive": run_naive(local, naive, script),
        }
    finally:
        local.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60, help="how long each device's script sleeps")
    parser.add_argument("--sizes", type=int, nargs=2, default=(100, 200), help="fleet sizes for the project's design")
    parser.add_argument("--naive-size", type=int, default=100)
    parser.add_argument("--reprice", action="store_true", help="price the runs saved by the last run again")
    args = parser.parse_args()
    if args.reprice:
        saved = json.loads((RESULTS / "cost_model.json").read_text())
        runs, args.seconds = saved["runs"], saved["scriptSeconds"]
        small, large, args.naive_size = runs["small"]["devices"], runs["large"]["devices"], runs["naive"]["devices"]
    else:
        small, large = args.sizes
        runs = measure(args.seconds, small, large, args.naive_size)
    measured = {
        name: units(run["meter"], run["seconds"], 1 if run.get("subscribed") else 0, run.get("logBytes"))
        for name, run in runs.items()
    }
    # longrun's own rule also hears the naive design's SSM events (same account), queues and ignores them; the naive
    # design itself has no queue and no Lambda function (and logs nothing), its one execution is its one trace root
    measured["naive"].update(
        lambdaRequests=0, lambdaGbSeconds=0, sqsRequests=0, logBytes=0, traceRoots=1 / CURVE_DEVICES
    )
    result: dict[str, Any] = {
        "prices": PRICES,
        "scriptSeconds": args.seconds,
        "runs": runs,
        "project": {},
        "subscribed": {},
        "naive": {},
    }
    for scale in SCALES:
        project = extrapolate(measured["small"], measured["large"], small, large, scale)
        naive = {name: value * scale / args.naive_size for name, value in measured["naive"].items()}
        result["project"][str(scale)] = {"units": project, "dollars": dollars(project)}
        subscribed = extrapolate(measured["subscribedSmall"], measured["subscribedLarge"], small, large, scale)
        result["subscribed"][str(scale)] = {"units": subscribed, "dollars": dollars(subscribed)}
        result["naive"][str(scale)] = {"units": naive, "dollars": dollars(naive)}
        result[f"ratio{scale}"] = round(
            result["naive"][str(scale)]["dollars"]["orchestration"]
            / result["project"][str(scale)]["dollars"]["orchestration"],
            1,
        )
    tenk = result["project"][str(CURVE_DEVICES)]
    result["allIn10000"] = tenk["dollars"]["allIn"]
    result["allInMet"] = tenk["dollars"]["allIn"] <= GATE and result[f"ratio{CURVE_DEVICES}"] >= 100
    marginal = per_command(runs["small"], runs["large"], measured["small"], measured["large"])
    result["perCommand"] = {"units": marginal, "dollars": dollars(marginal)}
    result["curve"] = curve(tenk["units"], marginal)
    save("cost_model", result)
    plot(result)
    plot_curve(result["curve"])


def per_command(
    small: dict[str, Any], large: dict[str, Any], small_units: dict[str, float], large_units: dict[str, float]
) -> dict[str, float]:
    """What one more SSM command (one more batch) adds to a task: its child execution's transitions (the measured
    difference per batch), its RunBatch invocation (duration, capacity, log bytes), and its end event: one more queued
    message, with its share of CommandEvents' invocations (their average per message), and their trace roots."""
    meter = large["meter"]
    logged = {name.rsplit("-", 1)[-1]: size for name, size in large.get("logBytes", {}).items()}  # stack-Function
    invocations, milliseconds = meter["lambdaInvocations"], meter["lambdaMilliseconds"]
    capacity = meter.get("byCaller", {}).get("dynamodb", {})
    batches = invocations["RunBatchFunction"]
    small_batches = small["meter"]["lambdaInvocations"]["RunBatchFunction"]
    by_caller = meter.get("byCaller", {}).get("calls", {})
    messages = max(by_caller.get("EventBridge:service:sqs:SendMessage", 1), 1)
    per_message = invocations.get("CommandEventsFunction", 0) / messages
    transitions = (large_units["stateTransitions"] - small_units["stateTransitions"]) / max(batches - small_batches, 1)
    return dict.fromkeys(large_units, 0.0) | {
        "stateTransitions": transitions,
        "lambdaRequests": 1 + per_message,
        "lambdaGbSeconds": milliseconds["RunBatchFunction"] / 1000 * MEMORY_GB["RunBatchFunction"] / batches
        + milliseconds.get("CommandEventsFunction", 0) / 1000 * MEMORY_GB["CommandEventsFunction"] / messages,
        "dynamodbWriteUnits": capacity.get("RunBatchFunction:writeUnits", 0) / batches,
        "dynamodbReadUnits": capacity.get("RunBatchFunction:readUnits", 0) / batches
        + capacity.get("CommandEventsFunction:readUnits", 0) / messages,
        "logBytes": logged.get("RunBatchFunction", 0) / batches + logged.get("CommandEventsFunction", 0) / messages,
        "sqsRequests": 1 + 2 * per_message,
        "traceRoots": 1 + per_message,
    }


def commands(devices: int, concurrency: int, rolling: bool) -> int:
    if rolling:
        sys.path.insert(0, str(ROOT / "layers" / "longrun"))  # the layer's own plan
        from longrun.batching import batch_plan

        return int(batch_plan(devices, concurrency, 60, 0)["batchCount"])
    return math.ceil(devices / min(concurrency, 50))  # the former design: batches of min(max-concurrency, 50)


def curve(measured: dict[str, float], marginal: dict[str, float]) -> dict[str, Any]:
    """The all-in cost of 10,000 devices at each max-concurrency from 1 to 1,000: the measured task (200 commands)
    plus or minus what each command more or fewer costs, for the rolling layout and the former one."""
    base = commands(CURVE_DEVICES, CURVE_DEVICES, rolling=True)  # what the measured runs sent: 50 devices each
    points = sorted({1, 2, 3, 5, 7, 10, 13, 20, 25, 30, 40, 49, 50, 64, 75, 100, 128, 150, 199, 200, 250, 300, 333}
                    | {400, 500, 600, 700, 750, 800, 900, 999, 1_000})  # fmt: skip
    found: dict[str, Any] = {"maxConcurrency": points, "rolling": [], "former": [], "rollingCommands": []}
    for concurrency in points:
        for design in ("rolling", "former"):
            sent = commands(CURVE_DEVICES, concurrency, rolling=design == "rolling")
            quantities = {name: value + (sent - base) * marginal.get(name, 0) for name, value in measured.items()}
            found[design].append(round(dollars(quantities)["allIn"], 5))
            if design == "rolling":
                found["rollingCommands"].append(sent)
    return found


def plot_curve(found: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 4))
    axis.plot(found["maxConcurrency"], found["former"], marker=".", label="batches as barriers (before)")
    axis.plot(found["maxConcurrency"], found["rolling"], marker=".", label="rolling (SSM rate control per command)")
    axis.axhline(GATE, color="grey", linestyle="--", label=f"target ${GATE}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("max-concurrency")
    axis.set_ylabel("USD per task, all in (log)")
    axis.set_title(f"{CURVE_DEVICES:,} devices, 60 s scripts: cost over max-concurrency")
    axis.legend()
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "cost_by_concurrency.png", dpi=110)


if __name__ == "__main__":
    main()
