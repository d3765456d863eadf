"""The upstream side over real sockets: bodies cut by a reset or a close, bytes after a
response, head deadlines that start when the request is sent, a client too slow to read,
and pooled keep-alive connections the upstream closes while they are idle.

The upstreams misbehave on purpose (`tests.upstreams.RawUpstream` behaviours written here);
the breaker and outlier detection are set to react to a single failure, so any failure
wrongly blamed on the upstream shows in `/metrics`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.harness import RunningSidecar, running_sidecar
from tests.integration.configs import DEDICATED, config, dedicated
from tests.integration.rawhttp import RawClient, raw_exchange, scrape
from tests.upstreams import HttpUpstream, RawConnection, RawUpstream, pattern_bytes

pytestmark = pytest.mark.integration

ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
TOUCHY_BREAKER: dict[str, Any] = {"consecutive_failures": 1, "minimum_calls": 100}
TOUCHY_OUTLIERS: dict[str, Any] = {"consecutive_failures": 1, "base_ejection": "30s"}
GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes = b"{}") -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body


async def breaker_state(sc: RunningSidecar, state: str) -> float:
    samples = await scrape(sc.admin_url)
    return samples.value("sidecar_circuit_state", upstream="svc", state=state)


async def ejected(sc: RunningSidecar) -> float:
    return (await scrape(sc.admin_url)).value("sidecar_endpoint_ejected", upstream="svc")


# ---- bodies that end early are never complete ----------------------------------------------

BODY = pattern_bytes(100)
# (framing headers, body bytes sent before the end); the close-delimited body has no length.
FRAMINGS = {
    "close-delimited": (b"", BODY),
    "chunked": (b"Transfer-Encoding: chunked\r\n", b"64\r\n" + BODY[:50]),
    "content-length": (b"Content-Length: 1000\r\n", BODY),
}


def cut_body(framing: str, *, reset: bool) -> RawUpstream:
    """Answers 200 with a body that ends early: by a TCP reset, or by a plain close (FIN)."""
    headers, sent = FRAMINGS[framing]

    async def behaviour(conn: RawConnection) -> None:
        if await conn.read_request() is None:
            return
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + headers + b"\r\n")
        await conn.send(sent)
        await asyncio.sleep(0.05)  # the head and the bytes are surely read before the end
        if reset:
            conn.reset()

    return RawUpstream(behaviour, f"cut_{framing}")


def cached(**policy: Any) -> dict[str, Any]:
    return {"retries": ONE_ATTEMPT, "fallback": {"cache": {"max_stale": "5m"}}, **policy}


@pytest.mark.parametrize(
    ("framing", "reset"),
    [
        ("close-delimited", True),
        ("chunked", True),
        ("chunked", False),
        ("content-length", True),
        ("content-length", False),
    ],
    ids=["close-delimited-rst", "chunked-rst", "chunked-fin", "length-rst", "length-fin"],
)
async def test_upstream_side_cut_body_aborts_the_client_and_is_never_stored(
    framing: str, reset: bool
) -> None:
    """A body cut by a reset (or, when its length is known, by a close) aborts the client
    connection, counts as a reset and is never stored in the fallback cache."""
    async with (
        cut_body(framing, reset=reset) as server,
        running_sidecar(dedicated(server.url(), **cached())) as sc,
    ):
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(GET)
            status, _, _ = await client.read_head()
            received = await client.read_until_closed()
        await asyncio.sleep(0.05)  # the handler's last steps run after the client saw the close
        samples = await scrape(sc.admin_url)
        lines = sc.access_lines()
    assert status == 200
    assert not received.endswith(b"0\r\n\r\n")  # a chunked relay never got its last chunk
    assert lines[0]["outcome"] == "reset"
    assert samples.value("sidecar_upstream_attempts_total", result="reset") == 1
    assert samples.value("sidecar_cache_entries", upstream="svc") == 0


async def test_upstream_side_close_delimited_body_ended_by_close_is_complete() -> None:
    """A body without a length that ends with a clean close is whole: relayed and stored."""
    async with (
        cut_body("close-delimited", reset=False) as server,
        running_sidecar(dedicated(server.url(), **cached())) as sc,
    ):
        response = await raw_exchange(sc.port(DEDICATED), GET)
        await asyncio.sleep(0.05)
        samples = await scrape(sc.admin_url)
    assert (response.status, response.body) == (200, BODY)
    assert samples.value("sidecar_cache_entries", upstream="svc") == 1


# ---- bytes after a complete response --------------------------------------------------------

FIRST = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-First: 1\r\n\r\nok"
SMUGGLED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\nX-Smuggled: 1\r\n\r\nevil"


def answers_twice(*, pause: float) -> RawUpstream:
    """Answers every request with one response and, `pause` seconds later (0: in the same
    write), a second response nobody asked for; keeps the connection open."""

    async def behaviour(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            if pause:
                await conn.send(FIRST)
                await asyncio.sleep(pause)
                await conn.send(SMUGGLED)
            else:
                await conn.send(FIRST + SMUGGLED)

    return RawUpstream(behaviour, "answers_twice")


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["same-read", "later-read"])
async def test_upstream_side_bytes_after_a_response_never_reach_the_client(pause: float) -> None:
    """A second response the upstream sends unasked is never relayed: the client gets the
    first answer each time, and the connection that carried the extra bytes is not reused."""
    async with (
        answers_twice(pause=pause) as server,
        running_sidecar(dedicated(server.url(), retries=ONE_ATTEMPT)) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(GET)
        first = await client.read_response()
        await asyncio.sleep(0.1)  # the extra bytes have surely arrived by now
        await client.send(GET)
        second = await client.read_response()
        quiet = not await client.is_closed_within(0.05)  # and no stray bytes either
    for response in (first, second):
        assert (response.status, response.body) == (200, b"ok")
        assert response.header("x-first") == "1"
        assert not response.has_header("x-smuggled")
    assert quiet
    assert server.connections == 2


# ---- head deadlines start when the request is sent -----------------------------------------

UPLOAD_CHUNK = 512 * 1024
UPLOAD_CHUNKS = 16  # 8 MiB, sent over about 0.6 s


async def test_upstream_side_steady_upload_longer_than_per_try_and_total_succeeds(
    upstream: HttpUpstream,
) -> None:
    """An 8 MiB upload that takes longer than `per_try` and `total` gets its answer: both
    start when the request has been sent, and the breaker stays closed."""
    timeouts = {"per_try": "100ms", "total": "250ms", "idle": "1s"}
    policy: dict[str, Any] = {
        "retries": ONE_ATTEMPT,
        "timeouts": timeouts,
        "circuit_breaker": TOUCHY_BREAKER,
    }
    size = UPLOAD_CHUNK * UPLOAD_CHUNKS
    async with running_sidecar(dedicated(upstream.url(""), **policy)) as sc:
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
            )
            for index in range(UPLOAD_CHUNKS):
                await client.send(pattern_bytes(UPLOAD_CHUNK, offset=index * UPLOAD_CHUNK))
                await asyncio.sleep(0.04)
            response = await client.read_response()
        closed = await breaker_state(sc, "closed")
    assert response.status == 200, response.body
    assert response.json()["length"] == size
    assert closed == 1


# ---- a client too slow to read ---------------------------------------------------------------

BIG = 32 * 1024 * 1024  # more than every socket buffer between the upstream and the client


async def test_upstream_side_slow_reading_client_is_not_the_upstreams_failure() -> None:
    """A client that reads nothing of a large body for longer than `idle` is disconnected,
    but neither the breaker nor outlier detection blames the healthy upstream for it."""
    policy = {
        "retries": ONE_ATTEMPT,
        "timeouts": {"idle": "150ms"},
        "circuit_breaker": TOUCHY_BREAKER,
        "outlier_detection": TOUCHY_OUTLIERS,
    }
    async with HttpUpstream("a") as first, HttpUpstream("b") as second:
        yaml_text = config(
            listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": "svc"}],
            upstreams={"svc": {"endpoints": [first.url(""), second.url("")], **policy}},
        )
        async with running_sidecar(yaml_text) as sc:
            async with RawClient(sc.port(DEDICATED)) as client:
                await client.send(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
                status, _, _ = await client.read_head()
                await asyncio.sleep(0.4)  # reads nothing for longer than idle
                received = await client.read_until_closed(within=5.0)
            closed = await breaker_state(sc, "closed")
            ejections = await ejected(sc)
            after = await raw_exchange(sc.port(DEDICATED), b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert len(received) < BIG  # disconnected before the whole body
    assert (closed, ejections) == (1, 0)
    assert after.status == 200


# ---- stale pooled keep-alive connections ----------------------------------------------------


def closes_when_reused(*, after_idle: float = 0.0) -> RawUpstream:
    """Answers requests on a connection until one arrives after `after_idle` seconds of
    quiet (0: any request after the first), then closes without answering it: a server's
    keep-alive close that crossed the request on the wire."""

    async def behaviour(conn: RawConnection) -> None:
        loop = asyncio.get_running_loop()
        answered_at: float | None = None
        while await conn.read_request() is not None:
            if answered_at is not None and loop.time() - answered_at >= after_idle:
                return  # closed under the request
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            answered_at = loop.time()

    return RawUpstream(behaviour, "closes_when_reused")


async def test_upstream_side_stale_pooled_connection_is_not_the_upstreams_failure() -> None:
    """A POST on a pooled connection the upstream closed while it was idle fails with 502,
    but neither the breaker nor outlier detection counts it against the upstream."""
    policy = {
        "retries": ONE_ATTEMPT,
        "circuit_breaker": TOUCHY_BREAKER,
        "outlier_detection": TOUCHY_OUTLIERS,
    }
    async with closes_when_reused() as first, closes_when_reused() as second:
        yaml_text = config(
            listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": "svc"}],
            upstreams={"svc": {"endpoints": [first.url(), second.url()], **policy}},
        )
        async with running_sidecar(yaml_text) as sc:
            statuses = [(await raw_exchange(sc.port(DEDICATED), post())).status for _ in range(4)]
            closed = await breaker_state(sc, "closed")
            ejections = await ejected(sc)
    # Two fresh connections answer; reusing each of them meets the upstream's close.
    assert statuses == [200, 200, 502, 502]
    assert (closed, ejections) == (1, 0)


async def test_upstream_side_get_on_a_stale_pooled_connection_is_resent_once() -> None:
    """A GET that meets a stale pooled connection is sent again on a fresh one, unseen."""
    async with (
        closes_when_reused() as server,
        running_sidecar(dedicated(server.url(), retries=ONE_ATTEMPT)) as sc,
    ):
        statuses = [(await raw_exchange(sc.port(DEDICATED), GET)).status for _ in range(2)]
    assert statuses == [200, 200]
    assert server.connections == 2


async def test_upstream_side_idle_expiry_avoids_the_keep_alive_race() -> None:
    """Pooled connections expire before the upstream's keep-alive timeout, so a POST after a
    quiet spell goes on a fresh connection instead of one the upstream is closing."""
    policy: dict[str, Any] = {"retries": ONE_ATTEMPT, "pool": {"idle_timeout": "100ms"}}
    async with (
        closes_when_reused(after_idle=0.2) as server,
        running_sidecar(dedicated(server.url(), **policy)) as sc,
    ):
        first = await raw_exchange(sc.port(DEDICATED), post())
        await asyncio.sleep(0.3)
        second = await raw_exchange(sc.port(DEDICATED), post())
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
