"""The request body buffer between the client and one upstream attempt."""

from __future__ import annotations

from sidecar.wire.body import PENDING_HIGH_WATER, RequestBody
from sidecar.wire.flow import Producer


class _Socket:
    """A producer that records pause/resume calls and keeps one pause per owner."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pausers: list[object] = []

    @property
    def paused(self) -> bool:
        return bool(self.pausers)

    def pause_reading(self, by: object) -> None:
        self.calls.append("pause")
        if by not in self.pausers:
            self.pausers.append(by)

    def resume_reading(self, by: object) -> None:
        self.calls.append("resume")
        if by in self.pausers:
            self.pausers.remove(by)


class _Consumer:
    """Records what an upstream connection would be sent."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended = False
        self.producer: Producer | None = None

    def write_body(self, data: bytes) -> None:
        self.data.append(data)

    def end_body(self) -> None:
        self.ended = True

    def set_producer(self, producer: Producer | None) -> None:
        self.producer = producer


def test_body_chunks_before_attach_are_delivered_in_order() -> None:
    """Bytes that arrive before the attempt starts are sent first, then the rest streams."""
    socket, consumer = _Socket(), _Consumer()
    body = RequestBody(socket, retain_limit=1024)
    body.feed(b"ab")
    body.attach(consumer)
    body.feed(b"cd")
    body.finish()
    assert (b"".join(consumer.data), consumer.ended) == (b"abcd", True)


def test_body_pauses_the_client_past_the_high_water_mark_until_attached() -> None:
    """An unattached body stops the client's socket instead of growing memory."""
    socket, consumer = _Socket(), _Consumer()
    body = RequestBody(socket, retain_limit=0)
    body.feed(b"x" * (PENDING_HIGH_WATER + 1))
    assert socket.calls == ["pause"]
    body.attach(consumer)
    assert socket.calls == ["pause", "resume"]
    assert consumer.producer is socket


def test_body_small_complete_body_can_be_replayed() -> None:
    """A body within retain_limit is kept whole so a second attempt gets all of it."""
    body = RequestBody(_Socket(), retain_limit=10)
    body.feed(b"hello")
    body.finish()
    first, second = _Consumer(), _Consumer()
    body.attach(first)
    body.detach()
    assert body.can_replay
    body.attach(second)
    assert b"".join(second.data) == b"hello"
    assert second.ended


def test_body_over_retain_limit_is_streamed_and_not_replayable() -> None:
    """A body larger than retain_limit is never kept, so it can never be sent twice."""
    body = RequestBody(_Socket(), retain_limit=4)
    consumer = _Consumer()
    body.attach(consumer)
    body.feed(b"12345")
    body.finish()
    body.detach()
    assert not body.can_replay
    assert body.size == 5


def test_body_on_attach_runs_once_when_first_wanted() -> None:
    """The 100-continue hook fires on the first attach only."""
    calls: list[str] = []
    body = RequestBody(_Socket(), retain_limit=10)
    body.on_attach = lambda: calls.append("continue")
    body.attach(_Consumer())
    body.detach()
    body.attach(_Consumer())
    assert calls == ["continue"]


class _FullConsumer(_Consumer):
    """A consumer whose socket buffer is full: it pauses its producer in its own name."""

    def set_producer(self, producer: Producer | None) -> None:
        if self.producer is not None:
            self.producer.resume_reading(self)
        self.producer = producer
        if producer is not None:
            producer.pause_reading(self)


def test_body_attach_keeps_the_pause_the_new_consumer_takes() -> None:
    """Attaching releases only the body's own pause: a consumer that is full keeps the client paused."""
    socket, consumer = _Socket(), _FullConsumer()
    body = RequestBody(socket, retain_limit=0)
    body.feed(b"x" * (PENDING_HIGH_WATER + 1))
    body.attach(consumer)
    assert socket.pausers == [consumer]
    assert socket.paused


def test_body_detach_releases_the_consumers_pause() -> None:
    """An attempt abandoned while its connection was full does not leave the client paused."""
    socket, consumer = _Socket(), _FullConsumer()
    body = RequestBody(socket, retain_limit=0)
    body.attach(consumer)
    assert socket.paused
    body.detach()
    assert not socket.paused


def test_body_pauses_again_when_chunks_arrive_for_nobody_after_detach() -> None:
    """After a detach, bytes past the high-water mark pause the client in the body's name."""
    socket = _Socket()
    body = RequestBody(socket, retain_limit=0)
    body.attach(_Consumer())
    body.feed(b"x" * (PENDING_HIGH_WATER + 1))
    body.detach()
    body.feed(b"y")
    assert socket.pausers == [body]


def test_body_complete_releases_its_pause_before_any_attach() -> None:
    """A body that ends while held for an attempt stops pausing the client: nothing more of it
    can arrive, and what the socket carries next belongs to the next request."""
    socket = _Socket()
    body = RequestBody(socket, retain_limit=0)
    body.feed(b"x" * (PENDING_HIGH_WATER + 1))
    assert socket.pausers == [body]
    body.finish()
    assert not socket.paused
    consumer = _Consumer()
    body.attach(consumer)
    assert consumer.ended
    assert not socket.paused
