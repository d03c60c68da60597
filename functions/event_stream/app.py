"""Server-Sent Events of a task: GET /device-management/script-execution/{task_id}/events, streamed.

Python has no streaming handler in Lambda, so this is a small web app behind Lambda Web Adapter (run.sh starts it):
the adapter hands it each request with API Gateway's request context in the ``x-amzn-request-context`` header and
streams what it writes back through API Gateway (the route's integration has responseTransferMode STREAM)."""

from __future__ import annotations

import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aws_lambda_powertools import Logger

from longrun import channels, cold_start
from longrun.callers import owner_of
from longrun.config import settings
from longrun.errors import TaskError, problem
from longrun.event_stream import EventStream
from longrun.links import Links
from longrun.services import task_store

ROUTE = "/device-management/script-execution/{task_id}/events"
OPENAPI_OPERATION: dict[str, Any] = {
    "summary": "A task's events, streamed as Server-Sent Events",
    "description": "The current state first (event: state), then each event of the task (id: the event id, event: its"
    " type, data: its body, as docs/task-event.schema.json describes it), closing after script-execution.finished."
    " Reconnect with Last-Event-ID to resume right after an event; a stream ends after about 14 minutes (API Gateway"
    " streams a response for at most 15), and EventSource reconnects on its own.",
    "operationId": "stream_task_events",
    "tags": ["script-execution"],
    "parameters": [
        {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f-]{36}$"}},
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "Resume after this event id",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
    ],
    "responses": {
        "200": {
            "description": "The stream: each event's fields, as an EventSource hands them over",
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "event": {"type": "string", "description": "state, then each event's type"},
                            "id": {"type": "string", "description": "The event's id, for Last-Event-ID"},
                            "data": {"type": "string", "description": "The event's JSON body"},
                            "retry": {"type": "integer", "description": "Milliseconds before reconnecting"},
                        },
                    }
                }
            },
        },
        "204": {"description": "The task has finished and Last-Event-ID was its last event: nothing more will come"},
        **{
            str(status): {
                "description": title,
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            }
            for status, title in {
                400: "Last-Event-ID is not an event id",
                401: "No caller identity",
                404: "No such task",
                406: "The client does not accept text/event-stream",
            }.items()
        },
    },
}
"""The route in the API's OpenAPI document (tools/openapi.py adds it to the API function's routes)"""
EVENTS_PATH = re.compile(r"^(?P<base>.*?)/device-management/script-execution/(?P<task_id>[0-9a-f-]{36})/events$")
EVENT_STREAM = "text/event-stream"
logger = Logger()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        context: dict[str, Any] = json.loads(self.headers.get("x-amzn-request-context") or "{}")
        found = EVENTS_PATH.match(context.get("path") or self.path.split("?", 1)[0])
        if found is None:
            return self._problem(404, "no-such-resource", "Not found", f"no resource at GET {self.path}")
        identity = context.get("identity") or {}
        authorizer = context.get("authorizer")
        owner = owner_of(authorizer, identity.get("caller"), identity.get("userArn"), settings().owner_scope)
        if owner is None:
            return self._problem(
                401,
                "no-caller-identity",
                "No caller identity",
                "the request carries no authorizer principal or IAM caller",
            )
        accept = self.headers.get("Accept", "*/*")
        if EVENT_STREAM not in accept and "*/*" not in accept and "text/*" not in accept:
            return self._problem(406, "not-acceptable", "Not acceptable", f"this resource is {EVENT_STREAM}")
        stream = EventStream(task_store(), Links(base=found["base"]))
        try:
            frames = stream.open(owner, found["task_id"], self.headers.get("Last-Event-ID"))
        except TaskError as error:
            return self._problem(error.status, error.kind, error.title, error.detail)
        if frames is None:  # the task has ended and the client has its last event: 204 stops EventSource
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(200)
        self.send_header("Content-Type", EVENT_STREAM)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for frame in frames:
                data = frame.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the client went away", extra={"task_id": found["task_id"]})

    def _problem(self, status: int, kind: str, title: str, detail: str) -> None:
        body = channels.dumps(problem(status, kind, title, detail, self.path)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        logger.debug(format % args)


def main() -> None:
    cold_start.init_done()
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("AWS_LWA_PORT", "8080"))), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
