"""An audit line for every submit, cancel and webhook change: who, what, when."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call

WEBHOOKS = "/device-management/webhooks"


def _audit_lines(captured: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "audit"]


def test_submit_cancel_and_webhook_changes_each_write_an_audit_line(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOW_LOOPBACK_HTTP", "true")
    from longrun import config

    config.settings.cache_clear()
    _, _, task = call("POST", RESOURCE, {"device-ids": ["web-1"], "script-url": "scripts/hello.sh"})
    call("DELETE", f"{RESOURCE}/{task['id']}")
    call("GET", f"{RESOURCE}/{task['id']}")  # a read is not audited
    _, _, hook = call("POST", WEBHOOKS, {"url": "http://127.0.0.1:9/hook?token=s3cret"})
    call("POST", f"{WEBHOOKS}/{hook['id']}/rotate-secret")
    call("DELETE", f"{WEBHOOKS}/{hook['id']}")
    call("POST", RESOURCE, {"device-ids": [], "script-url": "scripts/hello.sh"})  # refused: nothing done
    captured = capsys.readouterr().out
    lines = _audit_lines(captured)
    who = "arn:aws:iam::123456789012:user/alice"
    assert [(line["audit"]["action"], line["audit"]["who"]) for line in lines] == [
        ("submit", who),
        ("cancel", who),
        ("add-webhook", who),
        ("rotate-webhook-secret", who),
        ("remove-webhook", who),
    ]
    assert lines[0]["audit"] | {"task": task["id"], "devices": 1, "script": "scripts/hello.sh"} == lines[0]["audit"]
    assert lines[1]["audit"]["task"] == task["id"] and lines[1]["audit"]["status"] in ("CANCELLING", "CANCELLED")
    assert lines[2]["audit"]["host"] == "127.0.0.1" and "s3cret" not in captured
    assert all(line["timestamp"] for line in lines)
