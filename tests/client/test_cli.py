"""The command's exit statuses and output, against a fake API (the end-to-end tests run it against the local
runtime)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from longrun_client import cli
from longrun_client import client as client_module
from longrun_client.client import Client
from tests.client.test_client import TASK_ID, problem, task_body

API = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Response]:
    """Answers the fake API gives, in order."""
    answers: list[httpx.Response] = []
    monkeypatch.setenv("LONGRUN_API_URL", API)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    monkeypatch.delenv("LONGRUN_WEBSOCKET_URL", raising=False)
    monkeypatch.setattr(client_module.time, "sleep", lambda _: None)

    def client(settings: cli.Settings) -> Client:
        assert settings.api_url
        return Client(settings.api_url, transport=httpx.MockTransport(lambda _: answers.pop(0)))

    monkeypatch.setattr(cli.Settings, "client", client)
    return answers


@pytest.mark.parametrize(
    ("status", "counts", "code"),
    [
        ("COMPLETE", {"SUCCESS": 3}, 0),
        ("COMPLETE", {"SUCCESS": 2, "FAILED": 1}, 1),
        ("COMPLETE", {"SUCCESS": 2, "TIMED_OUT": 1}, 1),
        ("CANCELLED", {"SUCCESS": 1, "CANCELLED": 2}, 2),
        ("FAILED", {"NOT_STARTED": 3}, 3),
        ("TIMED_OUT", {"SUCCESS": 1, "TIMED_OUT": 2}, 3),
    ],
)
def test_watch_exits_with_how_the_task_ended(
    api: list[httpx.Response], capsys: pytest.CaptureFixture[str], status: str, counts: dict[str, int], code: int
) -> None:
    finished = task_body(status, **counts)
    api += [httpx.Response(200, json=finished), httpx.Response(200, json={"items": []})]
    api += [httpx.Response(200, json=finished)]
    api += [httpx.Response(200, json={"id": TASK_ID, "status": status, "devices": []})]
    exit_code, out, _ = run(["watch", TASK_ID], capsys)
    assert exit_code == code
    assert status in out


def test_json_prints_the_apis_body_and_nothing_else(
    api: list[httpx.Response], capsys: pytest.CaptureFixture[str]
) -> None:
    body = task_body() | {"createdAt": "2026-11-27T10:00:00.1Z"}
    api.append(httpx.Response(200, json=body))
    exit_code, out, _ = run(["status", TASK_ID, "--json"], capsys)
    assert exit_code == 0
    assert json.loads(out) == body


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (problem(404, "Task not found", detail=f"no script-execution task {TASK_ID}"), 1, TASK_ID),
        (problem(409, "Conflict", detail="task already finished as COMPLETE"), 1, "already finished"),
        (httpx.Response(403, json={"message": "The security token included in the request is invalid."}), 4, "token"),
        (problem(401, "No caller identity"), 4, "No caller identity"),
        (problem(422, "Invalid request", errors=[{"field": "body.device-ids", "message": "too short"}]), 64, "too"),
    ],
)
def test_refusals_name_the_problem_and_exit_with_its_status(
    api: list[httpx.Response], capsys: pytest.CaptureFixture[str], answer: httpx.Response, code: int, message: str
) -> None:
    api.append(answer)
    exit_code, out, err = run(["cancel", TASK_ID], capsys)
    assert (exit_code, out) == (code, "")
    assert message in err


def test_usage_errors_exit_64(api: list[httpx.Response], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["submit", "scripts/hello.sh"], capsys)[0] == 64  # no devices
    assert run(["submit", "no-such-file.sh", "-d", "web-1"], capsys)[0] == 64
    assert run(["no-such-command"], capsys)[0] == 64
    assert run(["list", "--status", "BOGUS"], capsys)[0] == 64


def test_no_api_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LONGRUN_API_URL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    exit_code, _, err = run(["list"], capsys)
    assert exit_code == 64
    assert "LONGRUN_API_URL" in err


def test_the_config_file_gives_the_api_url(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "longrun").mkdir()
    (tmp_path / "longrun" / "config.toml").write_text('api_url = "http://127.0.0.1:9/v1"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("LONGRUN_API_URL", raising=False)
    monkeypatch.setattr(client_module.time, "sleep", lambda _: None)
    exit_code, _, err = run(["status", TASK_ID], capsys)
    assert exit_code == 69  # nothing listens on port 9: the API could not be reached
    assert "127.0.0.1:9" in err


def test_completion_prints_a_shell_script(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code, out, _ = run(["completion", "bash"], capsys)
    assert exit_code == 0
    assert "_LONGRUN_COMPLETE" in out
