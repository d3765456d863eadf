"""An upstream at run time: its endpoint pools, the balancer over them, its in-flight count.

Built once per config from an `UpstreamConfig`. The shared overflow upstream for unknown
hosts (`other`) has no fixed endpoints: it keeps one pool per authority it is asked for,
bounded so a scan of many hosts cannot grow memory without limit. An upstream with
`health_check` owns a `HealthChecker` and the `HealthProbe` that feeds it; the probe runs
only between `Router.start_health_checks()` and the upstream's `close()`.

A reload builds each upstream against the previous config's `StateBank` (`upstream/bank.py`),
which hands back the state that survives; the kinds of state are declared here.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections import OrderedDict
from functools import cache, partial
from typing import TYPE_CHECKING

from sidecar.cache import FallbackStore
from sidecar.clock import Clock
from sidecar.config import BreakerPolicy, Endpoint, FaultPolicy, TlsPolicy, UpstreamConfig
from sidecar.errors import StartupError
from sidecar.events import Observers
from sidecar.resilience.breaker import CircuitBreaker
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.bulkhead import Bulkhead
from sidecar.resilience.faults import FaultInjector
from sidecar.resilience.gate import BulkheadGate
from sidecar.resilience.ratelimit import TokenBucket
from sidecar.upstream.balancing import Balancer, make_balancer
from sidecar.upstream.bank import Kind, Owner, StateBank
from sidecar.upstream.health import HealthChecker, HealthProbe
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.outlier import OutlierDetector
from sidecar.upstream.pool import EndpointPool
from sidecar.upstream.state import (
    BALANCER,
    BREAKER,
    BUCKET,
    BUDGET,
    GATE,
    HEALTH,
    INFLIGHT,
    OUTLIERS,
    POOLS,
    STORE,
    EndpointPools,
    HealthChecks,
)

if TYPE_CHECKING:
    from sidecar.pipeline.route import Route, RouteTable

# Pools the overflow upstream keeps for distinct authorities before closing the oldest.
MAX_DYNAMIC_POOLS = 256


# Where an upstream's operator state lives, read by the next config (`carry_operator_state`).
OPERATOR: Kind[Upstream] = Kind("operator")


def carry_operator_state(bank: StateBank, upstream: Upstream) -> None:
    """What an operator set at run time outlives a config edit, on purpose, and only this.

    - Runtime faults (`PUT /upstreams/{name}/faults`) follow the upstream's *name*, even when
      its endpoints changed: a rehearsal is ended by the operator, not by a reload. They are
      read from the previous upstream when the new one is built, as set at that moment.
    - A forced circuit (`POST /upstreams/{name}/circuit`) lives in its breaker and goes
      where the breaker goes: carried with unchanged endpoints (`CircuitBreaker.reconfigure`
      keeps it through a policy change), gone with changed ones, whose breakers start afresh.
    """
    owner = Owner(upstream.name)
    previous = bank.previous(OPERATOR, owner)
    if previous is not None:
        upstream.runtime_faults = previous.runtime_faults
    bank.put(OPERATOR, owner, None, upstream)


class Upstream:
    """A named group of endpoints sharing one policy."""

    __slots__ = (
        "_balancer",
        "_dynamic",
        "_inflight",
        "_loop",
        "_loop_guard",
        "_observers",
        "breaker",
        "budget",
        "carried",
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
    carried: bool  # its endpoint state came from the previous config (a reload kept it)

    def __init__(
        self,
        config: UpstreamConfig,
        loop: asyncio.AbstractEventLoop,
        loop_guard: LoopGuard,
        rng: random.Random,
        clock: Clock,
        observers: Observers,
        cache_secret: bytes,
        bank: StateBank,
    ) -> None:
        self.name = config.name
        self.name_bytes = config.name.encode()
        self.config = config
        self._loop = loop
        self._loop_guard = loop_guard
        self._observers = observers
        # What survives a reload is the bank's one rule (SPEC §6): state is carried while the
        # upstream talks to the same endpoints the same way (`identity`), and then either kept
        # when its own policy is unchanged (`keep`) or carried into a changed policy that
        # applies when the reload commits (`carry`: pools, outlier records, breaker, store).
        owner = Owner(config.name)
        identity = self.identity
        endpoints = bank.carry(
            POOLS,
            owner,
            identity,
            config.pool,
            partial(_endpoint_pools, config, loop, loop_guard),
            lambda _: self._apply_pool_policy(),
        )
        self.pools, self._dynamic = endpoints.pools, endpoints.dynamic
        self.carried = bank.carried(POOLS, owner)
        self._balancer = bank.keep(
            BALANCER,
            owner,
            (identity, config.load_balancing),
            lambda: make_balancer(config.load_balancing, self.pools, rng) if self.pools else None,
        )
        # One cell shared with the previous incarnation: requests admitted under the old
        # config decrement it when they end, so the count stays right across a reload.
        self._inflight = bank.keep(INFLIGHT, owner, identity, lambda: [0])
        self.outliers = bank.carry(
            OUTLIERS,
            owner,
            identity,
            config.outlier_detection,
            lambda: OutlierDetector(config.outlier_detection, clock, [p.label for p in self.pools]),
            lambda kept: kept.reconfigure(config.outlier_detection),
        )
        # A kept probe keeps running: no fresh jitter, no gap in the checks, no lost streaks.
        checks = bank.keep(
            HEALTH,
            owner,
            (identity, config.health_check),
            partial(self._build_checks, clock, rng),
        )
        self.health, self.probe = (checks.health, checks.probe) if checks else (None, None)
        # Upstream-wide policy state; a route with its own `circuit_breaker` gets its own.
        self.breaker = bank.carry(
            BREAKER,
            owner,
            identity,
            config.circuit_breaker,
            lambda: CircuitBreaker(config.circuit_breaker, clock),
            partial(self.retune_breaker, policy=config.circuit_breaker, route="default"),
        )
        budget = config.retries.budget
        self.budget = bank.keep(
            BUDGET, owner, (identity, budget), lambda: RetryBudget(budget, clock)
        )
        self.gate = bank.keep(
            GATE,
            owner,
            (identity, config.bulkhead),
            lambda: BulkheadGate(Bulkhead.from_policy(config.bulkhead)),
        )
        limit = config.rate_limit
        self.rate_limit = bank.keep(
            BUCKET,
            owner,
            (identity, limit),
            lambda: TokenBucket.from_policy(limit, clock) if limit is not None else None,
        )
        cache = config.fallback.cache
        self.fallback_store = (
            bank.carry(
                STORE,
                owner,
                identity,
                cache,
                lambda: FallbackStore(cache, clock, cache_secret),
                lambda kept: kept.reconfigure(cache),
            )
            if cache is not None
            else None
        )
        self.faults = FaultInjector(config.name, rng, observers)
        self.runtime_faults: FaultPolicy | None = None
        carry_operator_state(bank, self)
        self.routes: RouteTable = None  # type: ignore[assignment]  # set by the router right after

    @property
    def identity(self) -> tuple[tuple[Endpoint, ...], TlsPolicy]:
        """What the state of this upstream is carried by: the endpoints, and how TLS talks
        to them. A reload that changes either starts the upstream afresh."""
        return self.config.endpoints, self.config.tls

    def _build_checks(self, clock: Clock, rng: random.Random) -> HealthChecks | None:
        health_check = self.config.health_check
        if health_check is None or not self.pools:
            return None
        health = HealthChecker(health_check, clock, [p.label for p in self.pools])
        probe = HealthProbe(
            self.name,
            health_check,
            health,
            [pool.sibling() for pool in self.pools],
            clock,
            rng,
            self._observers,
        )
        return HealthChecks(health, probe)

    @property
    def inflight(self) -> int:
        """Requests to this upstream between routing and their end (queued ones included)."""
        return self._inflight[0]

    @inflight.setter
    def inflight(self, value: int) -> None:
        self._inflight[0] = value

    def retune_breaker(self, breaker: CircuitBreaker, *, policy: BreakerPolicy, route: str) -> None:
        """Give a breaker carried from the previous config its new policy (at commit).

        The breaker keeps its state, counts and permits (`CircuitBreaker.reconfigure`); a
        visible change of state it reports (disabled while open) is emitted like any other.
        """
        transition = breaker.reconfigure(policy)
        if transition is not None:
            self._observers.emit(transition.event(self.name, route))

    def _apply_pool_policy(self) -> None:
        """Kept pools (dynamic ones made since this config was compiled, and a kept health
        probe's own) take the new `pool.idle_timeout` when the reload commits."""
        idle_timeout = self.config.pool.idle_timeout
        probe_pools = self.probe.pools if self.probe is not None else ()
        for pool in (*self.pools, *self._dynamic.values(), *probe_pools):
            pool.set_idle_timeout(idle_timeout)

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


def _endpoint_pools(
    config: UpstreamConfig, loop: asyncio.AbstractEventLoop, loop_guard: LoopGuard
) -> EndpointPools:
    context = _ssl_context(config) if any(e.tls for e in config.endpoints) else None
    pools = [
        EndpointPool(e, loop, loop_guard, context, config.tls.server_name, config.pool.idle_timeout)
        for e in config.endpoints
    ]
    return EndpointPools(context, pools, OrderedDict())


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
