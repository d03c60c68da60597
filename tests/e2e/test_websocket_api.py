"""The WebSocket API as the local runtime serves it, on a template of its own (websocket_fixture/): connections,
route selection, the @connections API and its IAM check, $connect's refusals, who a connection is, and the limits."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from local_runtime import template
from local_runtime.api_callers import LOCAL_SECRET
from local_runtime.identities import Identities
from tests.conftest import ROOT
from tests.e2e.conftest import LocalRuntimeProcess, Service

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).with_name("websocket_fixture") / "template.yaml"
MAX_DURATION = 3
"""Seconds a connection may stay open on this module's runtime (API Gateway's 2 hours, shortened)"""
CONNECTION_ID = re.compile(r"^[A-Za-z0-9_-]{15}=$")


@pytest.fixture(scope="module")
def websocket_service() -> Iterator[Service]:
    runtime = LocalRuntimeProcess.start("--template", str(TEMPLATE), "--ws-max-duration", str(MAX_DURATION))
    try:
        yield runtime.service
    finally:
        runtime.stop()  # asserts that IAM refused nothing the tests did not take


@pytest.fixture(scope="module")
def identities() -> Identities:
    return Identities(template.load(ROOT, "longrun-local", "us-east-1", template_file=TEMPLATE))


def connections(service: Service, identities: Identities | None = None, function: str = "") -> Any:
    """A client of the @connections API, as the account's administrator or with a function's role."""
    assert service.websocket_url is not None
    keys = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    if identities is not None:
        stack = template.load(ROOT, "longrun-local", "us-east-1", template_file=TEMPLATE)
        role = identities.for_function(stack.functions[function])
        keys = {
            "aws_access_key_id": role.access_key,
            "aws_secret_access_key": role.secret_key,
            "aws_session_token": role.session_token,
        }
    endpoint = service.websocket_url.replace("ws://", "http://")
    return boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name="us-east-1", **keys)


def open_connection(service: Service, query: str = "", access_key: str | None = None) -> ClientConnection:
    """A connection; its upgrade request signed with SigV4 by ``access_key`` if given."""
    assert service.websocket_url is not None
    url = service.websocket_url + query
    headers = {}
    if access_key is not None:
        request = AWSRequest(method="GET", url=url.replace("ws://", "http://"))
        SigV4Auth(Credentials(access_key, LOCAL_SECRET), "execute-api", "us-east-1").add_auth(request)
        headers = {name: request.headers[name] for name in ("Authorization", "X-Amz-Date")}
    return connect(url, additional_headers=headers, open_timeout=30)


def echo(websocket: ClientConnection, **message: Any) -> dict[str, Any]:
    """What the echo function posts back for a message of the echo route."""
    websocket.send(json.dumps({"action": "echo", **message}))
    reply: dict[str, Any] = json.loads(websocket.recv(timeout=30))
    return reply


def test_a_message_reaches_its_route_whose_function_posts_back_through_connections(
    websocket_service: Service,
) -> None:
    with open_connection(websocket_service) as websocket:
        reply = echo(websocket, n=1)
    assert reply["route"] == "echo" and json.loads(reply["body"]) == {"action": "echo", "n": 1}
    assert reply["isBase64Encoded"] is False
    context = reply["event"]["requestContext"]
    assert context["eventType"] == "MESSAGE" and context["messageDirection"] == "IN" and context["stage"] == "v1"
    assert CONNECTION_ID.match(context["connectionId"]) and CONNECTION_ID.match(context["messageId"])
    assert websocket_service.websocket_url is not None
    assert context["domainName"] == websocket_service.websocket_url.split("/")[2]
    assert context["requestTimeEpoch"] >= context["connectedAt"]


def test_functions_reach_the_apis_at_their_local_origins(websocket_service: Service) -> None:
    """https://<api id>.execute-api.<region>.amazonaws.com in a function's environment is where the runtime serves
    that API (the runtime's stand-in for DNS); the stage's path stays."""
    assert websocket_service.websocket_url is not None
    urls = websocket_service.request("GET", "/urls").body
    assert urls == {
        "API_URL": websocket_service.api,
        "WEBSOCKET_CONNECTIONS_URL": websocket_service.websocket_url.replace("ws://", "http://"),
    }


def test_a_message_no_route_takes_gets_api_gateways_error_frame(websocket_service: Service) -> None:
    """The fixture has no $default route: a message that selects no route is refused; a route whose function fails,
    or may not be invoked (no Lambda permission), answers an internal error."""
    with open_connection(websocket_service) as websocket:
        answers = {}
        for message in (
            "not json",
            json.dumps({"action": "nope"}),
            json.dumps({"action": "fail"}),
            '{"action":"mute"}',
        ):
            websocket.send(message)
            answers[message] = json.loads(websocket.recv(timeout=30))
        connection_id = echo(websocket)["event"]["requestContext"]["connectionId"]
    assert [answer["message"] for answer in answers.values()] == [
        "Forbidden",
        "Forbidden",
        "Internal server error",
        "Internal server error",
    ]
    assert all(answer["connectionId"] == connection_id for answer in answers.values())
    assert websocket_service.log is not None
    assert "no resource-based permission lets API Gateway invoke MuteFunction" in websocket_service.log.read_text()


def test_a_post_to_a_closed_connection_raises_gone_exception(
    websocket_service: Service, identities: Identities
) -> None:
    as_function = connections(websocket_service, identities, "EchoFunction")
    with open_connection(websocket_service) as websocket:
        connection_id = echo(websocket)["event"]["requestContext"]["connectionId"]
        as_function.post_to_connection(ConnectionId=connection_id, Data=b"still here")
        assert websocket.recv(timeout=30) == "still here"
    with pytest.raises(as_function.exceptions.GoneException):
        as_function.post_to_connection(ConnectionId=connection_id, Data=b"gone")
    with pytest.raises(as_function.exceptions.GoneException):
        as_function.post_to_connection(ConnectionId="Lk2xJc3FoAMCJfg=", Data=b"never was")


def test_a_role_without_manage_connections_is_refused(websocket_service: Service, identities: Identities) -> None:
    """MuteFunction's role has no execute-api:ManageConnections; EchoFunction's allows POST only."""
    with pytest.raises(ClientError) as refused:
        connections(websocket_service, identities, "MuteFunction").post_to_connection(
            ConnectionId="Lk2xJc3FoAMCJfg=", Data=b"x"
        )
    error = refused.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("AccessDeniedException", 403)
    api_id = template.load(ROOT, "longrun-local", "us-east-1", template_file=TEMPLATE).websocket_apis[0].id
    resource = f"arn:aws:execute-api:us-east-1:123456789012:{api_id}/v1/POST/@connections/Lk2xJc3FoAMCJfg="
    assert error["Error"]["Message"] == (
        "User: arn:aws:sts::123456789012:assumed-role/longrun-local-MuteFunctionRole/longrun-local-MuteFunction"
        f" is not authorized to perform: execute-api:ManageConnections on resource: {resource}"
        " because no identity-based policy allows the execute-api:ManageConnections action"
    )
    with pytest.raises(ClientError) as not_granted:
        connections(websocket_service, identities, "EchoFunction").get_connection(ConnectionId="Lk2xJc3FoAMCJfg=")
    assert not_granted.value.response["Error"]["Code"] == "AccessDeniedException"
    denials = websocket_service.take_denials()
    assert [(d["principal"], d["action"], d["resource"]) for d in denials] == [
        ("MuteFunction", "execute-api:ManageConnections", resource),
        ("EchoFunction", "execute-api:ManageConnections", resource.replace("/POST/", "/GET/")),
    ]


def test_the_connections_api_describes_posts_to_and_closes_a_connection(websocket_service: Service) -> None:
    admin = connections(websocket_service)
    with open_connection(websocket_service) as websocket:
        connection_id = echo(websocket)["event"]["requestContext"]["connectionId"]
        described = admin.get_connection(ConnectionId=connection_id)
        assert websocket.request is not None
        assert described["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": websocket.request.headers["User-Agent"]}
        assert described["LastActiveAt"] >= described["ConnectedAt"]
        large = "x" * (100 * 1024)  # one message, sent in frames of at most 32 KB
        admin.post_to_connection(ConnectionId=connection_id, Data=large.encode())
        assert websocket.recv(timeout=30) == large
        with pytest.raises(admin.exceptions.PayloadTooLargeException):
            admin.post_to_connection(ConnectionId=connection_id, Data=b"x" * (128 * 1024 + 1))
        admin.delete_connection(ConnectionId=connection_id)
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=30)
        assert websocket.close_code == 1000
    with pytest.raises(admin.exceptions.GoneException):
        admin.get_connection(ConnectionId=connection_id)


def test_a_connect_its_function_refuses_refuses_the_handshake(websocket_service: Service) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_connection(websocket_service, "?status=403")
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"refused"


@pytest.mark.parametrize(
    ("access_key", "user_arn"),
    [
        (None, "arn:aws:iam::123456789012:user/local-developer"),
        ("alice", "arn:aws:iam::123456789012:user/alice"),
        ("deployer~ci-42", "arn:aws:sts::123456789012:assumed-role/deployer/ci-42"),
    ],
)
def test_a_connection_is_its_upgrades_caller(websocket_service: Service, access_key: str | None, user_arn: str) -> None:
    """$connect is IAM-authorized: the caller is the upgrade's SigV4 signer, or the local default caller if it is
    unsigned; every event of the connection carries that identity."""
    with open_connection(websocket_service, access_key=access_key) as websocket:
        identity = echo(websocket)["event"]["requestContext"]["identity"]
    assert identity["userArn"] == user_arn
    assert identity["accessKey"] == access_key
    assert identity["accountId"] == "123456789012" and identity["sourceIp"] == "127.0.0.1"


def test_frames_over_32_kb_close_the_connection_with_1009(websocket_service: Service) -> None:
    with open_connection(websocket_service) as websocket:
        message = json.dumps({"action": "echo", "data": "y" * (40 * 1024)})
        websocket.send(message[start : start + 16 * 1024] for start in range(0, len(message), 16 * 1024))
        assert json.loads(websocket.recv(timeout=30))["body"] == message  # 40 KB, in frames of 16 KB
        websocket.send(message)  # in one frame of 40 KB
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=30)
    assert websocket.close_code == 1009


def test_a_connection_is_closed_once_it_has_lasted_the_maximum_and_disconnect_is_invoked(
    websocket_service: Service,
) -> None:
    started = time.monotonic()
    with open_connection(websocket_service) as websocket:
        connection_id = echo(websocket)["event"]["requestContext"]["connectionId"]
        with pytest.raises(ConnectionClosed):
            websocket.recv(timeout=MAX_DURATION + 10)
    assert websocket.close_code == 1001
    assert MAX_DURATION <= time.monotonic() - started < MAX_DURATION + 5
    assert websocket_service.log is not None
    streams = websocket_service.log.parent / "logs" / "longrun-local-EchoFunction"
    deadline = time.monotonic() + 10
    while not any(f"$disconnect {connection_id}" in stream.read_text() for stream in streams.glob("*.log")):
        assert time.monotonic() < deadline, "$disconnect was not invoked"
        time.sleep(0.1)
