"""The one meaning of "failure": every attempt and every request is classified here.

Retries, circuit breakers, outlier detection, metrics and logs all read these values, so a
request can never count as a success for one of them and a failure for another.
"""

from __future__ import annotations

from enum import StrEnum


class AttemptResult(StrEnum):
    """What one attempt to one endpoint produced (metric label `result`)."""

    SUCCESS = "success"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    PROTOCOL_ERROR = "protocol_error"


class Outcome(StrEnum):
    """How a whole request ended (metric label `outcome`, access-log field `outcome`)."""

    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream_error"
    FALLBACK_CACHE = "fallback_cache"
    FALLBACK_STATIC = "fallback_static"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    RESET = "reset"


def classify_status(status: int) -> AttemptResult:
    """An upstream answer is a failure for the attempt only when it is a 5xx."""
    return AttemptResult.HTTP_5XX if status >= 500 else AttemptResult.SUCCESS


def outcome_for_status(status: int) -> Outcome:
    """A passed-through upstream response is an `upstream_error` when it is a 5xx."""
    return Outcome.UPSTREAM_ERROR if status >= 500 else Outcome.SUCCESS
