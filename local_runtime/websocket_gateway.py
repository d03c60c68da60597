"""API Gateway's WebSocket API, locally: a real WebSocket server in front of the template's WebSocket API, with the
@connections management API on the same port, answering as the deployed stage would.

Clients connect to ``ws://HOST:PORT/<stage>``, as to the stage's ``wss://<api id>.execute-api.<region>.amazonaws.com``
URL; any other path answers 403 ``{"message":"Forbidden"}``. The upgrade request invokes the ``$connect`` route's
function with the WebSocket proxy event (CONNECT) before the handshake completes, and the connection exists only once
it has: a function that answers a status other than 2xx refuses the handshake with that status (and its headers and
body), one that fails or does not answer a proxy response refuses it with 502, one that takes longer than the
integration timeout (29 s) with 504, and one whose resource-based policy does not let API Gateway invoke it for the
route with 500. A 2xx answer's headers (``Sec-WebSocket-Protocol``) go into the handshake's response. An
IAM-authorized ``$connect`` identifies its caller as the REST API does (the SigV4 Authorization header's access key;
an unsigned upgrade comes from the local default caller), and every later event of the connection carries that
identity.

Each message selects its route with the API's route selection expression (``$request.body.action``): the route whose
key equals the value the expression finds in the JSON body, else ``$default``; with neither, the client gets API
Gateway's error frame (``{"message": "Forbidden", ...}``); a route whose function fails or cannot be invoked gets
``{"message": "Internal server error", ...}``, one whose function times out ``{"message": "Endpoint request timed
out", ...}``. Messages run concurrently, each invoking its route's function (MESSAGE). A message is at most 128 KB,
in frames of at most 32 KB: a larger one closes the connection with 1009. A connection with no message either way
for 10 minutes, or open for 2 hours, is closed with 1001. Once a connection has closed, ``$disconnect`` is invoked
(DISCONNECT), at best effort.

The @connections API (``POST``, ``GET``, ``DELETE /<stage>/@connections/<connection id>``) is for signed callers
only: the SigV4 signer's policies must allow ``execute-api:ManageConnections`` on
``arn:aws:execute-api:<region>:<account>:<api id>/<stage>/<METHOD>/@connections/<connection id>``; a refusal answers
403 AccessDeniedException with IAM's message and is recorded in the IAM report, as the edge's refusals are. A
connection that is not open (unknown, closing, closed, or still in its ``$connect``) answers 410 GoneException, data
over 128 KB 413 PayloadTooLargeException, in the format boto3's ``apigatewaymanagementapi`` client reads. Posted data
reaches the client as one message (text if it is UTF-8) in frames of at most 32 KB; DELETE closes the connection
(1000).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection

from local_runtime import iam, meter
from local_runtime.api_callers import ApiCallers, Refused
from local_runtime.api_gateway import (
    GatewayError,
    GatewayHandler,
    GatewayServer,
    Reply,
    invoke_proxy,
)
from local_runtime.identities import Identities
from local_runtime.lambdas import LambdaBridge
from local_runtime.sigv4 import signer
from local_runtime.template import ACCOUNT_ID, LocalStack, WebSocketApi, WebSocketRoute

log = logging.getLogger("local_runtime.websocket")
MAX_MESSAGE_BYTES = 128 * 1024
MAX_FRAME_BYTES = 32 * 1024
IDLE_TIMEOUT_SECONDS = 10 * 60
MAX_DURATION_SECONDS = 2 * 60 * 60
CLOSE_TIMEOUT_SECONDS = 5
"""How long a closing handshake the runtime starts waits for the client's answer"""
_CONNECTIONS_PATH = re.compile(r"^/(?P<stage>[^/]+)/@connections/(?P<connection>[^/]+)$")
_UNWRAPPED = re.compile(r"^\$request\.body\.([\w.]+)$")
_VARIABLE = re.compile(r"\$\{request\.body\.([\w.]+)\}")


@dataclass(frozen=True)
class _Peer:
    """Who is at the other end of a connection, as its upgrade request said."""

    connection_id: str
    connected_at: datetime
    identity: dict[str, Any]
    """requestContext.identity of each of its events"""
    domain: str
    """The Host its upgrade request named"""


@dataclass
class _Client:
    """An open connection."""

    peer: _Peer
    websocket: Connection
    opened: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    last_active_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    sending: threading.Lock = field(default_factory=threading.Lock)

    def touch(self) -> None:
        """A message went either way: the idle timeout starts again."""
        self.last_active, self.last_active_at = time.monotonic(), datetime.now(UTC)

    def deadline(self, idle_timeout: float, max_duration: float) -> float:
        return min(self.last_active + idle_timeout, self.opened + max_duration)

    def send(self, data: str | bytes) -> None:
        """One message, in frames of at most 32 KB (text for a str, and for bytes that are UTF-8)."""
        payload = data.encode() if isinstance(data, str) else data
        text = isinstance(data, str) or _is_utf8(data)
        frames = [payload[start : start + MAX_FRAME_BYTES] for start in range(0, len(payload), MAX_FRAME_BYTES)]
        with self.sending:  # a fragmented message's frames may not interleave with another's
            self.websocket.send(frames if len(frames) > 1 else payload, text=text)
        self.touch()


class WebSocketGateway:
    def __init__(
        self,
        stack: LocalStack,
        lambdas: LambdaBridge,
        identities: Identities,
        ledger: iam.Ledger,
        callers: ApiCallers,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_duration: float = MAX_DURATION_SECONDS,
    ) -> None:
        self._stack = stack
        self._api: WebSocketApi = stack.websocket_apis[0]
        self._lambdas = lambdas
        self._identities = identities
        self._ledger = ledger
        self._callers = callers
        self._idle_timeout = idle_timeout
        self._max_duration = max_duration
        self._clients: dict[str, _Client] = {}
        self._server: GatewayServer | None = None
        self._messages = ThreadPoolExecutor(max_workers=32, thread_name_prefix="websocket-message")
        self._integrations = ThreadPoolExecutor(max_workers=32, thread_name_prefix="websocket-integration")
        self._closing = threading.Event()

    # --- connections ------------------------------------------------------------------------------

    def connect(self, handler: GatewayHandler) -> None:
        """Serve one upgrade request: the handshake (refused if $connect refuses it), then the connection's
        messages until it closes, then $disconnect."""
        handler.close_connection = True
        url = urlsplit(handler.path)
        if url.path.rstrip("/") != f"/{self._api.stage}":
            handler.answer()  # answered as any request outside the stage
            return
        protocol = ServerProtocol(max_size=(MAX_MESSAGE_BYTES, MAX_FRAME_BYTES))
        peer = self._handshake(handler, protocol, url.query)
        if peer is None:
            return
        websocket = Connection(handler.connection, protocol, ping_interval=None, close_timeout=CLOSE_TIMEOUT_SECONDS)
        client = _Client(peer, websocket)
        self._clients[peer.connection_id] = client
        log.debug("connection %s opened for %s", peer.connection_id, peer.identity["userArn"] or "an anonymous caller")
        try:
            self._receive(client)
        finally:
            del self._clients[peer.connection_id]
        log.debug("connection %s closed (%s)", peer.connection_id, websocket.close_code)
        if not self._closing.is_set():
            self._disconnected(client)

    def _handshake(self, handler: GatewayHandler, protocol: ServerProtocol, query_string: str) -> _Peer | None:
        """The opening handshake, its request read by the HTTP server already: who connected, or None if the
        upgrade was refused (not a valid WebSocket handshake, or refused by $connect)."""
        head = [handler.requestline, *(f"{name}: {value}" for name, value in handler.headers.items())]
        protocol.receive_data(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        request = next((event for event in protocol.events_received() if isinstance(event, Request)), None)
        peer = None
        if request is not None:
            response = protocol.accept(request)
            if response.status_code == 101:
                peer, response = self._open(handler, query_string, response)
            protocol.send_response(response)
        for data in protocol.data_to_send():
            if data:  # b"" ends a refusal: the HTTP server closes the socket
                handler.connection.sendall(data)
        return peer

    def _disconnected(self, client: _Client) -> None:
        """$disconnect, once a connection has closed."""
        route = self._api.routes.get("$disconnect")
        if route is None:
            return
        websocket = client.websocket
        context = self._context(client.peer, route.key, "DISCONNECT", _identifier())
        context |= {"disconnectStatusCode": websocket.close_code, "disconnectReason": websocket.close_reason or ""}
        headers = {"Host": client.peer.domain, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
        event = {
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "requestContext": context,
            "isBase64Encoded": False,
        }
        self._integrate(route, event)

    def _open(self, handler: GatewayHandler, query_string: str, accepted: Response) -> tuple[_Peer | None, Response]:
        """(who connects, the handshake's response) once $connect has answered; no one if it refused."""
        headers: dict[str, list[str]] = {}
        for name, value in handler.headers.items():
            headers.setdefault(name, []).append(value)
        lower = {name.lower(): values for name, values in headers.items()}
        identified = self._callers.identify("GET", handler.path, lower, b"")
        if isinstance(identified, Refused):  # the upgrade is refused before $connect, as API Gateway refuses it
            body = json.dumps({"message": identified.message}).encode()
            return None, _response(403, {"Content-Type": ["application/json"]}, body)
        identity = identified
        connect = self._api.routes.get("$connect")
        if connect is None or connect.authorization != "AWS_IAM":  # no one is authenticated
            identity |= dict.fromkeys(("accountId", "caller", "user", "userArn", "accessKey"))
        domain = (lower.get("host") or ["localhost"])[0]
        peer = _Peer(_identifier(), datetime.now(UTC), identity, domain)
        if connect is None:
            return peer, accepted
        event: dict[str, Any] = {"headers": {name: values[-1] for name, values in headers.items()}}
        event["multiValueHeaders"] = headers
        query = parse_qs(query_string, keep_blank_values=True)
        if query:
            event["queryStringParameters"] = {name: values[-1] for name, values in query.items()}
            event["multiValueQueryStringParameters"] = query
        context = self._context(peer, connect.key, "CONNECT", _identifier())
        event["requestContext"] = context | {"messageId": None, "disconnectStatusCode": None, "disconnectReason": None}
        event["isBase64Encoded"] = False
        outcome = self._integrate(connect, event)
        if isinstance(outcome, GatewayError):
            body = json.dumps({"message": outcome.message}).encode()
            return None, _response(outcome.status_code, {"Content-Type": ["application/json"]}, body)
        status, out_headers, body = outcome
        if not 200 <= status < 300:
            log.info("$connect refused a connection with %d", status)
            return None, _response(status, out_headers, body)
        for name, values in out_headers.items():
            for value in values:
                accepted.headers[name] = value
        return peer, accepted

    def _receive(self, client: _Client) -> None:
        """Each message of an open connection, until it closes; closed when idle or too old."""
        while True:
            deadline = client.deadline(self._idle_timeout, self._max_duration)
            try:
                message = client.websocket.recv(timeout=deadline - time.monotonic())
            except TimeoutError:
                if time.monotonic() >= client.deadline(self._idle_timeout, self._max_duration):
                    client.websocket.close(CloseCode.GOING_AWAY, "Going away")
                continue
            except ConnectionClosed:
                return
            client.touch()
            self._messages.submit(self._message, client, message)

    def _message(self, client: _Client, message: str | bytes) -> None:
        """One message from a client, to the route it selects."""
        request_id = _identifier()
        key = select_route(self._api.route_selection, message)
        selected = self._api.routes.get(key) if key is not None and key not in ("$connect", "$disconnect") else None
        route = selected or self._api.routes.get("$default")
        if route is None:
            self._error_frame(client, "Forbidden", request_id)
            return
        context = self._context(client.peer, route.key, "MESSAGE", request_id) | {"messageId": _identifier()}
        body, is_base64 = (message, False) if isinstance(message, str) else (base64.b64encode(message).decode(), True)
        event = {"requestContext": context, "body": body, "isBase64Encoded": is_base64}
        outcome = self._integrate(route, event)
        if isinstance(outcome, GatewayError):
            self._error_frame(client, outcome.message, request_id)

    def _error_frame(self, client: _Client, message: str, request_id: str) -> None:
        """API Gateway's own answer to a message it could not deliver."""
        connection_id = client.peer.connection_id
        frame = f'{{"message": "{message}", "connectionId":"{connection_id}", "requestId":"{request_id}"}}'
        try:
            client.send(frame)
        except ConnectionClosed:
            log.info("connection %s closed before its error frame: %s", connection_id, message)

    def _integrate(self, route: WebSocketRoute, event: dict[str, Any]) -> Reply | GatewayError:
        """The route's AWS_PROXY integration: the function's answer, or the error API Gateway answers instead."""
        source = f"arn:aws:execute-api:{self._stack.region}:{ACCOUNT_ID}:{self._api.id}/{self._api.stage}/{route.key}"
        if not self._lambdas.permits(route.function, "apigateway.amazonaws.com", source):
            log.warning("route %s: no resource-based permission lets API Gateway invoke %s", route.key, route.function)
            return GatewayError("API_CONFIGURATION_ERROR", "Internal server error")
        return invoke_proxy(self._integrations, self._lambdas, self._stack.functions[route.function], event)

    def _context(self, peer: _Peer, route_key: str, event_type: str, request_id: str) -> dict[str, Any]:
        """requestContext of a WebSocket proxy event."""
        now = datetime.now(UTC)
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "messageDirection": "IN",
            "stage": self._api.stage,
            "connectedAt": int(peer.connected_at.timestamp() * 1000),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "identity": peer.identity,
            "requestId": request_id,
            "domainName": peer.domain,
            "connectionId": peer.connection_id,
            "apiId": self._api.id,
        }

    # --- the @connections API ---------------------------------------------------------------------

    def manage(self, method: str, target: str, headers: dict[str, list[str]], body: bytes) -> Reply:
        """POST (send), GET (describe) or DELETE (close) /<stage>/@connections/<connection id>."""
        found = _CONNECTIONS_PATH.match(unquote(urlsplit(target).path))
        if found is None or found["stage"] != self._api.stage or method not in ("POST", "GET", "DELETE"):
            return _error(403, "ForbiddenException", "Forbidden")
        signed = signer((headers.get("authorization") or [""])[0])
        if signed is None:
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        connection_id = found["connection"]
        principal = self._identities.principal(signed.access_key)
        if principal.restricted:
            api = f"arn:aws:execute-api:{self._stack.region}:{ACCOUNT_ID}:{self._api.id}"
            check = iam.Check(
                "execute-api:ManageConnections", f"{api}/{self._api.stage}/{method}/@connections/{connection_id}"
            )
            decision = iam.evaluate(principal, check)
            self._ledger.record(principal, check, decision)
            if not decision.allowed:
                return _error(403, "AccessDeniedException", decision.message)
        if method == "POST" and len(body) > MAX_MESSAGE_BYTES:
            return _error(413, "PayloadTooLargeException", "Message too long")
        client = self._clients.get(connection_id)
        if client is None or client.websocket.state is not OPEN:
            return _error(410, "GoneException", None)
        if method == "GET":
            described = {
                "connectedAt": _iso(client.peer.connected_at),
                "identity": {
                    "sourceIp": client.peer.identity["sourceIp"],
                    "userAgent": client.peer.identity["userAgent"],
                },
                "lastActiveAt": _iso(client.last_active_at),
            }
            return 200, {"Content-Type": ["application/json"]}, json.dumps(described).encode()
        if method == "DELETE":
            client.websocket.close(CloseCode.NORMAL_CLOSURE)
            return 204, {}, b""
        try:
            client.send(body)
        except ConnectionClosed:
            return _error(410, "GoneException", None)
        # API Gateway bills a WebSocket message per 32 KB
        meter.count_call(
            "service:execute-api", "WebSocketMessages", principal.name, -(-len(body) // MAX_FRAME_BYTES) or 1
        )
        return 200, {"Content-Type": ["application/json"]}, b""

    # --- the server -------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        gateway = self

        class Handler(GatewayHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    gateway.connect(self)
                else:
                    self.answer()

        self._server = GatewayServer((host, port), Handler, self.manage, log)
        self._server.start("websocket-gateway")

    def close(self) -> None:
        """Stop serving; open connections are closed (1001) without $disconnect."""
        self._closing.set()
        if self._server:
            self._server.stop()
        for client in list(self._clients.values()):
            client.websocket.close(CloseCode.GOING_AWAY)
        self._messages.shutdown(wait=False, cancel_futures=True)
        self._integrations.shutdown(wait=False, cancel_futures=True)


def select_route(expression: str, message: str | bytes) -> str | None:
    """The route key a message selects: the route selection expression evaluated on its JSON body (a value that is
    not a string is stringified); None when it cannot be evaluated (the message is not JSON, a property is missing)."""
    try:
        body = json.loads(message)
    except ValueError:
        return None
    expression = _UNWRAPPED.sub(r"${request.body.\1}", expression)
    selected, end = [], 0
    for variable in _VARIABLE.finditer(expression):
        value = body
        for name in variable[1].split("."):
            if not isinstance(value, dict) or name not in value:
                return None
            value = value[name]
        selected += [expression[end : variable.start()], value if isinstance(value, str) else json.dumps(value)]
        end = variable.end()
    return "".join(selected) + expression[end:]


def _identifier() -> str:
    """An id of the form API Gateway gives connections and requests, e.g. Lk2xJc3FoAMCJfg="""
    return base64.urlsafe_b64encode(os.urandom(11)).decode()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, error_type: str, message: str | None) -> Reply:
    """An error of the @connections API, as botocore's rest-json parser reads it (x-amzn-ErrorType)."""
    body = {} if message is None else {"message": message}
    headers = {"Content-Type": ["application/json"], "x-amzn-ErrorType": [error_type]}
    return status, headers, json.dumps(body).encode()


def _response(status: int, headers: dict[str, list[str]], body: bytes) -> Response:
    """A refused handshake's HTTP response."""
    out = Headers([("Connection", "close"), ("Content-Length", str(len(body)))])
    for name, values in headers.items():
        if name.lower() not in ("connection", "content-length"):
            for value in values:
                out[name] = value
    return Response(status, http.client.responses.get(status, ""), out, body)
