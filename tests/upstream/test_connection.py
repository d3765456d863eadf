"""`UpstreamConnection` driven byte by byte over an in-memory transport: bodies that end by a
reset, bytes after a response, pauses owned by who paused, idle time while paused, and the
head deadline that starts when the request has been sent."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from sidecar.config import Endpoint
from sidecar.errors import BodyStreamError, UpstreamResetError, UpstreamTimeoutError
from sidecar.outcome import AttemptResult
from sidecar.upstream.connection import UpstreamConnection
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.pool import EndpointPool
from sidecar.wire.body import RequestBody
from sidecar.wire.flow import Producer
from tests.fakes import MemoryTransport, NullProducer

HEAD = b"GET /x HTTP/1.1\r\nhost: up\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Sink:
    """A `BodySink` that keeps the body; `full` makes it pause its producer while attached."""

    def __init__(self, *, full: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.ended = False
        self.full = full
        self.producer: Producer | None = None

    def write_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def end_body(self) -> None:
        self.ended = True

    def set_producer(self, producer: Producer | None) -> None:
        if self.full and self.producer is not None:
            self.producer.resume_reading(self)
        self.producer = producer
        if self.full and producer is not None:
            producer.pause_reading(self)

    def drain(self) -> None:
        """The client read everything: the sink stops pausing its producer."""
        self.full = False
        if self.producer is not None:
            self.producer.resume_reading(self)


def pool() -> EndpointPool:
    return EndpointPool(
        Endpoint.parse("http://127.0.0.1:9"), asyncio.get_running_loop(), LoopGuard()
    )


def connect(target: EndpointPool | None = None) -> tuple[UpstreamConnection, MemoryTransport]:
    conn = UpstreamConnection(target or pool(), asyncio.get_running_loop())
    transport = MemoryTransport(conn)
    conn.connection_made(cast(asyncio.BaseTransport, transport))
    return conn, transport


async def answered(conn: UpstreamConnection, response: bytes, **start: object) -> None:
    """Send a bodyless request and feed `response`; returns once the head is in."""
    head = conn.start(
        HEAD,
        head_only=bool(start.get("head_only", False)),
        chunked=False,
        idle_timeout=float(cast(float, start.get("idle_timeout", 0.0))),
    )
    conn.end_body()
    conn.data_received(response)
    await head


# ---- a body that ends by a reset is not complete -----------------------------------------


async def test_connection_reset_ends_no_close_delimited_body() -> None:
    """A body without a length that ends by a TCP reset breaks off: never a clean end."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\n\r\nhel")
    sink = Sink()
    streaming = asyncio.ensure_future(conn.stream_to(sink))
    await asyncio.sleep(0)
    transport.peer_resets(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(BodyStreamError) as caught:
        await streaming
    assert caught.value.result is AttemptResult.RESET
    assert (sink.chunks, sink.ended, conn.body_complete) == ([b"hel"], False, False)


async def test_connection_clean_close_ends_a_close_delimited_body() -> None:
    """A body without a length that ends with the upstream's clean close is complete."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\n\r\nhel")
    sink = Sink()
    streaming = asyncio.ensure_future(conn.stream_to(sink))
    await asyncio.sleep(0)
    conn.data_received(b"lo")
    transport.peer_resets(None)
    await streaming
    assert (b"".join(sink.chunks), sink.ended, conn.body_complete) == (b"hello", True, True)


async def test_connection_our_own_close_ends_no_close_delimited_body() -> None:
    """A close-delimited body the sidecar closed itself (discarded) is not complete."""
    conn, _ = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\n\r\nhel")
    conn.discard()
    await asyncio.sleep(0)
    assert not conn.body_complete


# ---- bytes after the response -------------------------------------------------------------

SMUGGLED = b"HTTP/1.1 404 Not Found\r\nX-Smuggled: 1\r\nContent-Length: 4\r\n\r\nevil"


async def test_connection_second_response_in_the_same_read_is_not_parsed() -> None:
    """A response nobody asked for, in the same read as the answer, changes nothing of the
    answer and closes the connection, which never returns to the pool."""
    target = pool()
    conn, transport = connect(target)
    await answered(conn, b"HTTP/1.1 200 OK\r\nX-First: 1\r\nContent-Length: 2\r\n\r\nok" + SMUGGLED)
    assert (conn.status, conn.headers) == (200, [(b"x-first", b"1")])
    assert conn.body_complete
    assert conn.take_buffered_body() == [b"ok"]
    assert transport.closed
    conn.release()
    assert target.idle_count == 0


async def test_connection_bytes_after_the_response_in_a_later_read_close_it() -> None:
    """Bytes arriving after the answer was complete close the connection unread."""
    target = pool()
    conn, transport = connect(target)
    await answered(conn, OK)
    conn.data_received(SMUGGLED)
    assert transport.closed
    assert conn.take_buffered_body() == [b"ok"]
    conn.release()
    assert target.idle_count == 0


async def test_connection_bytes_while_pooled_close_it() -> None:
    """A pooled connection that receives anything is closed and leaves the pool."""
    target = pool()
    conn, transport = connect(target)
    await answered(conn, OK)
    conn.release()
    assert target.idle_count == 1
    conn.data_received(SMUGGLED)
    await asyncio.sleep(0)
    assert transport.closed
    assert target.idle_count == 0


async def test_connection_body_after_a_head_response_is_refused() -> None:
    """Bytes after the head of a HEAD answer are never taken as its body."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", head_only=True)
    assert conn.body_complete
    assert conn.take_buffered_body() == []
    assert transport.closed


async def test_connection_interim_response_then_answer_is_one_response() -> None:
    """A 100 Continue before the answer is not taken for bytes after a response."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert (conn.status, conn.take_buffered_body()) == (200, [b"ok"])
    assert not transport.closed


# ---- pause ownership --------------------------------------------------------------------------


async def test_connection_handing_over_the_buffer_keeps_the_sinks_pause() -> None:
    """Attaching a sink that is full keeps the socket paused even though the pre-sink
    buffer that paused it first has been handed over."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 400000\r\n\r\n" + b"x" * 300_000)
    assert transport.reading_paused  # past the pre-sink buffer
    sink = Sink(full=True)
    streaming = asyncio.ensure_future(conn.stream_to(sink))
    await asyncio.sleep(0)
    assert transport.reading_paused  # the sink still holds its pause
    sink.drain()
    assert not transport.reading_paused
    conn.data_received(b"y" * 100_000)
    await streaming
    assert sink.ended


async def test_connection_sink_letting_go_leaves_the_connection_reusable() -> None:
    """A body that ends while the client is slow releases the sink's pause with the sink,
    so the connection goes back to the pool reading."""
    target = pool()
    conn, transport = connect(target)
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    sink = Sink(full=True)
    streaming = asyncio.ensure_future(conn.stream_to(sink))
    await asyncio.sleep(0)
    conn.data_received(b"cd")
    await streaming
    assert not transport.reading_paused
    conn.release()
    assert target.idle_count == 1


async def test_connection_detached_request_producer_is_resumed() -> None:
    """The client paused because the upstream's buffer was full is released when the
    connection lets go of it: detached, reused or lost."""
    conn, transport = connect()
    conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    client = NullProducer()
    conn.set_producer(client)
    transport.fill_write_buffer()
    assert client.pausers == [conn]
    conn.set_producer(None)
    assert client.pausers == []
    conn.set_producer(client)
    assert client.pausers == [conn]
    transport.peer_resets(ConnectionResetError())
    assert client.pausers == []


async def test_connection_attach_does_not_resume_a_client_the_connection_paused() -> None:
    """A request body attached to a connection whose buffer is full leaves the client
    paused, although the body had paused it first and releases its own pause."""
    conn, transport = connect()
    conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    transport.fill_write_buffer()
    client = NullProducer()
    body = RequestBody(client, retain_limit=0)
    body.feed(b"x" * 100_000)  # past the pending high-water mark: the body pauses the client
    body.attach(conn)
    assert client.pausers == [conn]
    body.detach()
    assert client.pausers == []


async def test_connection_answered_before_its_request_was_sent_is_aborted_when_released() -> None:
    """An upstream that answers before the request body has been sent and then reads no
    more is reset when the exchange ends: a graceful close would wait forever for it to read
    the queued request bytes, keeping the socket and its buffer."""
    target = pool()
    conn, transport = connect(target)
    head = conn.start(HEAD, head_only=False, chunked=True, idle_timeout=0.0)
    body = RequestBody(NullProducer(), retain_limit=0)
    body.attach(conn)
    body.feed(b"x" * 1000)
    conn.data_received(OK)
    await head
    conn.take_buffered_body()
    conn.release()
    assert (transport.closed, transport.aborted, target.idle_count) == (True, True, 0)


async def test_connection_sent_request_still_buffered_is_aborted_when_not_reusable() -> None:
    """A connection that cannot be reused and still holds unsent request bytes is reset;
    one whose request went out entirely ends with a graceful close."""
    for buffered in (True, False):
        conn, transport = connect()
        head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
        conn.end_body()
        if buffered:
            transport.fill_write_buffer()
        conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await head
        conn.take_buffered_body()
        conn.release()
        assert (transport.closed, transport.aborted) == (True, buffered)


# ---- idle time and back-pressure ------------------------------------------------------------


async def test_connection_time_paused_by_the_sink_is_not_upstream_idleness() -> None:
    """A body paused by a slow client for most of `idle` does not time out when the
    upstream sends on soon after the client reads again."""
    conn, _ = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", idle_timeout=0.1)
    sink = Sink(full=True)
    streaming = asyncio.ensure_future(conn.stream_to(sink))
    await asyncio.sleep(0.08)  # paused: the upstream cannot send
    sink.drain()
    await asyncio.sleep(0.06)  # 0.14 s since the last byte, 0.06 s of it reading
    conn.data_received(b"cd")
    await streaming
    assert (b"".join(sink.chunks), sink.ended) == (b"abcd", True)


async def test_connection_client_not_reading_for_idle_is_not_the_upstreams_fault() -> None:
    """A client that takes nothing for longer than `idle` ends the body as a timeout that
    does not blame the upstream, and the upstream connection is dropped."""
    conn, transport = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", idle_timeout=0.05)
    streaming = asyncio.ensure_future(conn.stream_to(Sink(full=True)))
    with pytest.raises(BodyStreamError) as caught:
        async with asyncio.timeout(1.0):
            await streaming
    assert caught.value.result is AttemptResult.TIMEOUT
    assert caught.value.upstream_fault is False
    assert transport.aborted


async def test_connection_silent_upstream_is_the_upstreams_idle_timeout() -> None:
    """An upstream that sends nothing for longer than `idle` while the client reads is a
    timeout blamed on the upstream."""
    conn, _ = connect()
    await answered(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", idle_timeout=0.05)
    with pytest.raises(BodyStreamError) as caught:
        async with asyncio.timeout(1.0):
            await conn.stream_to(Sink())
    assert caught.value.result is AttemptResult.TIMEOUT
    assert caught.value.upstream_fault is True


# ---- the head deadline starts when the request is sent ----------------------------------


async def test_connection_head_deadline_starts_when_the_body_is_sent() -> None:
    """An upload longer than `per_try` and `total` is not timed out; the head is due
    `per_try` after its last byte, and `total` restarts then too."""
    loop = asyncio.get_running_loop()
    conn, _ = connect()
    head = conn.start(HEAD, head_only=False, chunked=True, idle_timeout=1.0)
    conn.expire_head(0.05, 0.08, None)
    body = RequestBody(NullProducer(), retain_limit=0)
    body.attach(conn)
    for _ in range(4):
        await asyncio.sleep(0.03)  # 0.12 s of upload: past per_try and total
        body.feed(b"x")
    assert not head.done()
    sent_at = loop.time()
    body.finish()
    total_deadline = conn.total_deadline
    assert total_deadline is not None
    assert total_deadline == pytest.approx(sent_at + 0.08, abs=0.01)
    await asyncio.sleep(0.02)
    assert not head.done()
    with pytest.raises(UpstreamTimeoutError):
        async with asyncio.timeout(1.0):
            await head
    assert loop.time() - sent_at == pytest.approx(0.05, abs=0.03)


async def test_connection_head_deadline_keeps_a_total_that_already_started() -> None:
    """A request whose body had fully arrived keeps its `total` deadline, even if sooner
    than `per_try` from now."""
    loop = asyncio.get_running_loop()
    conn, _ = connect()
    head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=1.0)
    conn.expire_head(5.0, 5.0, loop.time() + 0.03)
    conn.end_body()
    with pytest.raises(UpstreamTimeoutError):
        async with asyncio.timeout(1.0):
            await head


async def test_connection_head_deadline_of_a_previous_exchange_does_not_fire() -> None:
    """The timer left from an earlier exchange on the connection never times out a new
    exchange whose request is still being sent."""
    target = pool()
    conn, _ = connect(target)
    loop = asyncio.get_running_loop()
    first = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    conn.expire_head(0.03, 5.0, loop.time() + 5.0)
    conn.end_body()
    conn.data_received(OK)
    await first
    conn.release()
    assert await target.acquire(1.0) == (conn, True)
    second = conn.start(HEAD, head_only=False, chunked=True, idle_timeout=1.0)
    conn.expire_head(0.03, 5.0, None)
    await asyncio.sleep(0.06)  # the first exchange's timer fires meanwhile
    assert not second.done()


# ---- stale pooled connections ----------------------------------------------------------------


async def test_connection_reused_and_lost_before_any_byte_is_not_the_upstreams_fault() -> None:
    """A reused connection that dies before any byte of the answer was closed while idle:
    the reset does not blame the upstream."""
    target = pool()
    conn, transport = connect(target)
    await answered(conn, OK)
    conn.release()
    assert await target.acquire(1.0) == (conn, True)
    head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    conn.end_body()
    transport.peer_resets(None)
    with pytest.raises(UpstreamResetError) as caught:
        await head
    assert caught.value.upstream_fault is False


@pytest.mark.parametrize("reused", [False, True], ids=["fresh", "reused-after-a-byte"])
async def test_connection_reset_before_the_head_blames_the_upstream(reused: bool) -> None:
    """A fresh connection reset before the head, or a reused one after a byte of the
    answer, is the upstream's failure."""
    target = pool()
    conn, transport = connect(target)
    if reused:
        await answered(conn, OK)
        conn.release()
        assert await target.acquire(1.0) == (conn, True)
    head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    conn.end_body()
    if reused:
        conn.data_received(b"HTTP/1.1 2")
    transport.peer_resets(ConnectionResetError())
    with pytest.raises(UpstreamResetError) as caught:
        await head
    assert caught.value.upstream_fault is True
