"""Cost model: the project's design and the naive reference, side by side in one run of the local runtime.

Both run the same script (sleep 60 s) on the local fleet. The meter counts every state transition (child
executions of the Distributed Map included), every AWS API call by service and caller, every Lambda invocation with
its duration, and DynamoDB capacity units from the size of each item read or written, by caller. Counts are turned
into dollars with bench/prices.json, per 1,000 and per 10,000 devices: the project's design is measured at two fleet
sizes and extrapolated along the line through them; the naive design grows by device (its cost per device is
measured). Push (the change feed and its channels) is its own line: measured with no subscriber, and again with one
WebSocket subscriber and one webhook endpoint for the whole task.

    python -m bench.cost_model [--seconds 60] [--sizes 100 200] [--naive-size 100]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from bench.common import FIGURES, PRICES, RESULTS, Local, request, save
from bench.push_latency import Arrivals, webhook_receiver, websocket_subscriber
from local_runtime.fleet import node_id_for
from local_runtime.launcher import ROOT
from local_runtime.template import load

MEMORY_GB = {name: function.memory / 1024 for name, function in load(ROOT, "longrun", "us-east-1").functions.items()}
SCALES = (1_000, 10_000)
PUSH_FUNCTIONS = ("PublishEventsFunction", "WebSocketFunction", "DeliverWebhooksFunction", "EventStreamFunction")


def run_project(local: Local, devices: int, script: str, subscribed: bool = False) -> dict[str, Any]:
    """One task on ``devices`` devices; with ``subscribed``, one WebSocket subscriber and one webhook endpoint
    receive its events from start to end."""
    arrivals = Arrivals()
    receiver = webhook_receiver(Arrivals()) if subscribed else None
    webhook = None
    if receiver is not None:
        url = f"http://127.0.0.1:{receiver.server_port}/"
        webhook = request("POST", f"{local.runtime.api}/device-management/webhooks", {"url": url})
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
    if receiver is not None and webhook is not None:
        request("DELETE", f"{local.runtime.api}/device-management/webhooks/{webhook['id']}")
        receiver.shutdown()
    return {"devices": devices, "seconds": seconds, "subscribed": subscribed, "meter": meter}


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


def units(meter: dict[str, Any], seconds: float = 0.0, subscribers: int = 0) -> dict[str, float]:
    """What the bill counts, from one run's meter: the orchestration's units and push's apart."""
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
    return push | {
        "stateTransitions": meter["stateTransitions"],
        "lambdaRequests": sum(invocations.values()) - push["pushLambdaRequests"],
        "lambdaGbSeconds": sum(ms / 1000 * MEMORY_GB[name] for name, ms in milliseconds.items())
        - push["pushLambdaGbSeconds"],
        "dynamodbWriteUnits": meter["dynamodb"].get("writeUnits", 0) - push["pushDynamodbWriteUnits"],
        "dynamodbReadUnits": meter["dynamodb"].get("readUnits", 0) - push["pushDynamodbReadUnits"],
        "s3Puts": sum(n for call, n in calls.items() if call.startswith("service:s3:") and "Put" in call),
        "s3Gets": sum(n for call, n in calls.items() if call.startswith("service:s3:") and "Put" not in call),
        "deviceS3Puts": sum(n for call, n in calls.items() if call.startswith("device:s3:") and "Put" in call),
        "deviceS3Gets": sum(n for call, n in calls.items() if call.startswith("device:s3:") and "Put" not in call),
    }


def dollars(quantities: dict[str, float]) -> dict[str, float]:
    p = PRICES
    bill = {
        "stepFunctions": quantities["stateTransitions"] * p["step_functions_standard_per_transition"],
        "lambda": quantities["lambdaRequests"] * p["lambda_per_request"]
        + quantities["lambdaGbSeconds"] * p["lambda_x86_per_gb_second"],
        "dynamodb": quantities["dynamodbWriteUnits"] * p["dynamodb_on_demand_per_write_unit"]
        + quantities["dynamodbReadUnits"] * p["dynamodb_on_demand_per_read_unit"],
        "eventbridge": 0.0,  # SSM's status-change events on the default bus, and their rule, cost nothing
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
    bill["devicesS3"] = (
        quantities["deviceS3Puts"] * p["s3_put_per_request"] + quantities["deviceS3Gets"] * p["s3_get_per_request"]
    )
    return {name: round(value, 6) for name, value in bill.items()}


def extrapolate(small: dict[str, float], large: dict[str, float], n_small: int, n_large: int, n: int) -> dict:
    """Along the line through two measured fleet sizes."""
    return {name: small[name] + (large[name] - small[name]) * (n - n_small) / (n_large - n_small) for name in small}


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
        name: units(run["meter"], run["seconds"], 1 if run.get("subscribed") else 0) for name, run in runs.items()
    }
    # longrun's own rule also hears the naive design's SSM events (same account) and ignores them; the naive
    # design itself has no Lambda function
    measured["naive"].update(lambdaRequests=0, lambdaGbSeconds=0)
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
    save("cost_model", result)
    plot(result)


if __name__ == "__main__":
    main()
