"""The seams between the two sides of a proxied exchange: body sinks and producers.

A producer is whatever can stop reading (a socket's transport); a sink is whatever receives
body bytes. Back-pressure is wired by telling a sink its producer: when the sink's own socket
buffer is full it pauses the producer, and resumes it when the buffer drains. No buffering
happens here, which is what keeps a 20 MiB body at flat memory.

A producer can be paused by more than one party at once (a request body waiting for its
attempt, the upstream connection whose socket buffer is full, a pipelining queue), so every
pause names its owner: the producer reads again only when every owner has resumed, and an
owner can release only its own pause. One shared flag would let one party resume a socket
another had just paused (an upload then buffers without limit), or leave it paused forever
when the party that paused it went away.
"""

from __future__ import annotations

from typing import Protocol


class Producer(Protocol):
    """A byte source that can be paused (a transport's reading side), one pause per owner."""

    def pause_reading(self, by: object) -> None:
        """Stop reading until `by` resumes (and every other owner of a pause has, too)."""
        ...

    def resume_reading(self, by: object) -> None:
        """Release `by`'s pause, if it holds one; reading resumes when no pause is left."""
        ...


class BodySink(Protocol):
    """Receives a body as it streams; `end_body` marks its clean end.

    `set_producer(p)` tells the sink whose reading it may pause; `set_producer(None)` ends
    that, and releases any pause the sink still holds on the previous producer.
    """

    def write_body(self, data: bytes) -> None: ...

    def end_body(self) -> None: ...

    def set_producer(self, producer: Producer | None) -> None: ...


class Pausers:
    """The owners of the pauses on one producer: paused while the set is not empty.

    `add` and `discard` return True when the producer must change state (the first pause
    was taken, or the last one released), so the producer touches its socket only then.
    """

    __slots__ = ("_owners",)

    def __init__(self) -> None:
        self._owners: list[object] = []  # a handful at most: a list beats a set here

    def add(self, by: object) -> bool:
        """Record `by`'s pause; True if the producer was reading until now."""
        owners = self._owners
        if any(owner is by for owner in owners):
            return False
        owners.append(by)
        return len(owners) == 1

    def discard(self, by: object) -> bool:
        """Release `by`'s pause; True if that was the last one (the producer may read)."""
        owners = self._owners
        for index, owner in enumerate(owners):
            if owner is by:
                del owners[index]
                return not owners
        return False

    def holds(self, by: object) -> bool:
        return any(owner is by for owner in self._owners)

    def only(self, by: object) -> bool:
        """Whether `by` holds the one pause there is."""
        return len(self._owners) == 1 and self._owners[0] is by

    def clear(self) -> None:
        self._owners.clear()

    def __bool__(self) -> bool:
        return bool(self._owners)

    def __len__(self) -> int:
        return len(self._owners)

    def __repr__(self) -> str:
        return f"Pausers({[type(owner).__name__ for owner in self._owners]})"
