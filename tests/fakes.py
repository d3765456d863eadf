"""Typed fakes shared by the test suite: a hand-driven clock and an observer that records events.

Fakes stand in for the seams of `sidecar` (`Clock`, `Observer`); they do no I/O and never wait
on real time, so policy tests stay deterministic and fast. Fakes for sockets live in
`tests.upstreams`, not here.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from sidecar.clock import Clock
from sidecar.events import Event, Observer

__all__ = ["FakeClock", "RecordingObserver"]

E = TypeVar("E")


class FakeClock:
    """A `Clock` whose time moves only when a test calls `advance()` or code awaits `sleep()`.

    `sleep()` advances the clock by the requested amount at once and yields to the event loop
    once, so a backoff of 30 s costs nothing; every requested sleep is kept in `sleeps` so tests
    can assert the exact schedule.
    """

    __slots__ = ("_now", "sleeps")

    def __init__(self, start: float = 1000.0) -> None:
        # Start away from zero so code that treats 0.0 as "never" cannot pass by accident.
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time forward; moving it backwards is a bug in the test."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds}")
        self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, sleeps={len(self.sleeps)})"


class RecordingObserver:
    """An `Observer` that keeps every event it is notified of, in order."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, cls: type[E]) -> list[E]:
        """The recorded events that are instances of `cls`, in the order they arrived."""
        return [event for event in self.events if isinstance(event, cls)]

    def types(self) -> list[str]:
        """The class names of all recorded events, for asserting an exact sequence."""
        return [type(event).__name__ for event in self.events]

    def clear(self) -> None:
        self.events.clear()

    def __repr__(self) -> str:
        return f"RecordingObserver({len(self.events)} events)"


def _check_protocols(clock: FakeClock, observer: RecordingObserver) -> tuple[Clock, Observer]:
    """Never called: lets mypy prove the fakes satisfy the protocols they stand in for."""
    return clock, observer
