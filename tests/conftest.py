"""Shared by every suite: the repository's root, and the real handlers loaded the way Lambda loads them."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

from local_runtime.lambdas import load_module

ROOT = Path(__file__).resolve().parent.parent


@cache
def function_module(name: str) -> ModuleType:
    """functions/<name>/app.py, as its own module (every function's module is called app)."""
    return load_module(f"test_function_{name}", ROOT / "functions" / name, "app")
