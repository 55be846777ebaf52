"""Which address a request is counted and audited under: never one the caller chose."""

from __future__ import annotations

import pytest

from serve_apps.client_address import (
    UVICORN_DEFAULT_TRUST, ClientAddresses, TrustedProxies, forwarded_hops,
)

NONE = TrustedProxies.parse([])
PROXIES = TrustedProxies.parse(["10.0.0.0/8", "2001:db8::1"])
LOOPBACK = TrustedProxies.parse(UVICORN_DEFAULT_TRUST)


@pytest.mark.parametrize("hops", [[], ["198.51.100.7"], ["1.1.1.1", "2.2.2.2, 3.3.3.3"]])
def test_without_trusted_proxies_the_peer_is_the_caller(hops: list[str]) -> None:
    assert ClientAddresses(NONE).resolve("203.0.113.9", forwarded_hops(hops)) == "203.0.113.9"


@pytest.mark.parametrize(("peer", "header", "caller"), [
    ("10.0.0.5", "198.51.100.7", "198.51.100.7"),
    # the client wrote the left hops itself: only the one our proxy appended counts
    ("10.0.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
    ("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7"),
    ("10.0.0.5", "198.51.100.7:5123", "198.51.100.7"),
    ("2001:db8::1", "[2001:db8::77]:443", "2001:db8::77"),
    ("::ffff:10.0.0.5", "198.51.100.7", "198.51.100.7"),
    ("10.0.0.5", "10.1.1.1, 10.2.2.2", "10.1.1.1"),  # every hop trusted: the leftmost
    ("10.0.0.5", "", "10.0.0.5"),
    ("203.0.113.9", "198.51.100.7", "203.0.113.9"),  # an untrusted peer's header is ignored
])
def test_a_trusted_proxy_names_the_caller(peer: str, header: str, caller: str) -> None:
    assert ClientAddresses(PROXIES).resolve(peer, forwarded_hops([header])) == caller


def test_a_rewrite_by_the_server_in_front_is_undone() -> None:
    # Serve's uvicorn trusts loopback: a local caller sending X-Forwarded-For arrives with the
    # header's last hop as its peer. It is counted as the loopback peer it is.
    addresses = ClientAddresses(NONE, upstream=LOOPBACK)
    for spoofed in ("198.51.100.%d" % i for i in range(5)):
        assert addresses.resolve(spoofed, forwarded_hops([f"6.6.6.6, {spoofed}"])) == \
            "127.0.0.1"
    assert addresses.resolve("203.0.113.9", forwarded_hops(["198.51.100.1"])) == "203.0.113.9"
    assert addresses.resolve("203.0.113.9", []) == "203.0.113.9"
    trusting_nobody = ClientAddresses(NONE, upstream=NONE)  # FORWARDED_ALLOW_IPS=""
    assert trusting_nobody.resolve("203.0.113.9", ["203.0.113.9"]) == "203.0.113.9"


def test_behind_a_local_reverse_proxy_that_is_trusted_its_hop_counts() -> None:
    addresses = ClientAddresses(TrustedProxies.parse(["127.0.0.1"]), upstream=LOOPBACK)
    assert addresses.resolve("198.51.100.7", forwarded_hops(["6.6.6.6, 198.51.100.7"])) == \
        "198.51.100.7"


@pytest.mark.parametrize("entry", ["example.com", "10.0.0.0/33", "", "1.2.3"])
def test_a_trusted_proxy_must_be_an_address_or_network(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        TrustedProxies.parse([entry])


def test_an_address_is_cut_to_the_audit_column() -> None:
    long_host = "x" * 200
    assert ClientAddresses(NONE).resolve(long_host, []) == "x" * 64


def test_the_api_refuses_a_trusted_proxy_that_is_no_address_at_start() -> None:
    from serve_apps.api_config import ApiConfig
    from tests.serve_apps.test_app_harness import SECRET

    assert ApiConfig(jwt_secret=SECRET).trusted_proxies == ()
    assert ApiConfig(jwt_secret=SECRET, trusted_proxies=["10.0.0.0/8", "::1"]
                     ).trusted_proxies == ("10.0.0.0/8", "::1/128")
    with pytest.raises(ValueError, match="'proxy.internal'"):
        ApiConfig(jwt_secret=SECRET, trusted_proxies=("proxy.internal",))
    with pytest.raises(ValueError, match="not one string"):
        ApiConfig(jwt_secret=SECRET, trusted_proxies="10.0.0.1")


def test_the_setting_reaches_the_api_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster.settings import Settings
    from tests.serve_apps.test_app_harness import SECRET

    monkeypatch.setenv("YMERA_API_TRUSTED_PROXIES", '["192.0.2.10", "10.1.0.0/16"]')
    monkeypatch.setenv("YMERA_API_MAX_STREAMS_PER_CALLER", "3")
    config = Settings(jwt_secret=SECRET).api_config()
    assert config.trusted_proxies == ("192.0.2.10/32", "10.1.0.0/16")
    assert config.max_streams_per_caller == 3
    monkeypatch.setenv("YMERA_API_TRUSTED_PROXIES", '["not-an-address"]')
    with pytest.raises(ValueError, match="api_trusted_proxies"):
        Settings(jwt_secret=SECRET)
