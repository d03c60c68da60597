"""The template's intrinsic functions, resolved as CloudFormation resolves them."""

from __future__ import annotations

from pathlib import Path

from local_runtime import template
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "e2e" / "event_source_fixture" / "template.yaml"


def test_a_ref_to_a_list_parameter_is_a_list(tmp_path: Path) -> None:
    """!Ref of a CommaDelimitedList is the list of its values, so !Join puts them back together."""
    text = (
        FIXTURE.read_text()
        .replace(
            "Parameters:\n",
            'Parameters:\n  Schedule:\n    Type: CommaDelimitedList\n    Default: "0,5,300"\n',
        )
        .replace(
            "          QUEUE_URL: !Ref WorkQueue\n",
            '          QUEUE_URL: !Ref WorkQueue\n          SCHEDULE: !Join [";", !Ref Schedule]\n',
        )
    )
    (tmp_path / "template.yaml").write_text(text)
    stack = template.load(ROOT, "longrun-local", "us-east-1", template_file=tmp_path / "template.yaml")
    assert stack.functions["QueueRecorderFunction"].environment["SCHEDULE"] == "0;5;300"
    assert stack.resolve({"Ref": "Schedule"}) == ["0", "5", "300"]


def test_each_resource_answers_405_with_exactly_the_methods_it_has() -> None:
    """The template's mock ANY methods (405 with Allow) must follow the functions' Api events: a resource gets one,
    and its Allow lists the methods the resource has, no more, no fewer."""
    (api,) = template.load(ROOT, "allow", "us-east-1").apis
    methods: dict[str, set[str]] = {}
    for route in api.routes:
        methods.setdefault(route.path, set()).add(route.method)
    allowed = {mock.path: set(mock.headers["Allow"].split(", ")) for mock in api.mocks}
    assert allowed == methods
    for mock in api.mocks:
        assert (mock.status, mock.headers["Content-Type"]) == (405, "application/problem+json")
        assert mock.path in mock.templates["application/json"]


def test_the_api_authorizer_parameter_puts_every_method_behind_iam_or_the_jwt_authorizer() -> None:
    (iam,) = template.load(ROOT, "authorizers", "us-east-1").apis
    assert {route.authorizer for route in [*iam.routes, *iam.mocks]} == {None}  # AWS_IAM: SigV4-signed callers
    parameters = {"ApiAuthorizer": "JWT", "JwtIssuer": "https://issuer.example/pool", "JwtAudience": "app"}
    (jwt,) = template.load(ROOT, "authorizers", "us-east-1", parameters=parameters).apis
    authorizers = {route.authorizer for route in [*jwt.routes, *jwt.mocks]}
    assert authorizers == {
        template.TokenAuthorizer(
            name="JWT",
            function="JwtAuthorizerFunction",
            header="Authorization",
            validation=r"^Bearer [-\w]+\.[-\w]+\.[-\w]*$",
            ttl_seconds=300,
        )
    }
