"""Each kind of problem has its own type, and docs/problems.md lists every one the functions can answer."""

from __future__ import annotations

import re

from longrun import errors
from tests.conftest import ROOT

DOCUMENTED = re.compile(r"^\| `(?P<kind>[a-z-]+)` \| (?P<status>\d{3}) \|", re.MULTILINE)
ANSWERED = re.compile(r'(?:_problem|problem_answer)\(\s*(?P<status>\d{3}),\s*"(?P<kind>[a-z-]+)"')
ANSWERING = [*(ROOT / "functions").glob("*/app.py"), ROOT / "layers" / "longrun" / "longrun" / "rest_api.py"]
"""The functions, and the API's plumbing (which answers malformed requests and unknown routes)"""


def _documented() -> dict[str, int]:
    text = (ROOT / "docs" / "problems.md").read_text()
    return {found["kind"]: int(found["status"]) for found in DOCUMENTED.finditer(text)}


def _domain_errors() -> list[type[errors.TaskError]]:
    found, pending = [], [errors.TaskError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            found.append(subclass)
            pending.append(subclass)
    return found


def test_every_domain_error_has_a_kind_of_its_own_documented_with_its_status() -> None:
    documented = _documented()
    kinds = [error.kind for error in _domain_errors()]
    assert len(kinds) == len(set(kinds)), kinds
    assert {error.kind: error.status for error in _domain_errors()}.items() <= documented.items()


def test_every_kind_a_function_answers_is_documented_with_its_status() -> None:
    documented = _documented()
    answered = {
        (found["kind"], int(found["status"])) for path in ANSWERING for found in ANSWERED.finditer(path.read_text())
    }
    assert answered, "no problem found in the functions: the pattern is stale"
    assert answered <= documented.items()


def test_every_documented_kind_is_answered_somewhere() -> None:
    answered = {error.kind for error in _domain_errors()} | {
        found["kind"] for path in ANSWERING for found in ANSWERED.finditer(path.read_text())
    }
    assert set(_documented()) == answered


def test_a_type_is_the_urn_of_its_kind() -> None:
    assert errors.problem_type(errors.TaskNotFound.kind) == "urn:longrun:problem:task-not-found"


def test_a_problem_built_without_pydantic_is_what_the_contract_documents() -> None:
    """The event stream answers its problems as plain JSON: longrun.models.Problem reads each and writes it back byte
    for byte."""
    from longrun.channels import dumps
    from longrun.models import Problem

    for built in (
        errors.problem(404, "task-not-found", "Task not found", "no script-execution task x", "/v1/x/events"),
        errors.problem(406, "not-acceptable", "Not acceptable"),
    ):
        body = dumps(built)
        assert Problem.model_validate_json(body).model_dump_json() == body
