"""What the demo has seen so far: outcomes, fallbacks, circuit transitions, client answers.

`DemoTally` is an observer on the in-process sidecar's events and the one place the views
read from. It does no I/O and reads time only from the injected clock; listeners registered
with `on_transition` hear about each circuit change (the plain view prints a line).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.clock import Clock
from sidecar.events import CircuitTransitioned, Event, FallbackServed, RequestFinished

RATE_WINDOW = 1.0  # seconds over which "requests per second" is counted


@dataclass(frozen=True, slots=True)
class Transition:
    """One circuit change as the demo shows it: when (since the start), in which phase, why."""

    at: float
    phase: str
    from_state: str
    to_state: str
    reason: str


class DemoTally:
    """Counters for one demo run, fed by sidecar events and the demo's client."""

    __slots__ = (
        "_clock",
        "_listeners",
        "_recent",
        "_started",
        "answered",
        "circuit",
        "circuit_since",
        "client_errors",
        "fallbacks",
        "outcomes",
        "phase",
        "refused_durations",
        "slowest_answer",
        "transitions",
        "upstream",
    )

    def __init__(self, clock: Clock, upstream: str) -> None:
        self._clock = clock
        self._started = clock.now()
        self._recent: deque[tuple[float, str]] = deque()
        self._listeners: list[Callable[[Transition], None]] = []
        self.upstream = upstream
        self.phase = ""
        self.outcomes: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.transitions: list[Transition] = []
        self.circuit = "closed"
        self.circuit_since = 0.0
        self.refused_durations: list[float] = []  # answered without any upstream attempt
        self.answered = 0  # client side: answers received
        self.client_errors = 0  # client side: no answer (connection error, client timeout)
        self.slowest_answer = 0.0

    def restart(self) -> None:
        """Count time from now on (the traffic starts): phases and transitions share this zero."""
        self._started = self._clock.now()

    def elapsed(self) -> float:
        """Seconds since the demo started."""
        return self._clock.now() - self._started

    def on_transition(self, listener: Callable[[Transition], None]) -> None:
        self._listeners.append(listener)

    # ---- sidecar events ----------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        if isinstance(event, RequestFinished) and event.upstream == self.upstream:
            outcome = str(event.outcome)
            self.outcomes[outcome] += 1
            self._recent.append((self._clock.now(), outcome))
            if event.attempts == 0:
                self.refused_durations.append(event.duration)
        elif isinstance(event, FallbackServed) and event.upstream == self.upstream:
            self.fallbacks[event.kind] += 1
        elif isinstance(event, CircuitTransitioned) and event.upstream == self.upstream:
            transition = Transition(
                self.elapsed(), self.phase, event.from_state, event.to_state, event.reason
            )
            self.transitions.append(transition)
            self.circuit = event.to_state
            self.circuit_since = transition.at
            for listener in self._listeners:
                listener(transition)

    # ---- the demo's client -------------------------------------------------------------------

    def record_answer(self, latency: float) -> None:
        self.answered += 1
        self.slowest_answer = max(self.slowest_answer, latency)

    def record_client_error(self) -> None:
        self.client_errors += 1

    # ---- reading -----------------------------------------------------------------------------

    def rates(self) -> Counter[str]:
        """Requests per second by outcome over the last `RATE_WINDOW`."""
        horizon = self._clock.now() - RATE_WINDOW
        recent = self._recent
        while recent and recent[0][0] < horizon:
            recent.popleft()
        return Counter(outcome for _, outcome in recent)

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def opened(self) -> int:
        return sum(1 for t in self.transitions if t.to_state == "open")

    @property
    def closed(self) -> int:
        return sum(1 for t in self.transitions if t.to_state == "closed")

    def __repr__(self) -> str:
        return (
            f"DemoTally(phase={self.phase!r}, requests={self.requests}, "
            f"circuit={self.circuit}, transitions={len(self.transitions)})"
        )
