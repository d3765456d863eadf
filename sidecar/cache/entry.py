"""What the store holds and hands out: entries, the served `CachedResponse`, the body `Recorder`.

Value types and the recorder that collects one body as it streams. They know nothing of keys,
bounds or eviction (`sidecar.cache.store`) nor of storability (`sidecar.cache.rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecar.cache.key import RequestKey, Variant

__all__ = ["CachedResponse", "Entry", "PendingEntry", "Recorder"]


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored answer as served: `headers` exclude hop-by-hop ones and `Age` (see age_header)."""

    status: int
    headers: list[tuple[bytes, bytes]]  # a fresh list per lookup; the body is shared, not copied
    body: bytes
    age: float  # seconds since the sidecar received it, by the store's clock
    upstream_age: int = 0  # the upstream's own `Age` when it was received

    def age_header(self) -> bytes:
        """The `Age` value to send (RFC 9111 §5.1): whole seconds, the upstream's Age included."""
        # The microsecond nudge keeps float noise (7.9999999 for 8 s) from shaving a second off.
        return b"%d" % int(self.upstream_age + max(0.0, self.age) + 1e-6)


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """Everything about an entry except its body, fixed when the response head arrives."""

    key: RequestKey
    names: tuple[bytes, ...]  # the response's Vary names
    variant: Variant  # the request's values of those names
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    received: float  # clock time the response head arrived
    upstream_age: int
    stale_limit: float


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored answer; `size` (body + header bytes) is what counts against max_bytes."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    received: float
    upstream_age: int
    stale_limit: float
    size: int

    @property
    def born(self) -> float:
        """When the origin produced it, as far as we can tell: the freshest has the latest."""
        return self.received - self.upstream_age


class Recorder:
    """Collects one response's body as it streams; commits it only if complete and small enough.

    `add()` keeps references to the chunks (joined once, at `finish()`); past `limit` bytes it
    drops what it had and returns False from then on. `finish()` and `abandon()` may be called
    more than once and in any order; only the first call of either counts.
    """

    __slots__ = ("_chunks", "_closed", "_commit", "_expected", "_limit", "_size", "pending")

    def __init__(
        self,
        pending: PendingEntry,
        commit: Callable[[PendingEntry, bytes], bool],
        expected: int | None,
        limit: int,
    ) -> None:
        self.pending = pending
        self._commit = commit
        self._expected = expected  # the announced length, when there was one
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False

    def add(self, chunk: bytes) -> bool:
        """Record a body chunk; False once the body is too large (or recording is over)."""
        if self._closed:
            return False
        self._size += len(chunk)
        if self._size > self._limit:
            self._closed = True
            self._chunks = []
            return False
        if chunk:
            self._chunks.append(chunk)
        return True

    def finish(self) -> bool:
        """The body ended normally: store it. True when it was stored."""
        if self._closed:
            return False
        self._closed = True
        chunks, self._chunks = self._chunks, []
        if self._expected is not None and self._size != self._expected:
            return False  # not the announced number of bytes: not the whole answer
        return self._commit(self.pending, b"".join(chunks))

    def abandon(self) -> None:
        """The body broke off (or was discarded): drop what was recorded, store nothing."""
        self._closed = True
        self._chunks = []

    def __repr__(self) -> str:
        state = "closed" if self._closed else "recording"
        return f"Recorder({state}, {self._size} bytes, limit={self._limit})"
