"""The one classification of attempts shared by retries, breakers and metrics."""

from __future__ import annotations

import pytest

from sidecar.config import FailureKind
from sidecar.outcome import (
    AttemptResult,
    FailureMatcher,
    Outcome,
    classify_status,
    outcome_for_status,
)

BREAKER_DEFAULT = FailureMatcher(
    [FailureKind.HTTP_5XX, FailureKind.CONNECT_FAILURE, FailureKind.RESET, FailureKind.TIMEOUT]
)
RETRY_DEFAULT = FailureMatcher(
    [FailureKind.CONNECT_FAILURE, FailureKind.RESET, FailureKind.TIMEOUT, 502, 503, 504]
)


@pytest.mark.parametrize(
    ("status", "result", "outcome"),
    [
        (200, AttemptResult.SUCCESS, Outcome.SUCCESS),
        (404, AttemptResult.SUCCESS, Outcome.SUCCESS),
        (429, AttemptResult.SUCCESS, Outcome.SUCCESS),
        (500, AttemptResult.HTTP_5XX, Outcome.UPSTREAM_ERROR),
        (503, AttemptResult.HTTP_5XX, Outcome.UPSTREAM_ERROR),
    ],
    ids=["200", "404", "429", "500", "503"],
)
def test_outcome_status_classification(
    status: int, result: AttemptResult, outcome: Outcome
) -> None:
    """Only 5xx answers are failed attempts and upstream_error outcomes."""
    assert classify_status(status) is result
    assert outcome_for_status(status) is outcome


@pytest.mark.parametrize(
    ("result", "status", "breaker", "retry"),
    [
        (AttemptResult.SUCCESS, 200, False, False),
        (AttemptResult.SUCCESS, 404, False, False),
        (AttemptResult.SUCCESS, 429, False, False),
        (AttemptResult.HTTP_5XX, 500, True, False),
        (AttemptResult.HTTP_5XX, 503, True, True),
        (AttemptResult.CONNECT_FAILURE, 0, True, True),
        (AttemptResult.RESET, 0, True, True),
        (AttemptResult.TIMEOUT, 0, True, True),
        (AttemptResult.PROTOCOL_ERROR, 0, True, True),
    ],
    ids=["200", "404", "429", "500", "503", "connect", "reset", "timeout", "protocol"],
)
def test_outcome_default_lists_match_the_spec(
    result: AttemptResult, status: int, breaker: bool, retry: bool
) -> None:
    """The default failure_on counts all 5xx; the default retries.on only 502/503/504."""
    assert BREAKER_DEFAULT.matches(result, status) is breaker
    assert RETRY_DEFAULT.matches(result, status) is retry


def test_outcome_listed_4xx_counts_only_when_listed() -> None:
    """A 4xx is a failure only for a list that names its code."""
    with_429 = FailureMatcher([FailureKind.HTTP_5XX, 429])
    assert with_429.matches(AttemptResult.SUCCESS, 429)
    assert not with_429.matches(AttemptResult.SUCCESS, 409)
    assert not with_429.matches(AttemptResult.TIMEOUT)
