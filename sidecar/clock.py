"""The one source of time. Policies read `Clock.now()`; nothing else may call `time.*`.

The production clock is the event loop's own monotonic time, the same time base that
`loop.call_at` and `asyncio.timeout` use, so deadlines computed from it are directly usable
for scheduling. Tests use `tests.fakes.FakeClock` and advance it by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds plus a way to wait; injected into every time-dependent policy."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The event loop's monotonic clock; bound lazily so it can be built before the loop runs."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    def now(self) -> float:
        loop = self._loop
        if loop is None:
            try:
                loop = self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return time.monotonic()
        return loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return f"LoopClock(now={self.now():.3f})"


def wall_time() -> float:
    """Seconds since the epoch, for log timestamps and HTTP dates only (never for deadlines)."""
    return time.time()
