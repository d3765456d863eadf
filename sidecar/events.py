"""Frozen event records the request path and lifecycle emit, and the fan-out to observers.

Stages never call prometheus_client or write log lines; they emit one of these and the
observers in `sidecar.observe` turn it into metrics and JSON lines. The fan-out never raises:
a broken observer must not fail a request.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Protocol

from sidecar.outcome import AttemptResult, Outcome


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """One downstream request is over (answered, failed or aborted)."""

    wall_time: float  # seconds since the epoch when the request started
    request_id: str
    listener: str
    upstream: str  # "" when no upstream was chosen (bad request, unknown host)
    route: str
    method: str
    path: str  # without the query string unless access_log.include_query
    status: int  # 0 when the connection was closed without a response
    outcome: Outcome
    attempts: int
    duration: float  # seconds
    bytes_in: int  # request body bytes received from the client
    bytes_out: int  # response body bytes sent to the client
    circuit_state: str  # "closed" until breakers exist
    error: str  # the SPEC §4.6 code of a generated answer, "" otherwise


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """One attempt to one endpoint is classified (headers arrived, or it failed)."""

    upstream: str
    endpoint: str
    result: AttemptResult
    duration: float


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A failed attempt will be retried after `delay` seconds."""

    upstream: str
    reason: str  # the attempt result (timeout, reset, connect_failure) or the status code
    delay: float


@dataclass(frozen=True, slots=True)
class RetryBudgetExhausted:
    """A retry was allowed by every other rule but the upstream's retry budget had no room."""

    upstream: str


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """Admission refused a request before any upstream contact."""

    upstream: str
    reason: str  # circuit_open, bulkhead_full, rate_limited, unknown_upstream


@dataclass(frozen=True, slots=True)
class CircuitTransitioned:
    """A breaker changed state; `reason` names the threshold that tripped, with its figures."""

    upstream: str
    route: str  # "default" for the upstream's own breaker
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True, slots=True)
class EndpointEjected:
    """Outlier detection took an endpoint out of rotation for `duration` seconds."""

    upstream: str
    endpoint: str
    duration: float
    failures: int


@dataclass(frozen=True, slots=True)
class EndpointHealthChanged:
    """Active health checks took an endpoint out of rotation (`healthy` False) or back in."""

    upstream: str
    endpoint: str
    healthy: bool
    reason: str  # which checks decided it, and what the last one saw


@dataclass(frozen=True, slots=True)
class FaultInjected:
    """Fault injection delayed or aborted an attempt."""

    upstream: str
    kind: str  # delay, abort


@dataclass(frozen=True, slots=True)
class FallbackServed:
    """A failed or rejected request was answered from the fallback store or the static response."""

    upstream: str
    kind: str  # cache, static


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The fallback store was consulted after a failure: hit, miss, or bypassed (not cacheable)."""

    upstream: str
    result: str  # hit, miss, bypass


@dataclass(frozen=True, slots=True)
class ServerStarted:
    """Every listener and the admin API are bound; the sidecar is ready."""

    listeners: tuple[tuple[str, str], ...]  # (name, "host:port")
    admin: str
    config_source: str
    version: str


@dataclass(frozen=True, slots=True)
class ShutdownStarted:
    """A SIGTERM/SIGINT arrived: readiness is off, draining begins."""

    signal: str
    drain_delay: float
    drain_timeout: float


@dataclass(frozen=True, slots=True)
class ListenersClosed:
    """The drain delay passed; no new connections are accepted."""

    inflight: int


@dataclass(frozen=True, slots=True)
class ShutdownFinished:
    """The process is about to exit; `abandoned` requests were still in flight at the deadline."""

    abandoned: int
    forced: bool  # a second signal cut the drain short


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    """A reloaded config took effect for new requests; in-flight ones finish under the old one."""

    generation: int  # the new config's generation (the config loaded at start is 1)
    source: str  # the file it was read from
    upstreams_kept: tuple[str, ...]  # endpoints unchanged: breaker, cache and health kept
    upstreams_rebuilt: tuple[str, ...]  # new, or endpoints changed: state starts fresh


@dataclass(frozen=True, slots=True)
class ConfigReloadFailed:
    """A reload was refused (invalid file, unbindable listener); the running config is unchanged."""

    source: str
    errors: tuple[str, ...]  # one line per problem, as `sidecar check` prints them


@dataclass(frozen=True, slots=True)
class ProxyFault:
    """An unexpected exception in the request path (a bug); the client got a 500."""

    request_id: str
    detail: str


Event = (
    RequestFinished
    | AttemptFinished
    | RetryScheduled
    | RetryBudgetExhausted
    | RequestRejected
    | CircuitTransitioned
    | EndpointEjected
    | EndpointHealthChanged
    | FaultInjected
    | FallbackServed
    | CacheLookup
    | ServerStarted
    | ShutdownStarted
    | ListenersClosed
    | ShutdownFinished
    | ConfigReloaded
    | ConfigReloadFailed
    | ProxyFault
)


class Observer(Protocol):
    """Receives every event; must be fast, as it runs on the request path."""

    def notify(self, event: Event) -> None: ...


class Observers:
    """Fan-out to observers; an observer that raises is reported on stderr and skipped."""

    __slots__ = ("_observers",)

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self._observers: tuple[Observer, ...] = tuple(observers or ())

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)

    def remove(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)

    def emit(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.notify(event)
            except Exception:  # noqa: BLE001 - a broken observer must never fail a request
                sys.stderr.write(f"observer {observer!r} failed on {type(event).__name__}:\n")
                traceback.print_exc(file=sys.stderr)

    def __repr__(self) -> str:
        return f"Observers({len(self._observers)})"
