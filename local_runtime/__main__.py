"""``python -m local_runtime`` (what ``make run`` starts): the whole service on 127.0.0.1 until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local_runtime.api_callers import DEFAULT_CALLERS, LOCAL_SECRET, ApiCallers
from local_runtime.fleet import EventFaults
from local_runtime.runtime import DEFAULT_DEVICES, ROOT, LocalRuntime, Options
from local_runtime.websocket_gateway import IDLE_TIMEOUT_SECONDS, MAX_DURATION_SECONDS

LOCAL_PARAMETERS = {"WebhookAllowLoopbackHttp": "true"}
"""Template parameters the local deployment sets unless told otherwise: a webhook receiver on this machine (plain
http to a loopback address) is the only kind a laptop can try"""


PER_REQUEST_LOGGERS = ("local_runtime.api", "local_runtime.websocket", "local_runtime.lambda")
"""Where a line per request, connection or invocation goes, at DEBUG: printed only with --request-log"""


def configure_logging(level: str, request_log: bool) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "websockets"):  # moto's request log, boto3's notes, each WebSocket's state
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for per_request in PER_REQUEST_LOGGERS:
        logging.getLogger(per_request).setLevel(logging.DEBUG if request_log else logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runtime", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")), help="API port ($PORT)")
    parser.add_argument(
        "--edge-port", type=int, default=int(os.environ.get("EDGE_PORT", "4566")), help="AWS edge port ($EDGE_PORT)"
    )
    parser.add_argument(
        "--ws-port", type=int, default=int(os.environ.get("WS_PORT", "3001")), help="WebSocket API port ($WS_PORT)"
    )
    parser.add_argument(
        "--ws-idle-timeout",
        type=float,
        default=IDLE_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="close a WebSocket connection with no message either way for this long (API Gateway: 600)",
    )
    parser.add_argument(
        "--ws-max-duration",
        type=float,
        default=MAX_DURATION_SECONDS,
        metavar="SECONDS",
        help="close a WebSocket connection open this long (API Gateway: 7200)",
    )
    parser.add_argument(
        "--devices",
        default=os.environ.get("LONGRUN_DEVICES", ",".join(DEFAULT_DEVICES)),
        help="comma-separated device ids of the simulated fleet ($LONGRUN_DEVICES)",
    )
    parser.add_argument(
        "--fleet-size",
        type=int,
        default=int(os.environ.get("LONGRUN_FLEET_SIZE", "0")),
        help="also simulate devices device-1 .. device-N ($LONGRUN_FLEET_SIZE)",
    )
    parser.add_argument(
        "--unmanaged",
        default="",
        help="comma-separated device ids of EC2 instances tagged as devices but not registered with SSM",
    )
    parser.add_argument("--caller", default=DEFAULT_CALLERS[0], help="who unsigned requests come from")
    parser.add_argument(
        "--callers",
        default=",".join(DEFAULT_CALLERS),
        help="comma-separated callers the APIs know (NAME: an IAM user; ROLE~SESSION: a role's session); each signs"
        f" with its name as access key id and {LOCAL_SECRET} as secret key",
    )
    parser.add_argument(
        "--require-signature",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("LOCAL_REQUIRE_SIGNATURE") == "1",
        help="refuse unsigned requests with 403, as the deployed APIs do ($LOCAL_REQUIRE_SIGNATURE=1)",
    )
    parser.add_argument("--log-level", default=os.environ.get("LOCAL_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--request-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("LOCAL_REQUEST_LOG") == "1",
        help="also print each request to the APIs, each WebSocket connection, and each function's REPORT line",
    )
    parser.add_argument("--logs-dir", type=Path, default=ROOT / ".local-runtime" / "logs", help="functions' logs")
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="a template parameter's value"
    )
    parser.add_argument(
        "--template", type=Path, default=ROOT / "template.yaml", help="deploy this template instead of template.yaml"
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--drop-events",
        action="append",
        default=[],
        metavar="KIND[:RATE]",
        help="drop SSM's invocation or command events (all of them, or a share 0..1)",
    )
    faults.add_argument(
        "--delay-events", action="append", default=[], metavar="KIND:SECONDS", help="delay SSM's events of a kind"
    )
    faults.add_argument(
        "--unresponsive",
        default="",
        help="comma-separated devices whose agent takes a command, then never reports (stays InProgress)",
    )
    faults.add_argument(
        "--transaction-ms",
        type=float,
        default=10.0,
        help="how long a DynamoDB transaction holds its items (others touching them conflict)",
    )
    faults.add_argument(
        "--transaction-conflict-rate",
        type=float,
        default=0.0,
        help="share of DynamoDB transactions and single-item writes rejected as conflicting, 0..1",
    )
    faults.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of the functions' AWS calls answered with throttling, a server error or a lost answer, 0..1",
    )
    faults.add_argument("--fault-seed", type=int, default=None, help="seed of the faults drawn (and of conflicts)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level.upper(), args.request_log)
    devices = _listed(args.devices)
    devices += tuple(f"device-{n}" for n in range(1, args.fleet_size + 1))
    runtime = LocalRuntime(
        Options(
            host=args.host,
            port=args.port,
            edge_port=args.edge_port,
            ws_port=args.ws_port,
            ws_idle_timeout=args.ws_idle_timeout,
            ws_max_duration=args.ws_max_duration,
            devices=devices,
            callers=ApiCallers(
                default=args.caller,
                names=frozenset({args.caller, *_listed(args.callers)}),
                require_signature=args.require_signature,
            ),
            unmanaged=_listed(args.unmanaged),
            unresponsive=_listed(args.unresponsive),
            event_faults=EventFaults.parse(args.drop_events, args.delay_events),
            transaction_ms=args.transaction_ms,
            conflict_rate=args.transaction_conflict_rate,
            fault_rate=args.fault_rate,
            fault_seed=args.fault_seed,
            parameters=LOCAL_PARAMETERS | dict(item.split("=", 1) for item in args.parameter),
            logs_dir=args.logs_dir,
            template_file=args.template,
        )
    )
    stopping = threading.Event()

    def stop(signum: int, _: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        runtime.start()
        print(runtime.banner(), flush=True)
        print(f"READY {runtime.stage_url}", flush=True)
        stopping.wait()
    finally:
        runtime.stop()
        print("longrun local runtime stopped", flush=True)
    return 0


def _listed(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


if __name__ == "__main__":
    code = main()
    # Everything this process started is stopped; do not wait on threads still inside moto or a handler's retries.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
