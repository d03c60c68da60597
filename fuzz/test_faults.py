"""Fault runs: tasks run while the functions' AWS calls meet throttling, server errors, lost answers and timeouts at
random (the edge's --fault-rate), DynamoDB refuses a share of writes as conflicting, and SSM's events for a share of the
devices are lost; some tasks are cancelled at a random moment, racing their end. Afterwards every accepted task must
have ended, once: its counts add up to its devices, each device's outcome is recorded once and is the one its script
gave (or NOT_STARTED / CANCELLED / TIMED_OUT when it did not run to its end), its event stream carries each event
once, in order, ending with the task's end, and a webhook endpoint that refuses a share of its deliveries has been
given every one of those events (at least once, as webhooks promise) and no other, as has a WebSocket subscriber of
a share of the tasks (resubscribing after the last event it saw when its connection drops or subscribing meets a
fault, as longrun's client does). Seeded (FUZZ_SEED); the runs, the faults injected and every violation found are
printed."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from fuzz.conftest import SEED
from local_runtime.faults import KINDS
from local_runtime.launcher import RuntimeProcess, free_port

RUNS = 200
"""Tasks, each one run under faults"""
AT_ONCE = 25
FAULT_RATE = 0.05
RESOURCE = "/device-management/script-execution"
WEBHOOKS = "/device-management/webhooks"
RECEIVER_REFUSALS = 0.1
"""The share of webhook deliveries the receiver answers 503"""
FOLLOWED = 0.25
"""The share of tasks also followed over the WebSocket API"""
CAUGHT_UP_WAIT = 35.0
"""Seconds a follower waits for a subscription's caught-up (the subscribe function may run 30 s) before subscribing
again"""
DEVICES = ("web-1", "db-1")
EXPECTED = {"web-1": "SUCCESS", "db-1": "FAILED"}
"""What scripts/fail-on-db.sh gives each device when it runs to its end"""
FINISHED = {"COMPLETE", "FAILED", "CANCELLED", "TIMED_OUT"}
NOT_RUN_TO_ITS_END = {"NOT_STARTED", "CANCELLED", "TIMED_OUT"}


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint that answers a seeded share of deliveries 503 (so that they are retried), and keeps the
    event ids it took, by task."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), ReceiverHandler)
        self.taken: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        """By task, each event id taken and its event (a repeat delivery is the same event)"""
        self.refused = 0
        self.lock = threading.Lock()
        self.chooser = random.Random(SEED)  # noqa: S311 - a seeded choice of refusals, not a secret

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            refuse = self.server.chooser.random() < RECEIVER_REFUSALS
            if refuse:
                self.server.refused += 1
            elif "task-id" in event:
                self.server.taken[event["task-id"]][event["id"]] = event
        self.send_response(503 if refuse else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def faulty() -> Iterator[RuntimeProcess]:
    runtime = RuntimeProcess.start(
        "--fault-rate", str(FAULT_RATE), "--fault-seed", str(SEED), "--transaction-conflict-rate", "0.05",
        "--drop-events", "invocation:0.2", "--parameter", "ReportGraceSeconds=2",
        "--parameter", "WebhookRetrySchedule=0,1,2,4,8,16",
        timeout=120,
    )  # fmt: skip
    try:
        yield runtime
    finally:
        runtime.stop()


def _call(runtime: RuntimeProcess, method: str, path: str, body: Any = None, **headers: str) -> requests.Response:
    """A request as longrun's client makes it: repeated after 409 (its key in progress), 429 and 5xx, for up to about
    a minute (a key stays in progress until the first request's function would have timed out, 30 s)."""
    for _ in range(60):
        reply = requests.request(method, runtime.api + path, json=body, headers=headers, timeout=60)
        if reply.status_code not in (409, 429) and reply.status_code < 500:
            return reply
        if reply.status_code == 409 and "idempotency" not in reply.text:
            return reply
        time.sleep(min(float(reply.headers.get("Retry-After", "1")), 2))
    return reply


def _run(runtime: RuntimeProcess, chooser: random.Random, follow: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """A task submitted (its key repeated as the client repeats it), followed over the WebSocket at once for a share
    of them, and cancelled at a random moment for another."""
    key, cancel_after = str(uuid.uuid4()), chooser.random() * 2 if chooser.random() < 0.25 else None
    followed = chooser.random() < FOLLOWED
    body = {"device-ids": list(DEVICES), "script-url": "scripts/fail-on-db.sh", "timeout-seconds": 10}
    submitted = _call(runtime, "POST", RESOURCE, body, **{"Idempotency-Key": key})
    if submitted.status_code != 202:
        return {"accepted": False, "status": submitted.status_code, "body": submitted.text[:300]}
    run = {"accepted": True, "id": submitted.json()["id"], "cancelled": cancel_after is not None, "followed": followed}
    if followed:
        follow(run)
    if cancel_after is not None:
        time.sleep(cancel_after)
        _call(runtime, "DELETE", f"{RESOURCE}/{run['id']}")
    return run


def _follow(runtime: RuntimeProcess, run: dict[str, Any], deadline: float) -> None:
    """Every event the WebSocket API pushes for the run's task until its finished event and the subscription's
    caught-up, kept by id in run["pushed"], as a client follows it: subscribing again when the connection drops, when
    subscribing answers an error (the subscribe function met a fault), or when no caught-up comes (the function died
    midway), after the id of the last caught-up and every event since (events pushed while a subscription catches up
    can come before kept ones it has still to send); an error of another kind than those is kept in run["refused"]."""
    assert runtime.websocket is not None
    events: dict[int, dict[str, Any]] = run.setdefault("pushed", {})
    subscriptions: list[list[Any]] = run.setdefault("subscriptions", [])
    after = 0
    while time.monotonic() < deadline:
        subscribe = {"action": "subscribe", "task-id": run["id"], "after": after}
        caught_up, received = False, [after]
        subscriptions.append([after])  # what each subscription got, for a violation's report
        try:
            with connect(runtime.websocket, open_timeout=10) as websocket:
                websocket.send(json.dumps(subscribe))
                while True:
                    wait = max(0.1, deadline - time.monotonic())
                    message = json.loads(websocket.recv(timeout=wait if caught_up else min(wait, CAUGHT_UP_WAIT)))
                    subscriptions[-1].append(message.get("id", message.get("after", message.get("type"))))
                    if message.get("type") == "error":
                        if message.get("status", 500) < 500 and message.get("status") != 429:
                            run["refused"] = message
                            return
                        break
                    if message.get("type") == "caught-up":
                        caught_up, after = True, max(message["after"], *received)
                    elif "id" in message:
                        events.setdefault(message["id"], message)
                        received.append(message["id"])
                        after = max(after, message["id"]) if caught_up else after
                    if caught_up and any(e["type"] == "script-execution.finished" for e in events.values()):
                        return
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as error:
            subscriptions[-1].append(type(error).__name__)
        time.sleep(0.5)


def _wait_ended(runtime: RuntimeProcess, task_id: str, deadline: float) -> dict[str, Any]:
    while True:
        task = _call(runtime, "GET", f"{RESOURCE}/{task_id}").json()
        if task["status"] in FINISHED or time.monotonic() > deadline:
            return dict(task)
        time.sleep(0.5)


def _violations(runtime: RuntimeProcess, run: dict[str, Any], task: dict[str, Any]) -> list[str]:
    task_id, found = run["id"], []
    if task["status"] not in FINISHED:
        return [f"{task_id}: still {task['status']}"]
    if task["status"] == "FAILED":  # the SDKs' retries make a fault that outlasts them improbable: a step gave up
        found.append(f"{task_id}: FAILED: {str(task.get('statusReason'))[:300]}")
    counts = task["deviceCounts"]
    if sum(counts.values()) != len(DEVICES):
        found.append(f"{task_id}: counts {counts} do not add up to {len(DEVICES)}")
    result = _call(runtime, "GET", f"{RESOURCE}/{task_id}/result").json()
    outcomes = {device["device-id"]: device["status"] for device in result["devices"]}
    run["outcomes"] = outcomes
    if len(result["devices"]) != len(DEVICES) or set(outcomes) != set(DEVICES):
        found.append(f"{task_id}: result lists {[d['device-id'] for d in result['devices']]}")
    if Counter(outcomes.values()) != Counter({status: n for status, n in counts.items() if n}):
        found.append(f"{task_id}: counts {counts} differ from the devices' outcomes {outcomes}")
    for device, status in outcomes.items():
        if status not in (EXPECTED[device], *NOT_RUN_TO_ITS_END) or (status == "CANCELLED" and not run["cancelled"]):
            found.append(f"{task_id}: {device} ended {status}, its script gives {EXPECTED[device]}")
    time.sleep(0.2)
    again = _call(runtime, "GET", f"{RESOURCE}/{task_id}").json()
    if (again["status"], again["deviceCounts"]) != (task["status"], counts):
        found.append(f"{task_id}: ended {task['status']}, then {again['status']}")
    ids, wrong = _stream_violations(runtime, task_id, task["status"])
    run["streamed"] = ids
    return found + wrong


def _stream_violations(runtime: RuntimeProcess, task_id: str, status: str) -> tuple[list[int], list[str]]:
    """The task's event ids as its stream replays them, and what is wrong with them: each once, in order, the last
    its end."""
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "0"}
    for _ in range(10):  # EventSource reconnects after an error (its function met a fault too)
        reply = requests.get(f"{runtime.api}{RESOURCE}/{task_id}/events", headers=headers, timeout=30)
        if reply.status_code == 200:
            break
        time.sleep(1)
    else:
        return [], [f"{task_id}: its event stream answered {reply.status_code}"]
    text = reply.text
    events = [block for block in text.split("\n\n") if "\nid: " in f"\n{block}" or block.startswith("id: ")]
    ids = [int(line.removeprefix("id: ")) for block in events for line in block.splitlines() if line.startswith("id: ")]
    types = [
        line.removeprefix("event: ") for block in events for line in block.splitlines() if line.startswith("event: ")
    ]
    found = []
    if ids != sorted(set(ids)):
        found.append(f"{task_id}: event ids {ids} repeat or go back")
    if types.count("script-execution.finished") != 1 or types[-1:] != ["script-execution.finished"]:
        found.append(f"{task_id}: events {types} do not end with one script-execution.finished")
    elif json.loads(events[-1].split("data: ", 1)[1])["data"]["status"] != status:
        found.append(f"{task_id}: its last event says another end than {status}")
    return ids, found


def _webhook_violations(receiver: Receiver, accepted: list[dict[str, Any]], deadline: float) -> list[str]:
    """The webhook's deliveries, as _pushed_violations checks them; retried deliveries are given until
    ``deadline``."""
    found: list[str] = []
    for run in accepted:
        if "outcomes" not in run:
            continue  # it did not end: a violation already
        while True:
            with receiver.lock:
                taken = dict(receiver.taken.get(run["id"], {}))
            if set(run.get("streamed", [])) <= set(taken) or time.monotonic() > deadline:
                break
            time.sleep(1)
        found += _pushed_violations("webhook", run, taken)
    return found


def _websocket_violations(accepted: list[dict[str, Any]]) -> list[str]:
    """The followed tasks' WebSocket events, as _pushed_violations checks them."""
    found: list[str] = []
    for run in accepted:
        if not run["followed"] or "outcomes" not in run:
            continue
        if "refused" in run:
            found.append(f"{run['id']}: subscribing over the WebSocket answered {run['refused']}")
        else:
            found += _pushed_violations("WebSocket", run, run.get("pushed", {}))
    return found


def _pushed_violations(channel: str, run: dict[str, Any], taken: dict[int, dict[str, Any]]) -> list[str]:
    """A channel got (at least once, as webhooks and the WebSocket API promise) every event the task's stream kept,
    its finished event last, and each device's outcome in exactly one of its events (progress events carry the
    outcomes recorded since the previous one, the finished event the devices that never started), the outcome its
    result shows."""
    task, kept = run["id"], set(run.get("streamed", []))
    if not kept <= set(taken):
        told = (
            f"; its subscriptions (after, then what each got): {run['subscriptions']}" if "subscriptions" in run else ""
        )
        return [f"{task}: the {channel} never got events {sorted(kept - set(taken))} of {sorted(kept)}{told}"]
    found = []
    events = [taken[event_id] for event_id in sorted(taken)]
    if [event["type"] for event in events].count("script-execution.finished") != 1 or events[-1]["type"] != (
        "script-execution.finished"
    ):
        found.append(f"{task}: the {channel}'s events {[event['type'] for event in events]} do not end once")
    told = Counter(device["device-id"] for event in events for device in event.get("devices") or [])
    if told != Counter(run["outcomes"].keys()):
        telling = [(e["id"], e["type"], e.get("devices")) for e in events if e.get("devices")]
        found.append(f"{task}: the {channel}'s events tell of devices {dict(told)}, not once each: {telling}")
    elif {d["device-id"]: d["status"] for e in events for d in e.get("devices") or []} != run["outcomes"]:
        found.append(f"{task}: the {channel}'s events tell other outcomes than its result {run['outcomes']}")
    return found


def test_every_task_run_under_faults_ends_once_with_every_outcome_recorded_once(
    faulty: RuntimeProcess, receiver: Receiver
) -> None:
    chooser = random.Random(SEED)  # noqa: S311 - a seeded choice of runs, not a secret
    started = time.monotonic()
    hook = _call(faulty, "POST", WEBHOOKS, {"url": receiver.url}, **{"Idempotency-Key": str(uuid.uuid4())})
    assert hook.status_code == 201, hook.text
    deadline = time.monotonic() + 600
    with ThreadPoolExecutor(RUNS) as followers:

        def follow(run: dict[str, Any]) -> object:
            return followers.submit(_follow, faulty, run, deadline)

        with ThreadPoolExecutor(AT_ONCE) as pool:
            seeds = [chooser.random() for _ in range(RUNS)]
            runs = list(pool.map(lambda seed: _run(faulty, random.Random(seed), follow), seeds))  # noqa: S311
        accepted = [run for run in runs if run["accepted"]]
        with ThreadPoolExecutor(AT_ONCE) as pool:
            ended = list(pool.map(lambda run: _wait_ended(faulty, run["id"], deadline), accepted))
    followed = [run for run in accepted if run["followed"]]
    violations = [found for run, task in zip(accepted, ended, strict=True) for found in _violations(faulty, run, task)]
    violations += _webhook_violations(receiver, accepted, time.monotonic() + 120)
    violations += _websocket_violations(accepted)
    delivered = sum(len(events) for events in receiver.taken.values())
    pushed = sum(len(run.get("pushed", {})) for run in followed)
    with urllib.request.urlopen(faulty.edge + "/_local/faults", timeout=10) as reply:  # noqa: S310 - the local runtime
        injected = json.loads(reply.read())
    print(
        f"\n{len(runs)} fault runs in {time.monotonic() - started:.0f} s: {len(accepted)} accepted, "
        f"{sum(run['cancelled'] for run in accepted)} cancelled at random; ends "
        f"{dict(Counter(task['status'] for task in ended))}; faults injected: {injected['total']} "
        f"{injected['byKind']}; webhook: {delivered} events taken, {receiver.refused} deliveries refused;"
        f" WebSocket: {len(followed)} tasks followed, {pushed} events; violations: {len(violations)}"
    )
    for found in violations[:20]:
        print("  ", found)
    assert [run for run in runs if not run["accepted"]] == []
    assert set(injected["byKind"]) == set(KINDS)  # every kind of fault was injected
    assert violations == []
