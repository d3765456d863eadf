"""The attempt loop (SPEC §4.1 steps 3–5): breaker permit, attempt, classify, record, retry.

Every attempt is one call for the breaker, judged at its response head. A failed attempt is retried only when all of
these hold: its outcome is in `retries.on`; the method is retryable (or nothing was sent);
the body can be replayed; attempts remain; the breaker is closed and the request is not a
half-open trial; the `total` deadline leaves time for the backoff; the retry budget has
room. Nothing reaches the client before the loop commits to one attempt's answer, so a
retry never follows a byte sent downstream.
"""

from __future__ import annotations

from sidecar.clock import Clock, wall_time
from sidecar.config import RetryPolicy
from sidecar.events import (
    Observers,
    RetryBudgetExhausted,
    RetryScheduled,
)
from sidecar.outcome import AttemptResult, FailureMatcher
from sidecar.pipeline.answer import Answer
from sidecar.pipeline.exchange import Exchange
from sidecar.pipeline.forward import Attempt, Forwarder
from sidecar.pipeline.guard import BreakerGuard
from sidecar.resilience.backoff import Backoff, parse_retry_after
from sidecar.resilience.breaker import CircuitState
from sidecar.resilience.budget import RetryBudget

# Methods the client may make retryable with an Idempotency-Key header.
_KEYED_METHODS = frozenset({b"POST", b"PATCH"})
_RETRY_AFTER_STATUSES = frozenset({429, 503})


class AttemptLoop:
    """One route's attempts: at most `max_attempts`, each admitted by the route's breaker."""

    __slots__ = (
        "_backoff",
        "_breaker_failures",
        "_budget",
        "_clock",
        "_forwarder",
        "_guard",
        "_methods",
        "_observers",
        "_policy",
        "_retry_on",
        "_route",
        "_upstream",
    )

    def __init__(
        self,
        *,
        upstream: str,
        route: str,
        forwarder: Forwarder,
        guard: BreakerGuard,
        breaker_failures: FailureMatcher,
        policy: RetryPolicy,
        backoff: Backoff,
        budget: RetryBudget,
        clock: Clock,
        observers: Observers,
    ) -> None:
        self._upstream = upstream
        self._route = route
        self._forwarder = forwarder
        self._guard = guard
        self._breaker_failures = breaker_failures
        self._policy = policy
        self._retry_on = FailureMatcher(policy.on)
        self._methods = frozenset(method.encode() for method in policy.methods)
        self._backoff = backoff
        self._budget = budget
        self._clock = clock
        self._observers = observers

    async def __call__(self, exchange: Exchange) -> Answer:
        self._budget.record_request()
        body = exchange.body
        if body is not None and self._policy.max_attempts > 1:
            body.retain_limit = self._policy.buffer_limit
        last: Attempt | None = None
        while True:
            attempt, trial = await self._attempt(exchange, last)
            last = attempt
            delay = self._retry_delay(exchange, attempt, trial)
            if delay is None:
                break
            self._forwarder.discard(exchange, attempt)
            self._observers.emit(RetryScheduled(self._upstream, attempt.retry_reason, delay))
            await self._clock.sleep(delay)
        return self._commit(exchange, last)

    async def _attempt(self, exchange: Exchange, last: Attempt | None) -> tuple[Attempt, bool]:
        """One attempt under a breaker permit; returns it and whether it was a half-open trial.

        The permit lives and dies here, so no path can leave it out: the call is judged the
        moment its response head (or its failure) is known, as `slow_call_duration` already
        is, and a permit whose call never completed (cancelled: the client went away) or whose
        failure says nothing about the upstream is handed back unjudged. A long or streaming
        body therefore never holds a half-open trial slot; if it breaks off later, outlier
        detection still hears of it through the attempt's result.
        """
        guard = self._guard
        permit = guard.try_acquire()
        if permit is None:
            if last is not None and last.response is None and last.error is not None:
                raise last.error  # the breaker opened during the backoff: the retry is off
            raise guard.refused()
        try:
            attempt = await self._forwarder.send(exchange, last.pool if last is not None else None)
        except BaseException:
            guard.release(permit)  # cancelled, or a bug: the call never completed
            raise
        if attempt.upstream_fault:
            # What `failure_on` does not list counts as a success, as in resilience4j: a
            # timeout with `failure_on: [5xx]` is a call the upstream answered well enough.
            failed = self._breaker_failures.matches(attempt.result, attempt.status)
            guard.record(permit, failed, attempt.elapsed)
        else:
            guard.release(permit)
        return attempt, permit.trial

    def _commit(self, exchange: Exchange, attempt: Attempt) -> Answer:
        """Answer with the final attempt: raise its failure, or return its response.

        Whether a returned 5xx is replaced by a fallback is the fallback stage's decision.
        """
        if attempt.response is None:
            assert attempt.error is not None
            raise attempt.error
        return self._forwarder.answer(exchange, attempt)

    def _retry_delay(self, exchange: Exchange, attempt: Attempt, trial: bool) -> float | None:
        """Seconds to wait before the next attempt, or None when this attempt is final."""
        policy = self._policy
        if not self._retry_on.matches(attempt.result, attempt.status):
            return None
        if exchange.attempts >= policy.max_attempts or trial:
            return None
        if self._guard.breaker.state is not CircuitState.CLOSED:
            return None
        if attempt.result is not AttemptResult.CONNECT_FAILURE and not self._method_retryable(
            exchange
        ):
            return None  # something may have reached the application: never send it twice
        body = exchange.body
        if body is not None and not body.can_replay:
            return None
        delay = self._backoff.delay(exchange.attempts)
        asked = self._retry_after(attempt)
        if asked is not None:
            if asked > policy.max_retry_after:
                return None  # the upstream asks for longer than we may wait: answer now
            delay = asked
        if self._clock.now() + delay >= exchange.deadline:
            return None
        if not self._budget.try_spend():
            self._observers.emit(RetryBudgetExhausted(self._upstream))
            return None
        return delay

    def _method_retryable(self, exchange: Exchange) -> bool:
        method = exchange.method
        return method in self._methods or (exchange.idempotency_key and method in _KEYED_METHODS)

    def _retry_after(self, attempt: Attempt) -> float | None:
        response = attempt.response
        if (
            response is None
            or not self._policy.respect_retry_after
            or attempt.status not in _RETRY_AFTER_STATUSES
        ):
            return None
        for name, value in response.headers:
            if name == b"retry-after":
                return parse_retry_after(value, wall_time())
        return None

    def __repr__(self) -> str:
        return f"AttemptLoop(upstream={self._upstream!r}, route={self._route!r}, {self._guard!r})"
