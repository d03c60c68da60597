"""Cold start as Lambda bills it: init plus the first invocation, for each function and each of its sample events
(events/), against the floor: a bare handler that imports boto3 and makes the same AWS calls.

Each measurement is a fresh process, timed from just before it is spawned (so the interpreter's own start is in it,
as it is in Lambda's init) to the end of the first invocation. The AWS APIs are moto, served on a port of this
process and reset and seeded before every measurement, so each run meets the same state. The floor's calls are
recorded: the real handler runs once with every boto3 call it makes written down (service, operation, parameters,
whether AWS refused it), and the floor replays them with plain boto3 clients. Handler and floor are interleaved,
round after round; the figures are medians. Last, the local runtime's own REPORT lines: each function invoked once
through it with its first sample event, and the init it reports.

JwtAuthorizerFunction (the API's authorizer with ApiAuthorizer JWT) verifies its sample's token against an OpenID
Connect issuer this process serves on loopback (JwtIssuer), with an RSA key made for the run that also signs the token.

    python -m bench.cold_start [--rounds 7] [--functions JwtAuthorizerFunction,FinishRunFunction]

--functions (comma-separated logical ids) measures only those functions' cases, and reports only theirs from the local
runtime: for a quick look at one function; by default, every function.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import boto3

from bench.common import Local, save
from local_runtime import dynamodb
from local_runtime.launcher import ROOT, free_port
from local_runtime.oidc_issuer import Issuer
from local_runtime.template import LocalStack, load

TARGET = 1.3
RUN_TIMEOUT = 60
"""Seconds a cold start (a process, init and first invocation) may take before the benchmark stops as failed"""
REGION = "us-east-1"
TASK = "1a8afbb7-3b76-41fc-9ab8-5b2cd6b41367"
"""The task of the API's and the workflow's sample events"""
PUSHED_TASK = "0b8d9c43-1111-4222-8333-944455556666"
"""The task of the push functions' sample events"""
CONNECTION = "Lk2xJc3FoAMCJfg="
FINISHED_EVENT = 7
"""The id of the event stream sample's finished event, kept by the publisher, that its client has seen"""
DEVICES = ["web-1", "web-2", "ec2:web-3"]
STREAM_PATH = f"/v1/device-management/script-execution/{TASK}/events"
AUDIENCE = "longrun-cold-start"
"""The client the authorizer's sample token is for (JwtAudience)"""
TOKEN_LIFESPAN_SECONDS = 24 * 3600
"""Longer than any run: every measurement is handed the one token signed at the start (a seed's replacements must be
the same each time, and the event file written once is used by every round)"""

# The function's process, as Lambda's runtime runs it: import the handler's module (init), then call the handler with
# the event. Times are CLOCK_MONOTONIC (time.perf_counter on Linux), the same clock in every process, so they count
# from the spawn the parent timed. With a recording file, every boto3 call is written to it (not timed).
RUNNER = r"""
import importlib, json, sys, time
spawned, event_path, record = float(sys.argv[1]), sys.argv[2], sys.argv[3]
if record:
    import copy, pickle, boto3
    calls, refused = [], []
    def _call(params, model, context, **_):
        presign = bool(context.get("is_presign_request"))
        calls.append([model.service_model.service_name, model.name, copy.deepcopy(params), presign, False])
    def _answer(parsed, model, **_):
        if "Error" in parsed:
            refused.append((model.service_model.service_name, model.name))
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build", _call)
    boto3.DEFAULT_SESSION.events.register("after-call", _answer)

class Context:
    function_name = "cold-start"
    function_version = "$LATEST"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:cold-start"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    log_group_name = "/aws/lambda/cold-start"
    log_stream_name = "cold-start"
    def get_remaining_time_in_millis(self):
        return 30000

module = importlib.import_module("app")
initialized = time.perf_counter()
if event_path.startswith("GET "):  # a web app behind Lambda Web Adapter: one request over HTTP
    import http.client, threading
    from http.server import ThreadingHTTPServer
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    initialized = time.perf_counter()
    _, path, headers = event_path.split(" ", 2)
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
    connection.request("GET", path, headers=json.loads(headers))
    reply = connection.getresponse()
    reply.read()
    answer = {"statusCode": reply.status}
else:
    with open(event_path) as file:
        event = json.load(file)
    answer = module.handler(event, Context())
ended = time.perf_counter()
if record:
    for call in calls:
        call[4] = (call[0], call[1]) in refused
    with open(record, "wb") as file:
        pickle.dump(calls, file)
print(json.dumps({"init": (initialized - spawned) * 1000, "total": (ended - spawned) * 1000,
                  "answer": answer if isinstance(answer, dict) else None, "pydantic": "pydantic" in sys.modules},
                 default=str))
"""

# The floor's handler: boto3, and the recorded calls made with plain clients (one per service, made on first use).
FLOOR = '''"""The floor: a bare handler that makes the same AWS calls with plain boto3."""
{imports}
import boto3
from botocore import xform_name
from botocore.exceptions import ClientError

CALLS = {calls!r}
_clients = {{}}


def _client(service):
    if service not in _clients:
        _clients[service] = boto3.client(service)
    return _clients[service]


def handler(event, context):
    for service, operation, params, presign, refused in CALLS:
        client = _client(service)
        try:
            if presign:
                client.generate_presigned_url(xform_name(operation), Params=params, ExpiresIn=300)
            else:
                getattr(client, xform_name(operation))(**params)
        except ClientError:
            if not refused:
                raise
    return {{"statusCode": 200}}
'''
FLOOR_WEB = """

from http.server import BaseHTTPRequestHandler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        handler(None, None)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass
"""


class Moto:
    """moto's server on a port of this process, with the local runtime's DynamoDB rules, and the template's resources
    under the stack name ``cold-start``."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        dynamodb.install()
        _list_command_invocations()
        sys.path.insert(0, str(ROOT / "layers" / "longrun"))  # the seeds are made with longrun itself
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
        self._server = ThreadedMotoServer(port=self.port, verbose=False)
        self._server.start()
        # JwtIssuer and JwtAudience reach JwtAuthorizerFunction's environment (JWT_ISSUER, JWT_AUDIENCE) as the
        # template puts them there; no other function reads them.
        self.stack: LocalStack = load(ROOT, "cold-start", REGION, parameters=_issuer_parameters())
        self.env = {
            "PATH": os.environ["PATH"],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "cold-start",
            "AWS_SECRET_ACCESS_KEY": "cold-start",
            "AWS_ENDPOINT_URL": self.url,
            "WEBHOOK_DELIVERY_QUEUE_URL": f"{self.url}/123456789012/deliveries",
            "WEBSOCKET_CONNECTIONS_URL": self.url,
        }
        os.environ.update(self.env)
        for function in self.stack.functions.values():
            os.environ.update({**function.environment, **self.env})

    def stop(self) -> None:
        self._server.stop()

    def function_env(self, logical_id: str) -> dict[str, str]:
        return {**self.stack.functions[logical_id].environment, **self.env}

    def reset(self, seed: Callable[[], dict[str, str] | None]) -> dict[str, str] | None:
        """Forget everything, then make the template's resources and what ``seed`` adds."""
        from longrun import config, services

        for action in ("reset", "seed?a=42"):  # seeded: the ids moto makes (a command's) are the same every time
            urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/{action}", method="POST")).close()
        for cached in (config.settings, services.task_store, services.workflow, services.subscriptions):
            cached.cache_clear()
        client = boto3.client("dynamodb")
        for table in self.stack.tables():
            client.create_table(**table)
        s3 = boto3.client("s3")
        for bucket, _ in self.stack.buckets():
            s3.create_bucket(Bucket=bucket)
        sfn = boto3.client("stepfunctions")
        for name, definition, role in self.stack.state_machines():
            sfn.create_state_machine(name=name, definition=definition, roleArn=role)
        boto3.client("events").create_event_bus(Name=self.function_env("PublishEventsFunction")["EVENT_BUS_NAME"])
        boto3.client("sqs").create_queue(QueueName="deliveries")
        return seed()


def _list_command_invocations() -> None:
    """moto's SSM does not list a command's invocations: answer each node's as ended with Success, as moto's
    GetCommandInvocation does."""
    from moto.core.responses import ActionResult
    from moto.ssm.responses import SimpleSystemManagerResponse

    def list_command_invocations(self: Any) -> ActionResult:
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        wanted = self._get_param("InstanceId")
        return ActionResult(
            {
                "CommandInvocations": [
                    {**command.invocation_response(node, "aws:runShellScript"), "CommandPlugins": []}
                    for node in command.instance_ids
                    if wanted in (None, node)
                ]
            }
        )

    SimpleSystemManagerResponse.list_command_invocations = list_command_invocations  # type: ignore[attr-defined]


def _bearer_token(issuer: Issuer) -> str:
    """A Cognito user pool's ID token, with what the authorizer's verify() requires: iss, sub, exp, and aud for the
    client."""
    now = int(time.time())
    return issuer.sign(
        {
            "iss": issuer.url,
            "sub": "5f1e0c3a-7d2b-4e8f-9a6c-3b4d2e1f0a9b",
            "aud": AUDIENCE,
            "token_use": "id",
            "cognito:username": "alice",
            "auth_time": now,
            "iat": now,
            "exp": now + TOKEN_LIFESPAN_SECONDS,
        }
    )


@cache
def _issuer() -> Issuer:
    """The run's issuer: started on first use, served until the benchmark's process ends (a daemon thread)."""
    return Issuer()


@cache
def _issuer_parameters() -> dict[str, str]:
    """The template's parameters that point the authorizer at the run's issuer"""
    return {"JwtIssuer": _issuer().url, "JwtAudience": AUDIENCE}


@cache
def _token() -> str:
    """The one token of the run: a seed's replacements must be the same each time"""
    return _bearer_token(_issuer())


def _owner() -> Any:
    from longrun.callers import owner_of

    identity = json.loads((ROOT / "events" / "api-describe.json").read_text())["requestContext"]["identity"]
    return owner_of(None, identity["caller"], identity["userArn"], "session")


def _task(task_id: str = TASK) -> None:
    from longrun import services
    from longrun.records import TaskSettings

    settings = TaskSettings(script_url="scripts/hello.sh", timeout_seconds=600, max_concurrency=50)
    arn = "arn:aws:states:::execution:m:x"
    services.task_store().create_task(task_id, "script-execution", _owner(), settings, DEVICES, arn)


def _started() -> None:
    from longrun import services

    _task()
    services.workflow().start_run(TASK)


def _finished() -> None:
    from longrun import services

    _started()
    services.workflow().finish_run(TASK)


def _ended() -> None:
    """A finished task whose finished event the publisher has kept: a reconnect after it answers 204."""
    from longrun import services

    _finished()
    finished = {"id": FINISHED_EVENT, "type": "script-execution.finished", "task-id": TASK}
    services.task_store().keep_event(TASK, FINISHED_EVENT, json.dumps(finished))


def _pushed() -> None:
    from longrun import services

    _task(PUSHED_TASK)
    services.subscriptions().connect(CONNECTION, _owner())


def _commanded() -> dict[str, str]:
    """A batch's command sent to the sample's instance (moto's SSM knows no managed node: SendCommand directly); the
    sample event (SSM's event, queued) becomes about that command."""
    message = json.loads((ROOT / "events" / "command-status-change.json").read_text())["Records"][0]
    event = json.loads(message["body"])
    _started()
    command = boto3.client("ssm").send_command(
        InstanceIds=[event["detail"]["instance-id"]],
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": ["true"]},
        Comment=f"longrun {TASK} batch 0",
    )["Command"]["CommandId"]
    return {event["detail"]["command-id"]: command}


def _nothing() -> None:
    pass


def _bearer() -> dict[str, str]:
    """No state: the sample's token, a placeholder, becomes the one the run's issuer signed for the authorizer."""
    sample = json.loads((ROOT / "events" / "jwt-authorize.json").read_text())
    return {sample["authorizationToken"].removeprefix("Bearer "): _token()}


# (function, its sample event, the state it meets); the first of a function is its first invocation locally too
Case = tuple[str, str, Callable[[], dict[str, str] | None]]
CASES: list[Case] = [
    ("ApiFunction", "api-submit.json", _nothing),
    ("ApiFunction", "api-describe.json", _task),
    ("ApiFunction", "api-list.json", _task),
    ("ApiFunction", "api-result.json", _finished),
    ("ApiFunction", "api-devices.json", _started),
    ("ApiFunction", "api-device-stdout.json", _finished),
    ("ApiFunction", "api-cancel.json", _started),
    ("ApiFunction", "api-upload-script.json", _nothing),
    ("ApiFunction", "api-add-webhook.json", _nothing),
    ("StartRunFunction", "start-run.json", _task),
    ("RunBatchFunction", "run-batch.json", _started),
    ("CommandEventsFunction", "command-status-change.json", _commanded),
    ("ExpireBatchFunction", "expire-batch.json", _started),
    ("FinishRunFunction", "finish-run.json", _started),
    ("PublishEventsFunction", "publish-events.json", _pushed),
    ("WebSocketFunction", "websocket-connect.json", _nothing),
    ("WebSocketFunction", "websocket-subscribe.json", _pushed),
    ("DeliverWebhooksFunction", "deliver-webhooks.json", _pushed),
    ("EventStreamFunction", "GET events (after the last)", _ended),
    # The authorizer makes no AWS call, so its floor is boto3's import alone, as for api-add-webhook. What it does
    # besides, reading the issuer's discovery document and keys (two requests; on loopback here, across the internet
    # to Cognito in AWS), is counted against it: the keys are kept for the environment's life, so a cold start is
    # when it is paid.
    ("JwtAuthorizerFunction", "jwt-authorize.json", _bearer),
]


def _stream_request() -> str:
    """The event stream's request, as Lambda Web Adapter hands it to the app: a reconnect after the last event of a
    finished task (204)."""
    context = json.loads((ROOT / "events" / "api-describe.json").read_text())["requestContext"]
    context |= {"path": STREAM_PATH, "resourcePath": "/device-management/script-execution/{task_id}/events"}
    headers = {
        "Accept": "text/event-stream",
        "Last-Event-ID": str(FINISHED_EVENT),
        "x-amzn-request-context": json.dumps(context),
    }
    return f"GET {STREAM_PATH} {json.dumps(headers)}"


def _run(code_dirs: list[Path], env: dict[str, str], event: str, record: Path | None = None) -> dict[str, Any]:
    env = {**env, "PYTHONPATH": ":".join(str(path) for path in code_dirs)}
    command = [sys.executable, "-c", RUNNER]
    spawned = time.perf_counter()
    out = subprocess.run(
        [*command, repr(spawned), event, str(record or "")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=RUN_TIMEOUT,  # a sample that meets another state than its seed's (a stream left open) fails the run
    )
    if out.returncode:
        raise RuntimeError(f"{event} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _floor(calls: list[list[Any]], web: bool) -> str:
    text = repr(calls)
    imports = "\n".join(
        line
        for needed, line in (("datetime.", "import datetime"), ("Decimal(", "from decimal import Decimal"))
        if needed in text
    )
    return FLOOR.format(imports=imports, calls=calls) + (FLOOR_WEB if web else "")


def _outcome(answer: dict[str, Any] | None) -> Any:
    """What the table shows of an answer: its status code, or an authorizer's effect (Allow: its token was taken;
    a refused token is an error, Unauthorized, which fails the run)."""
    if answer and "policyDocument" in answer:
        return answer["policyDocument"]["Statement"][0]["Effect"]
    return (answer or {}).get("statusCode", answer)


def measure(moto: Moto, rounds: int, work: Path, selected: list[Case]) -> dict[str, Any]:
    layer = ROOT / "layers" / "longrun"
    cases = []
    for index, (logical_id, sample, seed) in enumerate(selected):
        function = moto.stack.functions[logical_id]
        web = logical_id == "EventStreamFunction"
        event = _stream_request() if web else str(ROOT / "events" / sample)
        env = moto.function_env(logical_id)
        replaced = moto.reset(seed)
        if replaced:
            text = Path(event).read_text()
            for old, new in replaced.items():
                text = text.replace(old, new)
            event = str(work / sample)
            Path(event).write_text(text)
        record = work / f"{index}.calls"
        recorded = _run([function.code_dir, layer], env, event, record)
        answer = recorded["answer"]
        calls = pickle.loads(record.read_bytes())
        floor_dir = work / f"floor-{index}"
        floor_dir.mkdir()
        (floor_dir / "app.py").write_text(_floor(calls, web))
        cases.append(
            {
                "function": logical_id,
                "event": sample,
                "answer": _outcome(answer),
                "importsPydantic": recorded["pydantic"],
                "calls": [
                    f"{service}:{operation}" + (" (presigned)" if presign else "")
                    for service, operation, _, presign, _ in calls
                ],
                "runs": {
                    "function": lambda dirs=[function.code_dir, layer], env=env, event=event: _run(dirs, env, event),
                    "floor": lambda dirs=[floor_dir], env=env, event=event: _run(dirs, env, event),
                },
                "seed": seed,
                "replaced": replaced,
                "samples": {"function": [], "floor": [], "functionInit": [], "floorInit": []},
            }
        )
    for round_number in range(rounds):
        for case in cases:
            for kind in ("function", "floor") if round_number % 2 == 0 else ("floor", "function"):
                if moto.reset(case["seed"]) != case["replaced"]:
                    raise RuntimeError(f"{case['event']}: the seeded state differs from the recorded one")
                timed = case["runs"][kind]()
                case["samples"][kind].append(timed["total"])
                case["samples"][f"{kind}Init"].append(timed["init"])
        print(f"round {round_number + 1}/{rounds}", file=sys.stderr)
    results = []
    for case in cases:
        medians = {kind: round(statistics.median(values), 1) for kind, values in case["samples"].items()}
        results.append(
            {
                "function": case["function"],
                "event": case["event"],
                "answer": case["answer"],
                "awsCalls": case["calls"],
                "medianMilliseconds": medians,
                "ratioToFloor": round(medians["function"] / medians["floor"], 2),
                "importsPydantic": case["importsPydantic"],
            }
        )
    return {"cases": results}


REPORT = re.compile(
    r"(?P<function>\w+Function) REPORT RequestId: \S+\tDuration: (?P<duration>[\d.]+) ms"
    r".*?Init Duration: (?P<init>[\d.]+) ms"
)


def local_runtime_reports(selected: list[Case]) -> dict[str, dict[str, float]]:
    """Each function invoked once through the local runtime (a new execution environment) with its first sample
    event, and what its REPORT line says: the init, and the first invocation's duration."""
    # JwtAuthorizerFunction is deployed whatever ApiAuthorizer says: given this process's issuer (JwtIssuer,
    # JwtAudience), it takes its sample's token when invoked directly, while the API stays behind IAM as in `make run`
    # (with ApiAuthorizer JWT, the event stream's unsigned request below would end at the authorizer, 401).
    parameters = [f"--parameter={name}={value}" for name, value in _issuer_parameters().items()]
    local = Local.start(*parameters)
    try:
        functions = load(ROOT, "longrun-local", REGION).functions
        client = local.client("lambda")
        invoked = set()
        for logical_id, sample, seed in selected:
            if logical_id in invoked or logical_id == "EventStreamFunction":
                continue
            invoked.add(logical_id)
            payload = (ROOT / "events" / sample).read_text()
            if seed is _bearer:  # the one seed that makes no AWS state, only the token the sample needs
                for old, new in _bearer().items():
                    payload = payload.replace(old, new)
            client.invoke(FunctionName=functions[logical_id].name, Payload=payload.encode())
        if any(logical_id == "EventStreamFunction" for logical_id, _, _ in selected):
            with contextlib.suppress(urllib.error.HTTPError):  # 404, no such task: only its REPORT line is wanted
                urllib.request.urlopen(f"{local.runtime.api}/device-management/script-execution/{TASK}/events").close()
    finally:
        local.stop()
    reports: dict[str, dict[str, float]] = {}
    for found in REPORT.finditer(local.runtime.log.read_text()):
        reports.setdefault(
            found["function"],
            {"initMilliseconds": float(found["init"]), "durationMilliseconds": float(found["duration"])},
        )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--functions",
        metavar="ID,ID",
        help="measure only these functions (comma-separated logical ids of template.yaml); default: every function",
    )
    args = parser.parse_args()
    selected = CASES
    if args.functions:
        wanted = {name.strip() for name in args.functions.split(",") if name.strip()}
        known = {logical_id for logical_id, _, _ in CASES}
        if unknown := wanted - known:
            parser.error(f"no cases for {', '.join(sorted(unknown))}; the functions are {', '.join(sorted(known))}")
        selected = [case for case in CASES if case[0] in wanted]
    moto = Moto()
    try:
        with tempfile.TemporaryDirectory(prefix="cold-start-") as work:
            result = measure(moto, args.rounds, Path(work), selected)
    finally:
        moto.stop()
    if selected is not CASES:  # a partial run says so: its results file is not the whole benchmark's
        result["functions"] = sorted({logical_id for logical_id, _, _ in selected})
    result |= {"rounds": args.rounds, "target": TARGET, "localRuntimeReports": local_runtime_reports(selected)}
    result["worstRatio"] = max(case["ratioToFloor"] for case in result["cases"])
    save("cold_start", result)


if __name__ == "__main__":
    main()
