"""What a router compiled against the previous one carries over: commit, refusal, sharing."""

from __future__ import annotations

import asyncio
import random
from typing import Any, NoReturn

import yaml

from sidecar.config import FaultPolicy, load_config_text
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.pipeline.route import Route, Router
from sidecar.resilience.breaker import CircuitState
from sidecar.upstream.group import Upstream
from sidecar.upstream.loopguard import LoopGuard
from tests.fakes import FakeClock

ENDPOINT = "http://127.0.0.1:18081"
CHECKS: dict[str, Any] = {"path": "/health", "interval": "10s", "healthy": 2, "unhealthy": 3}
DELAY: dict[str, Any] = {"percent": "10%", "duration": "300ms"}


async def _unused_stage(exchange: Exchange) -> NoReturn:
    raise AssertionError("reload tests never run a pipeline")


def _no_stages(upstream: Upstream, route: Route) -> Stage:
    return _unused_stage


def _state(upstream: Upstream) -> CircuitState:
    return upstream.breaker.state


def _router(previous: Router | None = None, **svc: Any) -> Router:
    """A router with one upstream `svc` (endpoint `ENDPOINT` unless given) and `svc`'s keys."""
    text = yaml.safe_dump(
        {
            "version": 1,
            "listeners": [{"name": "svc", "bind": "127.0.0.1:0", "upstream": "svc"}],
            "upstreams": {"svc": {"endpoints": [ENDPOINT], **svc}},
        }
    )
    return Router(
        load_config_text(text),
        asyncio.get_running_loop(),
        LoopGuard(),
        _no_stages,
        random.Random(0),
        FakeClock(),
        previous=previous,
    )


async def test_reload_state_refused_router_leaves_the_running_state_as_it_was() -> None:
    """A router discarded after compiling closes only its own new probe; the running open
    breaker stays open under its old policy, and the next router still carries it."""
    trips = {"consecutive_failures": 1}
    old = _router(health_check=CHECKS, circuit_breaker=trips)
    svc = old.upstreams["svc"]
    permit = svc.breaker.try_acquire()
    assert permit is not None
    svc.breaker.record(permit, failed=True, duration=0.0)
    disabled = {**trips, "enabled": False}
    refused = _router(old, health_check={**CHECKS, "interval": "5s"}, circuit_breaker=disabled)
    assert refused.upstreams["svc"].breaker is svc.breaker
    refused.discard()
    new_probe = refused.upstreams["svc"].probe
    assert new_probe is not None
    assert new_probe.stopped
    assert svc.probe is not None
    assert not svc.probe.stopped
    assert _state(svc) is CircuitState.OPEN
    applied = _router(old, health_check=CHECKS, circuit_breaker=disabled)
    assert applied.upstreams["svc"].breaker is svc.breaker
    assert _state(svc) is CircuitState.OPEN
    old.retire(applied)
    assert _state(svc) is CircuitState.CLOSED
    assert not svc.probe.stopped
    applied.close()


async def test_reload_state_route_keeps_the_budget_it_shared_with_its_upstream() -> None:
    """A route whose `retries.budget` is unchanged keeps the budget it used, even when that was
    its upstream's and the upstream's own policy changed."""
    budget = {"ratio": 0.2, "min_per_second": 10, "window": "10s"}
    route = {"name": "r", "match": {"path_prefix": "/r"}, "retries": {"budget": budget}}
    old = _router(routes=[route])
    shared = old.upstreams["svc"].routes.routes[0].budget
    assert shared is old.upstreams["svc"].budget
    new = _router(old, retries={"budget": {**budget, "ratio": 0.5}}, routes=[route])
    svc = new.upstreams["svc"]
    assert svc.routes.routes[0].budget is shared
    assert svc.budget is not shared


async def test_reload_state_carries_runtime_faults_by_name_and_forcing_by_endpoints() -> None:
    """Runtime faults survive a reload that changes the endpoints; a forced circuit survives a
    reload that keeps them and is gone with new ones."""
    old = _router()
    svc = old.upstreams["svc"]
    svc.runtime_faults = FaultPolicy.model_validate({"delay": DELAY})
    svc.breaker.force(CircuitState.OPEN)
    same = _router(old, timeouts={"total": "9s"})
    moved = _router(old, endpoints=["http://127.0.0.1:18082"])
    assert same.upstreams["svc"].runtime_faults is svc.runtime_faults
    assert moved.upstreams["svc"].runtime_faults is svc.runtime_faults
    assert same.upstreams["svc"].breaker.forced is CircuitState.OPEN
    assert moved.upstreams["svc"].breaker.forced is None
    assert (same.upstreams["svc"].carried, moved.upstreams["svc"].carried) == (True, False)


async def test_reload_state_retire_stops_only_what_the_successor_dropped() -> None:
    """After a reload that changes the endpoints, `retire` stops the old probe (and closes the
    old pools); the successor's new probe and pools are its own."""
    old = _router(health_check=CHECKS)
    before = old.upstreams["svc"]
    new = _router(old, endpoints=["http://127.0.0.1:18082"], health_check=CHECKS)
    after = new.upstreams["svc"]
    old.retire(new)
    assert before.probe is not None
    assert after.probe is not None
    assert before.probe.stopped
    assert not after.probe.stopped
    assert after.pools[0] is not before.pools[0]
    new.close()
