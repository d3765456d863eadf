"""What the operator can see and change at run time: `/state`, forced circuits, runtime faults.

`Control` is the admin API's view of the running proxy. It reaches the router through a
callable on every call, never a stored reference, so after a reload it sees the new config's
upstreams at once. It turns breaker transitions it causes into `CircuitTransitioned` events
(a breaker never emits them itself) and converts loop-clock times to epoch seconds for JSON.
It knows nothing of HTTP: status codes, bodies and tokens are `admin.py`'s business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sidecar import __version__
from sidecar.clock import Clock, wall_time
from sidecar.config import FaultPolicy
from sidecar.events import Observers
from sidecar.observe.stats import RequestStats
from sidecar.pipeline.route import DEFAULT_ROUTE, Router
from sidecar.resilience.breaker import CircuitBreaker, CircuitState, Transition
from sidecar.server.readiness import Readiness, ReadinessState
from sidecar.server.reload import ReloadOutcome
from sidecar.upstream.group import Upstream

# What `POST /upstreams/{name}/circuit` accepts; `auto` returns the breaker to its policy.
FORCE_STATES: dict[str, CircuitState | None] = {
    "open": CircuitState.OPEN,
    "closed": CircuitState.CLOSED,
    "auto": None,
}


# `ReloadOutcome` (applied, generation, errors, message) is the reloader's own answer, in
# `sidecar.server.reload`; it is re-exported here. `POST /reload` maps it: applied → 200,
# not applied with errors → 422, not applied without errors (no file) → 409.
Reload = Callable[[], Awaitable[ReloadOutcome]]

__all__ = ["FORCE_STATES", "Control", "Reload", "ReloadOutcome"]


class Control:
    """Reads and changes the live state of the running router's upstreams."""

    __slots__ = ("_clock", "_info", "_observers", "_readiness", "_router", "_stats", "reload")

    def __init__(
        self,
        router: Callable[[], Router],
        stats: RequestStats,
        clock: Clock,
        observers: Observers,
        readiness: Readiness,
        info: Callable[[], Mapping[str, Any]],
        reload: Reload | None = None,
    ) -> None:
        self._router = router
        self._stats = stats
        self._clock = clock
        self._observers = observers
        self._readiness = readiness
        self._info = info  # {"generation": int, "config_source": str}, read per snapshot
        self.reload = reload  # None: this process cannot reload (answered 501)

    # -- reading ---------------------------------------------------------------------------

    def upstream(self, name: str) -> Upstream | None:
        """The running upstream called `name`, implicit (forward-proxy) ones included."""
        router = self._router()
        found = router.upstreams.get(name)
        if found is not None:
            return found
        return next((u for u in router.all_upstreams() if u.name == name), None)

    def upstream_names(self) -> list[str]:
        return list(dict.fromkeys(u.name for u in self._router().all_upstreams()))

    def snapshot(self) -> dict[str, Any]:
        """The `/state` document; `sidecar status` and the status page read these keys."""
        info = self._info()
        upstreams: dict[str, Any] = {}
        for upstream in self._router().all_upstreams():
            # A configured upstream named like the overflow upstream wins, as in routing.
            if upstream.name not in upstreams:
                upstreams[upstream.name] = self._upstream_state(upstream)
        return {
            "version": __version__,
            "generation": info.get("generation", 1),
            "config_source": info.get("config_source", ""),
            "ready": self._readiness.ready,
            "draining": self._readiness.state is ReadinessState.DRAINING,
            "upstreams": upstreams,
        }

    def _upstream_state(self, upstream: Upstream) -> dict[str, Any]:
        name = upstream.name
        summary = self._stats.summary(name)
        outliers = upstream.outliers
        endpoints = []
        for pool in upstream.pools:
            health = outliers.health(pool.label)
            ejected = outliers.is_ejected(pool.label)
            endpoints.append(
                {
                    "url": pool.label,
                    "healthy": upstream.is_healthy(pool.label),
                    "ejected": ejected,
                    "ejected_until": (
                        self._epoch(health.ejected_until) if ejected and health else None
                    ),
                    "consecutive_failures": health.consecutive_failures if health else 0,
                    "inflight": pool.inflight,
                }
            )
        usage = upstream.cache_usage()
        faults = upstream.runtime_faults
        return {
            "circuit": self._circuit(name, DEFAULT_ROUTE, upstream.breaker),
            "routes": {
                label: self._circuit(name, label, breaker)
                for label, breaker in _route_breakers(upstream)
            },
            "inflight": upstream.inflight,
            "queued": upstream.gate.queued,
            "requests_per_s": summary.requests_per_s,
            "error_rate": summary.error_rate,
            "p99_ms": summary.p99 * 1000.0 if summary.p99 is not None else None,
            "endpoints": endpoints,
            "cache": {"entries": usage[0], "bytes": usage[1]} if usage is not None else None,
            "faults": faults.model_dump(mode="json", exclude_none=True)
            if faults is not None
            else None,
            "recent_transitions": [
                {
                    "at": record.at,
                    "route": record.route,
                    "from": record.from_state,
                    "to": record.to_state,
                    "reason": record.reason,
                }
                for record in self._stats.transitions(name)
            ],
        }

    def _circuit(self, upstream: str, route: str, breaker: CircuitBreaker) -> dict[str, Any]:
        state = breaker.state
        # Reading the state may have moved it open → half-open (time alone does that); emit
        # that change as the request path would, so logs, metrics and this page agree.
        self._emit(upstream, route, breaker.take_transition())
        forced = breaker.forced
        since = self._stats.since(upstream, route)
        opened_at = breaker.opened_at
        if since is None and opened_at is not None:
            since = self._epoch(opened_at)
        open_until = breaker.open_until
        calls = breaker.calls
        return {
            "state": state.value,
            "forced": forced.value if forced is not None else None,
            "since": since,
            "until": self._epoch(open_until) if open_until is not None else None,
            "retry_after_s": breaker.retry_after(),
            "calls": calls,
            "failures": breaker.failures,
            "slow": breaker.slow,
            "failure_rate": breaker.failures / calls if calls else 0.0,
            "slow_call_rate": breaker.slow / calls if calls else 0.0,
            "consecutive_failures": breaker.consecutive_failures,
        }

    def circuit_state(self, upstream: Upstream) -> dict[str, Any]:
        """The upstream's own breaker and each route-level one, as `/state` shows them."""
        return {
            "upstream": upstream.name,
            "circuit": self._circuit(upstream.name, DEFAULT_ROUTE, upstream.breaker),
            "routes": {
                label: self._circuit(upstream.name, label, breaker)
                for label, breaker in _route_breakers(upstream)
            },
        }

    def _epoch(self, at: float) -> float:
        """A loop-clock time as seconds since the epoch."""
        return wall_time() + (at - self._clock.now())

    # -- changing ----------------------------------------------------------------------------

    def force_circuit(self, upstream: str, state: str) -> dict[str, Any] | None:
        """Force every breaker of `upstream` open or closed, or release them (`auto`).

        The upstream's own breaker and each route-level breaker are forced together, so a
        forced-open upstream sends nothing on any route. None when the upstream is unknown;
        a `state` outside `FORCE_STATES` is a `ValueError`.
        """
        if state not in FORCE_STATES:
            raise ValueError(f"state must be one of {', '.join(FORCE_STATES)}, got {state!r}")
        found = self.upstream(upstream)
        if found is None:
            return None
        target = FORCE_STATES[state]
        self._emit(found.name, DEFAULT_ROUTE, found.breaker.force(target))
        for label, breaker in _route_breakers(found):
            self._emit(found.name, label, breaker.force(target))
        return self.circuit_state(found)

    def set_faults(self, upstream: str, faults: FaultPolicy) -> bool:
        """Inject `faults` into `upstream`, replacing its configured ones; False if unknown."""
        found = self.upstream(upstream)
        if found is None:
            return False
        found.runtime_faults = faults
        return True

    def clear_faults(self, upstream: str) -> bool:
        """Back to the configured faults (if any); False if the upstream is unknown."""
        found = self.upstream(upstream)
        if found is None:
            return False
        found.runtime_faults = None
        return True

    def _emit(self, upstream: str, route: str, transition: Transition | None) -> None:
        if transition is not None:
            self._observers.emit(transition.event(upstream, route))

    def __repr__(self) -> str:
        return f"Control(router={self._router()!r}, stats={self._stats!r})"


def _route_breakers(upstream: Upstream) -> list[tuple[str, CircuitBreaker]]:
    """(label, breaker) of each route that has its own breaker, in route order."""
    table = upstream.routes
    if table is None:
        return []
    return [
        (route.label, route.breaker)
        for route in (*table.routes, table.default)
        if route.breaker is not upstream.breaker
    ]
