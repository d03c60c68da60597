"""The API checks its request bodies by hand (longrun.api_requests); the pydantic models of longrun.models document
them in the OpenAPI document. Here both read the same bodies, hand-picked and generated: each body is accepted by both
or refused by both, with the same values, and refused at the same fields."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from longrun import api_requests
from longrun.api_requests import Problems
from longrun.models import ScriptExecutionRequest, ScriptUploadRequest, WebhookRequest

SHA = "ab" * 32
VALID_SUBMISSIONS: list[dict[str, Any]] = [
    {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"},
    {"device-ids": [0, "a", 2**53 - 1, 3.0], "script-url": "s3://my-bucket/scripts/x/y.sh"},
    {
        "device-ids": ["i-0123456789abcdef0", "node@site:1/x+y=z"],
        "script-url": "scripts/..hidden/.x",
        "timeout-seconds": 28_800,
        "max-concurrency": "100%",
        "max-errors": "0%",
        "deadline-seconds": 2_592_000,
    },
    {"device-ids": ["d"], "script-url": "scripts/a", "max-concurrency": 1, "max-errors": 0, "deadline-seconds": None},
    {"device-ids": ["d"], "script-url": "scripts/a", "timeout-seconds": 600.0, "max-errors": None},
]
INVALID_VALUES: dict[str, list[Any]] = {
    "device-ids": [[], "web-1", None, [""], ["-x"], ["a" * 65], [True], [-1], [2**53], [1.5], [[1]], [{}], ["d", "d"],
                   [3, "3"], [math.nan], [math.inf], ["é"], ["a b"], list(range(10_001))],
    "script-url": ["", "hello.sh", "scripts/", "scripts//a", "scripts/./a", "scripts/../a", "/scripts/a",
                   "scripts/a b", "s3://b", "s3://bucket/", "s3://bucket/other/a", 3, None, ["scripts/a"],
                   "scripts/" + "a" * 1020, "scripts/ä"],
    "timeout-seconds": [0, 28_801, -1, "600", 1.5, True, None, [600]],
    "max-concurrency": [0, "0%", "101%", "50", "5.5%", -3, 1.5, False, None, "10 %"],
    "max-errors": [-1, "101%", "x", 0.5, True, [], "-1%"],
    "deadline-seconds": [0, 2_592_001, "60", 1.1, False],
}  # fmt: skip
VALID_DIGESTS = [{"sha256": SHA, "size": 1}, {"sha256": "0" * 64, "size": 1_048_576.0}]
INVALID_DIGESTS: dict[str, list[Any]] = {
    "sha256": ["AB" * 32, "ab" * 31, "ab" * 33, 3, None, "g" * 64],
    "size": [0, 1_048_577, "1", 1.5, True, None],
}
VALID_WEBHOOKS = [
    {"url": "https://hooks.example.com/x"},
    {"url": "h", "events": ["script-execution.finished"]},
    {"url": "https://x", "events": ["script-execution.progress", "script-execution.status-changed"]},
]
INVALID_WEBHOOKS: dict[str, list[Any]] = {
    "url": ["", "x" * 2049, 3, None, ["u"]],
    "events": [[], ["nope"], "script-execution.finished", None, ["script-execution.finished"] * 2, [1]],
}
Check = Callable[[Any, Problems], Any]


def _fields(checked: Any) -> dict[str, Any]:
    """A checked request's values, by the contract's field names."""
    if isinstance(checked, api_requests.Submission):
        return checked.as_json()
    if isinstance(checked, api_requests.NewWebhook):
        return checked.as_json()
    return {"sha256": checked.sha256, "size": checked.size}


def _contract(model: type[BaseModel], body: Any) -> tuple[dict[str, Any] | None, set[str]]:
    """What the contract's model reads of a body: its values, or the top-level fields it refuses."""
    try:
        validated = model.model_validate(copy.deepcopy(body), by_alias=True, by_name=False)
    except ValidationError as error:
        return None, {str(item["loc"][0]) if item["loc"] else "body" for item in error.errors()}
    return validated.model_dump(mode="json", by_alias=True), set()


def _both(model: type[BaseModel], check: Check, body: Any) -> None:
    problems = Problems()
    checked = check(copy.deepcopy(body), problems)
    values, refused = _contract(model, body)
    if values is None:
        assert checked is None and problems, f"the API accepts what the contract refuses: {body!r}: {refused}"
        assert {problem["field"].removeprefix("body.").split(".")[0] for problem in problems} == refused, body
        return
    assert checked is not None and not problems, f"the API refuses what the contract accepts: {body!r}: {problems}"
    assert _fields(checked) == values, body


def _mutations(valid: list[dict[str, Any]], invalid: dict[str, list[Any]], seed: int) -> list[Any]:
    """Every valid body; each with one field wrong, dropped or unknown; and random mixes of several."""
    bodies: list[Any] = [*valid, None, [], "x", 3, {}]
    for body in valid:
        for name, values in invalid.items():
            bodies += [{**body, name: value} for value in values]
            bodies.append({key: value for key, value in body.items() if key != name})
        bodies.append({**body, "extra": 1})
        bodies.append({**body, next(iter(body)).replace("-", "_"): 1})  # a field by its Python name
    generator = random.Random(seed)
    for _ in range(300):
        body = dict(generator.choice(valid))
        for name in generator.sample(sorted(invalid), generator.randint(1, len(invalid))):
            body[name] = generator.choice(invalid[name] + [body.get(name, 1)])
        bodies.append(body)
    return bodies


@pytest.mark.parametrize("body", _mutations(VALID_SUBMISSIONS, INVALID_VALUES, seed=1))
def test_a_submission_is_checked_as_the_contract_says(body: Any) -> None:
    _both(ScriptExecutionRequest, api_requests.submission, body)


@pytest.mark.parametrize("body", _mutations(VALID_DIGESTS, INVALID_DIGESTS, seed=2))
def test_a_script_digest_is_checked_as_the_contract_says(body: Any) -> None:
    _both(ScriptUploadRequest, api_requests.script_digest, body)


@pytest.mark.parametrize("body", _mutations(VALID_WEBHOOKS, INVALID_WEBHOOKS, seed=3))
def test_a_new_webhook_is_checked_as_the_contract_says(body: Any) -> None:
    _both(WebhookRequest, api_requests.new_webhook, body)


def test_every_mistake_of_a_body_is_reported_at_its_field() -> None:
    problems = Problems()
    body = {"device-ids": ["ok", "-bad", 1.5], "script-url": "elsewhere/a.sh", "timeout-seconds": 0, "x": 1}
    assert api_requests.submission(body, problems) is None
    assert [problem["field"] for problem in problems] == [
        "body.x",
        "body.device-ids.1",
        "body.device-ids.2",
        "body.script-url",
        "body.timeout-seconds",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("100", 100), ("+7", 7), ("0", None), ("101", None), ("1.0", None), ("", None), (" 5", None),
     ("\u0665", None), ("1e2", None), ("9" * 40, None)],
)  # fmt: skip
def test_a_query_integer_is_ascii_decimal_within_its_bounds(value: str, expected: int | None) -> None:
    problems = Problems()
    assert api_requests.query_integer(value, "query.limit", problems, 1, 100) == expected
    assert bool(problems) is (expected is None)
