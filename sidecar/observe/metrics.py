"""Every Prometheus metric of the sidecar, declared here or in `hot.py` (SPEC §7).

`SidecarMetrics` is an event observer: stages emit events, this module turns them into
samples on a `CollectorRegistry` that the caller passes in, so there are no global metric
objects and tests get a fresh registry each. A new metric is declared in
`SidecarMetrics.__init__` and fed from a `case` in `notify`, next to the others.

Three kinds live here. The per-request metrics (requests, their durations, attempts) change
on every request and are tallied in plain dicts by `hot.py`, which exports them at scrape
time. The other event-driven counters (retries, transitions, fallbacks, cache lookups,
faults, reloads, rejections) are prometheus_client metrics updated from `notify`. Gauges of
live state (in-flight, circuit state, ejections, health, cache size) are collectors that
read their source at scrape time, never on the request path. Nothing here does I/O or
blocks: `notify` runs on the event loop at tens of thousands of events per second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from sidecar.events import (
    AttemptFinished,
    CacheLookup,
    CircuitTransitioned,
    ConfigReloaded,
    ConfigReloadFailed,
    Event,
    FallbackServed,
    FaultInjected,
    RequestFinished,
    RequestRejected,
    RetryBudgetExhausted,
    RetryScheduled,
)
from sidecar.observe.hot import HotMetrics

# Proxy latencies span a cache-local 1 ms to a 60 s report route; these bounds keep the
# p50/p99 of both readable while staying at 15 series per (upstream, outcome).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Any other token a client sends as a method becomes "OTHER": a label value per arbitrary
# token would let one misbehaving client create unbounded series.
STANDARD_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "OTHER"

InflightSource = Callable[[], Mapping[str, int]]
# (upstream, route, state) per breaker; route is "default" for the upstream's own breaker.
BreakerSource = Callable[[], Iterable[tuple[str, str, str]]]
CIRCUIT_STATES = ("closed", "open", "half_open")
RELOAD_RESULTS = ("success", "error")
UPSTREAM_BREAKER = "default"


def _no_inflight() -> Mapping[str, int]:
    """The source before the runtime sets one: nothing is in flight."""
    return {}


class InflightCollector:
    """`sidecar_inflight_requests{upstream}`, read from the runtime at scrape time.

    Counting in-flight requests is the bulkheads' job; copying their counts into a gauge on
    every request would cost two updates per request for a value only a scrape reads.
    """

    __slots__ = ("_source",)

    NAME = "sidecar_inflight_requests"
    HELP = "Requests in flight to each upstream, read at scrape time."

    def __init__(self) -> None:
        self._source: InflightSource = _no_inflight

    def set_source(self, source: InflightSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        """Names the metric without calling the source, so registering has no side effect."""
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream",))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream",))
        for upstream, count in self._source().items():
            family.add_metric((upstream,), count)
        yield family

    def __repr__(self) -> str:
        return f"InflightCollector(source={self._source!r})"


def _no_breakers() -> Iterable[tuple[str, str, str]]:
    return ()


# upstream → (entries, bytes) summed over its fallback stores (its own and its routes').
CacheSource = Callable[[], Mapping[str, tuple[int, int]]]


def _no_caches() -> Mapping[str, tuple[int, int]]:
    return {}


# (upstream, endpoint, ejected) for every configured endpoint.
EjectionSource = Callable[[], Iterable[tuple[str, str, bool]]]


def _no_endpoints() -> Iterable[tuple[str, str, bool]]:
    return ()


class EjectionCollector:
    """`sidecar_endpoint_ejected{upstream, endpoint}`: 1 while outlier detection ejects it."""

    __slots__ = ("_source",)

    NAME = "sidecar_endpoint_ejected"
    HELP = "1 while outlier detection keeps the endpoint out of rotation, else 0."

    def __init__(self) -> None:
        self._source: EjectionSource = _no_endpoints

    def set_source(self, source: EjectionSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "endpoint"))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "endpoint"))
        for upstream, endpoint, ejected in self._source():
            family.add_metric((upstream, endpoint), 1.0 if ejected else 0.0)
        yield family

    def __repr__(self) -> str:
        return f"EjectionCollector(source={self._source!r})"


# (upstream, endpoint, healthy) for every endpoint of an upstream with health checks.
HealthSource = Callable[[], Iterable[tuple[str, str, bool]]]


class HealthCollector:
    """`sidecar_endpoint_healthy{upstream, endpoint}`: 1 while active checks pass, else 0.

    Only endpoints of upstreams with `health_check` set have a series: nobody checks the
    others, and the implicit upstreams of a forward listener would add a series per host.
    """

    __slots__ = ("_source",)

    NAME = "sidecar_endpoint_healthy"
    HELP = "1 while active health checks keep the endpoint in rotation, else 0."

    def __init__(self) -> None:
        self._source: HealthSource = _no_endpoints

    def set_source(self, source: HealthSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "endpoint"))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "endpoint"))
        for upstream, endpoint, healthy in self._source():
            family.add_metric((upstream, endpoint), 1.0 if healthy else 0.0)
        yield family

    def __repr__(self) -> str:
        return f"HealthCollector(source={self._source!r})"


class CacheCollector:
    """`sidecar_cache_entries{upstream}` and `sidecar_cache_bytes{upstream}`, read at scrape time."""

    __slots__ = ("_source",)

    def __init__(self) -> None:
        self._source: CacheSource = _no_caches

    def set_source(self, source: CacheSource) -> None:
        self._source = source

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "sidecar_cache_entries",
                "Responses held in the fallback store.",
                labels=("upstream",),
            ),
            GaugeMetricFamily(
                "sidecar_cache_bytes", "Bytes held in the fallback store.", labels=("upstream",)
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        entries, size = self._families()
        for upstream, (count, held) in self._source().items():
            entries.add_metric((upstream,), count)
            size.add_metric((upstream,), held)
        yield entries
        yield size

    def __repr__(self) -> str:
        return f"CacheCollector(source={self._source!r})"


class CircuitStateCollector:
    """`sidecar_circuit_state{upstream, state}`: 1 on each breaker's current state, else 0.

    Read at scrape time from the breakers themselves, so the gauge can never disagree with
    the state the request path sees. Breakers a route owns go to
    `sidecar_route_circuit_state{upstream, route, state}`, keeping the SPEC's label set exact.
    """

    __slots__ = ("_source",)

    NAME = "sidecar_circuit_state"
    HELP = "1 on the current state of each upstream's circuit breaker, 0 on the others."
    ROUTE_NAME = "sidecar_route_circuit_state"
    ROUTE_HELP = "1 on the current state of each route-level circuit breaker, 0 on the others."

    def __init__(self) -> None:
        self._source: BreakerSource = _no_breakers

    def set_source(self, source: BreakerSource) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "state"))
        yield GaugeMetricFamily(
            self.ROUTE_NAME, self.ROUTE_HELP, labels=("upstream", "route", "state")
        )

    def collect(self) -> Iterator[Metric]:
        upstreams = GaugeMetricFamily(self.NAME, self.HELP, labels=("upstream", "state"))
        routes = GaugeMetricFamily(
            self.ROUTE_NAME, self.ROUTE_HELP, labels=("upstream", "route", "state")
        )
        for upstream, route, current in self._source():
            for state in CIRCUIT_STATES:
                value = 1.0 if state == current else 0.0
                if route == UPSTREAM_BREAKER:
                    upstreams.add_metric((upstream, state), value)
                else:
                    routes.add_metric((upstream, route, state), value)
        yield upstreams
        yield routes

    def __repr__(self) -> str:
        return f"CircuitStateCollector(source={self._source!r})"


class SidecarMetrics:
    """The sidecar's metrics on one registry; an `Observer` of the request and attempt events."""

    __slots__ = (
        "_budget_exhausted",
        "_build_info",
        "_cache",
        "_cache_lookups",
        "_circuit_state",
        "_config_generation",
        "_config_reloads",
        "_ejections",
        "_fallbacks",
        "_faults",
        "_health",
        "_hot",
        "_inflight",
        "_rejected",
        "_retries",
        "_route_transitions",
        "_transitions",
    )

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self._hot = HotMetrics(DURATION_BUCKETS)
        registry.register(self._hot)
        self._build_info = Gauge(
            "sidecar_build_info",
            "Always 1; the label carries the running sidecar version.",
            ("version",),
            registry=registry,
        )
        self._build_info.labels(version).set(1)
        self._inflight = InflightCollector()
        registry.register(self._inflight)
        self._retries = Counter(
            "sidecar_retries_total",
            "Retries scheduled, by upstream and the reason (a status code or a failure kind).",
            ("upstream", "reason"),
            registry=registry,
        )
        self._budget_exhausted = Counter(
            "sidecar_retry_budget_exhausted_total",
            "Retries refused because the upstream's retry budget had no room.",
            ("upstream",),
            registry=registry,
        )
        self._rejected = Counter(
            "sidecar_rejected_total",
            "Requests refused before any upstream contact, by reason.",
            ("upstream", "reason"),
            registry=registry,
        )
        self._transitions = Counter(
            "sidecar_circuit_transitions_total",
            "State changes of each upstream's circuit breaker.",
            ("upstream", "from", "to"),
            registry=registry,
        )
        self._route_transitions = Counter(
            "sidecar_route_circuit_transitions_total",
            "State changes of route-level circuit breakers.",
            ("upstream", "route", "from", "to"),
            registry=registry,
        )
        self._circuit_state = CircuitStateCollector()
        registry.register(self._circuit_state)
        self._fallbacks = Counter(
            "sidecar_fallbacks_total",
            "Failed or rejected requests answered by a fallback, by kind (cache, static).",
            ("upstream", "kind"),
            registry=registry,
        )
        self._cache_lookups = Counter(
            "sidecar_cache_lookups_total",
            "Fallback store lookups after a failure, by result (hit, miss, bypass).",
            ("upstream", "result"),
            registry=registry,
        )
        self._faults = Counter(
            "sidecar_faults_injected_total",
            "Faults injected into attempts, by kind (delay, abort).",
            ("upstream", "kind"),
            registry=registry,
        )
        self._cache = CacheCollector()
        registry.register(self._cache)
        self._ejections = EjectionCollector()
        registry.register(self._ejections)
        self._health = HealthCollector()
        registry.register(self._health)
        self._config_reloads = Counter(
            "sidecar_config_reloads_total",
            "Config reloads attempted, by result (success, error); an error keeps the old config.",
            ("result",),
            registry=registry,
        )
        # Both results exist from the start, so `increase(...{result="error"})` alerts work
        # before the first failure.
        for result in RELOAD_RESULTS:
            self._config_reloads.labels(result)
        self._config_generation = Gauge(
            "sidecar_config_generation",
            "Generation of the config in force: 1 at start, +1 on each applied reload.",
            registry=registry,
        )
        self._config_generation.set(1)

    def set_inflight_source(self, source: InflightSource) -> None:
        """Where `sidecar_inflight_requests` reads upstream → in-flight count at scrape time."""
        self._inflight.set_source(source)

    def set_breaker_source(self, source: BreakerSource) -> None:
        """Where `sidecar_circuit_state` reads (upstream, route, state) at scrape time."""
        self._circuit_state.set_source(source)

    def set_ejection_source(self, source: EjectionSource) -> None:
        """Where `sidecar_endpoint_ejected` reads each endpoint's state at scrape time."""
        self._ejections.set_source(source)

    def set_health_source(self, source: HealthSource) -> None:
        """Where `sidecar_endpoint_healthy` reads each checked endpoint's health at scrape time."""
        self._health.set_source(source)

    def set_cache_source(self, source: CacheSource) -> None:
        """Where `sidecar_cache_entries`/`sidecar_cache_bytes` read their values at scrape time."""
        self._cache.set_source(source)

    def notify(self, event: Event) -> None:
        match event:
            case RequestFinished():
                self._on_request(event)
            case AttemptFinished():
                self._on_attempt(event)
            case RetryScheduled():
                self._retries.labels(event.upstream, event.reason).inc()
            case RetryBudgetExhausted():
                self._budget_exhausted.labels(event.upstream).inc()
            case RequestRejected():
                self._rejected.labels(event.upstream, event.reason).inc()
            case CircuitTransitioned():
                if event.route == UPSTREAM_BREAKER:
                    self._transitions.labels(event.upstream, event.from_state, event.to_state).inc()
                else:
                    self._route_transitions.labels(
                        event.upstream, event.route, event.from_state, event.to_state
                    ).inc()
            case FallbackServed():
                self._fallbacks.labels(event.upstream, event.kind).inc()
            case CacheLookup():
                self._cache_lookups.labels(event.upstream, event.result).inc()
            case FaultInjected():
                self._faults.labels(event.upstream, event.kind).inc()
            case ConfigReloaded():
                self._config_reloads.labels("success").inc()
                self._config_generation.set(event.generation)
            case ConfigReloadFailed():
                self._config_reloads.labels("error").inc()
            case _:
                pass  # lifecycle events carry no metric

    def _on_request(self, event: RequestFinished) -> None:
        method = event.method
        if method not in STANDARD_METHODS:
            method = OTHER_METHOD
        self._hot.record_request(
            event.upstream, event.route, method, event.status, event.outcome, event.duration
        )

    def _on_attempt(self, event: AttemptFinished) -> None:
        self._hot.record_attempt(event.upstream, event.endpoint, event.result)

    def __repr__(self) -> str:
        return f"SidecarMetrics({self._hot!r})"
