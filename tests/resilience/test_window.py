"""Sliding windows of call results: time rings and count rings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.resilience.window import CallWindow, CountWindow, TimeRing, TimeWindow
from tests.fakes import FakeClock


def test_window_time_counts_calls_failures_and_slow(clock: FakeClock) -> None:
    """A time window sums every kind of result recorded inside it."""
    window = TimeWindow(clock, length=10.0)
    window.record(failed=True, slow=False)
    window.record(failed=False, slow=True)
    window.record(failed=True, slow=True)
    assert (window.calls, window.failures, window.slow) == (3, 2, 2)


def test_window_time_forgets_results_older_than_its_length(clock: FakeClock) -> None:
    """Results leave the window once their bucket has slid out of it."""
    window = TimeWindow(clock, length=10.0, buckets=10)
    window.record(failed=True, slow=False)
    clock.advance(5.0)
    window.record(failed=False, slow=False)
    clock.advance(5.5)
    assert (window.calls, window.failures) == (1, 0)
    clock.advance(5.0)
    assert window.calls == 0


def test_window_time_keeps_results_within_the_last_bucket_widths(clock: FakeClock) -> None:
    """A result is still counted when less than (buckets - 1) bucket widths have passed."""
    window = TimeWindow(clock, length=10.0, buckets=10)
    window.record(failed=True, slow=False)
    clock.advance(8.9)
    assert window.failures == 1


def test_window_time_long_idle_gap_clears_everything(clock: FakeClock) -> None:
    """After a gap longer than the window, every bucket is empty."""
    window = TimeWindow(clock, length=1.0)
    for _ in range(5):
        window.record(failed=True, slow=True)
    clock.advance(3600.0)
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)
    window.record(failed=False, slow=False)
    assert window.calls == 1


def test_window_time_reset_forgets_everything(clock: FakeClock) -> None:
    """`reset()` empties the window at once."""
    window = TimeWindow(clock, length=10.0)
    window.record(failed=True, slow=True)
    window.reset()
    assert (window.calls, window.failures, window.slow) == (0, 0, 0)


def test_window_count_keeps_only_the_last_n_results() -> None:
    """A count window evicts the oldest result when a new one arrives at capacity."""
    window = CountWindow(3)
    window.record(failed=True, slow=True)
    window.record(failed=False, slow=False)
    window.record(failed=False, slow=False)
    assert (window.calls, window.failures, window.slow) == (3, 1, 1)
    window.record(failed=False, slow=False)
    assert (window.calls, window.failures, window.slow) == (3, 0, 0)


def test_window_count_reset_starts_over() -> None:
    """After `reset()`, a count window fills from empty and evicts only new results."""
    window = CountWindow(2)
    window.record(failed=True, slow=True)
    window.record(failed=True, slow=True)
    window.reset()
    window.record(failed=False, slow=False)
    assert (window.calls, window.failures, window.slow) == (1, 0, 0)
    window.record(failed=True, slow=False)
    window.record(failed=False, slow=False)
    assert (window.calls, window.failures, window.slow) == (2, 1, 0)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda clock: CountWindow(0), "size must be at least 1"),
        (lambda clock: TimeWindow(clock, 0.0), "length must be > 0"),
        (lambda clock: TimeWindow(clock, 1.0, buckets=0), "buckets must be at least 1"),
    ],
    ids=["count-size-zero", "time-length-zero", "time-buckets-zero"],
)
def test_window_rejects_impossible_sizes(clock: FakeClock, factory, message: str) -> None:
    """A window that could hold nothing is a programming error, reported at construction."""
    with pytest.raises(ValueError, match=message):
        factory(clock)


def test_window_time_ring_counts_independent_counters(clock: FakeClock) -> None:
    """A ring keeps parallel counters that expire together."""
    ring = TimeRing(clock, length=2.0, buckets=2, counters=2)
    bucket = ring.advance()
    ring.counts[0][bucket] += 3
    ring.totals[0] += 3
    ring.counts[1][bucket] += 1
    ring.totals[1] += 1
    clock.advance(1.0)
    ring.advance()
    assert ring.totals == [3, 1]
    clock.advance(1.0)
    ring.advance()
    assert ring.totals == [0, 0]


def test_window_repr_shows_live_counts(clock: FakeClock) -> None:
    """Both windows show their counts in `repr()`."""
    time_window = TimeWindow(clock, 10.0)
    count_window = CountWindow(5)
    windows: list[CallWindow] = [time_window, count_window]
    for window in windows:
        window.record(failed=True, slow=False)
    assert "calls=1, failures=1, slow=0" in repr(time_window)
    assert "calls=1, failures=1, slow=0" in repr(count_window)


@given(
    results=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60),
    size=st.integers(min_value=1, max_value=12),
)
def test_window_count_matches_a_naive_tail(results: list[tuple[bool, bool]], size: int) -> None:
    """A count window's totals equal those of the last `size` results, whatever the history."""
    window = CountWindow(size)
    for failed, slow in results:
        window.record(failed, slow)
    tail = results[-size:] if results else []
    assert window.calls == len(tail)
    assert window.failures == sum(failed for failed, _ in tail)
    assert window.slow == sum(slow for _, slow in tail)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from([0.0, 0.3, 1.0, 2.5, 7.0]), st.booleans()),
        max_size=60,
    )
)
def test_window_time_matches_a_naive_bucketed_sum(steps: list[tuple[float, bool]]) -> None:
    """A time window equals a naive sum over the results whose bucket is still in the ring."""
    clock = FakeClock()
    window = TimeWindow(clock, length=5.0, buckets=5)
    history: list[tuple[int, bool]] = []
    for gap, failed in steps:
        clock.advance(gap)
        window.record(failed, slow=False)
        history.append((int(clock.now() // 1.0), failed))
        current = int(clock.now() // 1.0)
        live = [f for slot, f in history if current - slot < 5]
        assert window.calls == len(live)
        assert window.failures == sum(live)
