"""Active health checks without sockets: the checker's state machine, `pick()` reading it,
and how a reload hands a checker and its probe to the new upstream."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from sidecar.config import HealthCheckPolicy, load_config_text
from sidecar.pipeline.answer import Answer
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.pipeline.route import Route, Router
from sidecar.upstream.group import Upstream
from sidecar.upstream.health import HealthChecker
from sidecar.upstream.loopguard import LoopGuard
from tests.fakes import FakeClock
from tests.pipeline.chain import ENDPOINT_A, ENDPOINT_B, chain_config, stage_chain

ENDPOINTS = ["http://a:80", "http://b:80", "http://c:80"]
A, B, C = ENDPOINTS
CHECKS: dict[str, Any] = {"path": "/health", "interval": "10s", "healthy": 2, "unhealthy": 3}
NO_OUTLIERS: dict[str, Any] = {"consecutive_failures": 0}


def _checker(clock: FakeClock, **policy: object) -> HealthChecker:
    settings: dict[str, object] = {"healthy": 2, "unhealthy": 3}
    settings.update(policy)
    return HealthChecker(HealthCheckPolicy.model_validate(settings), clock, ENDPOINTS)


def _fail(checker: HealthChecker, endpoint: str, times: int) -> None:
    for _ in range(times):
        checker.record(endpoint, passed=False, detail="status 503")


# ---- the state machine ------------------------------------------------------------------


def test_health_endpoints_start_healthy(clock: FakeClock) -> None:
    """Before any check every endpoint is in rotation and none is unhealthy."""
    checker = _checker(clock)
    assert all(checker.is_healthy(endpoint) for endpoint in ENDPOINTS)
    assert checker.unhealthy() == []
    assert not checker.all_unhealthy


@pytest.mark.parametrize("threshold", [1, 3, 5], ids=["one", "three", "five"])
def test_health_consecutive_failures_mark_unhealthy(clock: FakeClock, threshold: int) -> None:
    """Exactly `unhealthy` failed checks in a row mark an endpoint unhealthy, with the reason."""
    checker = _checker(clock, unhealthy=threshold)
    for _ in range(threshold - 1):
        assert checker.record(A, passed=False, detail="status 503") is None
        assert checker.is_healthy(A)
    clock.advance(7.0)
    change = checker.record(A, passed=False, detail="status 503")
    assert change is not None
    assert (change.endpoint, change.healthy) == (A, False)
    assert change.reason == f"{threshold} checks failed (last: status 503)"
    assert not checker.is_healthy(A)
    assert checker.unhealthy() == [A]
    status = checker.status(A)
    assert status is not None
    assert (status.since, status.last) == (clock.now(), "status 503")


def test_health_pass_between_failures_resets_the_streak(clock: FakeClock) -> None:
    """A passed check between failures means they were not consecutive."""
    checker = _checker(clock)
    for passed in (False, False, True, False, False):
        assert checker.record(B, passed=passed) is None
    assert checker.is_healthy(B)


def test_health_consecutive_passes_return_an_endpoint(clock: FakeClock) -> None:
    """An unhealthy endpoint returns after `healthy` passed checks in a row, not before."""
    checker = _checker(clock)
    _fail(checker, A, 3)
    assert checker.record(A, passed=True, detail="status 200") is None
    assert not checker.is_healthy(A)
    change = checker.record(A, passed=True, detail="status 200")
    assert change is not None
    assert (change.healthy, change.reason) == (True, "2 checks passed (last: status 200)")
    assert checker.is_healthy(A)
    assert checker.unhealthy() == []


def test_health_failure_while_returning_restarts_the_pass_streak(clock: FakeClock) -> None:
    """A failed check between passes of an unhealthy endpoint starts its return over."""
    checker = _checker(clock)
    _fail(checker, A, 3)
    for passed in (True, False, True):
        assert checker.record(A, passed=passed) is None
    assert not checker.is_healthy(A)
    assert checker.record(A, passed=True) is not None


def test_health_repeated_failures_of_an_unhealthy_endpoint_change_nothing(
    clock: FakeClock,
) -> None:
    """Only the change is reported: further failures of an unhealthy endpoint return None."""
    checker = _checker(clock, unhealthy=1)
    assert checker.record(C, passed=False) is not None
    assert [checker.record(C, passed=False) for _ in range(3)] == [None, None, None]
    assert checker.unhealthy() == [C]


def test_health_unknown_endpoint_is_ignored_and_healthy(clock: FakeClock) -> None:
    """A result for an endpoint the checker does not know changes nothing."""
    checker = _checker(clock, unhealthy=1)
    assert checker.record("http://elsewhere:80", passed=False) is None
    assert checker.is_healthy("http://elsewhere:80")
    assert checker.status("http://elsewhere:80") is None


def test_health_all_unhealthy_only_when_every_endpoint_failed(clock: FakeClock) -> None:
    """`all_unhealthy` (panic mode) holds while every endpoint is unhealthy, and only then."""
    checker = _checker(clock, unhealthy=1, healthy=1)
    checker.record(A, passed=False)
    checker.record(B, passed=False)
    assert not checker.all_unhealthy
    checker.record(C, passed=False)
    assert checker.all_unhealthy
    checker.record(B, passed=True)
    assert not checker.all_unhealthy
    assert checker.unhealthy() == [A, C]


# ---- pick() -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "balancing", ["round_robin", "least_request", "random"], ids=["rr", "least", "random"]
)
async def test_health_pick_skips_unhealthy_endpoints(balancing: str) -> None:
    """While B is unhealthy every pick is A, whatever the balancer."""
    policy = {"load_balancing": balancing, "health_check": CHECKS}
    with stage_chain(endpoints=(ENDPOINT_A, ENDPOINT_B), **policy) as chain:
        upstream = chain.upstream
        assert upstream.health is not None
        for _ in range(3):
            upstream.health.record(ENDPOINT_B, passed=False)
        picks = {upstream.pick("svc").label for _ in range(20)}
    assert picks == {ENDPOINT_A}


async def test_health_pick_in_panic_mode_uses_every_endpoint() -> None:
    """When every endpoint is unhealthy, health is ignored and the balancer picks as usual."""
    policy = {"health_check": CHECKS, "outlier_detection": NO_OUTLIERS}
    with stage_chain(endpoints=(ENDPOINT_A, ENDPOINT_B), **policy) as chain:
        upstream = chain.upstream
        assert upstream.health is not None
        for endpoint in (ENDPOINT_A, ENDPOINT_B):
            for _ in range(3):
                upstream.health.record(endpoint, passed=False)
        assert upstream.health.all_unhealthy
        picks = [upstream.pick("svc").label for _ in range(4)]
    assert picks == [ENDPOINT_A, ENDPOINT_B, ENDPOINT_A, ENDPOINT_B]


async def test_health_pick_without_checks_reports_every_endpoint_healthy() -> None:
    """An upstream without `health_check` has no checker, no probe, and healthy endpoints."""
    with stage_chain(endpoints=(ENDPOINT_A, ENDPOINT_B)) as chain:
        upstream = chain.upstream
        assert (upstream.health, upstream.probe) == (None, None)
        assert upstream.is_healthy(ENDPOINT_A)


# ---- reload -----------------------------------------------------------------------------


async def _unused_stage(exchange: Exchange) -> Answer:
    raise AssertionError("reload tests never run a pipeline")


def _no_stages(upstream: Upstream, route: Route) -> Stage:
    return _unused_stage


def _router(previous: Router | None = None, **policy: Any) -> Router:
    text = chain_config((ENDPOINT_A, ENDPOINT_B), **policy)
    return Router(
        load_config_text(text),
        asyncio.get_running_loop(),
        LoopGuard(),
        _no_stages,
        random.Random(0),
        FakeClock(),
        previous=previous,
    )


@pytest.mark.parametrize(
    ("new_policy", "kept"),
    [
        ({"health_check": CHECKS, "timeouts": {"total": "9s"}}, True),
        ({"health_check": {**CHECKS, "interval": "5s"}}, False),
        ({}, False),
    ],
    ids=["other-policy-changed", "health-check-changed", "health-check-removed"],
)
async def test_health_reload_keeps_the_checker_only_when_its_policy_is_unchanged(
    new_policy: dict[str, Any], kept: bool
) -> None:
    """Same endpoints and `health_check`: the checker and probe move over; otherwise the old
    probe is stopped by `retire` and the new upstream starts fresh."""
    old = _router(health_check=CHECKS)
    before = old.dedicated("svc")
    assert before.health is not None
    assert before.probe is not None
    for _ in range(3):
        before.health.record(ENDPOINT_B, passed=False)
    new = _router(old, **new_policy)
    after = new.dedicated("svc")
    old.retire(new)
    assert (after.health is before.health, after.probe is before.probe) == (kept, kept)
    assert before.probe.stopped is not kept
    if after.health is not None:
        assert after.health.is_healthy(ENDPOINT_B) is not kept
    new.close()
    assert before.probe.stopped
