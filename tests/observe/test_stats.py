"""Tests for sidecar.observe.stats: the sliding window behind `/state` and the status page."""

from __future__ import annotations

import itertools

import pytest

from sidecar.events import CircuitTransitioned, RequestFinished
from sidecar.observe.stats import (
    LATENCY_BOUNDS,
    RECENT_TRANSITIONS,
    RequestStats,
    TransitionRecord,
    quantile,
)
from sidecar.outcome import Outcome
from tests.fakes import FakeClock


def finished(
    upstream: str = "svc",
    outcome: Outcome = Outcome.SUCCESS,
    duration: float = 0.01,
    method: str = "GET",
) -> RequestFinished:
    return RequestFinished(
        wall_time=0.0,
        request_id="r",
        listener="app",
        upstream=upstream,
        route="default",
        method=method,
        path="/",
        status=200,
        outcome=outcome,
        attempts=1,
        duration=duration,
        bytes_in=0,
        bytes_out=0,
        circuit_state="closed",
        error="",
    )


def transition(
    route: str = "default", to: str = "open", upstream: str = "svc"
) -> CircuitTransitioned:
    return CircuitTransitioned(upstream, route, "closed", to, f"reason for {to}")


@pytest.fixture
def stats(clock: FakeClock) -> RequestStats:
    wall = itertools.count(1_700_000_000)
    return RequestStats(clock, wall_clock=lambda: float(next(wall)))


def record(stats: RequestStats, count: int, **fields: object) -> None:
    for _ in range(count):
        stats.notify(finished(**fields))  # type: ignore[arg-type]


def test_stats_rate_counts_requests_per_second_over_the_covered_span(
    stats: RequestStats, clock: FakeClock
) -> None:
    """Ten requests in each of two seconds read as 10 requests/s once both have passed."""
    record(stats, 10)
    clock.advance(1.0)
    record(stats, 10)
    clock.advance(1.0)
    assert stats.summary("svc").requests_per_s == pytest.approx(10.0)


def test_stats_rate_is_steady_under_a_steady_load(stats: RequestStats, clock: FakeClock) -> None:
    """After 20 s at 10 requests/s the 10 s window reads 10 requests/s, not more or less."""
    for _ in range(20):
        record(stats, 10)
        clock.advance(1.0)
    assert stats.summary("svc").requests_per_s == pytest.approx(10.0)


def test_stats_rate_spreads_a_first_burst_over_at_least_one_second(
    stats: RequestStats, clock: FakeClock
) -> None:
    """Requests seen in the very first instant count over one second, not over zero time."""
    record(stats, 5)
    assert stats.summary("svc").requests_per_s == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(9.5, 10), (10.0, 0), (30.0, 0)],
    ids=["still-inside", "slid-out", "long-idle"],
)
def test_stats_window_slides_old_buckets_out(
    stats: RequestStats, clock: FakeClock, elapsed: float, expected: int
) -> None:
    """A bucket counts while it is one of the last 10 seconds and is forgotten afterwards."""
    record(stats, 10, outcome=Outcome.TIMEOUT)
    clock.advance(elapsed)
    summary = stats.summary("svc")
    assert summary.requests_per_s * max(elapsed, 1.0) == pytest.approx(expected)
    if expected == 0:
        assert (summary.error_rate, summary.p99) == (0.0, None)


def test_stats_reused_slot_starts_from_zero(stats: RequestStats, clock: FakeClock) -> None:
    """A ring slot reused 10 s later holds only the new bucket's requests and latencies."""
    record(stats, 50, outcome=Outcome.RESET, duration=30.0)
    clock.advance(10.0)
    record(stats, 2, duration=0.03)
    summary = stats.summary("svc")
    assert summary.error_rate == 0.0
    assert summary.p99 is not None
    assert summary.p99 < 0.05


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (Outcome.SUCCESS, False),
        (Outcome.FALLBACK_CACHE, False),
        (Outcome.FALLBACK_STATIC, False),
        (Outcome.UPSTREAM_ERROR, True),
        (Outcome.REJECTED, True),
        (Outcome.TIMEOUT, True),
        (Outcome.UNREACHABLE, True),
        (Outcome.RESET, True),
    ],
    ids=lambda value: str(value),
)
def test_stats_error_rate_counts_every_outcome_but_success_and_fallbacks(
    stats: RequestStats, outcome: Outcome, error: bool
) -> None:
    """One request in four with `outcome` makes a 25 % error rate exactly when it is an error."""
    record(stats, 3)
    record(stats, 1, outcome=outcome)
    assert stats.summary("svc").error_rate == (0.25 if error else 0.0)


def test_stats_p99_interpolates_within_its_bucket(stats: RequestStats) -> None:
    """100 requests of 30 ms put the p99 at 99 % of the way through the 25–50 ms bucket."""
    record(stats, 100, duration=0.03)
    assert stats.summary("svc").p99 == pytest.approx(0.025 + 0.025 * 0.99)


def test_stats_p99_ignores_tunnel_lifetimes(stats: RequestStats) -> None:
    """A CONNECT tunnel counts as a request but its open time is not a latency sample."""
    record(stats, 1, method="CONNECT", duration=300.0)
    record(stats, 1, duration=0.003)
    summary = stats.summary("svc")
    assert summary.requests_per_s == pytest.approx(2.0)
    assert summary.p99 is not None
    assert summary.p99 <= 0.005


@pytest.mark.parametrize(
    ("histogram", "expected"),
    [
        ([0] * (len(LATENCY_BOUNDS) + 1), None),
        ([100] + [0] * len(LATENCY_BOUNDS), 0.001 * 0.99),
        ([0] * len(LATENCY_BOUNDS) + [5], LATENCY_BOUNDS[-1]),
        ([0, 0, 99] + [0] * (len(LATENCY_BOUNDS) - 3) + [1], 0.005),
    ],
    ids=["empty", "first-bucket-from-zero", "all-in-inf", "rank-at-bucket-top"],
)
def test_stats_quantile_follows_histogram_quantile(
    histogram: list[int], expected: float | None
) -> None:
    """The quantile matches Prometheus' histogram_quantile rules at the edges."""
    result = quantile(histogram, 0.99)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_stats_keep_upstreams_apart(stats: RequestStats) -> None:
    """Each upstream has its own window; requests without an upstream are not counted."""
    record(stats, 4, upstream="a")
    record(stats, 1, upstream="b", outcome=Outcome.TIMEOUT)
    record(stats, 7, upstream="")
    assert stats.summary("a").requests_per_s == pytest.approx(4.0)
    assert stats.summary("b").error_rate == 1.0
    assert stats.summary("").requests_per_s == 0.0
    assert stats.summary("never-seen").p99 is None


def test_stats_keeps_the_last_transitions_oldest_first(stats: RequestStats) -> None:
    """Only the last 10 transitions of an upstream are kept, with wall time, route and reason."""
    for index in range(RECENT_TRANSITIONS + 2):
        stats.notify(transition(route=f"r{index}"))
    recent = stats.transitions("svc")
    assert len(recent) == RECENT_TRANSITIONS
    assert [r.route for r in recent] == [f"r{i}" for i in range(2, RECENT_TRANSITIONS + 2)]
    assert recent[0] == TransitionRecord(1_700_000_002.0, "r2", "closed", "open", "reason for open")
    assert stats.transitions("other") == []


def test_stats_since_is_the_last_transition_of_that_breaker(stats: RequestStats) -> None:
    """`since` answers per (upstream, route) the wall time of its latest transition."""
    stats.notify(transition(route="default", to="open"))
    stats.notify(transition(route="reports", to="open"))
    stats.notify(transition(route="default", to="half_open"))
    assert stats.since("svc", "default") == 1_700_000_002.0
    assert stats.since("svc", "reports") == 1_700_000_001.0
    assert stats.since("svc", "unknown") is None
    assert stats.since("other", "default") is None


def test_stats_repr_shows_what_is_tracked(stats: RequestStats) -> None:
    """The repr names how many upstreams have windows and transitions."""
    record(stats, 1)
    stats.notify(transition())
    assert repr(stats) == "RequestStats(upstreams=1, with_transitions=1)"
