"""Routing: authority normalisation, host tables, implicit upstreams and route matching."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from sidecar.config import load_config_text
from sidecar.errors import UnknownUpstreamError
from sidecar.pipeline.answer import Answer
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.pipeline.route import Route, RouteMatcher, Router, normalise_authority
from sidecar.upstream.group import Upstream
from sidecar.upstream.loopguard import LoopGuard
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("raw", "default_port", "expected"),
    [
        (b"Payments:8080", 80, "payments:8080"),
        (b"payments", 80, "payments:80"),
        (b"api.example.com", 443, "api.example.com:443"),
        (b"[::1]:9000", 80, "[::1]:9000"),
        (b"[::1]", 80, "[::1]:80"),
    ],
    ids=["case", "default-http", "default-https", "ipv6-port", "ipv6-default"],
)
def test_route_normalise_authority(raw: bytes, default_port: int, expected: str) -> None:
    """Authorities are lower-cased and always carry a port."""
    assert normalise_authority(raw, default_port) == expected


@pytest.mark.parametrize(
    "raw",
    [b"", b"a b", b"user@host", b"host:port", b"[::1"],
    ids=["empty", "space", "userinfo", "bad-port", "open-bracket"],
)
def test_route_normalise_authority_refuses_invalid(raw: bytes) -> None:
    """Anything that is not host[:port] is refused."""
    with pytest.raises(ValueError, match=r"(?i)invalid|unterminated"):
        normalise_authority(raw, 80)


def test_route_matcher_exact_path_prefix_and_methods() -> None:
    """`path` is exact, `path_prefix` is a prefix, and `methods` narrows both."""
    exact = RouteMatcher(path=b"/v1/charge", path_prefix=None, methods=frozenset({b"POST"}))
    prefix = RouteMatcher(path=None, path_prefix=b"/v1/reports", methods=None)
    assert exact.matches(b"POST", b"/v1/charge")
    assert not exact.matches(b"GET", b"/v1/charge")
    assert not exact.matches(b"POST", b"/v1/charge/2")
    assert prefix.matches(b"GET", b"/v1/reports/2026")
    assert not prefix.matches(b"GET", b"/v2/reports")


YAML = """
version: 1
listeners:
  - {name: egress, bind: "127.0.0.1:0"}
forward: {unknown_hosts: allow, max_implicit_upstreams: 2}
upstreams:
  payments:
    endpoints: [http://payments.svc:8080]
    hosts: [payments, pay.internal:9000]
    routes:
      - match: {path_prefix: /v1/reports, methods: [GET]}
        timeouts: {total: 60s}
      - name: charge
        match: {path: /v1/charge}
        timeouts: {per_try: 250ms}
"""


async def _unused_stage(exchange: Exchange) -> Answer:
    raise AssertionError("routing tests never run a pipeline")


def no_stages(upstream: Upstream, route: Route) -> Stage:
    """A stage builder for tests that only route."""
    return _unused_stage


@pytest.fixture
def router() -> Iterator[Router]:
    """A router over the YAML above, with a stage builder that builds nothing."""
    loop = asyncio.new_event_loop()

    try:
        yield Router(
            load_config_text(YAML), loop, LoopGuard(), no_stages, random.Random(0), FakeClock()
        )
    finally:
        loop.close()


def test_route_hosts_without_port_match_any_port(router: Router) -> None:
    """A `hosts` entry without a port claims the host on every port."""
    assert router.by_authority("payments:80").name == "payments"
    assert router.by_authority("payments:1234").name == "payments"


def test_route_hosts_with_port_match_exactly(router: Router) -> None:
    """A `hosts` entry with a port claims only that authority."""
    assert router.by_authority("pay.internal:9000").name == "payments"
    assert router.by_authority("pay.internal:9001").name == "pay.internal:9001"


def test_route_implicit_upstreams_overflow_into_other(router: Router) -> None:
    """Past `max_implicit_upstreams`, unknown hosts share the upstream `other`."""
    names = [router.by_authority(f"h{i}.example:80").name for i in range(4)]
    assert names == ["h0.example:80", "h1.example:80", "other", "other"]
    assert router.by_authority("h0.example:80").name == "h0.example:80"


def test_route_unknown_host_denied() -> None:
    """With `unknown_hosts: deny`, an unclaimed host is refused."""
    loop = asyncio.new_event_loop()
    try:
        config = load_config_text(YAML.replace("allow", "deny"))
        router = Router(config, loop, LoopGuard(), no_stages, random.Random(0), FakeClock())
        with pytest.raises(UnknownUpstreamError, match="nowhere"):
            router.by_authority("nowhere:80")
    finally:
        loop.close()


def test_route_first_matching_route_wins_and_labels(router: Router) -> None:
    """Routes match in order; unmatched requests use the upstream's default route."""
    table = router.dedicated("payments").routes
    assert table.match(b"GET", b"/v1/reports/x").label == "/v1/reports"
    assert table.match(b"GET", b"/v1/reports/x").total == 60.0
    assert table.match(b"POST", b"/v1/charge").label == "charge"
    assert table.match(b"POST", b"/v1/charge").per_try == 0.25
    assert table.match(b"POST", b"/v1/reports/x").label == "default"


async def test_route_reload_gives_kept_pools_a_changed_idle_timeout_only_when_it_commits() -> None:
    """A reload that changes `pool.idle_timeout` leaves the kept pools (and their expiry
    timer) under the old value until it commits, like the other kept state; then idle
    connections expire under the new one."""
    loop = asyncio.get_running_loop()
    old = Router(
        load_config_text(YAML), loop, LoopGuard(), no_stages, random.Random(0), FakeClock()
    )
    changed = YAML.replace(
        "endpoints: [http://payments.svc:8080]",
        "endpoints: [http://payments.svc:8080]\n    pool: {idle_timeout: 50ms}",
    )
    new = Router(
        load_config_text(changed),
        loop,
        LoopGuard(),
        no_stages,
        random.Random(0),
        FakeClock(),
        previous=old,
    )
    pool = new.dedicated("payments").pools[0]
    assert pool is old.dedicated("payments").pools[0]
    assert pool.idle_timeout == 4.0  # compiled, not committed: nothing changed yet
    old.retire(new)
    assert pool.idle_timeout == 0.05
