"""The seams between the two sides of a proxied exchange: body sinks and producers.

A producer is whatever can stop reading (a socket's transport); a sink is whatever receives
body bytes. Back-pressure is wired by telling a sink its producer: when the sink's own socket
buffer is full it pauses the producer, and resumes it when the buffer drains. No buffering
happens here, which is what keeps a 20 MiB body at flat memory.
"""

from __future__ import annotations

from typing import Protocol


class Producer(Protocol):
    """A byte source that can be paused (a transport's reading side)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class BodySink(Protocol):
    """Receives a body as it streams; `end_body` marks its clean end."""

    def write_body(self, data: bytes) -> None: ...

    def end_body(self) -> None: ...

    def set_producer(self, producer: Producer | None) -> None: ...
