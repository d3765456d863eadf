"""The fake upstreams themselves behave as documented (so a failing proxy test blames the proxy)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes import FakeClock, RecordingObserver
from tests.upstreams import (
    SET_COOKIE,
    HttpUpstream,
    black_hole,
    closed_port,
    pattern_bytes,
    raw_response,
    reset_before_headers,
    reset_mid_body,
)

pytestmark = pytest.mark.integration


async def _raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw request bytes and read until the server closes (2 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(2):
            return await reader.read()
    finally:
        writer.close()


async def test_fake_clock_sleep_advances_time_without_waiting() -> None:
    """FakeClock.sleep moves time forward by the requested amount and records it."""
    clock = FakeClock(start=10.0)
    await clock.sleep(30.0)
    clock.advance(0.5)
    assert clock.now() == 40.5
    assert clock.sleeps == [30.0]
    with pytest.raises(ValueError, match="must be >= 0"):
        clock.advance(-1)


def test_recording_observer_filters_events_by_type() -> None:
    """RecordingObserver.of_type returns only the events of the asked class, in order."""
    from sidecar.events import ListenersClosed, ShutdownFinished

    observer = RecordingObserver()
    observer.notify(ListenersClosed(inflight=2))
    observer.notify(ShutdownFinished(abandoned=0, forced=False))
    observer.notify(ListenersClosed(inflight=0))
    assert [e.inflight for e in observer.of_type(ListenersClosed)] == [2, 0]
    assert observer.types() == ["ListenersClosed", "ShutdownFinished", "ListenersClosed"]


def test_pattern_bytes_is_periodic_and_offsettable() -> None:
    """pattern_bytes(n, offset) yields byte (offset + i) % 256 at position i."""
    data = pattern_bytes(10_000, offset=3)
    assert len(data) == 10_000
    assert all(b == (i + 3) % 256 for i, b in enumerate(data))
    assert pattern_bytes(100) + pattern_bytes(50, offset=100) == pattern_bytes(150)


async def test_http_upstream_echo_reports_raw_target_headers_and_body(
    upstream: HttpUpstream,
) -> None:
    """/echo returns the raw path and query, the request headers and the body's hash."""
    body = b"x" * 5000
    async with aiohttp.ClientSession() as session:
        url = upstream.url("/echo/a%2Fb?q=1&q=%20")
        async with session.post(url, data=body, headers={"X-Test": "yes"}) as resp:
            assert resp.status == 200
            echoed = await resp.json()
    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/echo/a%2Fb?q=1&q=%20"
    assert echoed["headers"]["x-test"] == "yes"
    assert ["X-Test", "yes"] in echoed["raw_headers"]
    assert echoed["body_length"] == 5000
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert upstream.count("/echo/a%2Fb") == 1
    assert upstream.last().header("x-test") == "yes"


async def test_http_upstream_serves_status_bytes_chunked_and_cookies(
    upstream: HttpUpstream,
) -> None:
    """/status, /headers, /bytes, /chunked and /set-cookie answer as documented."""
    async with aiohttp.ClientSession() as session:
        async with session.get(upstream.url("/status/503?Retry-After=2")) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "2"
        async with session.get(upstream.url("/headers?Cache-Control=max-age%3D60")) as resp:
            assert resp.headers["Cache-Control"] == "max-age=60"
        async with session.get(upstream.url("/bytes/70000")) as resp:
            assert resp.headers["Content-Length"] == "70000"
            assert await resp.read() == pattern_bytes(70_000)
        async with session.get(upstream.url("/chunked/10000")) as resp:
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert await resp.read() == pattern_bytes(10_000)
        async with session.get(upstream.url("/set-cookie")) as resp:
            assert resp.headers["Set-Cookie"] == SET_COOKIE
        async with session.get(upstream.url("/nope")) as resp:
            assert resp.status == 404
    assert upstream.total == 6
    assert upstream.count("/nope") == 1


async def test_http_upstream_upload_hashes_a_streamed_body(upstream: HttpUpstream) -> None:
    """/upload consumes a chunked request body and reports its length and sha256."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            yield pattern_bytes(1000, offset=i * 1000)

    async with (
        aiohttp.ClientSession() as session,
        session.put(upstream.url("/upload"), data=chunks()) as resp,
    ):
        result = await resp.json()
    assert result == {
        "length": 10_000,
        "sha256": hashlib.sha256(pattern_bytes(10_000)).hexdigest(),
    }
    assert upstream.last().header("transfer-encoding") == "chunked"


async def test_http_upstream_fail_next_scripts_failures_then_recovers(
    upstream: HttpUpstream,
) -> None:
    """fail_next(n) answers the next n requests with the given status, then normal service."""
    upstream.fail_next(2, status=502)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(upstream.url("/ok")) as resp:
                statuses.append(resp.status)
    assert statuses == [502, 502, 200]
    assert upstream.count("/ok") == 3


async def test_http_upstream_slow_headers_and_slow_body_take_their_time(
    upstream: HttpUpstream,
) -> None:
    """/slow-headers delays the head; /slow-body sends the head at once and paces the body."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        started = loop.time()
        async with session.get(upstream.url("/slow-headers?delay=0.05")) as resp:
            assert resp.status == 200
        assert loop.time() - started >= 0.05

        started = loop.time()
        url = upstream.url("/slow-body?chunks=3&delay=0.1&size=8")
        async with session.get(url) as resp:
            head_at = loop.time() - started
            body = await resp.read()
        assert head_at < 0.1
        assert loop.time() - started >= 0.3
        assert body == pattern_bytes(24)


async def test_http_upstream_hang_parks_until_released(upstream: HttpUpstream) -> None:
    """/hang does not answer until release() is called."""
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(upstream.url("/hang")))
        done, _ = await asyncio.wait({pending}, timeout=0.05)
        assert not done
        upstream.release()
        resp = await pending
        assert resp.status == 200
        resp.release()


async def test_reset_before_headers_resets_after_reading_the_request() -> None:
    """reset_before_headers reads a request and answers with a TCP reset."""
    async with reset_before_headers() as server:
        with pytest.raises(ConnectionResetError):
            await _raw_exchange(server.port, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        assert server.connections == 1
        assert server.requests == 1
        assert server.heads[0].startswith(b"GET /x HTTP/1.1\r\n")


async def test_reset_mid_body_sends_part_of_the_body_then_resets() -> None:
    """reset_mid_body sends its head and 100 of 1000 body bytes, then resets."""
    async with reset_mid_body() as server, aiohttp.ClientSession() as session:
        async with session.get(server.url("/x")) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == "1000"
            first = await resp.content.readexactly(100)
            assert first == pattern_bytes(100)
            with pytest.raises(aiohttp.ClientError):
                await resp.read()
        assert server.requests == 1


async def test_black_hole_never_answers() -> None:
    """black_hole accepts and reads the request but sends nothing back."""
    async with black_hole() as server, aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            await session.get(server.url("/x"), timeout=aiohttp.ClientTimeout(total=0.1))
        assert server.connections == 1
        assert server.requests == 1


async def test_raw_response_sends_exact_bytes() -> None:
    """raw_response replies with exactly the bytes it was given, then closes."""
    data = b"HTTP/1.1 200 OK\r\nBad Header Name: x\r\nContent-Length: 2\r\n\r\nhi"
    async with raw_response(data) as server:
        request = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        assert await _raw_exchange(server.port, request) == data
        chunked = b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        assert await _raw_exchange(server.port, chunked) == data
        assert server.connections == 2
        assert server.requests == 2


async def test_raw_response_keep_open_answers_every_request() -> None:
    """raw_response(close=False) answers each request on one connection."""
    data = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with raw_response(data, close=False) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            for _ in range(2):
                writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                async with asyncio.timeout(2):
                    assert await reader.readexactly(len(data)) == data
        finally:
            writer.close()
        assert server.connections == 1
        assert server.requests == 2


async def test_closed_port_refuses_connections() -> None:
    """closed_port returns a loopback port where connecting is refused."""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", closed_port())
