"""The AWS edge on LocalStack's port: moto's whole API, except the calls the local runtime answers itself:
Lambda Invoke (the real handlers), and SSM Run Command and the tagging API's GetResources (the local fleet).

Every request signed by one of the stack's roles (a function, the state machine, the devices) is checked against
that role's policies first, and refused with AccessDenied, in the service's own error format, when they do not
allow it. S3 answers a missing key with 403 rather than 404 to a role that may not list the bucket, as S3 does.
"""

from __future__ import annotations

import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local_runtime import aws_requests, iam, meter
from local_runtime.fleet import Fleet, FleetError
from local_runtime.identities import ADMINISTRATOR, Identities
from local_runtime.lambdas import LambdaBridge
from local_runtime.sigv4 import Signer, signer

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
METER_PATH = "/_local/meter"
IAM_PATH = "/_local/iam"
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
    def __init__(self, lambdas: LambdaBridge, fleet: Fleet, identities: Identities, ledger: iam.Ledger) -> None:
        self._moto: WsgiApp = DomainDispatcherApplication(create_backend_app)
        self._lambdas = lambdas
        self._fleet = fleet
        self._identities = identities
        self._ledger = ledger
        self._server: BaseWSGIServer | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        body = request.get_data()  # read once; moto reads the body again from its own view of the request
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        if request.path.startswith("/_local/"):
            return self._local(request)(environ, start_response)
        signed = signer(request.headers.get("Authorization", ""))
        principal = self._identities.principal(signed.access_key) if signed else ADMINISTRATOR
        target = request.headers.get("X-Amz-Target", "")
        if signed is not None:
            checks = aws_requests.checks(signed.service, signed.region, request)
            _count(request, target, signed, principal, checks)
            denied = self._authorize(principal, signed.service, request, checks) if principal.restricted else None
            if denied is not None:
                return denied(environ, start_response)
        with meter.attributed_to(principal.name):
            return self._dispatch(request, target, signed, principal, environ, start_response)

    def _dispatch(
        self,
        request: Request,
        target: str,
        signed: Signer | None,
        principal: iam.Principal,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        invoke = INVOKE_PATH.match(request.path) if request.method == "POST" else None
        if invoke:
            response = self._invoke(unquote(invoke["function"]), request)
        elif target in FLEET_TARGETS:
            response = self._fleet_action(FLEET_TARGETS[target], request)
        elif (
            signed is not None and signed.service == "s3" and principal.restricted and request.method in ("GET", "HEAD")
        ):
            return self._s3_read(principal, request, environ, start_response)
        else:
            return list(self._moto(environ, start_response))
        return response(environ, start_response)

    # --- IAM --------------------------------------------------------------------------------------

    def _authorize(
        self, principal: iam.Principal, service: str, request: Request, checks: list[iam.Check]
    ) -> Response | None:
        for check in checks:
            decision = iam.evaluate(principal, check)
            self._ledger.record(principal, check, decision)
            if not decision.allowed:
                return _access_denied(service, request, decision.message)
        return None

    def _s3_read(
        self, principal: iam.Principal, request: Request, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """A missing object is 404 only to a caller that may list the bucket; to anyone else S3 answers 403."""
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(self._moto(environ, capture))
        bucket, key = aws_requests.s3_location(request)
        if captured["status"].startswith("404") and key is not None:
            check = iam.Check("s3:ListBucket", f"arn:aws:s3:::{bucket}")
            decision = iam.evaluate(principal, check)
            if decision.allowed:
                self._ledger.record(principal, check, decision)
            else:
                return _access_denied("s3", request, decision.message)(environ, start_response)
        start_response(captured["status"], captured["headers"])
        return [body]

    def _local(self, request: Request) -> Response:
        """The runtime's own endpoints: the meter, and the IAM report (grants used, denials, unused grants)."""
        if request.path.startswith(METER_PATH):
            if request.method == "POST":
                meter.reset()
            return Response(json.dumps(meter.snapshot()), 200, content_type="application/json")
        if request.path.startswith(IAM_PATH):
            if request.method == "DELETE":
                self._ledger.clear_denials()
            report = self._ledger.snapshot()
            report["unused"] = iam.unused_grants(self._identities.restricted(), report["used"])
            return Response(json.dumps(report), 200, content_type="application/json")
        return Response(json.dumps({"message": f"no {request.path}"}), 404, content_type="application/json")

    # --- what moto does not do -----------------------------------------------------------------

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


def _access_denied(service: str, request: Request, message: str) -> Response:
    """AccessDenied as each protocol spells it."""
    request_id = str(uuid.uuid4())
    if service == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId><HostId>local</HostId></Error>"
        )
        data = b"" if request.method == "HEAD" else body.encode()
        return Response(data, 403, {"x-amz-request-id": request_id}, content_type="application/xml")
    if request.headers.get("X-Amz-Target"):
        content_type = request.headers.get("Content-Type") or "application/x-amz-json-1.1"
        body_json = {"__type": "AccessDeniedException", "message": message, "Message": message}
        return Response(json.dumps(body_json), 400, {"x-amzn-RequestId": request_id}, content_type=content_type)
    headers = {"x-amzn-ErrorType": "AccessDeniedException", "x-amzn-RequestId": request_id}
    return Response(json.dumps({"Type": "User", "Message": message}), 403, headers, content_type="application/json")


def _count(request: Request, target: str, signed: Signer, principal: iam.Principal, checks: list[iam.Check]) -> None:
    """One API call, by who made it (a device's agent, or the service) and what it was."""
    service = signed.service
    if target:
        operation = target.rsplit(".", 1)[-1]
    elif INVOKE_PATH.match(request.path):
        operation = "Invoke"
    elif service == "s3":  # named by the IAM action it needs (HeadObject is s3:GetObject)
        operation = checks[0].action.removeprefix("s3:")
    else:
        operation = request.args.get("Action", request.method)
    who = "device" if principal.name == "devices" else "service"
    meter.count_call(f"{who}:{service}", operation, principal.name)
    if target == "AWSEvents.PutEvents":  # EventBridge bills each entry
        entries = len(json.loads(request.get_data() or b"{}").get("Entries", []))
        meter.count_call(f"{who}:{service}", "PutEventsEntries", principal.name, entries)
