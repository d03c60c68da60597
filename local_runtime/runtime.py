"""Starts and stops the whole local service: the edge (moto and the local services), the stack from
template.yaml (as the SAM transform deploys it), the simulated fleet, and the API."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from local_runtime import dynamodb, iam, meter, moto_speedups, sqs, step_functions, template
from local_runtime import lambdas as lambdas_module
from local_runtime.api_callers import ApiCallers
from local_runtime.api_gateway import ApiGateway
from local_runtime.edge import Edge
from local_runtime.event_sources import EventSources
from local_runtime.events import EventBus
from local_runtime.faults import EdgeFaults
from local_runtime.fleet import EventFaults
from local_runtime.fleet_process import FleetProcess
from local_runtime.identities import Credentials, Identities
from local_runtime.lambdas import LambdaBridge
from local_runtime.loopback import EdgeTransport, connect
from local_runtime.websocket_gateway import IDLE_TIMEOUT_SECONDS, MAX_DURATION_SECONDS, WebSocketGateway

log = logging.getLogger("local_runtime")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SCRIPTS = ROOT / "examples" / "scripts"
DEFAULT_DEVICES = ("web-1", "web-2", "ec2:web-3", "db-1", "3")
"""Hybrid managed nodes, and one EC2 instance (ec2:NAME)"""


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 3000
    edge_port: int = 4566
    ws_port: int = 3001
    """The WebSocket API's port (its connections, and its @connections API)"""
    ws_idle_timeout: float = IDLE_TIMEOUT_SECONDS
    """How long a WebSocket connection may go without a message either way (API Gateway's 10 minutes)"""
    ws_max_duration: float = MAX_DURATION_SECONDS
    """How long a WebSocket connection may stay open (API Gateway's 2 hours; shorter for tests)"""
    devices: tuple[str, ...] = DEFAULT_DEVICES
    callers: ApiCallers = field(default_factory=ApiCallers)
    """Who may call the REST and WebSocket APIs (signed requests are verified), and what an unsigned request is"""
    region: str = "us-east-1"
    stack_name: str = "longrun-local"
    scripts: Path = EXAMPLE_SCRIPTS
    unmanaged: tuple[str, ...] = ()
    """Device ids of EC2 instances that carry the device tag but are not SSM managed nodes"""
    unresponsive: tuple[str, ...] = ()
    """Devices whose agent goes silent once it has a command (fault injection)"""
    event_faults: EventFaults = field(default_factory=EventFaults)
    transaction_ms: float = 10.0
    conflict_rate: float = 0.0
    fault_rate: float = 0.0
    """Share of the functions' AWS calls the edge answers with a fault (faults.py)"""
    fault_seed: int | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    """Template parameter overrides"""
    logs_dir: Path = ROOT / ".local-runtime" / "logs"
    template_file: Path = ROOT / "template.yaml"


@dataclass
class LocalRuntime:
    options: Options
    stack: template.LocalStack = field(init=False)
    fleet: FleetProcess = field(init=False)
    ledger: iam.Ledger = field(default_factory=iam.Ledger)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    @property
    def edge_url(self) -> str:
        return f"http://{self.options.host}:{self.options.edge_port}"

    @property
    def websocket_origin(self) -> str:
        """Where the WebSocket API is served: its connections under the stage, and its @connections API."""
        return f"http://{self.options.host}:{self.options.ws_port}"

    @property
    def websocket_url(self) -> str | None:
        """The WebSocket API's URL, as the stack's WebSocketUrl output is in AWS (wss://<api>.execute-api.../v1)."""
        apis = self.stack.websocket_apis
        return f"ws://{self.options.host}:{self.options.ws_port}/{apis[0].stage}" if apis else None

    @property
    def stage_url(self) -> str:
        """The API's base URL, as the stack's ApiUrl output is in AWS: the stage's path on the API's host."""
        return f"{self.api_url}/{self.stack.apis[0].stage}"

    def start(self) -> None:
        opts = self.options
        # This process's own AWS clients (moto's, the fleet's set-up) reach AWS through the edge, as the account's
        # administrator; each function's process gets its role's credentials instead.
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.edge_url,
                "MOTO_PORT": str(opts.edge_port),
                "AWS_DEFAULT_REGION": opts.region,
                "AWS_REGION": opts.region,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            }
        )
        moto_speedups.install()  # the same answers, sooner
        meter.install()  # makes moto's DynamoDB behave as DynamoDB, then counts what every call costs
        dynamodb.configure(transaction_ms=opts.transaction_ms, conflict_rate=opts.conflict_rate, seed=opts.fault_seed)
        sqs.install()  # no message lost to concurrent requests
        self.stack = template.load(
            ROOT, opts.stack_name, opts.region, opts.parameters, opts.template_file, endpoint_url=self.edge_url
        )
        origins = {self.stack.apis[0].id: self.api_url}  # the APIs the runtime serves, as functions reach them
        if self.stack.websocket_apis:
            origins[self.stack.websocket_apis[0].id] = self.websocket_origin
        self.stack.serve_apis_at(origins)
        identities = Identities(self.stack)
        aws = {"AWS_REGION": opts.region, "AWS_DEFAULT_REGION": opts.region, "AWS_ENDPOINT_URL": self.edge_url}
        site = lambdas_module.function_site(self.stack, ROOT / ".local-runtime" / "function-packages")
        lambdas = LambdaBridge(self.stack, identities, aws, opts.logs_dir, site)
        loopback = EdgeTransport((opts.host, opts.edge_port))  # the runtime's own calls to the edge, without HTTP
        bus = EventBus(self.stack, lambdas, self._queue_sender(identities.events, loopback))
        self.fleet = FleetProcess(
            bus.put,
            device_ids=list(opts.devices),
            tag_key=self.stack.parameters["DeviceIdTagKey"],
            region=opts.region,
            s3_endpoint=self.edge_url,
            credentials=identities.devices,
            unmanaged=list(opts.unmanaged),
            unresponsive=list(opts.unresponsive),
            faults=opts.event_faults,
        )
        edge = Edge(lambdas, self.fleet, identities, self.ledger, EdgeFaults(opts.fault_rate, opts.fault_seed))
        loopback.bind(edge)
        edge.serve(opts.host, opts.edge_port)
        self._closers += [self.fleet.close, bus.close, lambdas.close, edge.close]
        step_functions.sign_as_execution_role(identities, loopback)
        step_functions.fail_maps_past_their_tolerated_failures()
        step_functions.name_unhandled_lambda_errors()
        self._configure_moto()
        self._create_resources()
        event_sources = EventSources(self.stack, lambdas, identities, self.edge_url, loopback)
        event_sources.start()
        self._closers.insert(0, event_sources.close)
        api = ApiGateway(self.stack, lambdas, opts.callers)
        api.serve(opts.host, opts.port)
        self._closers.insert(0, api.close)
        if self.stack.websocket_apis:
            websockets = WebSocketGateway(
                self.stack, lambdas, identities, self.ledger, opts.callers, opts.ws_idle_timeout, opts.ws_max_duration
            )
            websockets.serve(opts.host, opts.ws_port)
            self._closers.insert(0, websockets.close)

    def _queue_sender(self, credentials: Credentials, loopback: EdgeTransport) -> Callable[[str, str], None]:
        """How EventBridge sends an event to a queue: SendMessage, signed as the service."""
        sqs = connect(
            boto3.client(
                "sqs",
                endpoint_url=self.edge_url,
                region_name=self.stack.region,
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.session_token,
            ),
            loopback,
        )

        def send(queue_arn: str, body: str) -> None:
            sqs.send_message(QueueUrl=template.queue_url_of(queue_arn, self.edge_url), MessageBody=body)

        return send

    def _configure_moto(self) -> None:
        request = urllib.request.Request(  # noqa: S310 - our own loopback edge
            f"{self.edge_url}/moto-api/config",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - our own loopback edge

    def _create_resources(self) -> None:
        dynamodb = boto3.client("dynamodb")
        for table in self.stack.tables():
            dynamodb.create_table(**table)
        for table_name, specification in self.stack.time_to_live():  # recorded; moto never deletes expired items
            dynamodb.update_time_to_live(TableName=table_name, TimeToLiveSpecification=specification)  # type: ignore[arg-type]
        queues = boto3.client("sqs")
        for queue, attributes in self.stack.queues():  # dead-letter queues first
            queues.create_queue(QueueName=queue, Attributes=attributes)
        secrets = boto3.client("secretsmanager")
        for name, value in self.stack.secrets():  # generated anew at each start, as a new deployment's
            secrets.create_secret(Name=name, SecretString=value)
        events = boto3.client("events")
        for bus in self.stack.event_buses():
            events.create_event_bus(Name=bus)
        s3 = boto3.client("s3")
        for bucket, props in self.stack.buckets():
            s3.create_bucket(Bucket=bucket)
            if "BucketEncryption" in props:  # CloudFormation's names for the API's encryption rules
                rules = [
                    {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                    for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                ]
                s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})  # type: ignore[misc,arg-type]
            if "VersioningConfiguration" in props:
                s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"])
        sfn = boto3.client("stepfunctions")
        for name, definition, role_arn in self.stack.state_machines():
            sfn.create_state_machine(name=name, definition=definition, roleArn=role_arn, type="STANDARD")
        bucket = self.scripts_bucket
        for script in sorted(self.options.scripts.glob("*")):
            s3.upload_file(str(script), bucket, f"scripts/{script.name}")

    @property
    def scripts_bucket(self) -> str:
        return self.stack.physical_id("ScriptsBucket")

    def stop(self) -> None:
        for close in self._closers:
            try:
                close()
            except Exception:
                log.exception("while stopping")
        self._closers.clear()

    def banner(self) -> str:
        listed = self.options.devices
        devices = ", ".join(listed) if len(listed) <= 12 else f"{', '.join(listed[:10])}, ... ({len(listed)} devices)"
        example = json.dumps({"device-ids": ["web-1", "web-2", "db-1"], "script-url": "scripts/fail-on-db.sh"})
        scripts = ", ".join(f"scripts/{p.name}" for p in sorted(self.options.scripts.glob("*")))
        websocket = ""  # the launcher reads the WebSocket API's URL from this line
        if self.websocket_url:
            connections = f"{self.websocket_origin}/{self.stack.websocket_apis[0].stage}/@connections/<id>"
            websocket = f"  WebSocket  {self.websocket_url}   (its @connections API: {connections})\n"
        return f"""
longrun is running locally (AWS played by moto; nothing leaves this machine).

  API        {self.stage_url}/device-management/script-execution
{websocket}  AWS edge   {self.edge_url}   (AWS_ENDPOINT_URL for boto3, awslocal, localstack-client)
  callers    {self.options.callers.describe()}
  devices    {devices}
  scripts    s3://{self.scripts_bucket}/  ({scripts})
  logs       {self.options.logs_dir}/<function>/  (one file per execution environment, as log streams)

Try it with the longrun command (installed in .venv by make; `longrun --help`):
  export LONGRUN_API_URL={self.stage_url} LONGRUN_WEBSOCKET_URL={self.websocket_url or ""}
  export AWS_ACCESS_KEY_ID={self.options.callers.default} AWS_SECRET_ACCESS_KEY={self.options.callers.secret}
  .venv/bin/longrun submit scripts/fail-on-db.sh -d web-1,web-2,db-1 --wait
  .venv/bin/longrun submit examples/scripts/rollout.sh -d web-1,web-2 --wait   (a local file: uploaded first)
  .venv/bin/longrun list;  .venv/bin/longrun watch <id>;  .venv/bin/longrun logs <id> web-1

or with curl (the raw API):
  curl -si -X POST {self.stage_url}/device-management/script-execution \\
       -H 'Content-Type: application/json' -d '{example}'
  curl -s {self.stage_url}/device-management/script-execution/<id>
  curl -s {self.stage_url}/device-management/script-execution/<id>/result
  curl -si -X DELETE {self.stage_url}/device-management/script-execution/<id>
  curl -N -H 'Accept: text/event-stream' {self.stage_url}/device-management/script-execution/<id>/events
  (a task's events are pushed too: WebSocket, webhooks, the event bus; see the README's "Push")

Ctrl-C stops everything.
"""
