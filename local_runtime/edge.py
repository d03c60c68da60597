"""The AWS edge on LocalStack's port: moto's whole API, except the calls the local runtime answers itself:
Lambda Invoke (the real handlers), and SSM Run Command and the tagging API's GetResources (the local fleet).

Every request signed by one of the stack's roles (a function, the state machine, the devices), in its Authorization
header or in its query string (a presigned S3 URL), is authenticated first: its signature must be the one the role's
secret key makes, with the role's session token (``sigv4``). It is then checked against that role's policies, and
refused with AccessDenied, in the service's own error format, when they do not allow it. S3 answers a missing key
with 403 rather than 404 to a role that may not list the bucket, as S3 does. Any S3 request is refused, as S3
refuses it, if it is presigned and malformed or expired, carries x-amz-* headers it was not signed with, or has a
body that does not match its Content-Length or the digests it gives (``s3_integrity``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

from moto.moto_server.werkzeug_app import (
    BackendRequest,
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local_runtime import aws_requests, iam, meter, s3_integrity, sigv4
from local_runtime.faults import TIMEOUT_HOLD_SECONDS, EdgeFaults, error_answer
from local_runtime.fleet import FleetError
from local_runtime.fleet_process import FleetProcess
from local_runtime.identities import ADMINISTRATOR, Identities
from local_runtime.lambdas import LambdaBridge
from local_runtime.loopback import LOOPBACK
from local_runtime.sigv4 import Refusal, Signature, Signer
from local_runtime.template import ACCOUNT_ID

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
METER_PATH = "/_local/meter"
IAM_PATH = "/_local/iam"
FAULTS_PATH = "/_local/faults"
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
    def __init__(
        self,
        lambdas: LambdaBridge,
        fleet: FleetProcess,
        identities: Identities,
        ledger: iam.Ledger,
        faults: EdgeFaults | None = None,
    ) -> None:
        self._faults = faults or EdgeFaults()
        self._moto: WsgiApp = DomainDispatcherApplication(_backend_app)
        self._lambdas = lambdas
        self._fleet = fleet
        self._identities = identities
        self._ledger = ledger
        self._server: BaseWSGIServer | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path.startswith("/_local/"):
            request.get_data()
            return self._local(request)(environ, start_response)
        received = {name.lower(): value for name, value in request.headers.items()}  # as the client sent them
        raw_query = environ.get("QUERY_STRING", "")
        try:
            signature = sigv4.authentication(raw_query, received)
        except Refusal as refusal:  # only S3 authenticates in the ways refused before a key is looked up
            return _refused("s3", request, refusal)(environ, start_response)
        try:
            body = request.get_data()  # read once; moto reads the body again from its own view of the request
        except ClientDisconnected:  # fewer bytes than Content-Length, and the client gave up
            if signature is None or signature.service != "s3":
                raise
            return _refused("s3", request, s3_integrity.incomplete_body())(environ, start_response)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        signed = signature.signer if signature else None
        principal = self._identities.principal(signed.access_key) if signed else ADMINISTRATOR
        target = request.headers.get("X-Amz-Target", "")
        if signature is not None and signed is not None:
            try:
                self._authenticate(signature, request, received, body)
            except Refusal as refusal:
                return _refused(signed.service, request, refusal)(environ, start_response)
            checks = aws_requests.checks(signed.service, signed.region, request)
            _count(request, target, signed, principal, checks)
            denied = self._authorize(principal, signed.service, request, checks) if principal.restricted else None
            if denied is not None:
                return denied(environ, start_response)
            if signed.service == "s3":
                try:
                    s3_integrity.check(request.method, request.args, received, body)
                except Refusal as refusal:
                    return _refused("s3", request, refusal)(environ, start_response)
                _record_checksum_algorithm(environ, request.method, received)
        if signed is not None and principal.name.endswith("Function") and not environ.get(LOOPBACK):
            fault = self._faults.draw(signed.service, target.rsplit(".", 1)[-1] or request.method)
            if fault == "lost-answer" or (fault == "timeout" and self._faults.acts()):  # it acts, unheard of
                with meter.attributed_to(principal.name):
                    list(self._dispatch(request, target, signed, principal, environ, lambda *_: lambda _: None))
            if fault == "timeout":
                _hang_up(environ)
            if fault is not None:
                kind = "server-error" if fault == "lost-answer" else fault
                return _raw(*error_answer(signed.service, kind))(environ, start_response)
        with meter.attributed_to(principal.name):
            return self._dispatch(request, target, signed, principal, environ, start_response)

    # --- authentication ---------------------------------------------------------------------------

    def _authenticate(self, signature: Signature, request: Request, headers: Mapping[str, str], body: bytes) -> None:
        """A presigned request must be valid now; a request signed with credentials the runtime issued must carry
        their session token and the signature their secret key makes (any other key is the administrator's, whose
        secret the runtime does not know); an S3 request must be signed with every x-amz-* header it carries."""
        sigv4.check_validity(signature, datetime.now(UTC))
        credentials = self._identities.credentials(signature.access_key)
        if credentials is not None:
            sigv4.check_session_token(signature, credentials.session_token)
            if signature.presigned:
                payload_hash = sigv4.UNSIGNED_PAYLOAD
            else:
                payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
            sigv4.verify(
                signature,
                credentials.secret_key,
                request.method,
                _raw_path(request.environ),
                request.environ.get("QUERY_STRING", ""),
                headers,
                payload_hash,
            )
        if signature.service == "s3":
            sigv4.check_signed_headers(signature, headers)
            if signature.presigned:
                _check_bucket_region(signature, request)

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
        if request.path.startswith(FAULTS_PATH):
            return Response(json.dumps(self._faults.report()), 200, content_type="application/json")
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


class _RawPutRequest(BackendRequest):
    """moto's request, but a PUT's body is never parsed as a form: S3 stores what a PUT sends whatever its
    Content-Type says (curl --data-binary and urllib send application/x-www-form-urlencoded), where moto would
    read such a body as form fields and store an empty object."""

    @property
    def want_form_data_parsed(self) -> bool:
        return self.method != "PUT" and bool(self.environ.get("CONTENT_TYPE"))


def _backend_app(service: Any) -> Any:
    app = create_backend_app(service)
    app.request_class = _RawPutRequest
    return app


def _access_denied(service: str, request: Request, message: str) -> Response:
    """AccessDenied as each protocol spells it."""
    if service == "s3":
        return _s3_error(request, 403, "AccessDenied", message)
    return _json_error(request, 403, "AccessDeniedException", message)


_JSON_CODES = {
    # S3's name of an authentication error -> the other services' (their common errors)
    "SignatureDoesNotMatch": (
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access"
        " Key and signing method. Consult the service documentation for details.",
    ),
    "InvalidToken": ("UnrecognizedClientException", "The security token included in the request is invalid."),
    "InvalidAccessKeyId": ("UnrecognizedClientException", "The security token included in the request is invalid."),
}


def _hang_up(environ: dict[str, Any]) -> None:
    """Answer nothing: hold the request, then close its connection (werkzeug takes the ConnectionError raised here
    as a connection the client dropped, and writes nothing more)."""
    time.sleep(TIMEOUT_HOLD_SECONDS)
    connection = environ["werkzeug.socket"]
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    raise ConnectionAbortedError("injected timeout: the request was not answered")


def _raw(status: int, headers: dict[str, str], body: bytes) -> Response:
    return Response(body, status, headers)


def _refused(service: str, request: Request, refusal: Refusal) -> Response:
    """A request refused before it reaches the service, as the service answers it."""
    if service == "s3":
        return _s3_error(request, refusal.status, refusal.code, refusal.message, refusal.details)
    code, message = _JSON_CODES.get(refusal.code, (refusal.code, refusal.message))
    return _json_error(request, 403, code, message)


def _s3_error(
    request: Request, status: int, code: str, message: str, details: Mapping[str, str] | None = None
) -> Response:
    """S3's XML error document, with the elements S3 adds for this error (Expires, ServerTime, HeadersNotSigned...);
    a HEAD request gets the status only, as S3 answers it."""
    request_id = str(uuid.uuid4())
    elements = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in (details or {}).items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}</Message>'
        f"{elements}<RequestId>{request_id}</RequestId><HostId>local</HostId></Error>"
    )
    data = b"" if request.method == "HEAD" else body.encode()
    return Response(data, status, {"x-amz-request-id": request_id}, content_type="application/xml")


def _json_error(request: Request, status: int, code: str, message: str) -> Response:
    """An error in the JSON protocols: with X-Amz-Target (400, ``__type``), or REST-JSON (``x-amzn-ErrorType``)."""
    request_id = str(uuid.uuid4())
    if request.headers.get("X-Amz-Target"):
        content_type = request.headers.get("Content-Type") or "application/x-amz-json-1.1"
        body_json = {"__type": code, "message": message, "Message": message}
        return Response(json.dumps(body_json), 400, {"x-amzn-RequestId": request_id}, content_type=content_type)
    headers = {"x-amzn-ErrorType": code, "x-amzn-RequestId": request_id}
    return Response(json.dumps({"Type": "User", "Message": message}), status, headers, content_type="application/json")


def _raw_path(environ: Mapping[str, Any]) -> str:
    """The request's path as the client sent it, still percent-encoded (what a signature covers)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return quote(environ.get("PATH_INFO", "/").encode("latin-1", "replace").decode("utf-8", "replace"), safe="/~")
    if raw.startswith(("http://", "https://")):
        raw = urlsplit(raw).path or "/"
    return str(raw).split("?", 1)[0].encode("latin-1", "replace").decode("utf-8", "replace")


def _check_bucket_region(signature: Signature, request: Request) -> None:
    """A presigned URL must be signed for its bucket's region."""
    bucket_name, _ = aws_requests.s3_location(request)
    bucket = s3_backends[ACCOUNT_ID]["aws"].buckets.get(bucket_name) if bucket_name else None
    region = getattr(bucket, "region_name", None)
    if region and region != signature.region:
        raise Refusal(
            400,
            "AuthorizationQueryParametersError",
            f"Error parsing the X-Amz-Credential parameter; the region '{signature.region}' is wrong; expecting"
            f" '{region}'",
            Region=region,
        )


def _record_checksum_algorithm(environ: dict[str, Any], method: str, headers: Mapping[str, str]) -> None:
    """S3 keeps the checksum an upload's x-amz-checksum-<algorithm> header gives; moto keeps it only when the SDK's
    x-amz-sdk-checksum-algorithm header names the algorithm too (a presigned upload signs the checksum alone)."""
    algorithm = s3_integrity.checksum_algorithm(headers)
    if method == "PUT" and algorithm and "x-amz-sdk-checksum-algorithm" not in headers:
        environ["HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM"] = algorithm


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
