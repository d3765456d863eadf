"""The retry budget of one upstream: retries may add at most a fraction of the traffic.

Linkerd-style (Finagle's `RetryBudget`): every original request deposits `ratio` of a retry,
every retry withdraws one, and `min_per_second × window` retries are always allowed so that
a quiet upstream can still be retried. Both counts live in one `TimeRing`, so old traffic
leaves the window in O(1) amortised time. It decides only whether a retry may be spent;
the attempt loop checks every other retry rule.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.config import RetryBudgetPolicy
from sidecar.resilience.window import TimeRing

_REQUESTS, _RETRIES = 0, 1


class RetryBudget:
    """Allows a retry while retries < ratio × requests + min_per_second × window seconds."""

    __slots__ = ("_ratio", "_reserve", "_ring")

    def __init__(self, policy: RetryBudgetPolicy, clock: Clock, buckets: int = 10) -> None:
        self._ring = TimeRing(clock, policy.window, buckets, counters=2)
        self._ratio = policy.ratio
        self._reserve = policy.min_per_second * policy.window

    def record_request(self) -> None:
        """Count one original request (never a retry)."""
        ring = self._ring
        bucket = ring.advance()
        ring.counts[_REQUESTS][bucket] += 1
        ring.totals[_REQUESTS] += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when the window has no room left."""
        ring = self._ring
        bucket = ring.advance()
        totals = ring.totals
        if totals[_RETRIES] >= self._ratio * totals[_REQUESTS] + self._reserve:
            return False
        ring.counts[_RETRIES][bucket] += 1
        totals[_RETRIES] += 1
        return True

    @property
    def requests(self) -> int:
        self._ring.advance()
        return self._ring.totals[_REQUESTS]

    @property
    def retries(self) -> int:
        self._ring.advance()
        return self._ring.totals[_RETRIES]

    def __repr__(self) -> str:
        return (
            f"RetryBudget(requests={self.requests}, retries={self.retries}, "
            f"ratio={self._ratio}, reserve={self._reserve})"
        )
