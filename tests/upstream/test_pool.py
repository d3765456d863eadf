"""`EndpointPool` bookkeeping over in-memory connections: idle expiry, connections checked
before reuse, and the short reuse window of requests that cannot be resent."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from sidecar.config import Endpoint
from sidecar.upstream.connection import UpstreamConnection
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.pool import EndpointPool
from tests.fakes import MemoryTransport

HEAD = b"GET /x HTTP/1.1\r\nhost: up\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class MemoryPool(EndpointPool):
    """A pool whose new connections are in-memory ones; `opened` counts them."""

    __slots__ = ("conns", "opened", "transports")

    def __init__(self, idle_timeout: float = 4.0) -> None:
        super().__init__(
            Endpoint.parse("http://127.0.0.1:9"),
            asyncio.get_running_loop(),
            LoopGuard(),
            idle_timeout=idle_timeout,
        )
        self.opened = 0
        self.conns: list[UpstreamConnection] = []
        self.transports: list[MemoryTransport] = []

    async def _connect(self, connect_timeout: float) -> UpstreamConnection:
        conn = UpstreamConnection(self, asyncio.get_running_loop())
        transport = MemoryTransport(conn)
        conn.connection_made(cast(asyncio.BaseTransport, transport))
        self.opened += 1
        self.conns.append(conn)
        self.transports.append(transport)
        return conn


async def served(pool: MemoryPool) -> UpstreamConnection:
    """A connection that carried one exchange and went back to the pool."""
    conn, _ = await pool.acquire(1.0)
    head = conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    conn.end_body()
    conn.data_received(OK)
    await head
    conn.take_buffered_body()
    conn.release()
    return conn


async def test_pool_reuses_a_connection_idle_less_than_idle_timeout() -> None:
    """A connection released a moment ago is reused."""
    pool = MemoryPool()
    conn = await served(pool)
    assert await pool.acquire(1.0) == (conn, True)


async def test_pool_closes_connections_idle_for_idle_timeout() -> None:
    """An idle connection is closed once it has been idle for `idle_timeout`, with no
    request needed to notice."""
    pool = MemoryPool(idle_timeout=0.03)
    await served(pool)
    assert pool.idle_count == 1
    await asyncio.sleep(0.06)
    assert pool.idle_count == 0
    assert pool.transports[0].closed


async def test_pool_never_hands_out_an_expired_connection() -> None:
    """A connection idle past `idle_timeout` is dropped at acquire and a new one opened."""
    pool = MemoryPool()
    conn = await served(pool)
    conn.idle_since -= 5.0  # idle for longer than the 4 s default, timer not yet run
    fresh, reused = await pool.acquire(1.0)
    assert (fresh is conn, reused, pool.opened) == (False, False, 2)
    assert pool.transports[0].closed


async def test_pool_skips_a_connection_whose_transport_is_closing() -> None:
    """A connection already closing (its close not yet delivered) is never reused."""
    pool = MemoryPool()
    await served(pool)
    pool.transports[0].closed = True
    _, reused = await pool.acquire(1.0)
    assert (reused, pool.opened) == (False, 2)


async def test_pool_gives_a_request_that_cannot_be_resent_only_a_recent_connection() -> None:
    """With `max_idle`, a connection idle longer is left in the pool for requests that can
    be resent, and a fresh one is opened."""
    pool = MemoryPool()
    conn = await served(pool)
    conn.idle_since -= 2.0
    fresh, reused = await pool.acquire(1.0, max_idle=1.0)
    assert (fresh is conn, reused, pool.idle_count) == (False, False, 1)
    assert await pool.acquire(1.0) == (conn, True)


async def test_pool_expiry_timer_rearms_for_the_next_oldest() -> None:
    """Connections released at different times each expire `idle_timeout` after their own
    release, with one timer."""
    pool = MemoryPool(idle_timeout=0.05)
    first = await served(pool)
    await asyncio.sleep(0.03)
    second_conn, _ = await pool.acquire(1.0, max_idle=0.0)  # a second connection
    assert second_conn is not first
    head = second_conn.start(HEAD, head_only=False, chunked=False, idle_timeout=0.0)
    second_conn.end_body()
    second_conn.data_received(OK)
    await head
    second_conn.release()
    assert pool.idle_count == 2
    await asyncio.sleep(0.035)  # the first has expired, the second not yet
    assert pool.idle_count == 1
    await asyncio.sleep(0.04)
    assert pool.idle_count == 0


@pytest.mark.parametrize("idle_timeout", [0.5, 10.0], ids=["short", "long"])
async def test_pool_sibling_keeps_the_idle_timeout(idle_timeout: float) -> None:
    """The health checks' sibling pool expires connections like the traffic's."""
    pool = MemoryPool(idle_timeout=idle_timeout)
    assert pool.sibling().idle_timeout == idle_timeout


async def test_pool_shorter_idle_timeout_rearms_the_expiry_timer() -> None:
    """An idle timeout shortened by a reload closes idle connections on the new schedule,
    not when the timer armed for the old one fires."""
    pool = MemoryPool(idle_timeout=10.0)
    await served(pool)
    pool.set_idle_timeout(0.03)
    await asyncio.sleep(0.06)
    assert pool.idle_count == 0
    assert pool.transports[0].closed
