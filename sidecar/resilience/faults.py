"""Fault injection (SPEC §3.2 `faults`): rehearse a slow or failing upstream on purpose.

Drawn per attempt, after the endpoint is picked and before anything is sent, so the
breaker, retries, outlier detection and fallbacks react exactly as they would to the real
failure. Percentages are drawn from an injected `random.Random`, so tests are exact. The
attempt that drew a decision applies it; an aborted attempt never contacts the upstream.
"""

from __future__ import annotations

import random

from sidecar.config import FaultPolicy
from sidecar.errors import AttemptError, UpstreamResetError
from sidecar.events import FaultInjected, Observers


class FaultDecision:
    """What to do to one attempt: wait `delay` seconds first, then maybe fail it."""

    __slots__ = ("abort_error", "abort_status", "delay")

    def __init__(self, delay: float, abort_status: int, abort_error: AttemptError | None) -> None:
        self.delay = delay
        self.abort_status = abort_status  # 0: no injected answer
        self.abort_error = abort_error  # an injected reset


class FaultInjector:
    """Draws, per attempt, whether the configured delay and abort apply."""

    __slots__ = ("_observers", "_rng", "_upstream")

    def __init__(self, upstream: str, rng: random.Random, observers: Observers) -> None:
        self._upstream = upstream
        self._rng = rng
        self._observers = observers

    def decide(self, faults: FaultPolicy) -> FaultDecision | None:
        """None when no fault applies to this attempt (the common case)."""
        delay = 0.0
        status = 0
        error: AttemptError | None = None
        rng = self._rng
        if faults.delay is not None and rng.random() < faults.delay.percent:
            delay = faults.delay.duration
            self._observers.emit(FaultInjected(self._upstream, "delay"))
        abort = faults.abort
        if abort is not None and rng.random() < abort.percent:
            if abort.reset:
                error = UpstreamResetError("fault injection: connection reset")
            else:
                status = abort.status or 503
            self._observers.emit(FaultInjected(self._upstream, "abort"))
        if delay == 0.0 and status == 0 and error is None:
            return None
        return FaultDecision(delay, status, error)

    def __repr__(self) -> str:
        return f"FaultInjector(upstream={self._upstream!r})"
