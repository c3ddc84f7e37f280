"""The admin guard's decisions without a server: which peers count as loopback, token or not."""

from __future__ import annotations

import pytest

from serving.api.auth import AdminGuard, is_loopback_address, is_loopback_peer
from serving.errors import Unauthenticated


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:127.0.0.1:5000",
        "ipv4:127.1.2.3:1",
        "ipv6:[::1]:5000",
        "ipv6:[::ffff:127.0.0.1]:80",
        "unix:/tmp/s",
    ],
)
def test_loopback_peers(peer: str) -> None:
    assert is_loopback_peer(peer)


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:192.0.2.2:5000",
        "ipv4:10.0.0.1:1",
        "ipv6:[2001:db8::1]:5000",
        "ipv6:[::ffff:10.0.0.1]:80",
        "ipv4:0.0.0.0:1",
        "",
        "garbage",
        "ipv4:127.0.0.1.evil:1",
    ],
)
def test_other_peers(peer: str) -> None:
    assert not is_loopback_peer(peer)


def test_loopback_addresses_as_aiohttp_gives_them() -> None:
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1")
    assert not is_loopback_address("192.0.2.2") and not is_loopback_address(None)
    assert not is_loopback_address("localhost")  # a name is not an address


def test_without_a_token_only_loopback_peers_administer() -> None:
    guard = AdminGuard(None)
    guard.check_peer("/m", "ipv4:127.0.0.1:1", loopback=True)
    guard.check_token("/m", "")  # no token configured: nothing to check
    with pytest.raises(Unauthenticated, match="--admin-token-file") as info:
        guard.check_peer("/m", "ipv4:192.0.2.2:1", loopback=False)
    assert "192.0.2.2" in str(info.value)
    with pytest.raises(Unauthenticated, match="loopback"):
        guard.check_http("/v2/repository/models/m/unload", "192.0.2.2", [])


def test_with_a_token_any_peer_with_the_token() -> None:
    guard = AdminGuard("s3cret")
    guard.check_peer("/m", "ipv4:192.0.2.2:1", loopback=False)
    guard.check_token("/m", "s3cret")
    guard.check_http("/p", "192.0.2.2", [("Authorization", "Bearer s3cret")])
    with pytest.raises(Unauthenticated, match="wrong admin token"):
        guard.check_token("/m", "s3cret-not")
    with pytest.raises(Unauthenticated, match="missing admin token"):
        guard.check_http("/p", "127.0.0.1", [])  # loopback alone is not enough once a token is set


def test_long_peer_and_method_are_clipped() -> None:
    with pytest.raises(Unauthenticated) as info:
        AdminGuard(None).check_peer("/" + "m" * 10_000, "x" * 10_000, loopback=False)
    assert len(str(info.value)) < 1000
