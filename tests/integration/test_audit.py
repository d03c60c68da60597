"""An audit line for every submit, cancel and webhook change: who, what, when."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Deployment
from tests.integration.test_api import RESOURCE, call

WEBHOOKS = "/device-management/webhooks"


class Kept(logging.Handler):
    """The API's log records, as its Powertools logger hands them to its handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Kept]:
    handler, logger = Kept(), logging.getLogger("longrun")  # the service's logger (POWERTOOLS_SERVICE_NAME)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_submit_cancel_and_webhook_changes_each_write_an_audit_line(
    deployed: Deployment, monkeypatch: pytest.MonkeyPatch, kept: Kept
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
    lines = [{"audit": record.audit, "created": record.created} for record in kept.records if record.msg == "audit"]
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
    assert lines[2]["audit"]["host"] == "127.0.0.1"
    assert not [record for record in kept.records if "s3cret" in record.getMessage() + str(record.__dict__)]
    assert all(line["created"] for line in lines)
