"""`HttpTransport` over in-memory connections: requests that meet a stale pooled connection,
the reuse window of requests that cannot be resent, and the `total` deadline of a request
whose body is still arriving."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.errors import UpstreamResetError
from sidecar.pipeline.exchange import Exchange
from sidecar.upstream.protocol import UpstreamResponse
from sidecar.upstream.transport import HttpTransport
from sidecar.wire.body import RequestBody
from tests.fakes import NullProducer, RecordingResponder, eventually
from tests.upstream.test_pool import HEAD, OK, MemoryPool, served


def exchange(method: bytes = b"GET", body: RequestBody | None = None) -> Exchange:
    now = asyncio.get_running_loop().time()
    result = Exchange(
        method=method,
        target=b"/x",
        path=b"/x",
        authority="up:80",
        host_header=None,
        forward_headers=b"",
        request_id="req-1",
        request_id_generated=False,
        body=body,
        content_length=None,
        listener="app",
        responder=RecordingResponder(),
        client_http11=True,
        client_keep_alive=True,
        started=now,
        wall_started=0.0,
    )
    result.deadline = now + 5.0
    return result


def complete_body(data: bytes = b"{}") -> RequestBody:
    body = RequestBody(NullProducer(), retain_limit=0)
    body.feed(data)
    body.finish()
    return body


async def send(
    pool: MemoryPool, request: Exchange, per_try: float = 5.0, total: float = 5.0
) -> UpstreamResponse:
    return await HttpTransport(asyncio.get_running_loop()).send(
        pool, request, per_try, total, 1.0, 1.0
    )


async def test_transport_resends_a_get_after_a_stale_pooled_connection() -> None:
    """A GET whose pooled connection closes before any byte of the answer goes out again on
    a fresh connection, and the client sees only the answer."""
    pool = MemoryPool()
    await served(pool)
    sending = asyncio.ensure_future(send(pool, exchange()))
    stale = pool.transports[0]
    await eventually(lambda: b"GET /x" in stale.written)
    stale.peer_resets(None)
    await eventually(lambda: pool.opened == 2)
    pool.conns[1].data_received(OK)
    response = await sending
    assert (response.status, pool.opened) == (200, 2)


async def test_transport_stale_pooled_connection_under_a_post_is_not_the_upstreams_fault() -> None:
    """A POST cannot be resent: it fails with a reset that does not blame the upstream."""
    pool = MemoryPool()
    await served(pool)
    sending = asyncio.ensure_future(send(pool, exchange(b"POST", complete_body())))
    stale = pool.transports[0]
    await eventually(lambda: b"POST /x" in stale.written)
    stale.peer_resets(None)
    with pytest.raises(UpstreamResetError) as caught:
        await sending
    assert caught.value.upstream_fault is False
    assert pool.opened == 1


async def test_transport_post_after_a_quiet_spell_takes_a_fresh_connection() -> None:
    """A POST goes on a fresh connection rather than one idle for more than a second."""
    pool = MemoryPool()
    conn = await served(pool)
    conn.idle_since -= 2.0
    sending = asyncio.ensure_future(send(pool, exchange(b"POST", complete_body())))
    await eventually(lambda: pool.opened == 2)
    pool.conns[1].data_received(OK)
    await sending
    assert pool.idle_count == 1  # the quiet one stays for requests that can be resent


async def test_transport_total_restarts_when_an_arriving_body_has_been_sent() -> None:
    """A body still arriving when the attempt starts moves the request's `total` deadline
    to `total` after its last byte was sent, for the head timer and for retries."""
    loop = asyncio.get_running_loop()
    pool = MemoryPool()
    body = RequestBody(NullProducer(), retain_limit=0)
    request = exchange(b"POST", body)
    request.deadline = loop.time() + 0.05  # `total` from the head: would pass mid-upload
    sending = asyncio.ensure_future(send(pool, request, per_try=0.05, total=0.05))
    for _ in range(4):
        await asyncio.sleep(0.03)
        body.feed(b"x")
    sent_at = loop.time()
    body.finish()
    await asyncio.sleep(0.02)
    pool.conns[0].data_received(OK)
    response = await sending
    assert response.status == 200
    assert request.deadline == pytest.approx(sent_at + 0.05, abs=0.01)


async def test_transport_total_of_a_body_that_had_arrived_is_kept() -> None:
    """A request whose body had fully arrived keeps the `total` deadline it started with."""
    pool = MemoryPool()
    request = exchange(b"POST", complete_body())
    deadline = request.deadline
    sending = asyncio.ensure_future(send(pool, request))
    await eventually(lambda: pool.opened == 1)
    pool.conns[0].data_received(OK)
    await sending
    assert request.deadline == deadline


async def test_transport_resends_on_a_fresh_connection_not_another_pooled_one() -> None:
    """The resend after a stale pooled connection opens a new connection: another idle one
    may have been closed by the server in the same sweep, and a second stale reset would
    fail the request as the upstream's fault."""
    pool = MemoryPool()
    first, _ = await pool.acquire(1.0)
    second, _ = await pool.acquire(1.0)
    for conn in (first, second):
        head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
        conn.end_body()
        conn.data_received(OK)
        await head
        conn.take_buffered_body()
        conn.release()
    assert pool.idle_count == 2
    sending = asyncio.ensure_future(send(pool, exchange()))
    await eventually(lambda: pool.transports[1].written.count(b"GET /x") == 2)
    pool.transports[1].peer_resets(None)
    await eventually(lambda: pool.opened == 3)
    pool.conns[2].data_received(OK)
    response = await sending
    assert response.status == 200
    assert pool.transports[0].written == HEAD  # the other idle one was not tried
