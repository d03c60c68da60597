"""The local runtime prints no line per request by default; --request-log prints them (tests and benchmarks read
the functions' REPORT lines from its log)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from local_runtime.__main__ import PER_REQUEST_LOGGERS, configure_logging


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    levels = {name: logging.getLogger(name).level for name in PER_REQUEST_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_request_lines_are_not_printed_at_info_by_default() -> None:
    configure_logging("INFO", request_log=False)
    for name in PER_REQUEST_LOGGERS:
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)
        assert logging.getLogger(name).level == logging.NOTSET  # the runtime's level, for its warnings


def test_request_log_prints_them() -> None:
    configure_logging("INFO", request_log=True)
    for name in PER_REQUEST_LOGGERS:
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG)


def test_a_request_line_is_a_debug_record(caplog: pytest.LogCaptureFixture) -> None:
    from local_runtime.api_gateway import GatewayHandler

    handler = GatewayHandler.__new__(GatewayHandler)
    handler.server = type("Server", (), {"logger": logging.getLogger("local_runtime.api")})()  # type: ignore[assignment]
    handler.client_address = ("127.0.0.1", 5000)
    with caplog.at_level(logging.DEBUG, logger="local_runtime.api"):
        handler.log_message('"%s" %s', "GET /v1/x HTTP/1.1", "200")
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]
