"""Backoff between attempts and the upstream's Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import BackoffPolicy
from sidecar.resilience.backoff import Backoff, parse_retry_after

# 2024-05-01T12:00:00Z, a Wednesday.
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def exact(**overrides: object) -> Backoff:
    """A backoff without jitter, with SPEC defaults except for `overrides`."""
    return Backoff(BackoffPolicy.model_validate({"jitter": "none", **overrides}), random.Random(0))


def test_backoff_exact_schedule_doubles_up_to_max() -> None:
    """Without jitter the delays are initial × multiplier^(n-1), capped at max."""
    backoff = exact(initial="25ms", max="1s", multiplier=2)
    delays = [backoff.delay(n) for n in range(1, 9)]
    assert delays == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"initial": "100ms", "max": "1s", "multiplier": 1}, [0.1, 0.1, 0.1]),
        ({"initial": "0s", "max": "1s"}, [0.0, 0.0, 0.0]),
        ({"initial": "1s", "max": "1s", "multiplier": 3}, [1.0, 1.0, 1.0]),
        ({"initial": "100ms", "max": "2s", "multiplier": 3}, [0.1, 0.3, 0.9]),
    ],
    ids=["constant", "zero", "initial-is-max", "triple"],
)
def test_backoff_exact_schedule_edge_policies(
    overrides: dict[str, object], expected: list[float]
) -> None:
    """Flat, zero, already-capped and non-doubling schedules come out exactly."""
    backoff = exact(**overrides)
    assert [backoff.delay(n) for n in (1, 2, 3)] == pytest.approx(expected)


def test_backoff_huge_retry_numbers_stay_at_max() -> None:
    """A very late retry waits `max` and does not overflow."""
    assert exact(initial="25ms", max="1s").delay(100_000) == 1.0
    assert exact(initial="0s", max="1s").delay(100_000) == 0.0


def test_backoff_full_jitter_spreads_within_the_cap() -> None:
    """Full jitter draws from [0, capped backoff] and does not repeat one value."""
    backoff = Backoff(BackoffPolicy(initial="100ms", max="1s"), random.Random(42))
    first = [backoff.delay(1) for _ in range(200)]
    late = [backoff.delay(10) for _ in range(200)]
    assert all(0.0 <= d <= 0.1 for d in first)
    assert all(0.0 <= d <= 1.0 for d in late)
    assert max(late) > 0.5
    assert len(set(late)) > 100


def test_backoff_full_jitter_is_reproducible_from_the_seed() -> None:
    """The same seed gives the same jittered schedule."""
    policy = BackoffPolicy()
    one = Backoff(policy, random.Random(7))
    two = Backoff(policy, random.Random(7))
    assert [one.delay(n) for n in range(1, 6)] == [two.delay(n) for n in range(1, 6)]


def test_backoff_rejects_retry_number_zero() -> None:
    """Retries are numbered from 1; 0 is a programming error."""
    with pytest.raises(ValueError, match="starts at 1"):
        exact().delay(0)


def test_backoff_repr_shows_its_policy() -> None:
    """`repr()` shows the schedule's parameters."""
    assert "jitter=none" in repr(exact())


@given(
    initial_ms=st.integers(0, 2000),
    extra_ms=st.integers(0, 60_000),
    multiplier=st.floats(1.0, 10.0),
    jitter=st.sampled_from(["full", "none"]),
    retry_number=st.integers(1, 5000),
    seed=st.integers(0, 2**32),
)
def test_backoff_stays_within_zero_and_max(
    initial_ms: int, extra_ms: int, multiplier: float, jitter: str, retry_number: int, seed: int
) -> None:
    """Every delay, jittered or not, lies in [0, max]."""
    policy = BackoffPolicy.model_validate(
        {
            "initial": f"{initial_ms}ms",
            "max": f"{initial_ms + extra_ms}ms",
            "multiplier": multiplier,
            "jitter": jitter,
        }
    )
    delay = Backoff(policy, random.Random(seed)).delay(retry_number)
    assert 0.0 <= delay <= policy.max
    if jitter == "none":
        assert delay >= min(policy.initial, policy.max)


# -- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0.0),
        (b"120", 120.0),
        (b"  7\t", 7.0),
        (b"Wed, 01 May 2024 12:00:30 GMT", 30.0),
        (b"Wednesday, 01-May-24 12:01:00 GMT", 60.0),
        (b"Wed May  1 12:00:05 2024", 5.0),
        (b"Wed, 01 May 2024 11:00:00 GMT", 0.0),
        (b"Wed, 01 May 2024 12:00:60 GMT", 60.0),
    ],
    ids=[
        "zero",
        "seconds",
        "seconds-with-whitespace",
        "imf-fixdate",
        "rfc850",
        "asctime",
        "date-in-the-past",
        "leap-second",
    ],
)
def test_backoff_retry_after_parses_seconds_and_dates(value: bytes, expected: float) -> None:
    """Delay-seconds and all three HTTP-date formats become seconds from now."""
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"-5",
        b"1.5",
        b"+3",
        b"soon",
        b"120 seconds",
        b"Wed, 01 May 2024 12:00:30 UTC",
        b"Wed, 31 Apr 2024 12:00:30 GMT",
        b"Wed, 01 May 2024 24:00:00 GMT",
        b"Xyz, 01 May 2024 12:00:30 GMT",
        b"Wed, 01 Foo 2024 12:00:30 GMT",
        b"Wed, 01 May 0000 12:00:00 GMT",
        "١٢".encode(),
        b"\xff\xfe",
    ],
    ids=[
        "empty",
        "negative",
        "fraction",
        "plus-sign",
        "word",
        "unit-suffix",
        "not-gmt",
        "no-such-day",
        "hour-24",
        "bad-weekday",
        "bad-month",
        "year-zero",
        "arabic-digits",
        "not-ascii",
    ],
)
def test_backoff_retry_after_rejects_garbage(value: bytes) -> None:
    """Anything but delay-seconds or an HTTP-date is None, never a guess."""
    assert parse_retry_after(value, NOW) is None


def test_backoff_retry_after_huge_seconds_is_infinite_not_an_error() -> None:
    """An absurdly long delay-seconds is valid and means "longer than any limit"."""
    assert parse_retry_after(b"9" * 5000, NOW) == float("inf")


def test_backoff_retry_after_two_digit_year_is_never_far_in_the_future() -> None:
    """An RFC 850 year more than 50 years ahead belongs to the previous century."""
    assert parse_retry_after(b"Sunday, 06-Nov-94 08:49:37 GMT", NOW) == 0.0
    future = parse_retry_after(b"Thursday, 01-May-25 12:00:00 GMT", NOW)
    assert future == pytest.approx(365 * 86_400.0)


def test_backoff_retry_after_round_trips_a_formatted_date() -> None:
    """A date written by the standard library's HTTP formatter is read back exactly."""
    later = datetime.fromtimestamp(NOW + 3600, tz=UTC)
    value = format_datetime(later, usegmt=True).encode()
    assert parse_retry_after(value, NOW) == 3600.0
