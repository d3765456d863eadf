"""The retry budget: retries may add only a fraction of the traffic, plus a small reserve."""

from __future__ import annotations

import pytest

from sidecar.config import RetryBudgetPolicy
from sidecar.resilience.budget import RetryBudget
from tests.fakes import FakeClock


def budget(clock: FakeClock, ratio: object, min_per_second: float, window: str) -> RetryBudget:
    policy = RetryBudgetPolicy.model_validate(
        {"ratio": ratio, "min_per_second": min_per_second, "window": window}
    )
    return RetryBudget(policy, clock)


def spend_all(retry_budget: RetryBudget, limit: int = 10_000) -> int:
    """How many retries the budget allows right now."""
    spent = 0
    while spent < limit and retry_budget.try_spend():
        spent += 1
    return spent


@pytest.mark.parametrize(
    ("requests", "ratio", "min_per_second", "allowed"),
    [
        (0, "20%", 0, 0),
        (100, "20%", 0, 20),
        (101, "20%", 0, 21),
        (0, "20%", 1, 10),
        (50, "20%", 1, 20),
        (100, "0%", 0, 0),
        (10, "100%", 0, 10),
    ],
    ids=[
        "no-traffic-no-reserve",
        "ratio-only",
        "fraction-rounds-up",
        "reserve-only",
        "ratio-plus-reserve",
        "zero-ratio",
        "one-retry-per-request",
    ],
)
def test_budget_allows_ratio_of_requests_plus_reserve(
    clock: FakeClock, requests: int, ratio: str, min_per_second: float, allowed: int
) -> None:
    """Retries are allowed while retries < ratio × requests + min_per_second × window."""
    retry_budget = budget(clock, ratio, min_per_second, "10s")
    for _ in range(requests):
        retry_budget.record_request()
    assert spend_all(retry_budget) == allowed
    assert retry_budget.retries == allowed


def test_budget_refills_as_old_retries_leave_the_window(clock: FakeClock) -> None:
    """Once the window has slid past spent retries, they stop counting against the budget."""
    retry_budget = budget(clock, "0%", 1, "10s")
    assert spend_all(retry_budget) == 10
    clock.advance(5.0)
    assert not retry_budget.try_spend()
    clock.advance(5.0)
    assert spend_all(retry_budget) == 10


def test_budget_forgets_requests_older_than_the_window(clock: FakeClock) -> None:
    """Requests that left the window no longer earn retries."""
    retry_budget = budget(clock, "50%", 0, "10s")
    for _ in range(10):
        retry_budget.record_request()
    clock.advance(10.0)
    assert retry_budget.requests == 0
    assert not retry_budget.try_spend()


def test_budget_refusal_does_not_count_as_a_retry(clock: FakeClock) -> None:
    """A refused `try_spend()` leaves the retry count unchanged."""
    retry_budget = budget(clock, "50%", 0, "10s")
    retry_budget.record_request()
    retry_budget.record_request()
    assert retry_budget.try_spend()
    assert not retry_budget.try_spend()
    assert not retry_budget.try_spend()
    assert (retry_budget.requests, retry_budget.retries) == (2, 1)


def test_budget_repr_shows_live_counts(clock: FakeClock) -> None:
    """`repr()` shows requests and retries in the window."""
    retry_budget = budget(clock, "20%", 10, "10s")
    retry_budget.record_request()
    assert "requests=1, retries=0" in repr(retry_budget)
