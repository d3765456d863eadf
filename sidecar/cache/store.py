"""The stale-if-error store of one upstream (or of a route that overrides `fallback`), SPEC §4.4.

Keeps complete successful answers, bounded by `max_entries` and `max_bytes` with LRU eviction,
and hands one back when the upstream fails and it is no older than its stale limit. Two-level
keys as in RFC 9111 §4.1: per primary `RequestKey` the store remembers the Vary names of the
latest stored response, and the request's values of those names select the entry.

Synchronous and free of I/O: bodies arrive through a `Recorder` fed by whoever streams the
response, ages come from the injected `Clock`. The store is never consulted while the upstream
answers; that is the fallback stage's rule, not this module's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace

from sidecar.cache.entry import CachedResponse, Entry, PendingEntry, Recorder
from sidecar.cache.key import KeyBuilder, RequestKey, Variant
from sidecar.cache.rules import (
    header_bytes,
    initial_age,
    refusal,
    stale_limit,
    stored_headers,
    vary_names,
)
from sidecar.clock import Clock
from sidecar.config import CachePolicy

__all__ = ["FallbackStore"]

HeaderSeq = Sequence[tuple[bytes, bytes]]
_Slot = tuple[RequestKey, Variant]


class _Family:
    """The entries of one primary key, and the Vary names that select among them."""

    __slots__ = ("born", "names", "variants")

    def __init__(self, names: tuple[bytes, ...], born: float) -> None:
        self.names = names
        self.born = born
        self.variants: set[Variant] = set()


class FallbackStore:
    """Complete 2xx answers kept to be served stale when the upstream fails (LRU by bytes)."""

    __slots__ = (
        "_bytes",
        "_clock",
        "_entries",
        "_families",
        "_keys",
        "_policy",
        "_secret",
        "evictions",
        "hits",
        "misses",
    )

    def __init__(self, policy: CachePolicy, clock: Clock, secret: bytes) -> None:
        self._policy = policy
        self._clock = clock
        self._secret = secret
        self._keys = KeyBuilder(policy.methods, policy.key_headers, secret)
        self._entries: OrderedDict[_Slot, Entry] = OrderedDict()  # least recently used first
        self._families: dict[RequestKey, _Family] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def entries(self) -> int:
        return len(self._entries)

    def request_key(
        self, method: bytes, url: bytes, request_headers: HeaderSeq
    ) -> RequestKey | None:
        """The request's key; None when it may be neither stored nor served (method, credentials)."""
        return self._keys.request_key(method, url, request_headers)

    def lookup(self, key: RequestKey, request_headers: HeaderSeq) -> CachedResponse | None:
        """The stored answer for this request if it is within its stale limit; a hit is MRU."""
        family = self._families.get(key)
        if family is None:
            self.misses += 1
            return None
        slot = (key, self._keys.variant(family.names, request_headers))
        entry = self._entries.get(slot)
        if entry is None:
            self.misses += 1
            return None
        age = self._clock.now() - entry.received
        if age > entry.stale_limit:
            self._drop(slot)  # it only gets older: it can never be served again
            self.misses += 1
            return None
        self._entries.move_to_end(slot)
        self.hits += 1
        return CachedResponse(
            entry.status, list(entry.headers), entry.body, age, entry.upstream_age
        )

    def begin(
        self,
        key: RequestKey,
        request_headers: HeaderSeq,
        status: int,
        response_headers: HeaderSeq,
        content_length: int | None,
    ) -> Recorder | None:
        """Start recording a response to `key`; None when it is not storable (see `rules`)."""
        policy = self._policy
        # A HEAD answer announces the length of a body it does not carry.
        expected = None if key.method == b"HEAD" else content_length
        if (
            refusal(request_headers, status, response_headers, expected, policy.max_body)
            is not None
        ):
            return None
        names = vary_names(response_headers) or ()
        pending = PendingEntry(
            key=key,
            names=names,
            variant=self._keys.variant(names, request_headers),
            status=status,
            headers=stored_headers(response_headers),
            received=self._clock.now(),
            upstream_age=initial_age(response_headers),
            stale_limit=stale_limit(response_headers, policy.max_stale),
        )
        return Recorder(pending, self._put, expected, policy.max_body)

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        self._entries.clear()
        self._families.clear()
        self._bytes = 0

    def reconfigure(self, policy: CachePolicy) -> None:
        """Apply a policy changed by a reload, keeping the entries it still allows (SPEC §6).

        Entries are kept in their LRU order, each one judged under the new rules: its stale
        limit is worked out again (its own `stale-if-error`, else the new `max_stale`) and
        it is dropped when already older than that, when its method is no longer listed, or
        when its body exceeds the new `max_body`. A change of `key_headers` drops every
        entry: their keys hold the old headers' values, and the new ones cannot be derived.
        Then least recently used entries are evicted until the new `max_entries` and
        `max_bytes` hold. Counters (hits, misses, evictions) go on.
        """
        if policy == self._policy:
            return
        self._policy = policy
        self._keys = KeyBuilder(policy.methods, policy.key_headers, self._secret)
        now = self._clock.now()
        for slot, entry in list(self._entries.items()):
            key = slot[0]
            limit = stale_limit(entry.headers, policy.max_stale)
            if (
                not self._keys.admits(key)
                or now - entry.received > limit
                or entry.size - header_bytes(entry.headers) > policy.max_body
            ):
                self._drop(slot)
            elif limit != entry.stale_limit:
                self._entries[slot] = replace(entry, stale_limit=limit)  # keeps its LRU place
        self._evict()

    def _put(self, pending: PendingEntry, body: bytes) -> bool:
        """Store a completed answer, then evict least recently used entries until bounds hold.

        The policy is the one in force now: a recording begun before a reload is judged by
        the rules (and gets the stale limit) of the policy it ends under.
        """
        policy = self._policy
        size = len(body) + header_bytes(pending.headers)
        if (
            size > policy.max_bytes
            or len(body) > policy.max_body
            or not self._keys.admits(pending.key)
        ):
            return False
        entry = Entry(
            pending.status,
            pending.headers,
            body,
            pending.received,
            pending.upstream_age,
            stale_limit(pending.headers, policy.max_stale),
            size,
        )
        key = pending.key
        family = self._families.get(key)
        if family is not None and family.names != pending.names:
            if entry.born < family.born:
                return False  # an older answer may not redefine what the key varies on
            for variant in list(family.variants):  # entries keyed by the old names are stale
                self._drop((key, variant))
            family = None
        if family is None:
            family = self._families[key] = _Family(pending.names, entry.born)
        slot = (key, pending.variant)
        existing = self._entries.get(slot)
        if existing is not None:
            if existing.born > entry.born:
                return False  # a fresher answer finished first: keep it
            self._drop(slot)
            family = self._families.setdefault(key, family)
        family.born = max(family.born, entry.born)
        family.variants.add(pending.variant)
        self._entries[slot] = entry
        self._bytes += size
        self._evict()
        return True

    def _evict(self) -> None:
        """Drop least recently used entries until `max_entries` and `max_bytes` hold."""
        policy = self._policy
        while len(self._entries) > policy.max_entries or self._bytes > policy.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, slot: _Slot) -> None:
        entry = self._entries.pop(slot)
        self._bytes -= entry.size
        key, variant = slot
        family = self._families[key]
        family.variants.discard(variant)
        if not family.variants:
            del self._families[key]

    # Declared last: inside the class body the name shadows the builtin `bytes`.
    @property
    def bytes(self) -> int:
        """Bytes held: body plus header bytes of every entry."""
        return self._bytes

    def __repr__(self) -> str:
        policy = self._policy
        return (
            f"FallbackStore(entries={len(self._entries)}/{policy.max_entries}, "
            f"bytes={self._bytes}/{policy.max_bytes}, hits={self.hits}, misses={self.misses}, "
            f"evictions={self.evictions})"
        )
