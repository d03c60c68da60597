"""Answers the WebSocket API's routes: $connect accepts unless the query asks for another status, a message is
posted back to its connection through the @connections API (its route, body and the identity API Gateway gave it),
"fail" raises; on the REST API, GET /urls answers the API URLs in its environment."""

import json
import os

import boto3


def handler(event, context):
    context_ = event["requestContext"]
    route = context_.get("routeKey")
    print(route, context_.get("connectionId"), json.dumps(context_))
    if route is None:  # the REST API
        urls = {name: os.environ[name] for name in ("API_URL", "WEBSOCKET_CONNECTIONS_URL")}
        return {"statusCode": 200, "body": json.dumps(urls)}
    if route == "$connect":
        status = int((event.get("queryStringParameters") or {}).get("status", 200))
        return {"statusCode": status, "body": "refused" if status >= 300 else ""}
    if route == "$disconnect":
        return {"statusCode": 200}
    if route == "fail":
        raise RuntimeError("asked to fail")
    connections = boto3.client("apigatewaymanagementapi", endpoint_url=os.environ["WEBSOCKET_CONNECTIONS_URL"])
    reply = {"route": route, "body": event["body"], "isBase64Encoded": event["isBase64Encoded"], "event": event}
    connections.post_to_connection(ConnectionId=context_["connectionId"], Data=json.dumps(reply).encode())
    return {"statusCode": 200}
