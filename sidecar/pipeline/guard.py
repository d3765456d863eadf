"""The one way a call passes a circuit breaker: take a permit, then record or release it.

A `CircuitBreaker` is a pure state machine that returns its transitions; this guard is the
caller that turns them into `CircuitTransitioned` events, emits the `circuit_open` rejection,
and builds the error the client gets. The attempt loop (one call per attempt) and CONNECT
tunnels (one call per connect) both go through it, so a permit is handled the same way
wherever a breaker admits a call.

Whoever takes a permit owns it until it is recorded (the call's verdict) or released (no
verdict: the call never completed, or failed for reasons that are not the upstream's).
"""

from __future__ import annotations

from sidecar.errors import CircuitOpenError
from sidecar.events import Observers, RequestRejected
from sidecar.resilience.breaker import CircuitBreaker, Permit, Transition


class BreakerGuard:
    """A breaker with the events its calls cause, for one upstream and route label."""

    __slots__ = ("_observers", "_route", "_upstream", "breaker")

    def __init__(
        self, breaker: CircuitBreaker, upstream: str, route: str, observers: Observers
    ) -> None:
        self.breaker = breaker
        self._upstream = upstream
        self._route = route
        self._observers = observers

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None while the breaker refuses calls.

        An open breaker turns half-open lazily, on this read; that transition is emitted here.
        """
        breaker = self.breaker
        permit = breaker.try_acquire()
        self._emit(breaker.take_transition())
        return permit

    def refused(self) -> CircuitOpenError:
        """The error for a call the breaker refused, with its `Retry-After`; counts it."""
        self._observers.emit(RequestRejected(self._upstream, "circuit_open"))
        return CircuitOpenError(
            f"the circuit breaker of {self._upstream} is open",
            retry_after=self.breaker.retry_after(),
        )

    def record(self, permit: Permit, failed: bool, duration: float) -> None:
        """The call's verdict; a transition it causes is emitted."""
        self._emit(self.breaker.record(permit, failed, duration))

    def release(self, permit: Permit) -> None:
        """No verdict: the call never completed, or its failure was not the upstream's."""
        self.breaker.release(permit)

    def _emit(self, transition: Transition | None) -> None:
        if transition is not None:
            self._observers.emit(transition.event(self._upstream, self._route))

    def __repr__(self) -> str:
        return f"BreakerGuard({self._upstream!r}, route={self._route!r}, {self.breaker!r})"
