"""Print the JSON Schema of a task event's body, as every push channel delivers it, generated from the models
(``make openapi``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def document() -> dict[str, Any]:
    layer = str(ROOT / "layers" / "longrun")
    if layer not in sys.path:
        sys.path.insert(0, layer)
    from longrun.models import TaskEvent  # the layer's package is on the path only from here

    schema = TaskEvent.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "task-event.schema.json", **schema}


def main() -> None:
    print(json.dumps(document(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
