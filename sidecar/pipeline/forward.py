"""The innermost stage: one attempt to one endpoint, then the response relayed to the client.

It emits one `AttemptFinished` per attempt, classified by `sidecar.outcome`, and keeps the
upstream's and endpoint's in-flight counts. Retries, admission and fallback wrap this stage;
they never reach past it to a connection.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.errors import AttemptError, BodyStreamError
from sidecar.events import AttemptFinished, Observers
from sidecar.outcome import classify_status, outcome_for_status
from sidecar.pipeline.exchange import Exchange, Transport
from sidecar.pipeline.route import Route
from sidecar.upstream.group import Upstream


class Forwarder:
    """Sends the exchange to the endpoint the balancer picks and streams the answer back."""

    __slots__ = ("_clock", "_observers", "_route", "_transport", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        route: Route,
        transport: Transport,
        clock: Clock,
        observers: Observers,
    ) -> None:
        self._upstream = upstream
        self._route = route
        self._transport = transport
        self._clock = clock
        self._observers = observers

    async def __call__(self, exchange: Exchange) -> None:
        upstream = self._upstream
        route = self._route
        pool = upstream.pick(exchange.authority)
        exchange.attempts += 1
        started = self._clock.now()
        deadline = min(started + route.per_try, exchange.deadline)
        pool.inflight += 1
        try:
            try:
                response = await self._transport.send(
                    pool, exchange, deadline, route.connect, route.idle
                )
            except AttemptError as error:
                self._observers.emit(
                    AttemptFinished(
                        upstream.name, pool.label, error.result, self._clock.now() - started
                    )
                )
                raise
            # Recorded once the body is over: a body that breaks off (idle timeout, reset)
            # makes the attempt a failure after all (SPEC §4.3). The duration is to the head.
            result = classify_status(response.status)
            exchange.outcome = outcome_for_status(response.status)  # a relayed 5xx is a failure
            elapsed = self._clock.now() - started
            try:
                await exchange.responder.relay(exchange, response)
            except BodyStreamError as error:
                result = error.result
                raise
            finally:
                response.release()
                self._observers.emit(AttemptFinished(upstream.name, pool.label, result, elapsed))
        finally:
            pool.inflight -= 1

    def __repr__(self) -> str:
        return f"Forwarder(upstream={self._upstream.name!r}, route={self._route.label!r})"
