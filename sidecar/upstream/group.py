"""An upstream at run time: its endpoint pools, the balancer over them, its in-flight count.

Built once per config from an `UpstreamConfig`. The shared overflow upstream for unknown
hosts (`other`) has no fixed endpoints: it keeps one pool per authority it is asked for,
bounded so a scan of many hosts cannot grow memory without limit. An upstream with
`health_check` owns a `HealthChecker` and the `HealthProbe` that feeds it; the probe runs
only between `Router.start_health_checks()` and the upstream's `close()`.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import OrderedDict
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING

from sidecar.cache import FallbackStore
from sidecar.clock import Clock
from sidecar.config import BreakerPolicy, CachePolicy, Endpoint, FaultPolicy, UpstreamConfig
from sidecar.errors import StartupError
from sidecar.events import Observers
from sidecar.resilience.breaker import CircuitBreaker
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.bulkhead import Bulkhead
from sidecar.resilience.faults import FaultInjector
from sidecar.resilience.gate import BulkheadGate
from sidecar.resilience.ratelimit import TokenBucket
from sidecar.upstream.balancing import Balancer, make_balancer
from sidecar.upstream.health import HealthChecker, HealthProbe
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.outlier import OutlierDetector
from sidecar.upstream.pool import EndpointPool

if TYPE_CHECKING:
    from sidecar.pipeline.route import Route, RouteTable

# Pools the overflow upstream keeps for distinct authorities before closing the oldest.
MAX_DYNAMIC_POOLS = 256


class Upstream:
    """A named group of endpoints sharing one policy."""

    __slots__ = (
        "_balancer",
        "_changes",
        "_dynamic",
        "_inflight",
        "_loop",
        "_loop_guard",
        "_observers",
        "_ssl",
        "breaker",
        "budget",
        "config",
        "fallback_store",
        "faults",
        "gate",
        "health",
        "name",
        "name_bytes",
        "outliers",
        "pools",
        "probe",
        "rate_limit",
        "routes",
        "runtime_faults",
    )

    _ssl: ssl.SSLContext | None
    _inflight: list[int]
    _balancer: Balancer | None
    _dynamic: OrderedDict[str, EndpointPool]
    pools: list[EndpointPool]
    outliers: OutlierDetector
    health: HealthChecker | None
    probe: HealthProbe | None
    breaker: CircuitBreaker
    budget: RetryBudget
    gate: BulkheadGate
    rate_limit: TokenBucket | None
    fallback_store: FallbackStore | None

    def __init__(
        self,
        config: UpstreamConfig,
        loop: asyncio.AbstractEventLoop,
        loop_guard: LoopGuard,
        rng: random.Random,
        clock: Clock,
        observers: Observers,
        cache_secret: bytes,
        previous: Upstream | None = None,
    ) -> None:
        self.name = config.name
        self.name_bytes = config.name.encode()
        self.config = config
        self._loop = loop
        self._loop_guard = loop_guard
        self._observers = observers
        # A reload keeps the state of an upstream whose endpoints did not change (SPEC §6).
        # Breaker, fallback store and outlier records are kept whatever their policy: a
        # changed policy is applied to them by `apply_changes()` once the reload commits
        # (a reload that fails after this point must leave them as they were). The other
        # pieces are kept when their own policy is unchanged, else rebuilt.
        kept = previous if previous is not None and previous.same_endpoints(config) else None
        self._changes: list[Callable[[], None]] = []
        if kept is not None:
            self._ssl = kept._ssl
            self.pools = kept.pools
            self._dynamic = kept._dynamic
            if kept.config.pool != config.pool:
                self._changes.append(self._apply_pool_policy)
        else:
            self._ssl = _ssl_context(config) if any(e.tls for e in config.endpoints) else None
            self.pools = [
                EndpointPool(
                    e,
                    loop,
                    loop_guard,
                    self._ssl,
                    config.tls.server_name,
                    config.pool.idle_timeout,
                )
                for e in config.endpoints
            ]
            self._dynamic = OrderedDict()
        if kept is not None and kept.config.load_balancing == config.load_balancing:
            self._balancer = kept._balancer
        else:
            self._balancer = (
                make_balancer(config.load_balancing, self.pools, rng) if self.pools else None
            )
        # One cell shared with the previous incarnation: requests admitted under the old
        # config decrement it when they end, so the count stays right across a reload.
        self._inflight = kept._inflight if kept is not None else [0]
        if kept is not None:
            self.outliers = kept.outliers
            if kept.config.outlier_detection != config.outlier_detection:
                self._changes.append(partial(self.outliers.reconfigure, config.outlier_detection))
        else:
            labels = [p.label for p in self.pools]
            self.outliers = OutlierDetector(config.outlier_detection, clock, labels)
        health_check = config.health_check
        if kept is not None and kept.config.health_check == health_check:
            # The probe keeps running: no fresh jitter, no gap in the checks, no lost streaks.
            self.health, self.probe = kept.health, kept.probe
        elif health_check is not None and self.pools:
            self.health = HealthChecker(health_check, clock, [p.label for p in self.pools])
            self.probe = HealthProbe(
                config.name,
                health_check,
                self.health,
                [pool.sibling() for pool in self.pools],
                clock,
                rng,
                observers,
            )
        else:
            self.health, self.probe = None, None
        # Upstream-wide policy state; a route with its own `circuit_breaker` gets its own.
        if kept is not None:
            self.breaker = kept.breaker
            if kept.config.circuit_breaker != config.circuit_breaker:
                self.change_breaker(self.breaker, config.circuit_breaker, "default")
        else:
            self.breaker = CircuitBreaker(config.circuit_breaker, clock)
        self.budget = (
            kept.budget
            if kept is not None and kept.config.retries.budget == config.retries.budget
            else RetryBudget(config.retries.budget, clock)
        )
        self.gate = (
            kept.gate
            if kept is not None and kept.config.bulkhead == config.bulkhead
            else BulkheadGate(Bulkhead.from_policy(config.bulkhead))
        )
        if kept is not None and kept.config.rate_limit == config.rate_limit:
            self.rate_limit = kept.rate_limit
        elif config.rate_limit is not None:
            self.rate_limit = TokenBucket.from_policy(config.rate_limit, clock)
        else:
            self.rate_limit = None
        cache = config.fallback.cache
        if cache is None:
            self.fallback_store = None
        elif kept is not None and kept.fallback_store is not None:
            self.fallback_store = kept.fallback_store
            if kept.config.fallback.cache != cache:
                self.change_store(self.fallback_store, cache)
        else:
            self.fallback_store = FallbackStore(cache, clock, cache_secret)
        self.faults = FaultInjector(config.name, rng, observers)
        # Faults set through the admin API; they replace the configured ones while set,
        # and survive a reload (an operator's rehearsal is not ended by a config edit).
        self.runtime_faults: FaultPolicy | None = previous.runtime_faults if previous else None
        self.routes: RouteTable = None  # type: ignore[assignment]  # set by the router right after

    @property
    def inflight(self) -> int:
        """Requests to this upstream between routing and their end (queued ones included)."""
        return self._inflight[0]

    @inflight.setter
    def inflight(self, value: int) -> None:
        self._inflight[0] = value

    def change_breaker(self, breaker: CircuitBreaker, policy: BreakerPolicy, route: str) -> None:
        """Give a breaker kept from the previous config its new policy at `apply_changes()`.

        The breaker keeps its state, counts and permits (`CircuitBreaker.reconfigure`); a
        visible change of state it reports (disabled while open) is emitted like any other.
        """

        def apply() -> None:
            transition = breaker.reconfigure(policy)
            if transition is not None:
                self._observers.emit(transition.event(self.name, route))

        self._changes.append(apply)

    def change_store(self, store: FallbackStore, policy: CachePolicy) -> None:
        """Give a store kept from the previous config its new policy at `apply_changes()`."""
        self._changes.append(partial(store.reconfigure, policy))

    def _apply_pool_policy(self) -> None:
        """Kept pools (dynamic ones made since this config was compiled, and a kept health
        probe's own) take the new `pool.idle_timeout` when the reload commits."""
        idle_timeout = self.config.pool.idle_timeout
        probe_pools = self.probe.pools if self.probe is not None else ()
        for pool in (*self.pools, *self._dynamic.values(), *probe_pools):
            pool.set_idle_timeout(idle_timeout)

    def apply_changes(self) -> None:
        """The reload committed: apply the new policies to the state kept from the old config.

        Until now the kept breakers, stores and outlier records ran under their old policy,
        so a reload refused after compiling changed nothing. Runs each change once.
        """
        changes, self._changes = self._changes, []
        for change in changes:
            change()

    def same_endpoints(self, config: UpstreamConfig) -> bool:
        """Whether `config` talks to exactly the endpoints (and TLS settings) this one does."""
        return self.config.endpoints == config.endpoints and self.config.tls == config.tls

    def state_kept_by(self, other: Upstream) -> bool:
        """Whether a reload handed this upstream's pools to `other` (so they stay open)."""
        return other.pools is self.pools

    def pick(self, authority: str, avoid: EndpointPool | None = None) -> EndpointPool:
        """The pool for the next attempt; the overflow upstream uses the request's authority.

        Endpoints that outlier detection ejected or health checks marked unhealthy are
        skipped. When every endpoint is unhealthy, health is ignored ("panic mode", as in
        Envoy): sending to all of them beats refusing every request on a check's word. When
        no other endpoint is left (a retry avoids the one it just tried), the balancer's
        choice stands.
        """
        balancer = self._balancer
        if balancer is None:
            return self._dynamic_pool(authority)
        pool = balancer.pick(avoid)
        outliers = self.outliers
        health = self.health
        if health is not None and health.all_unhealthy:
            health = None  # panic mode
        for _ in range(len(self.pools)):
            if not outliers.is_ejected(pool.label) and (
                health is None or health.is_healthy(pool.label)
            ):
                return pool
            pool = balancer.pick(avoid)
        # Random and least-request choices can miss the one endpoint left: look at each.
        for candidate in self.pools:
            if (
                candidate is not avoid
                and not outliers.is_ejected(candidate.label)
                and (health is None or health.is_healthy(candidate.label))
            ):
                return candidate
        return pool

    def _dynamic_pool(self, authority: str) -> EndpointPool:
        pool = self._dynamic.get(authority)
        if pool is not None:
            self._dynamic.move_to_end(authority)
            return pool
        pool = EndpointPool(
            Endpoint.parse(f"http://{authority}"),
            self._loop,
            self._loop_guard,
            idle_timeout=self.config.pool.idle_timeout,
        )
        self._dynamic[authority] = pool
        if len(self._dynamic) > MAX_DYNAMIC_POOLS:
            _, oldest = self._dynamic.popitem(last=False)
            oldest.close()
        return pool

    def breakers(self) -> list[tuple[str, str, str]]:
        """(upstream, route, state) for its own breaker and each route that has one."""
        states = [(self.name, "default", self.breaker.state.value)]
        if self.routes is not None:
            states.extend(
                (self.name, route.label, route.breaker.state.value)
                for route in self.routes.routes
                if route.breaker is not self.breaker
            )
        return states

    def cache_usage(self) -> tuple[int, int] | None:
        """(entries, bytes) over this upstream's fallback stores (routes' included), if any."""
        candidates = (self.fallback_store, *(route.store for route in self._route_list()))
        stores = {id(store): store for store in candidates if store is not None}
        if not stores:
            return None
        return sum(s.entries for s in stores.values()), sum(s.bytes for s in stores.values())

    def _route_list(self) -> list[Route]:
        if self.routes is None:
            return []
        return [*self.routes.routes, self.routes.default]

    def is_healthy(self, endpoint: str) -> bool:
        """Whether active health checks keep `endpoint` in rotation (true without checks)."""
        return self.health is None or self.health.is_healthy(endpoint)

    def close(self) -> None:
        if self.probe is not None:
            self.probe.cancel()
        for pool in self.pools:
            pool.close()
        for pool in self._dynamic.values():
            pool.close()

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, endpoints={len(self.pools)}, inflight={self.inflight})"


@cache
def default_tls_context() -> ssl.SSLContext:
    """The verified context (system trust store, ALPN `http/1.1`) shared by every upstream
    without `tls.ca_file` or `verify: false`: each implicit `https:host:port` upstream takes
    it, so the trust store is loaded once per process, not on the event loop per new host.
    Read-only once built; SNI and the verified name are set per connection."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


def _ssl_context(config: UpstreamConfig) -> ssl.SSLContext:
    """TLS origination settings of one upstream (verify, ca_file); SNI is set per connection."""
    ca_file = config.tls.ca_file
    if ca_file is None and config.tls.verify:
        return default_tls_context()
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(
            f"upstreams.{config.name}.tls.ca_file: cannot load {ca_file}: {reason}"
        ) from None
    if not config.tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context
