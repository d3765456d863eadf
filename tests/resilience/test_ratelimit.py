"""The token bucket behind `rate_limit`."""

from __future__ import annotations

import pytest

from sidecar.config import RateLimitPolicy
from sidecar.resilience.ratelimit import TokenBucket
from tests.fakes import FakeClock


def test_ratelimit_starts_full_and_allows_a_burst(clock: FakeClock) -> None:
    """A new bucket admits `burst` requests at once, then refuses."""
    bucket = TokenBucket(rps=10.0, burst=5, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]


def test_ratelimit_refills_at_rps(clock: FakeClock) -> None:
    """Tokens come back at `rps` per second, one request per token."""
    bucket = TokenBucket(rps=10.0, burst=1, clock=clock)
    assert bucket.try_take()
    clock.advance(0.05)
    assert not bucket.try_take()
    clock.advance(0.05)
    assert bucket.try_take()
    assert not bucket.try_take()


def test_ratelimit_never_holds_more_than_burst(clock: FakeClock) -> None:
    """A long quiet period refills the bucket only up to `burst`."""
    bucket = TokenBucket(rps=100.0, burst=3, clock=clock)
    bucket.try_take()
    clock.advance(3600.0)
    assert bucket.tokens == 3.0
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("rps", "wait", "expected"),
    [(10.0, 0.0, 0.1), (10.0, 0.025, 0.075), (0.5, 0.0, 2.0), (10.0, 0.1, 0.0)],
    ids=["just-emptied", "partly-refilled", "slow-rate", "already-refilled"],
)
def test_ratelimit_time_to_next_token(
    clock: FakeClock, rps: float, wait: float, expected: float
) -> None:
    """`time_to_next_token()` is how long until `try_take()` succeeds (0 when it would now)."""
    bucket = TokenBucket(rps=rps, burst=1, clock=clock)
    assert bucket.time_to_next_token() == 0.0
    assert bucket.try_take()
    clock.advance(wait)
    assert bucket.time_to_next_token() == pytest.approx(expected)


def test_ratelimit_time_to_next_token_is_exactly_enough(clock: FakeClock) -> None:
    """Advancing by `time_to_next_token()` always makes the next `try_take()` succeed."""
    bucket = TokenBucket(rps=3.0, burst=2, clock=clock)
    for _ in range(50):
        while bucket.try_take():
            pass
        clock.advance(bucket.time_to_next_token())
        assert bucket.try_take()


def test_ratelimit_from_policy(clock: FakeClock) -> None:
    """A bucket built from `rate_limit` config uses its rps and burst."""
    bucket = TokenBucket.from_policy(RateLimitPolicy(rps=200.0, burst=50), clock)
    assert (bucket.rps, bucket.burst) == (200.0, 50)


@pytest.mark.parametrize(
    ("rps", "burst", "message"),
    [(0.0, 1, "rps must be > 0"), (1.0, 0, "burst must be at least 1")],
    ids=["zero-rps", "zero-burst"],
)
def test_ratelimit_rejects_impossible_buckets(
    clock: FakeClock, rps: float, burst: int, message: str
) -> None:
    """A bucket that could never admit anything is a programming error."""
    with pytest.raises(ValueError, match=message):
        TokenBucket(rps=rps, burst=burst, clock=clock)


def test_ratelimit_repr_shows_tokens(clock: FakeClock) -> None:
    """`repr()` shows the tokens left."""
    bucket = TokenBucket(rps=1.0, burst=2, clock=clock)
    bucket.try_take()
    assert "tokens=1.000" in repr(bucket)
