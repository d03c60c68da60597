"""The WebSocket API's routes: $connect records the caller's connection, $default subscribes it to a task's events
(or unsubscribes it), $disconnect forgets it."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from longrun import cold_start
from longrun.callers import owner_of
from longrun.config import settings
from longrun.services import subscriptions

logger = Logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["requestContext"]
    connection_id = request["connectionId"]
    logger.append_keys(connection_id=connection_id, route=request["routeKey"])
    match request["routeKey"]:
        case "$connect":
            identity = request.get("identity") or {}
            authorizer = request.get("authorizer")
            owner = owner_of(authorizer, identity.get("caller"), identity.get("userArn"), settings().owner_scope)
            if owner is None:
                return {"statusCode": 401}
            subscriptions().connect(connection_id, owner)
        case "$disconnect":
            subscriptions().disconnect(connection_id)
        case _:
            subscriptions().receive(connection_id, event.get("body"))
    return {"statusCode": 200}


cold_start.init_done()
