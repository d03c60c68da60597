"""Print the API's OpenAPI document, generated from the API function's code (``make openapi``)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from local_runtime.api_gateway import MAX_URL_CHARACTERS
from local_runtime.lambdas import load_module

ROOT = Path(__file__).resolve().parent.parent
TITLE = "longrun"
VERSION = "1.0.0"
DESCRIPTION = (
    "Long-running tasks behind a REST API. A script-execution task runs a script on a fleet of devices through "
    "SSM Run Command: POST answers 202 with a Location to poll, GET shows status and progress, /devices each "
    "device's current state and its whole output, /result the per-device outcome, DELETE cancels; /events streams a "
    "task's events (Server-Sent Events), and webhooks push them. POST /device-management/scripts hands out a "
    "presigned URL to upload a script. Errors are RFC 9457 problem details (application/problem+json). "
    "The deployed API uses IAM authorization (SigV4)."
)


def document() -> dict[str, Any]:
    layer = str(ROOT / "layers" / "longrun")  # the layer's package, as Lambda puts it on the path
    if layer not in sys.path:
        sys.path.insert(0, layer)
    api = load_module("longrun_api_for_openapi", ROOT / "functions" / "api", "app")
    stream = load_module("longrun_event_stream_for_openapi", ROOT / "functions" / "event_stream", "app")
    paths: dict[str, dict[str, Any]] = {}
    for route in api.api.routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    paths[stream.ROUTE] = {"get": stream.OPENAPI_OPERATION}  # a streamed route: its own function
    schema = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": _schemas(paths)},
    }
    _link_created_resources(schema)
    _answered_before_the_api(schema)
    return schema


def _operation(route: Any) -> dict[str, Any]:
    """A route as the document states it: its parameters with their JSON Schema, its body and its answers."""
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__ + re.sub(r"\W", "_", route.path) + "_" + route.method.lower(),
        **{key: value for key, value in route.doc.items() if key != "responses"},
        "responses": {str(status): response for status, response in route.doc["responses"].items()},
    }
    parameters = [
        {
            "name": param.name,
            "in": param.where,
            "required": param.where == "path",
            "description": param.description,
            "schema": param.schema,
        }
        for param in route.params
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        body_schema = {"$ref": f"#/components/schemas/{route.body.model}"}
        operation["requestBody"] = {"content": {"application/json": {"schema": body_schema}}, "required": True}
    return operation


def _schemas(paths: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of every model of longrun.models the paths refer to, and of the models those refer to."""
    from pydantic.json_schema import models_json_schema

    from longrun import models

    named = sorted(set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(paths))))
    found = [getattr(models, name, None) for name in named]
    listed: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in found if isinstance(model, type) and issubclass(model, BaseModel)
    ]
    _, definitions = models_json_schema(listed, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = definitions.get("$defs", {})
    missing = set(named) - set(schemas)
    if missing:
        raise LookupError(f"the API names models longrun.models does not document: {sorted(missing)}")
    return schemas


GATEWAY_ANSWERS = {
    "403": "Refused by API Gateway before the API: not signed, signed wrongly, or not allowed by IAM",
    "429": "Refused by API Gateway: over the stage's throttling rate or burst; retry after Retry-After",
}
"""What API Gateway itself answers on any route, as the template's gateway responses shape it (problem+json)"""
URL_TOO_LONG = (
    f"Refused before the API: the URL is longer than the endpoint type allows ({MAX_URL_CHARACTERS['EDGE']:,}"
    " characters edge-optimized); in AWS the edge answers it, not as a problem"
)


def _answered_before_the_api(schema: dict[str, Any]) -> None:
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in schema["paths"].values():
        for operation in operations.values():
            for status, description in GATEWAY_ANSWERS.items():
                operation["responses"].setdefault(status, {"description": description, "content": problem})
            operation["responses"].setdefault("414", {"description": URL_TOO_LONG})


def _link_created_resources(schema: dict[str, Any]) -> None:
    """OpenAPI links from each POST that makes a resource (its 201 or 202 answer carries the resource's ``id``) to
    every operation on that resource whose only path parameter is the id: what a client (or a stateful fuzzer) does
    next with a task or a webhook endpoint."""
    paths = schema["paths"]
    for collection, item in paths.items():
        created = item.get("post", {}).get("responses", {})
        status = next((code for code in ("201", "202") if code in created), None)
        if status is None:
            continue
        links = {}
        for path, operations in paths.items():
            parameter = path.removeprefix(collection + "/").split("/")[0]
            if not path.startswith(collection + "/{") or path.count("{") != 1:
                continue
            for method, operation in operations.items():
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {parameter.strip("{}"): "$response.body#/id"},
                    "description": f"{method.upper()} {path} of the resource just made",
                }
        if links:
            created[status]["links"] = links


def main() -> None:
    print(json.dumps(document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
