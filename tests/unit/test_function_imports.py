"""What each function imports: the workflow's functions work on dataclass records and never import pydantic, which
would be about a third of their cold start (docs/benchmarks.md, section 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FUNCTIONS = ["start_run", "run_batch", "command_events", "expire_batch", "finish_run"]
WORKFLOW_MODULES = ["workflow", "lifecycle", "store", "run_command", "scripts", "batching", "executions", "records"]
"""Every module of the layer a workflow step runs, its first invocation included"""


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


@pytest.mark.parametrize("function", WORKFLOW_FUNCTIONS)
def test_a_workflow_step_never_imports_pydantic(function: str) -> None:
    modules = ", ".join(f"longrun.{name}" for name in WORKFLOW_MODULES)
    imported = _imported(function, f"import app\nimport {modules}\nfrom longrun.services import workflow\nworkflow()")
    assert "pydantic" not in imported
    assert "longrun.models" not in imported


def test_the_api_does_import_its_models() -> None:
    """The check above can fail: a function that validates requests imports them."""
    assert "pydantic" in _imported("api", "import app")
