"""SPEC §4.1 step 2, upstream-wide: the rate limit, then the bulkhead.

Both are shared by every route of an upstream (routes cannot override them). A rejected
request is never sent upstream; its error carries the `Retry-After` the client should honour.
An admitted request holds its bulkhead slot until its answer is settled (written, or let go),
not merely until the stages return it: a slow body still counts against the bulkhead.
The breaker is the third admission check, but it lives in the attempt loop because every
attempt, not only the first, needs its permit.
"""

from __future__ import annotations

from sidecar.errors import BulkheadFullError, RateLimitedError
from sidecar.events import Observers, RequestRejected
from sidecar.pipeline.answer import Answer
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.resilience.gate import BulkheadGate
from sidecar.resilience.ratelimit import TokenBucket


class Admission:
    """Token bucket (429 `rate_limited`) then bulkhead slot (503 `bulkhead_full`)."""

    __slots__ = ("_bucket", "_gate", "_next", "_observers", "_queue_timeout", "_upstream")

    def __init__(
        self,
        upstream: str,
        next_stage: Stage,
        gate: BulkheadGate,
        queue_timeout: float,
        bucket: TokenBucket | None,
        observers: Observers,
    ) -> None:
        self._upstream = upstream
        self._next = next_stage
        self._gate = gate
        self._queue_timeout = queue_timeout
        self._bucket = bucket
        self._observers = observers

    async def __call__(self, exchange: Exchange) -> Answer:
        bucket = self._bucket
        if bucket is not None and not bucket.try_take():
            self._observers.emit(RequestRejected(self._upstream, "rate_limited"))
            raise RateLimitedError(
                f"the rate limit of {self._upstream} is exhausted",
                retry_after=bucket.time_to_next_token(),
            )
        gate = self._gate
        if not await gate.acquire(self._queue_timeout):
            self._observers.emit(RequestRejected(self._upstream, "bulkhead_full"))
            raise BulkheadFullError(
                f"{self._upstream} has {gate.in_flight} requests in flight and its queue is full"
                " or the wait timed out"
            )
        try:
            answer = await self._next(exchange)
        except BaseException:
            gate.release()
            raise
        answer.gate = gate  # released when the answer is settled
        return answer

    def __repr__(self) -> str:
        return f"Admission({self._upstream!r}, in_flight={self._gate.in_flight}, queued={self._gate.queued})"
