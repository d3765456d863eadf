"""The waiting half of a bulkhead: queue for a slot up to a timeout, first come first served.

`BulkheadGate` wraps a `Bulkhead` (the counts) with one `asyncio.Future` per waiter. A freed
slot is handed straight to the oldest waiter, so it never passes through "free" where a
newcomer could take it. Waiting uses `asyncio.timeout`, never polling, and is
cancellation-safe: a waiter cancelled at any moment, even just after it was handed a slot,
gives the slot on to the next waiter instead of leaking it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from sidecar.resilience.bulkhead import Bulkhead


class BulkheadGate:
    """`await acquire(queue_timeout)`, and `release()` once per successful acquire."""

    __slots__ = ("_bulkhead", "_waiters")

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead
        # Oldest first; O(1) removal from the middle when a waiter gives up.
        self._waiters: OrderedDict[asyncio.Future[None], None] = OrderedDict()

    @property
    def bulkhead(self) -> Bulkhead:
        return self._bulkhead

    @property
    def in_flight(self) -> int:
        return self._bulkhead.in_flight

    @property
    def queued(self) -> int:
        return self._bulkhead.queued

    async def acquire(self, queue_timeout: float) -> bool:
        """True with a slot taken; False when the queue is full or `queue_timeout` passed first."""
        bulkhead = self._bulkhead
        if bulkhead.try_enter():
            return True
        if queue_timeout <= 0 or not bulkhead.can_queue():
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        bulkhead.enter_queue()
        try:
            async with asyncio.timeout(queue_timeout):
                await waiter
        except TimeoutError:
            # Handed a slot in the same loop iteration as the deadline: keep it.
            return self._give_up(waiter)
        except asyncio.CancelledError:
            if self._give_up(waiter):
                self.release()
            raise
        return True

    def release(self) -> None:
        """Free a slot: hand it to the oldest live waiter, or return it to the bulkhead."""
        waiters = self._waiters
        bulkhead = self._bulkhead
        while waiters:
            waiter, _ = waiters.popitem(last=False)
            bulkhead.leave_queue()
            if not waiter.done():
                # The slot stays in flight and changes owner.
                waiter.set_result(None)
                return
            # Cancelled, its task not yet resumed: it finds itself gone from the queue.
        bulkhead.leave()

    def _give_up(self, waiter: asyncio.Future[None]) -> bool:
        """Stop waiting; True when `release()` handed this waiter a slot first."""
        if waiter in self._waiters:
            del self._waiters[waiter]
            self._bulkhead.leave_queue()
            return False
        return waiter.done() and not waiter.cancelled()

    def __repr__(self) -> str:
        return f"BulkheadGate({self._bulkhead!r})"
