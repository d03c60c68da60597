"""What each function imports: none imports pydantic, which would be about a third of its cold start
(docs/benchmarks.md, section 4). The functions work on dataclass records (longrun.records), build what they answer and
send as the contract's JSON (longrun.views), and the API checks requests by hand (longrun.api_requests); the pydantic
models (longrun.models) only document the contract, for the OpenAPI document and the tests. And none imports boto3 in
its init: boto3 comes with the first AWS client made (longrun.aws_clients), so a request answered before any AWS call
does not pay for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = "import longrun.workflow, longrun.lifecycle, longrun.run_command, longrun.batching, longrun.executions\n"
FIRST_USE: dict[str, str] = {
    "start_run": WORKFLOW + "from longrun.services import workflow\nworkflow()",
    "run_batch": WORKFLOW + "from longrun.services import workflow\nworkflow()",
    "command_events": WORKFLOW + "from longrun.services import workflow\nworkflow()",
    "expire_batch": WORKFLOW + "from longrun.services import workflow\nworkflow()",
    "finish_run": WORKFLOW + "from longrun.services import workflow\nworkflow()",
    "publish_events": "import longrun.push, longrun.change_feed\nfrom longrun.services import publisher\npublisher()",
    "websocket": "import longrun.subscriptions\nfrom longrun.services import subscriptions\nsubscriptions()",
    "deliver_webhooks": "import longrun.webhook_deliveries\nfrom longrun.services import deliveries\ndeliveries()",
    "event_stream": "import longrun.event_stream",
    "jwt_authorizer": "import longrun.bearer_tokens",
    "api": "from longrun.services import script_executions, webhooks\nscript_executions()\nwebhooks()\n"
    "import longrun.webhook_deliveries\n"
    "from aws_lambda_powertools.utilities.idempotency import idempotent_function\n"  # a request with Idempotency-Key
    "from aws_lambda_powertools.utilities.idempotency.serialization.custom_dict import CustomDictSerializer",
}
"""Every function, and what its first invocation imports and builds besides its module"""


def _imported(function: str, statements: str) -> set[str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'functions' / function}:{ROOT / 'layers' / 'longrun'}",
        "TASKS_TABLE": "tasks",
        "SCRIPTS_BUCKET": "scripts",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    listed = subprocess.run(
        [sys.executable, "-c", f"import sys\n{statements}\nprint('\\n'.join(sys.modules))"],
        env=env,
        cwd=ROOT / "functions" / function,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.split())


def test_every_function_is_listed() -> None:
    functions = {path.name for path in (ROOT / "functions").iterdir() if (path / "app.py").is_file()}
    assert functions == set(FIRST_USE)


@pytest.mark.parametrize("function", sorted(FIRST_USE))
def test_no_function_imports_pydantic(function: str) -> None:
    imported = _imported(function, f"import app\n{FIRST_USE[function]}")
    assert "pydantic" not in imported
    assert "longrun.models" not in imported


def test_the_models_do_import_pydantic() -> None:
    """The check above can fail: importing the contract's models imports pydantic."""
    assert "pydantic" in _imported("api", "import app\nimport longrun.models")


@pytest.mark.parametrize("function", sorted(FIRST_USE))
def test_no_function_imports_boto3_in_its_init(function: str) -> None:
    imported = _imported(function, "import app")
    assert "boto3" not in imported
    assert "s3transfer" not in imported


def test_the_first_client_imports_boto3() -> None:
    """The check above can fail: making the first client imports boto3."""
    imported = _imported("api", "import app\nfrom longrun import aws_clients\naws_clients.client('dynamodb')")
    assert "boto3" in imported
