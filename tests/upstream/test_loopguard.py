"""Loop protection: the sidecar recognises its own listening addresses."""

from __future__ import annotations

import pytest

from sidecar.upstream.loopguard import LoopGuard


@pytest.fixture
def guard() -> LoopGuard:
    """A guard holding a loopback listener, a wildcard listener and a specific-IP listener."""
    guard = LoopGuard()
    guard.add("127.0.0.1", 15001)
    guard.add("0.0.0.0", 15000)
    guard.add("10.1.2.3", 15002)
    return guard


@pytest.mark.parametrize(
    ("peer", "own"),
    [
        (("127.0.0.1", 15001), True),
        (("127.0.0.5", 15001), True),
        (("::1", 15000, 0, 0), True),
        (("::ffff:127.0.0.1", 15001, 0, 0), True),
        (("10.1.2.3", 15002), True),
        (("10.1.2.3", 15001), False),
        (("127.0.0.1", 8080), False),
        (("192.0.2.1", 15001), False),
        (None, False),
    ],
    ids=[
        "loopback",
        "loopback-range",
        "ipv6-loopback",
        "v4-mapped",
        "exact-ip",
        "other-port",
        "not-ours",
        "remote",
        "none",
    ],
)
def test_loopguard_recognises_own_peer_addresses(guard: LoopGuard, peer: object, own: bool) -> None:
    """A connected peer equal to one of our sockets is a loop; anything else is not."""
    assert guard.is_own_address(peer) is own


@pytest.mark.parametrize(
    ("authority", "own"),
    [
        ("127.0.0.1:15001", True),
        ("localhost:15000", True),
        ("[::1]:15001", True),
        ("localhost:9999", False),
        ("example.com:15001", False),
    ],
    ids=["ip", "localhost", "ipv6", "localhost-other-port", "name"],
)
def test_loopguard_checks_authorities_before_connecting(
    guard: LoopGuard, authority: str, own: bool
) -> None:
    """IP literals and `localhost` are caught before a connection is even opened."""
    assert guard.is_own_authority(authority) is own


def test_loopguard_discard_forgets_a_closed_listener(guard: LoopGuard) -> None:
    """A listener removed (reload, shutdown) no longer counts as ours."""
    guard.discard("127.0.0.1", 15001)
    assert not guard.is_own_address(("127.0.0.1", 15001))
