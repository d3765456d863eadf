"""Step 1 of the pipeline: listener → upstream → first matching route → effective policy.

Everything here is decided once per config: host tables, compiled route matchers and each
route's stage chain. Per request the router does a dict lookup and a short scan of routes.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sidecar.cache import FallbackStore
from sidecar.clock import Clock
from sidecar.config import (
    CachePolicy,
    Endpoint,
    RouteConfig,
    SidecarConfig,
    UnknownHosts,
    UpstreamConfig,
)
from sidecar.errors import UnknownUpstreamError
from sidecar.events import Observers
from sidecar.pipeline.exchange import Stage
from sidecar.resilience.breaker import CircuitBreaker
from sidecar.resilience.budget import RetryBudget
from sidecar.upstream.bank import Kind, Owner, StateBank
from sidecar.upstream.group import Upstream
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.state import BREAKER, BUDGET, STORE

OVERFLOW_UPSTREAM = "other"
DEFAULT_ROUTE = "default"
# Implicit upstreams for `https://` URLs are named `https:host:port`: apart from the
# cleartext one of the same authority (a host never contains `:`), and no `/` in the name,
# which the admin API's paths carry.
TLS_PREFIX = "https:"
# The process's own entry in the reload bank.
CACHE_SECRET: Kind[bytes] = Kind("cache_secret")


@dataclass(frozen=True, slots=True)
class RouteMatcher:
    """The `match:` of a route; an absent field matches everything."""

    path: bytes | None
    path_prefix: bytes | None
    methods: frozenset[bytes] | None

    def matches(self, method: bytes, path: bytes) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path is not None:
            return path == self.path
        if self.path_prefix is not None:
            return path.startswith(self.path_prefix)
        return True


class Route:
    """A route's effective policy as plain floats, and its composed stage chain."""

    __slots__ = (
        "breaker",
        "budget",
        "config",
        "connect",
        "idle",
        "label",
        "matcher",
        "per_try",
        "pipeline",
        "store",
        "total",
    )

    def __init__(
        self,
        label: str,
        config: RouteConfig | UpstreamConfig,
        matcher: RouteMatcher | None,
        breaker: CircuitBreaker,
    ) -> None:
        self.label = label
        self.config = config
        self.matcher = matcher
        self.breaker = breaker  # the route's own, or its upstream's
        self.budget: RetryBudget | None = None  # the route's own, or its upstream's
        self.store: FallbackStore | None = None  # the route's own, or its upstream's
        timeouts = config.timeouts
        self.connect = timeouts.connect
        self.per_try = timeouts.per_try
        self.total = timeouts.total
        self.idle = timeouts.idle
        self.pipeline: Stage | None = None

    def __repr__(self) -> str:
        return f"Route({self.label!r}, per_try={self.per_try}, total={self.total})"


class RouteTable:
    """An upstream's routes in order, then its default route."""

    __slots__ = ("default", "routes")

    def __init__(self, routes: list[Route], default: Route) -> None:
        self.routes = tuple(routes)
        self.default = default

    def match(self, method: bytes, path: bytes) -> Route:
        for route in self.routes:
            matcher = route.matcher
            if matcher is not None and matcher.matches(method, path):
                return route
        return self.default


StageBuilder = Callable[[Upstream, Route], Stage]


class Router:
    """Finds the upstream and route for a request; creates implicit upstreams on demand."""

    _cache_secret: bytes
    bank: StateBank

    __slots__ = (
        "_build_stages",
        "_by_authority",
        "_by_host",
        "_cache_secret",
        "_clock",
        "_config",
        "_implicit",
        "_loop",
        "_loop_guard",
        "_observers",
        "_rng",
        "bank",
        "upstreams",
    )

    def __init__(
        self,
        config: SidecarConfig,
        loop: asyncio.AbstractEventLoop,
        loop_guard: LoopGuard,
        build_stages: StageBuilder,
        rng: random.Random,
        clock: Clock,
        observers: Observers | None = None,
        previous: Router | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._observers = observers if observers is not None else Observers()
        # Everything this config holds is taken through its bank, which hands back what the
        # previous config's may keep; `retire` commits it, `discard` drops it.
        self.bank = StateBank(previous.bank if previous is not None else None)
        # Keys the hashes that partition cached entries by Authorization/Cookie values; kept
        # for the life of the process so that kept stores keep finding their entries.
        self._cache_secret = self.bank.keep(
            CACHE_SECRET, Owner(), None, partial(secrets.token_bytes, 32)
        )
        self._loop = loop
        self._loop_guard = loop_guard
        self._build_stages = build_stages
        self._rng = rng
        self.upstreams: dict[str, Upstream] = {}
        self._by_authority: dict[str, Upstream] = {}
        self._by_host: dict[str, Upstream] = {}
        self._implicit: dict[str, Upstream] = {}
        for name, upstream_config in config.upstreams.items():
            upstream = self._compile(upstream_config)
            self.upstreams[name] = upstream
            for host in upstream_config.hosts:
                if _has_port(host):
                    self._by_authority[host] = upstream
                else:
                    self._by_host[host] = upstream
        if previous is not None:
            self._carry_implicit(previous)

    def _carry_implicit(self, previous: Router) -> None:
        """Implicit upstreams of the previous config that are still implicit are compiled now,
        so that the bank hands them their state; the others are swept at commit."""
        if self._config.forward.unknown_hosts == UnknownHosts.DENY:
            return
        for name in previous._implicit:
            if name == OVERFLOW_UPSTREAM:
                config = self._config.implicit_upstream(OVERFLOW_UPSTREAM, None)
            else:
                tls = name.startswith(TLS_PREFIX)
                authority = name.removeprefix(TLS_PREFIX)
                if authority in self._by_authority or authority.rpartition(":")[0] in self._by_host:
                    continue  # now claimed by a configured upstream
                config = self._config.implicit_upstream(name, _implicit_endpoint(authority, tls))
            self._implicit[name] = self._compile(config)

    def dedicated(self, name: str) -> Upstream:
        return self.upstreams[name]

    def by_authority(self, authority: str, *, tls: bool = False) -> Upstream:
        """The upstream claiming `host:port` (normalised), or an implicit one, or 403.

        `tls`: the client asked for `https://`; an implicit upstream made for it originates
        TLS (verified against the system trust store), kept apart from the cleartext one.
        """
        upstream = self._by_authority.get(authority)
        if upstream is not None:
            return upstream
        host = authority.rpartition(":")[0]
        upstream = self._by_host.get(host)
        if upstream is not None:
            return upstream
        if self._config.forward.unknown_hosts == UnknownHosts.DENY:
            raise UnknownUpstreamError(f"no upstream is configured for host {host!r}")
        return self._implicit_upstream(authority, tls)

    def _implicit_upstream(self, authority: str, tls: bool) -> Upstream:
        name = TLS_PREFIX + authority if tls else authority
        upstream = self._implicit.get(name)
        if upstream is not None:
            return upstream
        if len(self._implicit) >= self._config.forward.max_implicit_upstreams:
            upstream = self._implicit.get(OVERFLOW_UPSTREAM)
            if upstream is None:
                config = self._config.implicit_upstream(OVERFLOW_UPSTREAM, None)
                upstream = self._compile(config)
                self._implicit[OVERFLOW_UPSTREAM] = upstream
            return upstream
        config = self._config.implicit_upstream(name, _implicit_endpoint(authority, tls))
        upstream = self._compile(config)
        self._implicit[name] = upstream
        return upstream

    def all_upstreams(self) -> list[Upstream]:
        return [*self.upstreams.values(), *self._implicit.values()]

    def _compile(self, config: UpstreamConfig) -> Upstream:
        bank = self.bank
        upstream = Upstream(
            config,
            self._loop,
            self._loop_guard,
            self._rng,
            self._clock,
            self._observers,
            self._cache_secret,
            bank,
        )
        routes = []
        for route_config in config.routes:
            match = route_config.match
            matcher = RouteMatcher(
                path=match.path.encode() if match.path is not None else None,
                path_prefix=match.path_prefix.encode() if match.path_prefix is not None else None,
                methods=frozenset(m.encode() for m in match.methods) if match.methods else None,
            )
            label = route_config.label
            if route_config.own_breaker:
                # A route's own breaker survives the reload too, by its label, its state
                # carried into a changed policy when the reload commits, as the upstream's is.
                policy = route_config.circuit_breaker
                breaker = bank.carry(
                    BREAKER,
                    Owner(config.name, label),
                    upstream.identity,
                    policy,
                    partial(CircuitBreaker, policy, self._clock),
                    partial(upstream.retune_breaker, policy=policy, route=label),
                )
            else:
                breaker = upstream.breaker
            routes.append(Route(label, route_config, matcher, breaker))
        default = Route(DEFAULT_ROUTE, config, None, upstream.breaker)
        for route in routes:
            self._attach_state(upstream, route)
            route.pipeline = self._build_stages(upstream, route)
        # The default route's policy is its upstream's: it shares the upstream's state.
        default.budget = upstream.budget
        default.store = upstream.fallback_store
        default.pipeline = self._build_stages(upstream, default)
        upstream.routes = RouteTable(routes, default)
        return upstream

    def _attach_state(self, upstream: Upstream, route: Route) -> None:
        """A route shares its upstream's budget and store unless it configures its own. Its
        own budget is kept while its upstream's endpoints, its label and its budget policy
        are unchanged (the bank remembers which budget each label used, shared or not); its
        own store is carried while the route had its own store under that label, a changed
        policy applied at commit."""
        config = route.config
        own = upstream.config
        bank = self.bank
        owner = Owner(own.name, route.label)
        budget = config.retries.budget
        key = (upstream.identity, budget)
        if budget == own.retries.budget:
            route.budget = upstream.budget
            bank.put(BUDGET, owner, key, upstream.budget)
        else:
            route.budget = bank.keep(BUDGET, owner, key, partial(RetryBudget, budget, self._clock))
        cache = config.fallback.cache
        if cache is None:
            route.store = None
        elif cache == own.fallback.cache:
            route.store = upstream.fallback_store
        else:
            route.store = bank.carry(
                STORE,
                owner,
                upstream.identity,
                cache,
                partial(FallbackStore, cache, self._clock, self._cache_secret),
                partial(_retune_store, policy=cache),
            )

    def start_health_checks(self) -> None:
        """Start the probes of upstreams with `health_check` (those already running go on).

        Implicit upstreams created later have none: `defaults` has no `health_check`.
        """
        for upstream in self.all_upstreams():
            if upstream.probe is not None:
                upstream.probe.start()

    async def stop_health_checks(self) -> None:
        """Stop every probe and wait (bounded) until none of their tasks is left."""
        probes = [u.probe for u in self.all_upstreams() if u.probe is not None]
        await asyncio.gather(*(probe.stop() for probe in probes))

    def retire(self, successor: Router) -> None:
        """After a reload: the successor's carried state takes the new policies it waited for
        (breakers, stores, outlier records, pools), then what this config held and the
        successor does not is closed: pools of upstreams it did not keep, health checks it
        did not keep (an upstream whose `health_check` changed gets a new probe, which the
        successor's `start_health_checks()` starts)."""
        bank = successor.bank
        bank.commit()
        for retired in bank.sweep():
            retired.close()

    def discard(self) -> None:
        """A reload compiled this router but was refused: the state it carried stays as it
        was, under its old policy, and what it built for itself is closed unused."""
        for built in self.bank.abort():
            built.close()

    def close(self) -> None:
        for upstream in self.all_upstreams():
            upstream.close()

    def __repr__(self) -> str:
        return f"Router(upstreams={len(self.upstreams)}, implicit={len(self._implicit)})"


def _retune_store(store: FallbackStore, *, policy: CachePolicy) -> None:
    store.reconfigure(policy)


def _implicit_endpoint(authority: str, tls: bool) -> Endpoint:
    return Endpoint.parse(f"{'https' if tls else 'http'}://{authority}")


def _has_port(host: str) -> bool:
    return host.rsplit(":", 1)[-1].isdigit() and not host.endswith("]")


def normalise_authority(raw: bytes, default_port: int) -> str:
    """`Payments:8080` → `payments:8080`; `payments` → `payments:80`; IPv6 keeps brackets."""
    text = raw.decode("ascii", "strict").strip().lower()
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError("unterminated IPv6 literal")
        host, rest = text[: close + 1], text[close + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host or any(c in host for c in "/@?# \t"):
        raise ValueError("invalid host")
    if port and not port.isdigit():
        raise ValueError("invalid port")
    return f"{host}:{port or default_port}"
