"""The AWS edge on LocalStack's port: moto's whole API, except the calls the local runtime answers itself:
Lambda Invoke (the real handlers), and SSM Run Command and the tagging API's GetResources (the local fleet)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local_runtime import meter
from local_runtime.fleet import FLEET_ACCESS_KEY, Fleet, FleetError
from local_runtime.lambdas import LambdaBridge
from local_runtime.sigv4 import signer

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
METER_PATH = "/_local/meter"
FLEET_TARGETS = {
    "AmazonSSM.SendCommand": "SendCommand",
    "AmazonSSM.CancelCommand": "CancelCommand",
    "AmazonSSM.GetCommandInvocation": "GetCommandInvocation",
    "AmazonSSM.DescribeInstanceInformation": "DescribeInstanceInformation",
    "AmazonSSM.ListCommands": "ListCommands",
    "AmazonSSM.ListCommandInvocations": "ListCommandInvocations",
    "ResourceGroupsTaggingAPI_20170126.GetResources": "GetResources",
}
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Edge:
    def __init__(self, lambdas: LambdaBridge, fleet: Fleet) -> None:
        self._moto: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self._lambdas = lambdas
        self._fleet = fleet
        self._server: BaseWSGIServer | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith(METER_PATH):
            if request.method == "POST":
                meter.reset()
            return Response(json.dumps(meter.snapshot()), 200, content_type="application/json")(environ, start_response)
        target = request.headers.get("X-Amz-Target", "")
        _count(request, target)
        invoke = INVOKE_PATH.match(request.path) if request.method == "POST" else None
        if invoke:
            response = self._invoke(unquote(invoke["function"]), request)
        elif target in FLEET_TARGETS:
            response = self._fleet_action(FLEET_TARGETS[target], request)
        else:
            return self._moto(environ, start_response)
        return response(environ, start_response)

    def _invoke(self, name: str, request: Request) -> Response:
        function = self._lambdas.function(name)
        if function is None:
            body = {"Type": "User", "Message": f"Function not found: {name}"}
            return Response(json.dumps(body), 404, {"x-amzn-ErrorType": "ResourceNotFoundException"})
        event = json.loads(request.get_data() or b"{}")
        if request.headers.get("X-Amz-Invocation-Type") == "Event":
            self._lambdas.invoke_async(function, event)
            return Response(b"", 202)
        result = self._lambdas.invoke(function, event)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if result.error:
            headers["X-Amz-Function-Error"] = result.error
        return Response(json.dumps(result.payload), 200, headers, content_type="application/json")

    def _fleet_action(self, action: str, request: Request) -> Response:
        try:
            body = self._fleet.handle(action, json.loads(request.get_data() or b"{}"))
            status = 200
        except FleetError as error:
            body, status = {"__type": error.code, "message": error.message}, 400
        return Response(json.dumps(body), status, content_type="application/x-amz-json-1.1")

    def serve(self, host: str, port: int) -> None:
        self._server = make_server(host, port, self, threaded=True, request_handler=MotoRequestHandler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="edge").start()

    def close(self) -> None:
        if self._server:
            self._server.shutdown()


def _count(request: Request, target: str) -> None:
    """One API call, by who made it (a device's agent, or the service) and what it was."""
    signed = signer(request.headers.get("Authorization", ""))
    if signed is None:
        return
    service = signed.service
    if target:
        operation = target.rsplit(".", 1)[-1]
    elif INVOKE_PATH.match(request.path):
        operation = "Invoke"
    elif service == "s3":
        operation = {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            request.method, request.method
        )
    else:
        operation = request.args.get("Action", request.method)
    who = "device" if signed.access_key == FLEET_ACCESS_KEY else "service"
    meter.count_call(f"{who}:{service}", operation)
