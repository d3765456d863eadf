"""Sliding windows of call results for the circuit breaker, and the time ring under them.

`TimeWindow` judges the calls of the last `length` seconds, `CountWindow` the last `size`
calls. Both keep running totals, so recording and reading are O(1) amortised and allocate
nothing per call: a time window is a ring of per-bucket counters, never a list of timestamps.
This module knows nothing about thresholds or states; `sidecar.resilience.breaker` does.
"""

from __future__ import annotations

from typing import Protocol

from sidecar.clock import Clock


class CallWindow(Protocol):
    """What the breaker needs from a window: record one result, read the totals, start over."""

    def record(self, failed: bool, slow: bool) -> None: ...

    @property
    def calls(self) -> int: ...

    @property
    def failures(self) -> int: ...

    @property
    def slow(self) -> int: ...

    def reset(self) -> None: ...


class TimeRing:
    """Parallel counters summed over the last `length` seconds, in `buckets` time slices.

    Time is cut into slices of `length / buckets` seconds; slice number `e` lives in bucket
    `e % buckets`. `advance()` zeroes the buckets whose slice has left the window and returns
    the bucket of the current slice. The totals therefore cover the current (partial) slice
    plus the `buckets - 1` before it: between (buckets-1)/buckets × length and length seconds,
    the same trade resilience4j and Linkerd make for O(1) bookkeeping.
    """

    __slots__ = ("_clock", "_epoch", "_width", "counts", "length", "totals")

    def __init__(self, clock: Clock, length: float, buckets: int, counters: int) -> None:
        if length <= 0:
            raise ValueError(f"TimeRing: length must be > 0 seconds, got {length}")
        if buckets < 1:
            raise ValueError(f"TimeRing: buckets must be at least 1, got {buckets}")
        self._clock = clock
        self.length = length
        self._width = length / buckets
        self._epoch = int(clock.now() // self._width)
        # counts[k][b]: counter k in bucket b; totals[k]: counter k summed over the window.
        self.counts = [[0] * buckets for _ in range(counters)]
        self.totals = [0] * counters

    def advance(self) -> int:
        """Expire the slices that left the window; return the current slice's bucket."""
        epoch = int(self._clock.now() // self._width)
        gap = epoch - self._epoch
        if gap > 0:
            counts, totals = self.counts, self.totals
            size = len(counts[0])
            if gap >= size:
                self.reset()
            else:
                for slice_number in range(self._epoch + 1, epoch + 1):
                    bucket = slice_number % size
                    for k, ring in enumerate(counts):
                        totals[k] -= ring[bucket]
                        ring[bucket] = 0
            self._epoch = epoch
        # A clock that went backwards (gap < 0) keeps counting into the newest slice.
        return self._epoch % len(self.counts[0])

    def reset(self) -> None:
        """Forget everything recorded so far."""
        for ring in self.counts:
            ring[:] = [0] * len(ring)
        self.totals[:] = [0] * len(self.totals)

    def absorb(self, other: TimeRing) -> None:
        """Add `other`'s counters, each of its slices into the slice of this ring where it
        began; slices that began before this ring's span are dropped. With the same length
        and bucket count that is an exact copy; otherwise it is off by at most one slice."""
        self.advance()  # both rings now end at the current slice
        other.advance()
        size, theirs = len(self.counts[0]), len(other.counts[0])
        oldest = self._epoch - size
        for number in range(other._epoch - theirs + 1, other._epoch + 1):
            bucket = number % theirs
            # The nudge keeps float noise (2.9999999 for 3) from moving a slice back one.
            target = int(number * other._width / self._width + 1e-9)
            if not oldest < target <= self._epoch:
                continue
            for k, (source, ring) in enumerate(zip(other.counts, self.counts, strict=True)):
                ring[target % size] += source[bucket]
                self.totals[k] += source[bucket]

    def __repr__(self) -> str:
        return (
            f"TimeRing(length={self.length}, buckets={len(self.counts[0])}, totals={self.totals})"
        )


_CALLS, _FAILURES, _SLOW = 0, 1, 2


class TimeWindow:
    """Call results of the last `length` seconds (see `TimeRing` for the bucket granularity)."""

    __slots__ = ("_ring",)

    def __init__(self, clock: Clock, length: float, buckets: int = 10) -> None:
        self._ring = TimeRing(clock, length, buckets, counters=3)

    @property
    def length(self) -> float:
        return self._ring.length

    def record(self, failed: bool, slow: bool) -> None:
        ring = self._ring
        bucket = ring.advance()
        counts, totals = ring.counts, ring.totals
        counts[_CALLS][bucket] += 1
        totals[_CALLS] += 1
        if failed:
            counts[_FAILURES][bucket] += 1
            totals[_FAILURES] += 1
        if slow:
            counts[_SLOW][bucket] += 1
            totals[_SLOW] += 1

    @property
    def calls(self) -> int:
        self._ring.advance()
        return self._ring.totals[_CALLS]

    @property
    def failures(self) -> int:
        self._ring.advance()
        return self._ring.totals[_FAILURES]

    @property
    def slow(self) -> int:
        self._ring.advance()
        return self._ring.totals[_SLOW]

    def reset(self) -> None:
        self._ring.reset()

    def absorb(self, other: TimeWindow) -> None:
        """Add `other`'s results, slice by slice (see `TimeRing.absorb`)."""
        self._ring.absorb(other._ring)

    def __repr__(self) -> str:
        return (
            f"TimeWindow(length={self.length}, calls={self.calls}, "
            f"failures={self.failures}, slow={self.slow})"
        )


_FAILED_BIT, _SLOW_BIT = 1, 2


class CountWindow:
    """Results of the last `size` calls, one byte each in a ring."""

    __slots__ = ("_calls", "_failures", "_next", "_ring", "_slow", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"CountWindow: size must be at least 1, got {size}")
        self.size = size
        self._ring = bytearray(size)
        self._next = 0
        self._calls = self._failures = self._slow = 0

    def record(self, failed: bool, slow: bool) -> None:
        index = self._next
        if self._calls == self.size:
            evicted = self._ring[index]
            self._failures -= evicted & _FAILED_BIT
            self._slow -= (evicted & _SLOW_BIT) >> 1
        else:
            self._calls += 1
        self._ring[index] = (_FAILED_BIT if failed else 0) | (_SLOW_BIT if slow else 0)
        self._failures += failed
        self._slow += slow
        index += 1
        self._next = 0 if index == self.size else index

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def failures(self) -> int:
        return self._failures

    @property
    def slow(self) -> int:
        return self._slow

    def reset(self) -> None:
        self._next = self._calls = self._failures = self._slow = 0

    def results(self) -> bytes:
        """The results held, oldest first, one byte each (bit 1: failed, bit 2: slow)."""
        if self._calls < self.size:
            return bytes(self._ring[: self._calls])
        return bytes(self._ring[self._next :] + self._ring[: self._next])

    def __repr__(self) -> str:
        return (
            f"CountWindow(size={self.size}, calls={self._calls}, "
            f"failures={self._failures}, slow={self._slow})"
        )


def carry_results(old: CallWindow, new: CallWindow) -> None:
    """Move what `old` holds into the empty `new`, as far as their kinds allow (a reload).

    Count → count: the last `new.size` results, in their order. Time → time: the counters of
    each time slice, placed by when the slice began (see `TimeRing.absorb`). Between a count
    and a time window nothing is carried, because a count window does not know when its
    calls were, and a time window does not know their order: `new` starts empty.
    """
    if isinstance(old, CountWindow) and isinstance(new, CountWindow):
        for result in old.results()[-new.size :]:
            new.record(bool(result & _FAILED_BIT), bool(result & _SLOW_BIT))
    elif isinstance(old, TimeWindow) and isinstance(new, TimeWindow):
        new.absorb(old)
