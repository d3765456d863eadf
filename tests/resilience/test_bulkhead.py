"""Bulkhead bookkeeping: slots in flight and places in the queue."""

from __future__ import annotations

import pytest

from sidecar.config import BulkheadPolicy
from sidecar.resilience.bulkhead import Bulkhead


def test_bulkhead_admits_up_to_max_concurrent() -> None:
    """`try_enter()` succeeds `max_concurrent` times, then refuses."""
    bulkhead = Bulkhead(max_concurrent=2, max_queued=0)
    assert [bulkhead.try_enter() for _ in range(3)] == [True, True, False]
    assert bulkhead.in_flight == 2


def test_bulkhead_leave_frees_a_slot() -> None:
    """A call leaving frees its slot for the next one."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=0)
    assert bulkhead.try_enter()
    bulkhead.leave()
    assert bulkhead.in_flight == 0
    assert bulkhead.try_enter()


def test_bulkhead_queue_is_bounded() -> None:
    """`can_queue()` is true until `max_queued` callers wait."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=2)
    bulkhead.enter_queue()
    assert bulkhead.can_queue()
    bulkhead.enter_queue()
    assert not bulkhead.can_queue()
    bulkhead.leave_queue()
    assert bulkhead.can_queue()
    assert bulkhead.queued == 1


def test_bulkhead_newcomer_never_overtakes_the_queue() -> None:
    """While anyone is queued, a free slot is theirs, not a newcomer's."""
    bulkhead = Bulkhead(max_concurrent=1, max_queued=1)
    assert bulkhead.try_enter()
    bulkhead.enter_queue()
    bulkhead.leave()
    assert not bulkhead.try_enter()
    bulkhead.leave_queue()
    assert bulkhead.try_enter()


def test_bulkhead_zero_queue_never_queues() -> None:
    """`max_queued: 0` means reject at once when every slot is taken."""
    assert not Bulkhead(max_concurrent=1, max_queued=0).can_queue()


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (Bulkhead.leave, "no call is in flight"),
        (Bulkhead.leave_queue, "nobody is queued"),
        (lambda b: (b.enter_queue(), b.enter_queue()), "queue full"),
    ],
    ids=["leave-without-slot", "leave-empty-queue", "overfill-queue"],
)
def test_bulkhead_unbalanced_calls_are_errors(action, message: str) -> None:
    """Leaving what was never entered, or overfilling the queue, is a bug made loud."""
    with pytest.raises(RuntimeError, match=message):
        action(Bulkhead(max_concurrent=1, max_queued=1))


@pytest.mark.parametrize(
    ("max_concurrent", "max_queued", "message"),
    [(0, 0, "max_concurrent must be at least 1"), (1, -1, "max_queued must be at least 0")],
    ids=["no-slots", "negative-queue"],
)
def test_bulkhead_rejects_impossible_sizes(
    max_concurrent: int, max_queued: int, message: str
) -> None:
    """A bulkhead that could admit nothing is a programming error."""
    with pytest.raises(ValueError, match=message):
        Bulkhead(max_concurrent, max_queued)


def test_bulkhead_from_policy_and_repr() -> None:
    """A bulkhead built from config shows its counts and limits in `repr()`."""
    bulkhead = Bulkhead.from_policy(BulkheadPolicy(max_concurrent=3, max_queued=4))
    bulkhead.try_enter()
    assert repr(bulkhead) == "Bulkhead(in_flight=1/3, queued=0/4)"
