"""The innermost stage's parts: one attempt to one endpoint, and the answer it becomes.

`send` never raises for an upstream failure: it returns an `Attempt` that says what happened,
so the attempt loop can classify, record and decide before anything reaches the client. An
attempt ends in exactly one of two ways: its answer is returned (`answer`) and settled by the
handler once written, or it is dropped (`discard`: a retry follows, a fallback answers
instead, or the request is abandoned). Either emits the attempt's one `AttemptFinished` and
returns the endpoint's in-flight slot.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.errors import AttemptError, BodyStreamError, UpstreamTimeoutError
from sidecar.events import AttemptFinished, EndpointEjected, Observers
from sidecar.outcome import AttemptResult, classify_status
from sidecar.pipeline.answer import UpstreamAnswer
from sidecar.pipeline.exchange import Exchange
from sidecar.pipeline.faults import InjectedResponse
from sidecar.pipeline.route import Route
from sidecar.resilience.faults import FaultDecision, FaultInjector
from sidecar.upstream.group import Upstream
from sidecar.upstream.pool import EndpointPool
from sidecar.upstream.protocol import Transport, UpstreamResponse


class Attempt:
    """What one attempt produced: a response head, or the error that ended it."""

    __slots__ = (
        "elapsed",
        "error",
        "finished",
        "pool",
        "response",
        "result",
        "status",
        "upstream_fault",
    )

    def __init__(
        self,
        pool: EndpointPool,
        response: UpstreamResponse | None,
        error: AttemptError | None,
        elapsed: float,
    ) -> None:
        self.pool = pool
        self.response = response
        self.error = error
        self.elapsed = elapsed  # seconds until the head arrived or the attempt failed
        self.finished = False  # its AttemptFinished was emitted and its slot returned
        if response is not None:
            self.status = response.status
            self.result = classify_status(response.status)
            self.upstream_fault = True
        else:
            assert error is not None
            self.status = 0
            self.result = error.result
            # False: the failure was not the upstream's (a stale pooled connection); the
            # breaker and outlier detection hear nothing of it.
            self.upstream_fault = error.upstream_fault

    @property
    def retry_reason(self) -> str:
        """The `reason` label of a retry: the status code, or the failure kind."""
        if self.result is AttemptResult.SUCCESS or self.result is AttemptResult.HTTP_5XX:
            return str(self.status)
        return self.result.value

    def __repr__(self) -> str:
        return f"Attempt({self.pool.label}, result={self.result.value}, status={self.status})"


class Forwarder:
    """Sends an exchange to the endpoint the balancer picks; returns or discards the answer."""

    __slots__ = ("_clock", "_faults", "_observers", "_route", "_transport", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        route: Route,
        transport: Transport[Exchange],
        clock: Clock,
        observers: Observers,
        faults: FaultInjector,
    ) -> None:
        self._upstream = upstream
        self._route = route
        self._transport = transport
        self._clock = clock
        self._observers = observers
        self._faults = faults

    async def send(self, exchange: Exchange, avoid: EndpointPool | None = None) -> Attempt:
        """One attempt, until the response head; upstream failures come back in the result."""
        route = self._route
        pool = self._upstream.pick(exchange.authority, avoid)
        exchange.attempts += 1
        started = self._clock.now()
        deadline = min(started + route.per_try, exchange.deadline)
        pool.inflight += 1
        try:
            faults = self._upstream.runtime_faults or route.config.faults
            decision = self._faults.decide(faults) if faults is not None else None
            if decision is not None:
                injected = await self._inject(exchange, pool, decision, started, deadline)
                if injected is not None:
                    return injected
            # per_try counts from when the request has been sent; an injected delay used
            # part of it.
            per_try = route.per_try if decision is None else deadline - self._clock.now()
            response = await self._transport.send(
                pool, exchange, per_try, route.total, route.connect, route.idle
            )
        except AttemptError as error:
            attempt = Attempt(pool, None, error, self._clock.now() - started)
            self.discard(exchange, attempt)
            return attempt
        except BaseException:
            pool.inflight -= 1
            raise
        return Attempt(pool, response, None, self._clock.now() - started)

    async def _inject(
        self,
        exchange: Exchange,
        pool: EndpointPool,
        decision: FaultDecision,
        started: float,
        deadline: float,
    ) -> Attempt | None:
        """Apply an injected delay (bounded by the attempt's deadline) and abort, if any."""
        if decision.delay > 0:
            remaining = deadline - self._clock.now()
            if decision.delay >= remaining:
                await self._clock.sleep(max(remaining, 0.0))
                raise UpstreamTimeoutError(
                    "no response headers before the deadline (injected delay)"
                )
            await self._clock.sleep(decision.delay)
        if decision.abort_error is not None:
            raise decision.abort_error
        if decision.abort_status:
            response = InjectedResponse(
                self._upstream.name, decision.abort_status, exchange.head_only
            )
            return Attempt(pool, response, None, self._clock.now() - started)
        return None

    def answer(self, exchange: Exchange, attempt: Attempt) -> AttemptAnswer:
        """The attempt's response as the request's answer, recorded when it is settled."""
        assert attempt.response is not None
        return AttemptAnswer(self, exchange, attempt)

    def discard(self, exchange: Exchange, attempt: Attempt) -> None:
        """The attempt's answer will not be written: free its connection, slot and the body."""
        if exchange.body is not None:
            exchange.body.detach()  # a retry may replay it to another connection
        response = attempt.response
        if response is not None:
            if response.body_complete:
                response.release()  # nothing left to read: the connection stays reusable
            else:
                response.discard()
            attempt.response = None
        self.finish(attempt)

    def finish(self, attempt: Attempt) -> None:
        """Outlier record, `AttemptFinished`, the endpoint's slot: once per attempt."""
        if attempt.finished:
            return
        attempt.finished = True
        pool = attempt.pool
        pool.inflight -= 1
        upstream = self._upstream
        ejection = None
        if attempt.upstream_fault:
            failed = attempt.result is not AttemptResult.SUCCESS
            ejection = upstream.outliers.record(pool.label, failed)
        if ejection is not None:
            self._observers.emit(
                EndpointEjected(
                    upstream.name, ejection.endpoint, ejection.duration, ejection.failures
                )
            )
        self._observers.emit(
            AttemptFinished(
                self._upstream.name, attempt.pool.label, attempt.result, attempt.elapsed
            )
        )

    def __repr__(self) -> str:
        return f"Forwarder(upstream={self._upstream.name!r}, route={self._route.label!r})"


class AttemptAnswer(UpstreamAnswer):
    """An attempt's response returned as the answer; settling it finishes the attempt.

    The breaker judged the attempt at its head; a body that breaks off (idle timeout, reset)
    still makes it a failure for outlier detection, unless the client broke it.
    """

    __slots__ = ("_exchange", "_forwarder", "attempt")

    def __init__(self, forwarder: Forwarder, exchange: Exchange, attempt: Attempt) -> None:
        response = attempt.response
        assert response is not None
        self.gate = None
        self.response = response
        self.settled = False
        self.attempt = attempt
        self._forwarder = forwarder
        self._exchange = exchange

    def settle(self, failure: BodyStreamError | None = None) -> None:
        if not self.settled:
            self.settled = True
            attempt = self.attempt
            if failure is not None:
                attempt.result = failure.result
                attempt.upstream_fault = failure.upstream_fault
            self.response.release()
            self._forwarder.finish(attempt)
        self.release_slot()

    def discard(self) -> None:
        if not self.settled:
            self.settled = True
            attempt = self.attempt
            attempt.response = self.response  # the fallback store's tee, if one wraps it
            self._forwarder.discard(self._exchange, attempt)
        self.release_slot()
