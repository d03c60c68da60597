"""Starts and stops the whole local service: the edge (moto and the local services), the stack from
template.yaml, the simulated fleet, and the API."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from local_runtime import meter, template
from local_runtime.api_gateway import ApiGateway
from local_runtime.edge import Edge
from local_runtime.events import EventBus
from local_runtime.fleet import Fleet
from local_runtime.lambdas import LambdaBridge

log = logging.getLogger("local_runtime")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SCRIPTS = ROOT / "examples" / "scripts"
DEFAULT_DEVICES = ("web-1", "web-2", "web-3", "db-1", "3")


@dataclass
class Options:
    host: str = "127.0.0.1"
    port: int = 3000
    edge_port: int = 4566
    devices: tuple[str, ...] = DEFAULT_DEVICES
    caller: str = "local-developer"
    region: str = "us-east-1"
    stack_name: str = "longrun-local"
    scripts: Path = EXAMPLE_SCRIPTS
    drop_device_events: bool = False


@dataclass
class LocalRuntime:
    options: Options
    stack: template.LocalStack = field(init=False)
    fleet: Fleet = field(init=False)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://{self.options.host}:{self.options.port}"

    @property
    def edge_url(self) -> str:
        return f"http://{self.options.host}:{self.options.edge_port}"

    def start(self) -> None:
        opts = self.options
        # Every AWS client in this process - the handlers' and moto's own - reaches AWS through the edge.
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.edge_url,
                "MOTO_PORT": str(opts.edge_port),
                "AWS_DEFAULT_REGION": opts.region,
                "AWS_REGION": opts.region,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
            }
        )
        meter.install()  # makes moto's DynamoDB atomic, then counts what every call costs
        self.stack = template.load(ROOT, opts.stack_name, opts.region)
        lambdas = LambdaBridge(self.stack)
        bus = EventBus(self.stack, lambdas)
        self.fleet = Fleet(
            device_ids=list(opts.devices),
            tag_key=self.stack.parameters["DeviceIdTagKey"],
            region=opts.region,
            s3_endpoint=self.edge_url,
            announce=bus.put,
            drop_device_events=opts.drop_device_events,
        )
        edge = Edge(lambdas, self.fleet)
        edge.serve(opts.host, opts.edge_port)
        self._closers += [self.fleet.close, lambdas.close, edge.close]
        self._configure_moto()
        self._create_resources()
        api = ApiGateway(self.stack, lambdas, default_caller=opts.caller)
        api.serve(opts.host, opts.port)
        self._closers.insert(0, api.close)

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
        s3 = boto3.client("s3")
        for bucket in self.stack.buckets():
            s3.create_bucket(Bucket=bucket)
        sfn = boto3.client("stepfunctions")
        for name, definition in self.stack.state_machines():
            sfn.create_state_machine(
                name=name,
                definition=definition,
                roleArn=f"arn:aws:iam::{template.ACCOUNT_ID}:role/{name}-role",
                type="STANDARD",
            )
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
        return f"""
longrun is running locally (AWS played by moto; nothing leaves this machine).

  API        {self.api_url}/device-management/script-execution
  AWS edge   {self.edge_url}   (AWS_ENDPOINT_URL for boto3, awslocal, localstack-client)
  devices    {devices}
  scripts    s3://{self.scripts_bucket}/  ({scripts})

Try it:
  curl -si -X POST {self.api_url}/device-management/script-execution \\
       -H 'Content-Type: application/json' -d '{example}'
  curl -s {self.api_url}/device-management/script-execution/<id>
  curl -s {self.api_url}/device-management/script-execution/<id>/result
  curl -si -X DELETE {self.api_url}/device-management/script-execution/<id>

Ctrl-C stops everything.
"""
