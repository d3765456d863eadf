"""The one meaning of "failure": every attempt and every request is classified here.

Retries, circuit breakers, outlier detection, metrics and logs all read these values, so a
request can never count as a success for one of them and a failure for another.
"""

from __future__ import annotations

from collections.abc import Iterable
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


class FailureMatcher:
    """A compiled `retries.on`, `circuit_breaker.failure_on` or `serve_on` list.

    Items are `FailureKind` values or exact status codes. A 4xx answer only matches when its
    code is listed; `5xx` matches every 5xx. A malformed upstream response
    (`protocol_error`) matches `5xx` (the server answered wrongly) and `reset` (the exchange
    broke before a usable answer), so every list that cares about either catches it.
    """

    __slots__ = ("_any_5xx", "_results", "_statuses")

    def __init__(self, items: Iterable[object]) -> None:
        names = {str(item) for item in items if not isinstance(item, int)}
        self._statuses = frozenset(item for item in items if isinstance(item, int))
        self._any_5xx = "5xx" in names
        results = set()
        if "connect-failure" in names:
            results.add(AttemptResult.CONNECT_FAILURE)
        if "reset" in names:
            results.update((AttemptResult.RESET, AttemptResult.PROTOCOL_ERROR))
        if "timeout" in names:
            results.add(AttemptResult.TIMEOUT)
        if self._any_5xx:
            results.add(AttemptResult.PROTOCOL_ERROR)
        self._results = frozenset(results)

    def matches(self, result: AttemptResult, status: int = 0) -> bool:
        """Whether an attempt that ended with `result` (and `status`, if any) is listed."""
        if result is AttemptResult.SUCCESS or result is AttemptResult.HTTP_5XX:
            return status in self._statuses or (self._any_5xx and status >= 500)
        return result in self._results

    def __repr__(self) -> str:
        results = sorted(r.value for r in self._results)
        return f"FailureMatcher(results={results}, statuses={sorted(self._statuses)}, any_5xx={self._any_5xx})"
