"""Live request statistics per upstream for `/state` and the status page (SPEC §5).

`RequestStats` is an event observer. Over a sliding window of `WINDOW_BUCKETS` buckets of
`BUCKET_WIDTH` seconds (10 × 1 s) it keeps, per upstream, the request count, the error count
and a small latency histogram per bucket, so requests/s, the error rate and an interpolated
p99 can be read at any time; and it keeps the last `RECENT_TRANSITIONS` circuit transitions
of each upstream with their wall time. Prometheus keeps the long-term series; this is the
"right now" a person looks at.

It runs on the request path: recording is O(1) (a ring slot, a bisect over fixed bounds) and
allocates nothing per request beyond the per-upstream ring built on first sight. It reads
time only through the injected `Clock` (and the wall clock for transition times), does no
I/O and never changes how requests are handled.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.clock import Clock, wall_time
from sidecar.events import CircuitTransitioned, Event, RequestFinished
from sidecar.observe.metrics import DURATION_BUCKETS
from sidecar.outcome import Outcome

WINDOW_BUCKETS = 10
BUCKET_WIDTH = 1.0  # seconds
RECENT_TRANSITIONS = 10
# The same bounds as `sidecar_request_duration_seconds`, so the page's p99 and a
# `histogram_quantile(0.99, ...)` over the last few seconds agree.
LATENCY_BOUNDS = DURATION_BUCKETS
# Outcomes where the application got the answer it would have had from a healthy upstream
# (or a fallback standing in for it); every other outcome is an error.
NOT_ERRORS = frozenset({Outcome.SUCCESS, Outcome.FALLBACK_CACHE, Outcome.FALLBACK_STATIC})
_SLOTS = len(LATENCY_BOUNDS) + 1  # the last slot is +Inf


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One circuit transition as the status page shows it; `at` is seconds since the epoch."""

    at: float
    route: str
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """An upstream's figures over the window; `p99` is in seconds, None without samples."""

    requests_per_s: float
    error_rate: float
    p99: float | None


EMPTY_SUMMARY = WindowSummary(0.0, 0.0, None)


class _Ring:
    """One upstream's buckets: slot `s` holds bucket number `epochs[s]` (time // width)."""

    __slots__ = ("counts", "epochs", "errors", "first", "latency")

    def __init__(self, bucket: int) -> None:
        self.first = bucket  # the first bucket with a request: the window never starts before
        self.epochs = [-1] * WINDOW_BUCKETS
        self.counts = [0] * WINDOW_BUCKETS
        self.errors = [0] * WINDOW_BUCKETS
        self.latency = [0] * (WINDOW_BUCKETS * _SLOTS)  # one histogram per slot, flattened

    def record(self, bucket: int, failed: bool, duration: float | None) -> None:
        slot = bucket % WINDOW_BUCKETS
        if self.epochs[slot] != bucket:  # the slot still holds a bucket that left the window
            self.epochs[slot] = bucket
            self.counts[slot] = 0
            self.errors[slot] = 0
            start = slot * _SLOTS
            self.latency[start : start + _SLOTS] = _ZEROS
        self.counts[slot] += 1
        if failed:
            self.errors[slot] += 1
        if duration is not None:
            self.latency[slot * _SLOTS + bisect_left(LATENCY_BOUNDS, duration)] += 1

    def __repr__(self) -> str:
        return f"_Ring(requests={sum(self.counts)}, errors={sum(self.errors)})"


_ZEROS = [0] * _SLOTS


class RequestStats:
    """Requests/s, error rate and p99 per upstream over the last 10 s, plus recent transitions.

    Errors are requests whose outcome is anything but `success`, `fallback_cache` or
    `fallback_static`: rejected, timeout, unreachable, reset and upstream_error all count.
    CONNECT tunnels count as requests but not as latency samples (their duration is how long
    the tunnel stayed open).
    """

    __slots__ = ("_clock", "_rings", "_since", "_transitions", "_wall_clock")

    def __init__(self, clock: Clock, *, wall_clock: Callable[[], float] = wall_time) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._rings: dict[str, _Ring] = {}
        self._transitions: dict[str, deque[TransitionRecord]] = {}
        self._since: dict[tuple[str, str], float] = {}  # (upstream, route) → wall time

    def notify(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self._on_request(event)
        elif isinstance(event, CircuitTransitioned):
            self._on_transition(event)

    def _on_request(self, event: RequestFinished) -> None:
        upstream = event.upstream
        if not upstream:
            return  # refused before routing; no upstream to account it to
        bucket = int(self._clock.now() // BUCKET_WIDTH)
        ring = self._rings.get(upstream)
        if ring is None:
            ring = self._rings[upstream] = _Ring(bucket)
        duration = None if event.method == "CONNECT" else event.duration
        ring.record(bucket, event.outcome not in NOT_ERRORS, duration)

    def _on_transition(self, event: CircuitTransitioned) -> None:
        at = self._wall_clock()
        recent = self._transitions.get(event.upstream)
        if recent is None:
            recent = self._transitions[event.upstream] = deque(maxlen=RECENT_TRANSITIONS)
        recent.append(
            TransitionRecord(at, event.route, event.from_state, event.to_state, event.reason)
        )
        self._since[(event.upstream, event.route)] = at

    # -- reading -------------------------------------------------------------------------

    def summary(self, upstream: str) -> WindowSummary:
        """The window's figures for `upstream` now; zeros when it had no recent request."""
        ring = self._rings.get(upstream)
        if ring is None:
            return EMPTY_SUMMARY
        now = self._clock.now()
        current = int(now // BUCKET_WIDTH)
        oldest = max(current - WINDOW_BUCKETS + 1, ring.first)
        requests = errors = 0
        histogram = [0] * _SLOTS
        for slot, bucket in enumerate(ring.epochs):
            if oldest <= bucket <= current:
                requests += ring.counts[slot]
                errors += ring.errors[slot]
                start = slot * _SLOTS
                for index in range(_SLOTS):
                    histogram[index] += ring.latency[start + index]
        if requests == 0:
            return EMPTY_SUMMARY
        # The window covers whole buckets back to `oldest` plus the current one so far; at
        # least one bucket wide, so the first moments after a request do not read as a burst.
        covered = max(now - oldest * BUCKET_WIDTH, BUCKET_WIDTH)
        return WindowSummary(requests / covered, errors / requests, quantile(histogram, 0.99))

    def transitions(self, upstream: str) -> list[TransitionRecord]:
        """The last transitions of `upstream`'s breakers (any route), oldest first."""
        return list(self._transitions.get(upstream, ()))

    def since(self, upstream: str, route: str) -> float | None:
        """Wall time of the last transition of that breaker; None if it never changed."""
        return self._since.get((upstream, route))

    def __repr__(self) -> str:
        return (
            f"RequestStats(upstreams={len(self._rings)}, with_transitions={len(self._transitions)})"
        )


def quantile(histogram: list[int], q: float) -> float | None:
    """The `q` quantile of a histogram over `LATENCY_BOUNDS`, interpolated within its bucket.

    As Prometheus' `histogram_quantile`: linear within the bucket, the first bucket starts at
    0, and a rank in the +Inf bucket answers the highest finite bound.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= rank:
            if index == len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            lower = LATENCY_BOUNDS[index - 1] if index > 0 else 0.0
            upper = LATENCY_BOUNDS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS[-1]  # unreachable: the loop always finds the rank
