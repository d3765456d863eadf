"""The response-head deadline of an upstream connection's current exchange.

`per_try` and `total` count from the moment the request has been fully sent, not from when
the attempt began: an upload takes as long as the client takes to send it, and that time is
governed by `idle` (gaps in the upload), never by the head deadlines (Envoy starts its
per-try and route timeouts at the end of the downstream request, too). A request whose body
had fully arrived before the attempt keeps the `total` deadline it already has, so retries
share one budget.

One timer per connection, moved only when it fires (never per request): on a keep-alive
connection many exchanges start and end within one `per_try`, and arming and cancelling a
timer for each cost more than the rest of the attempt's bookkeeping. The timer is never
later than the current deadline; firing early, it re-arms.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class HeadDeadline:
    """When the current exchange's response head is due, and the one timer enforcing it."""

    __slots__ = (
        "_at",
        "_due",
        "_expected",
        "_given_total",
        "_handle",
        "_loop",
        "_on_expired",
        "_per_try",
        "_total",
        "total_deadline",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expired: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expired = on_expired
        self._due = math.inf  # the current exchange's head is due by then; inf: not running
        self._at = 0.0  # when `_handle` fires
        self._handle: asyncio.TimerHandle | None = None
        self._expected = False
        self._per_try = 0.0
        self._total = 0.0
        self._given_total: float | None = None
        self.total_deadline: float | None = None  # known once the request has been sent

    def reset(self) -> None:
        """A new exchange: no deadline until `expect` and `request_sent` set one."""
        self._due = math.inf
        self._expected = False
        self.total_deadline = None

    def expect(self, per_try: float, total: float, total_deadline: float | None) -> None:
        """Deadlines for this exchange; `total_deadline` None: `total` starts when sent."""
        self._expected = True
        self._per_try = per_try
        self._total = total
        self._given_total = total_deadline

    def request_sent(self) -> None:
        """The request's last byte was written: the head is due from now."""
        if not self._expected:
            return
        now = self._loop.time()
        given = self._given_total
        total_deadline = now + self._total if given is None else given
        self.total_deadline = total_deadline
        self._move(min(now + self._per_try, total_deadline))

    def cancel(self) -> None:
        self._due = math.inf
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _move(self, due: float) -> None:
        self._due = due
        handle = self._handle
        if handle is not None and self._at <= due:
            return  # fires earlier: it re-arms then
        if handle is not None:
            handle.cancel()
        self._at = due
        self._handle = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._handle = None
        due = self._due
        if due == math.inf:
            return  # no exchange is waiting for a head; the next one arms the timer again
        if due > self._at:
            self._at = due  # armed for an earlier exchange
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._due = math.inf
        self._on_expired()

    def __repr__(self) -> str:
        due = "-" if self._due == math.inf else f"{self._due:.3f}"
        return f"HeadDeadline(due={due}, timer_at={self._at:.3f}, armed={self._handle is not None})"
