"""The token bucket behind `rate_limit` (SPEC §4.1 step 2, 429 `rate_limited`).

Refilled lazily from the clock on each call: no timer, no background task. It only answers
"may this request go now" and "how long until one may"; the admission stage builds the 429.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.config import RateLimitPolicy

# Clock differences are not exact (1000.1 - 1000.0 != 0.1), so a bucket that should hold
# exactly one token may hold 0.9999999999; treat that as one.
_EPSILON = 1e-9


class TokenBucket:
    """`burst` tokens, refilled at `rps` per second; starts full."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rps")

    def __init__(self, rps: float, burst: int, clock: Clock) -> None:
        if rps <= 0:
            raise ValueError(f"TokenBucket: rps must be > 0, got {rps}")
        if burst < 1:
            raise ValueError(f"TokenBucket: burst must be at least 1, got {burst}")
        self.rps = rps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock.now()

    @classmethod
    def from_policy(cls, policy: RateLimitPolicy, clock: Clock) -> TokenBucket:
        return cls(policy.rps, policy.burst, clock)

    def try_take(self) -> bool:
        """Take one token; False when the bucket is empty."""
        tokens = self._refill()
        if tokens < 1.0 - _EPSILON:
            return False
        self._tokens = tokens - 1.0
        return True

    def time_to_next_token(self) -> float:
        """Seconds until `try_take()` can succeed; 0 when it can now (for `Retry-After`)."""
        missing = 1.0 - self._refill()
        return 0.0 if missing <= _EPSILON else missing / self.rps

    @property
    def tokens(self) -> float:
        return self._refill()

    def _refill(self) -> float:
        now = self._clock.now()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rps)
            self._last = now
        return self._tokens

    def __repr__(self) -> str:
        return f"TokenBucket(rps={self.rps}, burst={self.burst}, tokens={self._tokens:.3f})"
