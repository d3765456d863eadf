"""The innermost stage's parts: one attempt to one endpoint, and the relay of its answer.

`send` never raises for an upstream failure: it returns an `Attempt` that says what happened,
so the attempt loop can classify, record and decide before anything reaches the client. An
attempt ends in exactly one of `relay` (its answer goes to the client) or `discard` (a retry
follows or the request is abandoned); each emits the attempt's one `AttemptFinished` and
returns the endpoint's in-flight slot.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.errors import AttemptError, BodyStreamError, UpstreamTimeoutError
from sidecar.events import AttemptFinished, EndpointEjected, Observers
from sidecar.outcome import AttemptResult, classify_status, outcome_for_status
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
    """Sends an exchange to the endpoint the balancer picks; relays or discards the answer."""

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

    async def relay(self, exchange: Exchange, attempt: Attempt) -> None:
        """Stream the attempt's answer to the client; a body that breaks off fails the attempt."""
        response = attempt.response
        assert response is not None
        if exchange.fallback is not None:
            response = exchange.fallback.tee(exchange, response)
        # The breaker judged the attempt at its head; a body that breaks off (idle timeout,
        # reset) still makes it a failure for outlier detection, unless the client broke it.
        exchange.outcome = outcome_for_status(response.status)
        try:
            await exchange.responder.relay(exchange, response)
        except BodyStreamError as error:
            attempt.result = error.result
            attempt.upstream_fault = error.upstream_fault
            raise
        finally:
            response.release()
            self._finish(attempt)

    def discard(self, exchange: Exchange, attempt: Attempt) -> None:
        """The attempt's answer will not be relayed: free its connection, slot and the body."""
        if exchange.body is not None:
            exchange.body.detach()  # a retry may replay it to another connection
        response = attempt.response
        if response is not None:
            if response.body_complete:
                response.release()  # nothing left to read: the connection stays reusable
            else:
                response.discard()
            attempt.response = None
        self._finish(attempt)

    def _finish(self, attempt: Attempt) -> None:
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
