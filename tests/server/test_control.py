"""Tests for sidecar.server.control against a real `Router` and stage chain (tests/pipeline/chain.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from sidecar.clock import wall_time
from sidecar.config import FaultPolicy
from sidecar.errors import CircuitOpenError
from sidecar.events import CircuitTransitioned, Observers, RequestFinished
from sidecar.observe.stats import RequestStats
from sidecar.outcome import Outcome
from sidecar.pipeline.route import Router
from sidecar.resilience.breaker import CircuitState
from sidecar.server.control import Control
from sidecar.server.readiness import Readiness
from tests.fakes import RecordingObserver, ScriptedResponse
from tests.pipeline.chain import ENDPOINT_A, ENDPOINT_B, StageChain, stage_chain

ROUTES = [
    {
        "name": "reports",
        "match": {"path_prefix": "/reports"},
        "circuit_breaker": {"consecutive_failures": 1, "open_duration": "10s"},
    },
    {"name": "health", "match": {"path": "/health"}},  # shares the upstream's breaker
]
STATE_KEYS = {"version", "generation", "config_source", "ready", "draining", "upstreams"}
UPSTREAM_KEYS = {
    "circuit",
    "routes",
    "inflight",
    "queued",
    "requests_per_s",
    "error_rate",
    "p99_ms",
    "endpoints",
    "cache",
    "faults",
    "recent_transitions",
}
CIRCUIT_KEYS = {
    "state",
    "forced",
    "since",
    "until",
    "retry_after_s",
    "calls",
    "failures",
    "slow",
    "failure_rate",
    "slow_call_rate",
    "consecutive_failures",
}


@dataclass
class Rig:
    """A stage chain for upstream `svc` with a `Control` over its router."""

    chain: StageChain
    control: Control
    stats: RequestStats
    observer: RecordingObserver
    readiness: Readiness

    def transitions(self) -> list[tuple[str, str, str, str]]:
        return [
            (e.route, e.from_state, e.to_state, e.reason)
            for e in self.observer.of_type(CircuitTransitioned)
        ]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    policy: dict[str, Any] = {
        "retries": {"max_attempts": 1},
        "circuit_breaker": {"consecutive_failures": 1, "open_duration": "5s"},
        "outlier_detection": {"consecutive_failures": 2, "base_ejection": "30s"},
        "fallback": {"cache": {"max_stale": "1m"}},
        "routes": ROUTES,
    }
    with stage_chain((ENDPOINT_A, ENDPOINT_B), **policy) as chain:
        stats = RequestStats(chain.clock)
        observers = Observers([chain.observer, stats])
        readiness = Readiness()
        readiness.mark_ready()
        control = Control(
            lambda: chain.router,
            stats,
            chain.clock,
            observers,
            readiness,
            lambda: {"generation": 3, "config_source": "/etc/sidecar.yaml"},
        )
        yield Rig(chain, control, stats, chain.observer, readiness)


def ok() -> ScriptedResponse:
    return ScriptedResponse(200, body=b"ok")


async def test_control_snapshot_has_every_documented_key(rig: Rig) -> None:
    """/state's document has the top-level, upstream and circuit keys the CLI and page read."""
    state = rig.control.snapshot()
    assert set(state) == STATE_KEYS
    assert (state["version"], state["generation"], state["config_source"]) == (
        "0.1.0",
        3,
        "/etc/sidecar.yaml",
    )
    assert (state["ready"], state["draining"]) == (True, False)
    svc = state["upstreams"]["svc"]
    assert set(svc) == UPSTREAM_KEYS
    assert set(svc["circuit"]) == CIRCUIT_KEYS
    assert list(svc["routes"]) == ["reports"]  # only routes with their own breaker
    assert set(svc["routes"]["reports"]) == CIRCUIT_KEYS
    assert svc["circuit"]["state"] == "closed"
    assert svc["circuit"]["forced"] is None
    assert svc["circuit"]["since"] is None
    assert svc["circuit"]["until"] is None
    assert [e["url"] for e in svc["endpoints"]] == [ENDPOINT_A, ENDPOINT_B]
    assert svc["endpoints"][0] == {
        "url": ENDPOINT_A,
        "healthy": True,
        "ejected": False,
        "ejected_until": None,
        "consecutive_failures": 0,
        "inflight": 0,
    }
    assert svc["cache"] == {"entries": 0, "bytes": 0}
    assert (svc["faults"], svc["recent_transitions"]) == (None, [])
    assert (svc["requests_per_s"], svc["error_rate"], svc["p99_ms"]) == (0.0, 0.0, None)


async def test_control_snapshot_shows_draining(rig: Rig) -> None:
    """After the runtime marks draining, /state says not ready and draining."""
    rig.readiness.mark_draining()
    state = rig.control.snapshot()
    assert (state["ready"], state["draining"]) == (False, True)


async def test_control_snapshot_reads_window_figures_from_stats(rig: Rig) -> None:
    """requests/s, error rate and p99 (in milliseconds) come from the request statistics."""
    for outcome in (Outcome.SUCCESS, Outcome.TIMEOUT):
        rig.stats.notify(
            RequestFinished(
                wall_time=0.0,
                request_id="r",
                listener="app",
                upstream="svc",
                route="default",
                method="GET",
                path="/",
                status=200,
                outcome=outcome,
                attempts=1,
                duration=0.03,
                bytes_in=0,
                bytes_out=0,
                circuit_state="closed",
                error="",
            )
        )
    svc = rig.control.snapshot()["upstreams"]["svc"]
    assert svc["requests_per_s"] == pytest.approx(2.0)
    assert svc["error_rate"] == 0.5
    assert svc["p99_ms"] == pytest.approx(1000 * (0.025 + 0.025 * 0.99))


async def test_control_snapshot_of_an_open_circuit_says_since_and_until(rig: Rig) -> None:
    """An automatically opened breaker shows when it opened and until when, as epoch seconds."""
    rig.chain.transport.add(ScriptedResponse(503))
    await rig.chain.call()
    before = wall_time()
    circuit = rig.control.snapshot()["upstreams"]["svc"]["circuit"]
    assert circuit["state"] == "open"
    assert circuit["since"] == pytest.approx(before, abs=1.0)
    assert circuit["until"] == pytest.approx(before + 5.0, abs=1.0)
    assert circuit["retry_after_s"] == pytest.approx(5.0)
    assert (circuit["calls"], circuit["consecutive_failures"]) == (0, 0)  # a fresh window


async def test_control_snapshot_emits_the_lazy_half_open_transition(rig: Rig) -> None:
    """Reading an open breaker after its open duration shows half-open and emits that change."""
    rig.chain.transport.add(ScriptedResponse(503))
    await rig.chain.call()
    rig.observer.clear()
    rig.chain.clock.advance(5.0)
    svc = rig.control.snapshot()["upstreams"]["svc"]
    assert svc["circuit"]["state"] == "half_open"
    assert rig.transitions() == [("default", "open", "half_open", "open duration 5s elapsed")]
    assert [(t["from"], t["to"]) for t in svc["recent_transitions"]] == [("open", "half_open")]
    assert svc["circuit"]["since"] == svc["recent_transitions"][0]["at"]


async def test_control_force_open_blocks_every_route_of_the_upstream(rig: Rig) -> None:
    """Forcing open forces the upstream's breaker and each route-level one; nothing is sent."""
    result = rig.control.force_circuit("svc", "open")
    assert result is not None
    assert result["upstream"] == "svc"
    assert (result["circuit"]["state"], result["circuit"]["forced"]) == ("open", "open")
    assert result["routes"]["reports"]["forced"] == "open"
    assert result["circuit"]["since"] is not None
    assert result["circuit"]["until"] is None  # forced open has no known end
    assert rig.transitions() == [
        ("default", "closed", "open", "forced open by operator"),
        ("reports", "closed", "open", "forced open by operator"),
    ]
    for path in ("/x", "/reports/1", "/health"):
        with pytest.raises(CircuitOpenError):
            await rig.chain.call("GET", path)
    assert rig.chain.transport.calls == 0


async def test_control_auto_releases_a_forced_circuit(rig: Rig) -> None:
    """`auto` returns every breaker of the upstream to automatic control, closed."""
    rig.control.force_circuit("svc", "open")
    rig.observer.clear()
    result = rig.control.force_circuit("svc", "auto")
    assert result is not None
    assert (result["circuit"]["state"], result["circuit"]["forced"]) == ("closed", None)
    assert rig.transitions() == [
        ("default", "open", "closed", "released to automatic control"),
        ("reports", "open", "closed", "released to automatic control"),
    ]
    rig.chain.transport.add(ok())
    assert (await rig.chain.call()).status == 200


async def test_control_force_closed_admits_calls_to_an_open_upstream(rig: Rig) -> None:
    """Forcing closed an automatically opened breaker lets calls through again."""
    rig.chain.transport.add(ScriptedResponse(503), ok())
    await rig.chain.call()
    assert rig.chain.upstream.breaker.state is CircuitState.OPEN
    result = rig.control.force_circuit("svc", "closed")
    assert result is not None
    assert (result["circuit"]["state"], result["circuit"]["forced"]) == ("closed", "closed")
    assert (await rig.chain.call()).status == 200


async def test_control_force_twice_emits_nothing_new(rig: Rig) -> None:
    """Forcing the state already forced changes nothing and emits no transition."""
    rig.control.force_circuit("svc", "open")
    rig.observer.clear()
    assert rig.control.force_circuit("svc", "open") is not None
    assert rig.transitions() == []


async def test_control_force_refuses_unknown_upstreams_and_states(rig: Rig) -> None:
    """An unknown upstream answers None; a state other than open/closed/auto is a ValueError."""
    assert rig.control.force_circuit("nope", "open") is None
    with pytest.raises(ValueError, match="half_open"):
        rig.control.force_circuit("svc", "half_open")


async def test_control_faults_replace_and_restore(rig: Rig) -> None:
    """Runtime faults abort without contacting the upstream; clearing them restores traffic."""
    faults = FaultPolicy.model_validate({"abort": {"percent": "100%", "status": 503}})
    assert rig.control.set_faults("svc", faults)
    assert rig.control.snapshot()["upstreams"]["svc"]["faults"] == {
        "abort": {"percent": "100%", "status": 503, "reset": False}
    }
    assert (await rig.chain.call()).status == 503
    assert rig.chain.transport.calls == 0
    assert rig.control.clear_faults("svc")
    assert rig.control.snapshot()["upstreams"]["svc"]["faults"] is None
    rig.chain.clock.advance(5.0)  # the injected 503 opened the breaker, as a real one would
    rig.chain.transport.add(ok())
    assert (await rig.chain.call()).status == 200
    assert rig.chain.transport.calls == 1


async def test_control_faults_refuse_unknown_upstreams(rig: Rig) -> None:
    """Setting or clearing faults on an unknown upstream answers False."""
    assert not rig.control.set_faults("nope", FaultPolicy())
    assert not rig.control.clear_faults("nope")


async def test_control_snapshot_shows_ejected_endpoints(rig: Rig) -> None:
    """An endpoint outlier detection ejected shows as ejected, with its end in epoch seconds."""
    outliers = rig.chain.upstream.outliers
    for _ in range(2):
        outliers.record(ENDPOINT_B, failed=True)
    outliers.record(ENDPOINT_A, failed=True)
    endpoints = rig.control.snapshot()["upstreams"]["svc"]["endpoints"]
    assert [(e["ejected"], e["consecutive_failures"]) for e in endpoints] == [
        (False, 1),
        (True, 0),
    ]
    assert endpoints[1]["ejected_until"] == pytest.approx(wall_time() + 30.0, abs=1.0)


async def test_control_includes_implicit_upstreams(rig: Rig) -> None:
    """Upstreams a forward listener created for unknown hosts are shown and can be forced."""
    implicit = rig.chain.router.by_authority("elsewhere.test:80")
    state = rig.control.snapshot()
    assert list(state["upstreams"]) == ["svc", "elsewhere.test:80"]
    assert state["upstreams"]["elsewhere.test:80"]["cache"] is None
    assert rig.control.force_circuit("elsewhere.test:80", "open") is not None
    assert implicit.breaker.state is CircuitState.OPEN
    assert rig.chain.upstream.breaker.state is CircuitState.CLOSED


async def test_control_follows_the_router_in_force(rig: Rig) -> None:
    """Control asks for the router on every call, so after a swap it acts on the new one."""
    current: list[Router] = [rig.chain.router]
    control = Control(
        lambda: current[0],
        rig.stats,
        rig.chain.clock,
        Observers(),
        rig.readiness,
        lambda: {"generation": 1, "config_source": "x"},
    )
    with stage_chain() as replacement:
        current[0] = replacement.router
        control.force_circuit("svc", "open")
        assert replacement.upstream.breaker.state is CircuitState.OPEN
        assert rig.chain.upstream.breaker.state is CircuitState.CLOSED
        assert list(control.snapshot()["upstreams"]["svc"]["routes"]) == []


async def test_control_repr_shows_the_router(rig: Rig) -> None:
    """The repr names the router in force and the statistics."""
    assert repr(rig.control).startswith("Control(router=Router(upstreams=1")
