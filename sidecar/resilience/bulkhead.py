"""The bookkeeping half of a bulkhead: how many calls are in flight and how many wait.

Counts only; waiting is `sidecar.resilience.gate.BulkheadGate`'s job. Queued callers are
served first come, first served, so a newcomer never takes a free slot while anyone is
queued (the gate hands a freed slot straight to the oldest waiter instead).
"""

from __future__ import annotations

from sidecar.config import BulkheadPolicy


class Bulkhead:
    """At most `max_concurrent` calls in flight and `max_queued` waiting for a slot."""

    __slots__ = ("in_flight", "max_concurrent", "max_queued", "queued")

    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        if max_concurrent < 1:
            raise ValueError(f"Bulkhead: max_concurrent must be at least 1, got {max_concurrent}")
        if max_queued < 0:
            raise ValueError(f"Bulkhead: max_queued must be at least 0, got {max_queued}")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.in_flight = 0
        self.queued = 0

    @classmethod
    def from_policy(cls, policy: BulkheadPolicy) -> Bulkhead:
        return cls(policy.max_concurrent, policy.max_queued)

    def try_enter(self) -> bool:
        """Take a free slot; False when all are taken or someone queued is owed the next one."""
        if self.in_flight >= self.max_concurrent or self.queued:
            return False
        self.in_flight += 1
        return True

    def can_queue(self) -> bool:
        return self.queued < self.max_queued

    def enter_queue(self) -> None:
        if self.queued >= self.max_queued:
            raise RuntimeError(f"Bulkhead.enter_queue: queue full ({self.max_queued} waiting)")
        self.queued += 1

    def leave_queue(self) -> None:
        """A waiter stops waiting: it gave up, or it was handed a slot that stays in flight."""
        if self.queued <= 0:
            raise RuntimeError("Bulkhead.leave_queue: nobody is queued")
        self.queued -= 1

    def leave(self) -> None:
        """A call in flight is over: its slot is free."""
        if self.in_flight <= 0:
            raise RuntimeError("Bulkhead.leave: no call is in flight")
        self.in_flight -= 1

    def __repr__(self) -> str:
        return (
            f"Bulkhead(in_flight={self.in_flight}/{self.max_concurrent}, "
            f"queued={self.queued}/{self.max_queued})"
        )
