"""Bodies and connections over real sockets: chunked and large bodies both ways, bodiless
answers, `Expect: 100-continue`, pipelining and upstream keep-alive (SPEC §4.1 step 5, §9)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.harness import running_sidecar
from tests.integration.configs import DEDICATED, dedicated
from tests.integration.rawhttp import RawClient, raw_exchange
from tests.upstreams import HttpUpstream, RawConnection, RawUpstream, pattern_bytes, raw_response

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


async def test_chunked_request_body_reaches_upstream_whole(upstream: HttpUpstream) -> None:
    """A chunked request body is forwarded complete, re-framed as chunked by the sidecar."""
    pieces = [b"a" * 10, b"b" * 3000, b"c"]
    body = b"".join(pieces)
    async with running_sidecar(dedicated(upstream.url())) as sc:
        request = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + _chunked(*pieces)
        )
        response = await raw_exchange(sc.port(DEDICATED), request)
    assert response.status == 200
    echoed = response.json()
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed["headers"]["transfer-encoding"] == "chunked"
    assert "content-length" not in echoed["headers"]


async def test_chunked_response_body_reaches_client_whole(upstream: HttpUpstream) -> None:
    """A chunked upstream response reaches an HTTP/1.1 client complete and chunked."""
    size = 300_000
    async with running_sidecar(dedicated(upstream.url())) as sc:
        request = f"GET /chunked/{size} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        response = await raw_exchange(sc.port(DEDICATED), request)
    assert response.status == 200
    assert response.chunked
    assert not response.has_header("content-length")
    assert response.body == pattern_bytes(size)


async def test_chunked_response_to_http10_client_is_close_delimited(
    upstream: HttpUpstream,
) -> None:
    """An HTTP/1.0 client gets an unknown-length body without chunking, ended by a close."""
    size = 50_000
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(f"GET /chunked/{size} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        response = await client.read_response()
    assert response.status == 200
    assert not response.has_header("transfer-encoding")
    assert response.header("connection") == "close"
    assert response.body == pattern_bytes(size)


async def test_large_upload_passes_intact(upstream: HttpUpstream) -> None:
    """A 20 MiB streamed request body reaches the upstream byte for byte."""
    size = 20 * MIB
    digest = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for offset in range(0, size, 256 * 1024):
            piece = pattern_bytes(256 * 1024, offset=offset)
            digest.update(piece)
            yield piece

    async with running_sidecar(dedicated(upstream.url())) as sc:
        async with (
            aiohttp.ClientSession() as session,
            session.post(sc.url(DEDICATED, "/upload"), data=body()) as resp,
        ):
            assert resp.status == 200
            received = await resp.json()
        lines = sc.access_lines()
    assert received == {"length": size, "sha256": digest.hexdigest()}
    assert lines[0]["bytes_in"] == size


@pytest.mark.parametrize("kind", ["bytes", "chunked"], ids=["content-length", "chunked"])
async def test_large_download_passes_intact(upstream: HttpUpstream, kind: str) -> None:
    """A 20 MiB response body reaches the client byte for byte, with its framing kept."""
    size = 20 * MIB
    async with running_sidecar(dedicated(upstream.url())) as sc:
        async with (
            aiohttp.ClientSession() as session,
            session.get(sc.url(DEDICATED, f"/{kind}/{size}")) as resp,
        ):
            assert resp.status == 200
            if kind == "bytes":
                assert resp.headers["content-length"] == str(size)
            digest = hashlib.sha256()
            length = 0
            async for piece in resp.content.iter_any():
                digest.update(piece)
                length += len(piece)
        lines = sc.access_lines()
    assert length == size
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()
    assert lines[0]["bytes_out"] == size


async def test_head_keeps_content_length_and_sends_no_body(upstream: HttpUpstream) -> None:
    """HEAD answers keep the upstream's Content-Length, carry no body, and keep the connection."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(b"HEAD /bytes/1234 HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await client.read_response(head_only=True)
        # A stray body byte would corrupt the next answer on the same connection.
        await client.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        after = await client.read_response()
    assert head.status == 200
    assert head.header("content-length") == "1234"
    assert (after.status, after.body) == (200, b"ok")
    assert upstream.requests[0].method == "HEAD"


@pytest.mark.parametrize("status", [204, 304], ids=["no-content", "not-modified"])
async def test_bodiless_status_is_relayed_without_body(upstream: HttpUpstream, status: int) -> None:
    """204 and 304 answers are relayed with no body and the connection stays usable."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(f"GET /status/{status} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = await client.read_response()
        await client.send(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await client.read_response()
    assert (first.status, first.body) == (status, b"")
    assert not first.has_header("transfer-encoding")
    assert (second.status, second.body) == (200, b"ok")


async def test_expect_continue_gets_100_then_the_answer(upstream: HttpUpstream) -> None:
    """`Expect: 100-continue` gets `100 Continue` before the body is sent, then the final answer."""
    body = b"z" * 5000
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        interim = await client.read_head()
        await client.send(body)
        final = await client.read_response()
    assert interim[0] == 100
    assert final.status == 200
    assert final.json() == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert not upstream.last().has_header("expect")


async def test_pipelined_requests_are_answered_in_order(upstream: HttpUpstream) -> None:
    """Requests pipelined on one connection are answered in order, a slow first one included."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(
            b"GET /slow-headers?delay=0.05 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /status/404 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [await client.read_response() for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 404]
    assert answers[0].body == b"slow"
    assert answers[1].body == b"ok"
    assert answers[2].json()["length"] == 3
    assert [r.path for r in upstream.requests] == ["/slow-headers", "/ok", "/upload", "/status/404"]


async def test_upstream_connection_is_reused_across_requests() -> None:
    """Sequential requests, from one or several clients, share one keep-alive upstream connection."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with raw_response(answer, close=False) as server:
        async with running_sidecar(dedicated(server.url())) as sc:
            async with aiohttp.ClientSession() as session:
                for _ in range(3):
                    async with session.get(sc.url(DEDICATED, "/a")) as resp:
                        assert await resp.read() == b"ok"
                async with session.post(sc.url(DEDICATED, "/b"), data=b"x" * 100) as resp:
                    assert await resp.read() == b"ok"
            for _ in range(2):  # fresh client connections each time
                response = await raw_exchange(
                    sc.port(DEDICATED), b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                assert response.body == b"ok"
        assert server.requests == 6
        assert server.connections == 1


async def test_concurrent_requests_open_separate_upstream_connections() -> None:
    """Two requests in flight at once never share an upstream connection (no upstream pipelining)."""
    both_arrived = asyncio.Event()
    arrived = 0

    async def answer_when_both_arrived(conn: RawConnection) -> None:
        nonlocal arrived
        while await conn.read_request() is not None:
            arrived += 1
            if arrived == 2:
                both_arrived.set()
            await both_arrived.wait()
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with RawUpstream(answer_when_both_arrived) as server:
        async with (
            running_sidecar(dedicated(server.url())) as sc,
            aiohttp.ClientSession() as session,
        ):

            async def get() -> bytes:
                async with session.get(sc.url(DEDICATED, "/x")) as resp:
                    return await resp.read()

            assert list(await asyncio.gather(get(), get())) == [b"ok", b"ok"]
        assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http10-upstream"],
)
async def test_upstream_connection_not_kept_alive_is_not_reused(answer: bytes) -> None:
    """An upstream answer that ends keep-alive is honoured: the next request opens a new
    connection even though the upstream left the old one open."""
    async with (
        raw_response(answer, close=False) as server,
        running_sidecar(dedicated(server.url())) as sc,
    ):
        for _ in range(2):
            response = await raw_exchange(sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (response.status, response.body) == (200, b"ok")
            assert not response.has_header("connection")
    assert server.connections == 2


async def test_client_connection_close_is_honoured(upstream: HttpUpstream) -> None:
    """A client's `Connection: close` gets its answer with `connection: close`, then a close."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = await client.read_response()
        closed = await client.is_closed_within(1.0)
    assert (response.status, response.body) == (200, b"ok")
    assert response.header("connection") == "close"
    assert closed
