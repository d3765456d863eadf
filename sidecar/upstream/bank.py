"""The one rule for what survives a reload: a bank of run-time state keyed by (kind, owner, key).

Every piece of state a compiled config holds (pools, balancer position, breakers, budgets,
stores, …) is taken through the bank of the router being built. The bank looks up what the
previous config's bank held under the same kind and owner and hands it back instead of a new
one when it still fits:

- `keep`: the previous object when its key (its owner's endpoints and its own policy) is equal,
  else a new one. For state that means nothing under another policy (a bulkhead, a bucket).
- `carry`: the previous object when its key (the owner's endpoints) is equal *whatever its
  policy*; a changed policy is queued and applied by `commit()`. For state worth more than
  its policy (a breaker's open circuit, stored answers, ejections, idle connections).

Nothing changes for the objects in use until the reload commits: `commit()` applies the queued
policies, then `sweep()` returns what the previous config held and the new one does not, for
the caller to close. A reload refused after compiling calls `abort()` instead, which returns
what was built for nothing; the previous state stays exactly as it was. Which keys and
policies make a kind survive is decided by the caller (`upstream/group.py`,
`pipeline/route.py`); the bank only compares them with `==` (config models are frozen and
compare by value) and never looks inside the objects it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, Protocol, TypeVar, cast, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Closable(Protocol):
    """State that holds something to release (sockets, timers, tasks) once no config uses it."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Kind(Generic[T]):
    """One kind of state (`breaker`, `pools`, …); `closes`: a swept object is to be closed."""

    name: str
    closes: bool = False


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose state: an upstream's own (`route` None), one of its routes', or the process's."""

    upstream: str = ""
    route: str | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    key: object
    policy: object
    value: object
    carried: bool  # taken from the previous bank, not built for this one
    closes: bool  # its kind's `closes`


class StateBank:
    """The state one compiled config uses, and the link to the previous config's until commit."""

    __slots__ = ("_entries", "_pending", "_previous")

    def __init__(self, previous: StateBank | None = None) -> None:
        self._entries: dict[tuple[str, Owner], _Entry] = {}
        self._previous = previous
        self._pending: list[Callable[[], None]] = []

    def keep(self, kind: Kind[T], owner: Owner, key: object, build: Callable[[], T]) -> T:
        """The previous config's object of this kind and owner if its key equals `key`, else
        `build()`; either way it is this config's from now on."""
        found = self._found(kind, owner, key)
        if found is not None:
            self._entries[kind.name, owner] = _Entry(key, None, found.value, True, kind.closes)
            return cast(T, found.value)
        value = build()
        self._entries[kind.name, owner] = _Entry(key, None, value, False, kind.closes)
        return value

    def carry(
        self,
        kind: Kind[T],
        owner: Owner,
        key: object,
        policy: object,
        build: Callable[[], T],
        retune: Callable[[T], None],
    ) -> T:
        """The previous config's object of this kind and owner if its key equals `key`, under
        any policy, else `build()`. When `policy` differs from the one it was last given,
        `retune(object)` is queued for `commit()`: until then it runs as it did."""
        found = self._found(kind, owner, key)
        if found is None:
            value = build()
            self._entries[kind.name, owner] = _Entry(key, policy, value, False, kind.closes)
            return value
        value = cast(T, found.value)
        self._entries[kind.name, owner] = _Entry(key, policy, value, True, kind.closes)
        if found.policy != policy:
            self._pending.append(partial(retune, value))
        return value

    def put(self, kind: Kind[T], owner: Owner, key: object, value: T) -> None:
        """Record an object this config already holds under one more owner (a route sharing
        its upstream's budget), so that the next config finds it under that owner too."""
        previous = self._previous
        carried = previous is not None and id(value) in previous._held()
        self._entries[kind.name, owner] = _Entry(key, None, value, carried, kind.closes)

    def previous(self, kind: Kind[T], owner: Owner) -> T | None:
        """What the previous config held under this kind and owner, whatever its key."""
        entry = self._previous._entries.get((kind.name, owner)) if self._previous else None
        return cast(T, entry.value) if entry is not None else None

    def carried(self, kind: Kind[T], owner: Owner) -> bool:
        """Whether this config's object of this kind and owner came from the previous one."""
        entry = self._entries.get((kind.name, owner))
        return entry is not None and entry.carried

    def commit(self) -> None:
        """The reload committed: apply the queued policies to the carried state, each once."""
        pending, self._pending = self._pending, []
        for change in pending:
            change()

    def sweep(self) -> list[Closable]:
        """After `commit()`: what the previous config held and this one does not (each object
        once), to be closed. The previous bank is let go: later lookups build afresh."""
        previous, self._previous = self._previous, None
        if previous is None:
            return []
        return _closables(previous._entries, exclude=self)

    def abort(self) -> list[Closable]:
        """The reload was refused after compiling: drop the queued policies (the carried state
        stays as it was) and return what was built for this config alone, to be closed."""
        self._pending.clear()
        previous, self._previous = self._previous, None
        return _closables(self._entries, exclude=previous)

    def _found(self, kind: Kind[T], owner: Owner, key: object) -> _Entry | None:
        if self._previous is None:
            return None
        entry = self._previous._entries.get((kind.name, owner))
        return entry if entry is not None and entry.key == key else None

    def _held(self) -> set[int]:
        """The identities of the objects this bank holds (entries keep them alive)."""
        return {id(entry.value) for entry in self._entries.values()}

    def __repr__(self) -> str:
        carried = sum(entry.carried for entry in self._entries.values())
        return (
            f"StateBank(entries={len(self._entries)}, carried={carried}, "
            f"pending={len(self._pending)}, linked={self._previous is not None})"
        )


def _closables(
    entries: dict[tuple[str, Owner], _Entry], exclude: StateBank | None
) -> list[Closable]:
    """The objects of closing kinds among `entries` that `exclude` does not hold, each once."""
    skip = exclude._held() if exclude is not None else set()
    found: list[Closable] = []
    for entry in entries.values():
        value = entry.value
        if entry.closes and isinstance(value, Closable) and id(value) not in skip:
            skip.add(id(value))
            found.append(value)
    return found
