"""bench.cold_start's cases: each names a function of the template and a sample event there is, and the authorizer's
sample, seeded, carries a token the authorizer takes from the issuer the benchmark serves, so that its cold start is
the Allow path (a refused token would be measured as a 401 instead, or fail the run)."""

from __future__ import annotations

import json

from bench import cold_start
from local_runtime import template
from longrun.bearer_tokens import verify
from tests.conftest import ROOT


def test_every_case_is_a_function_of_the_template_with_its_sample_event() -> None:
    functions = template.load(ROOT, "cold-start", "us-east-1").functions
    for logical_id, sample, _ in cold_start.CASES:
        assert logical_id in functions
        assert logical_id == "EventStreamFunction" or (ROOT / "events" / sample).is_file(), sample
    assert {logical_id for logical_id, _, _ in cold_start.CASES} == set(functions)  # none left unmeasured


def test_the_authorizers_seeded_sample_carries_a_token_of_the_issuer_the_template_points_it_at() -> None:
    environment = (
        template.load(ROOT, "cold-start", "us-east-1", parameters=cold_start._issuer_parameters())
        .functions["JwtAuthorizerFunction"]
        .environment
    )
    text = (ROOT / "events" / "jwt-authorize.json").read_text()
    for old, new in cold_start._bearer().items():
        assert old in text
        text = text.replace(old, new)
    event = json.loads(text)
    assert event["type"] == "TOKEN"
    bearer = verify(
        event["authorizationToken"].removeprefix("Bearer "), environment["JWT_ISSUER"], environment["JWT_AUDIENCE"]
    )
    assert (bearer.subject, bearer.name) == ("5f1e0c3a-7d2b-4e8f-9a6c-3b4d2e1f0a9b", "alice")
    assert cold_start._bearer() == cold_start._bearer()  # the same each reset, as measure() checks
