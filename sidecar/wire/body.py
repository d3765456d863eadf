"""A request body arriving from the client, handed to one upstream attempt at a time.

Chunks that arrive before an attempt is ready are held (pausing the client past a high-water
mark); a body no larger than `retain_limit` is kept whole so a retry can replay it, and a
larger one is streamed and marked not replayable. This is the only place request body bytes
are buffered.

The body pauses the client in its own name and releases only that pause: the consumer it
hands the client to (an upstream connection) pauses and resumes it in the consumer's name,
so attaching a consumer never lifts a pause the consumer has just taken, and detaching one
drops the consumer's pause with it (`set_producer(None)`).
"""

from __future__ import annotations

from collections.abc import Callable

from sidecar.wire.flow import BodySink, Producer

# Bytes held for a consumer that is not attached yet before the client is paused.
PENDING_HIGH_WATER = 64 * 1024


class RequestBody:
    """Streams to the attached consumer; keeps small bodies for replay."""

    __slots__ = (
        "_chunks",
        "_consumer",
        "_paused",
        "_producer",
        "complete",
        "on_attach",
        "replayable",
        "retain_limit",
        "sent",
        "size",
    )

    def __init__(self, producer: Producer, retain_limit: int) -> None:
        self._producer = producer
        self._chunks: list[bytes] = []
        self._consumer: BodySink | None = None
        self._paused = False
        self.retain_limit = retain_limit
        self.size = 0
        self.complete = False
        self.replayable = True
        self.sent = False  # handed to an attempt at least once
        # Called once, when the body is first wanted (sends `100 Continue` to the client).
        self.on_attach: Callable[[], None] | None = None

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        consumer = self._consumer
        if consumer is not None:
            consumer.write_body(data)
            if self.replayable:
                if self.size <= self.retain_limit:
                    self._chunks.append(data)
                else:
                    self.replayable = False
                    self._chunks = []
            return
        # No consumer yet: hold every byte; whether they stay as the replay copy is decided
        # when an attempt takes them (the route's `retain_limit` may not be known yet).
        self._chunks.append(data)
        if self.size > PENDING_HIGH_WATER and not self._paused:
            self._paused = True
            self._producer.pause_reading(self)

    def finish(self) -> None:
        """The body's last byte arrived. Its own pause ends here: nothing more of it can come,
        and what the socket carries next is the next request, whose reading the connection
        governs (held, this pause would outlive the exchange, as no attach releases it)."""
        self.complete = True
        self._release_pause()
        if self._consumer is not None:
            self._consumer.end_body()

    def attach(self, consumer: BodySink) -> None:
        """Send what has arrived so far to `consumer`, then stream the rest to it."""
        self._consumer = consumer
        self.sent = True
        if self.on_attach is not None:
            on_attach, self.on_attach = self.on_attach, None
            on_attach()
        chunks = self._chunks
        for piece in chunks:
            consumer.write_body(piece)
        if self.size > self.retain_limit:
            self.replayable = False
        if not self.replayable:
            self._chunks = []
        if self.complete:
            consumer.end_body()
            return
        consumer.set_producer(self._producer)
        self._release_pause()

    def detach(self) -> None:
        """The attempt using the body ended; later chunks wait for another consumer or none.

        The consumer lets go of the client (its pause, if it held one, goes with it); chunks
        that arrive for nobody past the high-water mark pause the client in the body's name.
        """
        consumer = self._consumer
        if consumer is not None:
            self._consumer = None
            consumer.set_producer(None)

    def _release_pause(self) -> None:
        if self._paused:
            self._paused = False
            self._producer.resume_reading(self)

    @property
    def can_replay(self) -> bool:
        """Whether another attempt could be sent the whole body from the start.

        A body no attempt has taken yet is always whole (a connect failure sent nothing);
        one that was sent is whole again only if it stayed within `retain_limit`. The
        attempt holding it must `detach()` before the next one `attach()`es.
        """
        return self.replayable or not self.sent

    def __repr__(self) -> str:
        return (
            f"RequestBody(size={self.size}, complete={self.complete}, replayable={self.replayable})"
        )
