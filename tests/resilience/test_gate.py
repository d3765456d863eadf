"""The bulkhead gate: waiting for a slot, first come first served, cancellation-safe."""

from __future__ import annotations

import asyncio
import random

from sidecar.resilience.bulkhead import Bulkhead
from sidecar.resilience.gate import BulkheadGate

# Long enough never to expire in a test that does not want it to.
PATIENT = 30.0


async def queued(gate: BulkheadGate, count: int) -> list[asyncio.Task[bool]]:
    """Start `count` waiters in order and let each reach the queue."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(gate.acquire(PATIENT)))
        await asyncio.sleep(0)
    assert gate.queued == count
    return tasks


async def full_gate(max_concurrent: int = 1, max_queued: int = 10) -> BulkheadGate:
    gate = BulkheadGate(Bulkhead(max_concurrent, max_queued))
    for _ in range(max_concurrent):
        assert await gate.acquire(0)
    return gate


async def test_gate_free_slot_is_taken_without_waiting() -> None:
    """With a slot free, `acquire()` succeeds at once."""
    gate = BulkheadGate(Bulkhead(2, 0))
    assert await gate.acquire(PATIENT)
    assert await gate.acquire(PATIENT)
    assert (gate.in_flight, gate.queued) == (2, 0)


async def test_gate_full_queue_refuses_at_once() -> None:
    """With every slot and every queue place taken, `acquire()` is False without waiting."""
    gate = await full_gate(max_queued=1)
    (waiter,) = await queued(gate, 1)
    assert not await gate.acquire(PATIENT)
    gate.release()
    assert await waiter


async def test_gate_zero_timeout_never_queues() -> None:
    """`queue_timeout` 0 means no waiting: False at once when every slot is taken."""
    gate = await full_gate()
    assert not await gate.acquire(0)
    assert gate.queued == 0


async def test_gate_waiter_times_out_and_leaves_the_queue() -> None:
    """A waiter not served within `queue_timeout` gets False and frees its queue place."""
    gate = await full_gate()
    assert not await gate.acquire(0.02)
    assert (gate.in_flight, gate.queued) == (1, 0)
    gate.release()
    assert gate.in_flight == 0


async def test_gate_hands_freed_slots_to_the_oldest_waiter() -> None:
    """Slots freed one by one go to waiters in the order they arrived."""
    gate = await full_gate()
    first, second, third = await queued(gate, 3)
    gate.release()
    assert await first
    assert not second.done()
    assert not third.done()
    gate.release()
    assert await second
    assert not third.done()
    gate.release()
    assert await third
    assert (gate.in_flight, gate.queued) == (1, 0)


async def test_gate_newcomer_cannot_steal_a_handed_slot() -> None:
    """A slot freed for a waiter stays taken, so a newcomer arriving meanwhile must queue."""
    gate = await full_gate()
    (waiter,) = await queued(gate, 1)
    gate.release()
    assert gate.in_flight == 1
    assert not await gate.acquire(0)
    assert await waiter


async def test_gate_cancelled_waiter_leaks_nothing() -> None:
    """Cancelling a queued waiter removes it; the next release frees the slot for real."""
    gate = await full_gate()
    (waiter,) = await queued(gate, 1)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    assert gate.queued == 0
    gate.release()
    assert gate.in_flight == 0


async def test_gate_release_skips_a_waiter_cancelled_but_not_yet_resumed() -> None:
    """A slot freed right after a waiter was cancelled goes to the next waiter instead."""
    gate = await full_gate()
    first, second = await queued(gate, 2)
    first.cancel()
    gate.release()
    assert await second
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert (gate.in_flight, gate.queued) == (1, 0)


async def test_gate_waiter_cancelled_after_its_hand_off_passes_the_slot_on() -> None:
    """A waiter cancelled just after being handed a slot gives it to the next waiter."""
    gate = await full_gate()
    first, second = await queued(gate, 2)
    gate.release()
    first.cancel()
    assert await second
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert (gate.in_flight, gate.queued) == (1, 0)


async def test_gate_waiter_cancelled_after_its_hand_off_frees_the_slot() -> None:
    """With nobody else waiting, a cancelled hand-off returns the slot to the bulkhead."""
    gate = await full_gate()
    (waiter,) = await queued(gate, 1)
    gate.release()
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert (gate.in_flight, gate.queued) == (0, 0)


async def test_gate_slot_handed_at_the_deadline_is_kept() -> None:
    """A slot handed over in the same loop turn as the queue timeout fires is kept, not lost."""
    gate = await full_gate()
    loop = asyncio.get_running_loop()
    start = loop.time()

    def hold_the_loop() -> None:
        # Keep the loop busy past the waiter's deadline, so the hand-off below and the
        # timeout fire in the same turn, hand-off first (its timer is earlier).
        while loop.time() < start + 0.04:
            pass

    loop.call_at(start + 0.005, hold_the_loop)
    loop.call_at(start + 0.01, gate.release)
    assert await gate.acquire(0.02)
    assert (gate.in_flight, gate.queued) == (1, 0)


async def test_gate_random_cancellations_never_leak_slots() -> None:
    """Whatever waiters are cancelled and whenever, the counts end balanced."""
    rng = random.Random(3)
    gate = await full_gate(max_concurrent=2, max_queued=20)
    held = 2
    tasks = [asyncio.create_task(gate.acquire(PATIENT)) for _ in range(20)]
    await asyncio.sleep(0)
    for _ in range(40):
        roll = rng.random()
        pending = [t for t in tasks if not t.done()]
        if roll < 0.4 and pending:
            rng.choice(pending).cancel()
        elif roll < 0.8 and held:
            gate.release()
            held -= 1
        await asyncio.sleep(0)
        for task in tasks:
            if task.done() and not task.cancelled() and task.result():
                held += 1
                tasks.remove(task)
                break
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    held += sum(1 for r in results if r is True)
    assert (gate.in_flight, gate.queued) == (held, 0)
    for _ in range(held):
        gate.release()
    assert gate.in_flight == 0


async def test_gate_repr_shows_the_bulkhead() -> None:
    """`repr()` shows the counts of the bulkhead behind the gate."""
    gate = await full_gate(max_concurrent=1, max_queued=2)
    assert repr(gate) == "BulkheadGate(Bulkhead(in_flight=1/1, queued=0/2))"
