"""The client side byte by byte: `DownstreamProtocol` on an in-memory transport.

A real `Runtime` (short header and keep-alive timers) forwards to an `HttpUpstream`; the
tests feed request bytes with `data_received`/`eof_received` and assert what was written,
in which order, and whether the socket was paused or closed: pipelining, half-close, limits
on every head, timers, and refusals answered in their own turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest

from sidecar.server.downstream import DownstreamProtocol
from sidecar.server.proxy import ListenerState
from sidecar.wire.body import PENDING_HIGH_WATER
from tests.fakes import MemoryTransport, eventually
from tests.harness import RunningSidecar, running_sidecar, sidecar_yaml
from tests.upstreams import HttpUpstream

HEADER_TIMEOUT = 0.05
# For tests about something else than the header timer: long enough that a loaded machine's
# slow upstream answer never turns an expected 431 into a 408.
PATIENT_HEADER_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 0.3
MAX_HEADER_BYTES = 4096

GET_OK = b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n"
GET_HANG = b"GET /hang HTTP/1.1\r\nHost: svc\r\n\r\n"
TWO_HOSTS = b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
PARTIAL_HEAD = b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Slow: a"


@pytest.fixture
async def sidecar(upstream: HttpUpstream) -> AsyncIterator[RunningSidecar]:
    """A sidecar with short client-side timers and a dedicated listener `app` → `svc`."""
    async with sidecar_with(upstream, HEADER_TIMEOUT) as sc:
        yield sc


@pytest.fixture
async def patient_sidecar(upstream: HttpUpstream) -> AsyncIterator[RunningSidecar]:
    """The same sidecar with a header timeout that never fires within a test."""
    async with sidecar_with(upstream, PATIENT_HEADER_TIMEOUT) as sc:
        yield sc


@contextlib.asynccontextmanager
async def sidecar_with(
    upstream: HttpUpstream, header_timeout: float
) -> AsyncIterator[RunningSidecar]:
    text = sidecar_yaml(f"""
        limits:
          header_timeout: {header_timeout}s
          keepalive_timeout: {KEEPALIVE_TIMEOUT}s
          max_header_bytes: {MAX_HEADER_BYTES}B
        listeners:
          - {{name: app, bind: "127.0.0.1:0", upstream: svc}}
        upstreams:
          svc:
            endpoints: ["{upstream.url("")}"]
            retries: {{backoff: {{initial: 1ms, max: 1ms}}}}
        """)
    async with running_sidecar(text) as sc:
        yield sc


class Connection:
    """One client connection to the `app` listener, driven by hand."""

    def __init__(self, sc: RunningSidecar, listener: ListenerState | None = None) -> None:
        server = sc.runtime.server
        assert server is not None
        self.protocol = DownstreamProtocol(server, listener or ListenerState("app", "svc"))
        self.transport = MemoryTransport(self.protocol)
        if server.limiter is not None:
            server.limiter.opened()  # as the listener does for an accepted socket
        # The in-memory transport has the part of asyncio.Transport the protocol uses.
        self.protocol.connection_made(cast(asyncio.BaseTransport, self.transport))

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def statuses(self) -> list[int]:
        """The status codes written so far, in order."""
        return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.transport.written)]

    async def answered(self, count: int) -> None:
        await eventually(lambda: len(self.statuses()) >= count)


@pytest.fixture
async def connect(sidecar: RunningSidecar) -> AsyncIterator[Callable[[], Connection]]:
    """Opens hand-driven connections; any left open are closed after the test."""
    async with connections(sidecar) as factory:
        yield factory


@pytest.fixture
async def patient_connect(
    patient_sidecar: RunningSidecar,
) -> AsyncIterator[Callable[[], Connection]]:
    """Like `connect`, to the sidecar whose header timer never fires within a test."""
    async with connections(patient_sidecar) as factory:
        yield factory


@contextlib.asynccontextmanager
async def connections(sidecar: RunningSidecar) -> AsyncIterator[Callable[[], Connection]]:
    opened: list[Connection] = []

    def factory() -> Connection:
        conn = Connection(sidecar)
        opened.append(conn)
        return conn

    yield factory
    for conn in opened:
        conn.transport.close()


@pytest.fixture
async def forward_connection(sidecar: RunningSidecar) -> AsyncIterator[Connection]:
    """One hand-driven connection on a forward-proxy listener (absolute URLs, CONNECT)."""
    conn = Connection(sidecar, ListenerState("fwd", None))
    yield conn
    conn.transport.close()


# ---- half-close ------------------------------------------------------------------------------


async def test_downstream_half_closed_client_gets_its_answer_then_the_close(
    connect: Callable[[], Connection],
) -> None:
    """A client that sends FIN after its request gets the answer, then the sidecar closes."""
    conn = connect()
    conn.send(GET_OK)
    assert conn.protocol.eof_received() is True  # keep writing: the answer is still due
    await eventually(lambda: conn.transport.closed)
    assert conn.statuses() == [200]
    assert conn.transport.written.endswith(b"\r\n\r\nok")
    assert b"connection: close\r\n" in conn.transport.written


async def test_downstream_half_close_answers_pipelined_requests_before_closing(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """Complete requests pipelined before the FIN are all answered, in order, then it closes."""
    conn = patient_connect()
    conn.send(GET_OK + b"GET /status/201 HTTP/1.1\r\nHost: svc\r\n\r\n" + PARTIAL_HEAD)
    conn.protocol.eof_received()
    await eventually(lambda: conn.transport.closed)
    assert conn.statuses() == [200, 201]
    assert upstream.total == 2  # the unfinished third head was never forwarded


# ---- limits on every head ----------------------------------------------------------------------


async def test_downstream_head_pipelined_behind_a_finished_request_keeps_the_size_limit(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """A head that began behind a request keeps counting against `max_header_bytes` after
    that request is answered: 431, then the close."""
    conn = patient_connect()
    conn.send(GET_OK + PARTIAL_HEAD)
    await conn.answered(1)
    for _ in range(MAX_HEADER_BYTES // 1024 + 1):
        conn.send(b"a" * 1024)
    assert conn.statuses() == [200, 431]
    assert conn.transport.ended
    assert upstream.total == 1


async def test_downstream_oversized_pipelined_head_is_refused_in_its_turn(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """An oversized head behind a request in flight stops the reading at once; the request in
    flight is answered first, then the 431, then the close."""
    conn = patient_connect()
    conn.send(GET_HANG + PARTIAL_HEAD)
    await eventually(lambda: upstream.count("/hang") == 1)
    for _ in range(MAX_HEADER_BYTES // 1024 + 1):
        conn.send(b"a" * 1024)
    assert conn.transport.reading_paused
    assert conn.transport.written == b""
    assert not conn.transport.ended
    conn.send(b"a" * 1_000_000)  # already read when the pause took effect: dropped, not parsed
    upstream.release()
    await eventually(lambda: conn.transport.ended)
    assert conn.statuses() == [200, 431]
    assert b"released" in conn.transport.written


async def test_downstream_oversized_chunked_trailers_are_refused(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """Trailers are a header section too: past `max_header_bytes` the request is refused (431,
    then the close) instead of growing in memory without bound."""
    conn = patient_connect()
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Trailer: "
    )
    for _ in range(MAX_HEADER_BYTES // 1024 + 2):
        conn.send(b"a" * 1024)
    await eventually(lambda: conn.transport.ended)
    assert conn.statuses() == [431]


async def test_downstream_many_small_chunks_are_not_mistaken_for_large_trailers(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """Chunk framing is not a header section: a body of many tiny chunks, framing well past
    `max_header_bytes` in total, is forwarded whole, followed by small trailers."""
    chunks = b"1\r\nx\r\n" * MAX_HEADER_BYTES
    conn = patient_connect()
    conn.send(b"POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n")
    for start in range(0, len(chunks), 1000):
        conn.send(chunks[start : start + 1000])
    conn.send(b"0\r\nX-Trailer: ok\r\n\r\n")
    await conn.answered(1)
    assert conn.statuses() == [200]
    assert b'"body_length":%d' % MAX_HEADER_BYTES in conn.transport.written.replace(b" ", b"")


async def test_downstream_head_pipelined_behind_a_finished_request_keeps_the_header_timeout(
    connect: Callable[[], Connection],
) -> None:
    """A head that began behind a request must still complete within `header_timeout`."""
    conn = connect()
    conn.send(GET_OK + PARTIAL_HEAD)
    await conn.answered(1)
    await eventually(lambda: conn.transport.ended, within=1.0)
    assert conn.statuses() == [200, 408]


async def test_downstream_slow_head_behind_a_request_in_flight_gets_408_in_its_turn(
    connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """A pipelined head that outlasts `header_timeout` while a request is in flight is
    answered 408 after that request's answer."""
    conn = connect()
    conn.send(GET_HANG + PARTIAL_HEAD)
    await eventually(lambda: conn.transport.reading_paused, within=1.0)
    assert conn.transport.written == b""
    upstream.release()
    await eventually(lambda: conn.transport.ended)
    assert conn.statuses() == [200, 408]


# ---- keep-alive timers ----------------------------------------------------------------------------


async def test_downstream_head_after_an_idle_keepalive_pause_keeps_the_header_timeout(
    connect: Callable[[], Connection],
) -> None:
    """The second request's head is held to `header_timeout` even after the connection sat
    idle long enough for the timer to have fired in between."""
    conn = connect()
    conn.send(GET_OK)
    await conn.answered(1)
    await asyncio.sleep(HEADER_TIMEOUT * 2)  # idle: the connection timer fires meanwhile
    assert not conn.transport.closed
    conn.send(PARTIAL_HEAD)
    await eventually(lambda: conn.transport.ended, within=1.0)
    assert conn.statuses() == [200, 408]


async def test_downstream_idle_keepalive_connection_closes_after_keepalive_timeout(
    connect: Callable[[], Connection],
) -> None:
    """A keep-alive connection with no new request is closed, silently, after
    `keepalive_timeout`, and not before."""
    conn = connect()
    conn.send(GET_OK)
    await conn.answered(1)
    loop = asyncio.get_running_loop()
    answered = loop.time()
    await eventually(lambda: conn.transport.closed, within=KEEPALIVE_TIMEOUT * 3)
    assert loop.time() - answered >= KEEPALIVE_TIMEOUT * 0.9
    assert conn.statuses() == [200]


# ---- refusals in their turn ------------------------------------------------------------------------


async def test_downstream_malformed_pipelined_request_waits_for_the_requests_before_it(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """A malformed request behind one in flight and one queued neither cancels nor replaces
    them: both are answered, then the 400, then the close."""
    conn = patient_connect()
    conn.send(GET_HANG + GET_OK + TWO_HOSTS + GET_OK)
    await eventually(lambda: upstream.count("/hang") == 1)
    assert conn.transport.written == b""
    assert conn.transport.reading_paused
    upstream.release()
    await eventually(lambda: conn.transport.ended)
    assert conn.statuses() == [200, 200, 400]
    assert b"released" in conn.transport.written
    assert upstream.count("/ok") == 1  # the request after the malformed one was never read
    assert upstream.count("/echo") == 0


# ---- lingering close ---------------------------------------------------------------------------


async def test_downstream_refusal_sends_fin_and_drains_until_the_clients_eof(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """After a refusal the sidecar sends FIN, not a reset: it keeps reading (and discarding)
    what the client still sends, and closes at the client's own FIN."""
    conn = patient_connect()
    conn.send(TWO_HOSTS + b"more bytes the client had in flight")
    assert conn.statuses() == [400]
    assert conn.transport.eof_written
    assert not conn.transport.closed
    assert not conn.transport.reading_paused  # reading on, so nothing unread triggers a reset
    written = len(conn.transport.written)
    conn.send(GET_OK + b"x" * 100_000)
    assert len(conn.transport.written) == written  # discarded, never parsed
    assert conn.protocol.eof_received() is False  # the transport closes itself
    assert upstream.total == 0


async def test_downstream_unread_request_body_lingers_after_the_answer(
    patient_connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """An answer given before the request body arrived ends with FIN and a drain, so the
    client still uploading reads the answer instead of a reset."""
    conn = patient_connect()
    conn.send(b"POST /status/403 HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000000\r\n\r\n")
    conn.send(b"x" * 70_000)  # more than is held for an attempt: the client is paused
    await eventually(lambda: conn.transport.ended)
    assert conn.statuses() == [403]
    assert not conn.transport.closed
    assert not conn.transport.reading_paused
    conn.send(b"x" * 100_000)  # the rest of the upload is read and dropped


async def test_downstream_lingering_close_gives_up_after_linger_time(
    patient_connect: Callable[[], Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that neither reads nor finishes is cut off once `LINGER_TIME` is over."""
    monkeypatch.setattr("sidecar.server.downstream.LINGER_TIME", 0.05)
    conn = patient_connect()
    conn.send(TWO_HOSTS)
    assert conn.transport.eof_written
    await eventually(lambda: conn.transport.closed, within=1.0)
    assert conn.transport.aborted


# ---- CONNECT behind other requests -------------------------------------------------------------


async def test_downstream_connect_pipelined_behind_a_request_tunnels_in_its_turn(
    forward_connection: Connection, upstream: HttpUpstream
) -> None:
    """A CONNECT sent behind a request in flight waits for that answer, then opens its
    tunnel; the bytes after it are the tunnel's, never parsed as requests."""
    conn, target = forward_connection, upstream.authority.encode()
    tunnelled = b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n"
    conn.send(
        b"GET http://%s/hang HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)
        + b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)
        + tunnelled
    )
    await eventually(lambda: upstream.count("/hang") == 1)
    assert conn.transport.written == b""
    assert upstream.count("/ok") == 0  # held for the tunnel, not forwarded as a request
    upstream.release()
    await eventually(lambda: len(conn.statuses()) == 3)
    assert conn.statuses() == [200, 200, 200]
    assert b"HTTP/1.1 200 Connection Established\r\n\r\n" in conn.transport.written
    assert conn.transport.written.endswith(b"ok")
    assert not conn.transport.closed


async def test_downstream_connect_pipelined_behind_a_request_then_eof_tunnels_and_closes(
    forward_connection: Connection, upstream: HttpUpstream
) -> None:
    """A client that half-closes after a pipelined CONNECT and its tunnel bytes still gets the
    tunnel: its bytes, then its FIN, reach the target once the tunnel is up (the target here
    closes on a half-close without answering), and the connection ends with the tunnel."""
    conn, target = forward_connection, upstream.authority.encode()
    conn.send(
        b"GET http://%s/ok HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)
        + b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)
        + b"GET /ok HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    )
    assert conn.protocol.eof_received() is True
    await eventually(lambda: conn.transport.closed)
    assert conn.statuses() == [200, 200]
    assert conn.transport.written.endswith(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    assert upstream.count("/ok") == 2


# ---- pause ownership --------------------------------------------------------------------------


async def test_downstream_body_that_arrived_whole_leaves_the_connection_reading(
    connect: Callable[[], Connection],
) -> None:
    """A request body past the high-water mark that arrived in full before its attempt started
    does not keep the socket paused after the answer: the next request is read and answered."""
    body = b"x" * (PENDING_HIGH_WATER * 2)
    conn = connect()
    conn.send(b"POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await conn.answered(1)
    await eventually(lambda: not conn.transport.reading_paused)
    conn.send(GET_OK)
    await conn.answered(2)
    assert conn.statuses() == [200, 200]


# ---- retries follow the headers forwarded ----------------------------------------------------------


async def test_downstream_idempotency_key_named_by_connection_does_not_make_post_retryable(
    connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """`Idempotency-Key` makes a POST retryable only when it is forwarded; a key the
    `Connection` header names is removed, so that POST is sent once."""
    keyed = (
        b"POST /status/503 HTTP/1.1\r\nHost: svc\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\n"
    )
    conn = connect()
    conn.send(keyed + b"\r\n")
    await conn.answered(1)
    assert upstream.count("/status/503") == 3  # kept: retried up to max_attempts
    conn.send(keyed + b"Connection: keep-alive, Idempotency-Key\r\n\r\n")
    await conn.answered(2)
    assert conn.statuses() == [503, 503]
    assert upstream.count("/status/503") == 4
    assert not upstream.last().has_header("idempotency-key")


async def test_downstream_request_id_named_by_connection_is_replaced_by_a_generated_one(
    connect: Callable[[], Connection], upstream: HttpUpstream
) -> None:
    """An `x-request-id` the `Connection` header names is hop-by-hop: the upstream gets the
    id the sidecar generates instead of none at all."""
    conn = connect()
    conn.send(
        b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Request-Id: client-id\r\n"
        b"Connection: X-Request-Id\r\n\r\n"
    )
    await conn.answered(1)
    forwarded = upstream.last().header("x-request-id")
    assert forwarded is not None
    assert forwarded != "client-id"
