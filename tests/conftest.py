"""Shared by every suite: the repository's root, and the real handlers loaded the way Lambda loads them."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from local_runtime.lambdas import load_module
from longrun import api_requests
from longrun.api_requests import Problems, Submission

ROOT = Path(__file__).resolve().parent.parent


@cache
def function_module(name: str) -> ModuleType:
    """functions/<name>/app.py, as its own module (every function's module is called app)."""
    return load_module(f"test_function_{name}", ROOT / "functions" / name, "app")


def submission(body: dict[str, Any]) -> Submission:
    """A submit request's body, checked as the API checks it."""
    problems = Problems()
    checked = api_requests.submission(body, problems)
    assert checked is not None, problems
    return checked
