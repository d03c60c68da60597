"""Where a webhook may be sent: https to public addresses only (every address its host resolves to), or, where a
deployment allows it, http to loopback; the address checked is the address returned, to connect to."""

from __future__ import annotations

import pytest

from longrun.webhook_deliveries import UnsafeUrl, resolve_target


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # public, but not https
        "https://127.0.0.1/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "https://[::1]/hook",
        "https://10.0.0.8/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",  # the instance metadata service
        "https://[fd00::1]/hook",
        "https://100.64.0.1/hook",  # carrier-grade NAT, not public
        "https://user:secret@93.184.215.14/hook",
        "ftp://93.184.215.14/hook",
        "https://no-such-host.invalid/hook",
    ],
)
def test_unsafe_targets_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        resolve_target(url, allow_loopback_http=False)


def test_a_public_address_is_the_address_to_connect_to() -> None:
    assert resolve_target("https://93.184.215.14:8443/hook?x=1", allow_loopback_http=False) == "93.184.215.14"


def test_loopback_http_only_where_the_deployment_allows_it() -> None:
    assert resolve_target("http://127.0.0.1:9000/hook", allow_loopback_http=True) == "127.0.0.1"
    with pytest.raises(UnsafeUrl):
        resolve_target("http://10.0.0.8/hook", allow_loopback_http=True)  # private stays refused
