"""Timeouts over real sockets: connect, per-try, total and body idle (SPEC §4.3).

Timeouts are tens of milliseconds and the upstreams are slower by a wide margin, so the tests
stay fast and do not depend on scheduling luck.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.harness import running_sidecar
from tests.integration.configs import DEDICATED, dedicated
from tests.integration.rawhttp import RawClient, scrape
from tests.upstreams import HttpUpstream, black_hole

pytestmark = pytest.mark.integration

# One attempt per request: these tests are about a single attempt's timeouts, not retries.
ONE_ATTEMPT: dict[str, Any] = {"retries": {"max_attempts": 1}}


@pytest.mark.parametrize(
    ("timeouts", "path"),
    [
        ({"per_try": "50ms", "total": "5s"}, "/slow-headers?delay=1"),
        ({"per_try": "5s", "total": "50ms"}, "/slow-headers?delay=1"),
        ({"per_try": "50ms", "total": "50ms"}, "/hang"),
    ],
    ids=["per-try", "total-shorter-than-per-try", "hanging-handler"],
)
async def test_slow_headers_time_out_with_504(
    upstream: HttpUpstream, timeouts: dict[str, str], path: str
) -> None:
    """No response headers within `per_try` or `total` gives 504 `upstream_timeout` promptly."""
    config = dedicated(upstream.url(), timeouts=timeouts, **ONE_ATTEMPT)
    async with running_sidecar(config) as sc:
        async with aiohttp.ClientSession() as session, session.get(sc.url(DEDICATED, path)) as resp:
            assert resp.status == 504
            assert resp.headers["x-sidecar-error"] == "upstream_timeout"
            assert resp.headers["x-sidecar-attempts"] == "1"
            body = await resp.json()
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert body["error"] == "upstream_timeout"
    assert body["upstream"] == "svc"
    assert lines[0]["outcome"] == "timeout"
    assert 40 <= lines[0]["duration_ms"] < 500
    assert samples.value("sidecar_upstream_attempts_total", upstream="svc", result="timeout") == 1
    assert samples.value("sidecar_requests_total", code="504", outcome="timeout") == 1


async def test_black_hole_upstream_times_out_with_504() -> None:
    """An upstream that accepts and reads but never answers gives 504 after `per_try`."""
    async with black_hole() as server:
        config = dedicated(server.url(), timeouts={"per_try": "50ms"}, **ONE_ATTEMPT)
        async with (
            running_sidecar(config) as sc,
            aiohttp.ClientSession() as session,
            session.get(sc.url(DEDICATED, "/x")) as resp,
        ):
            assert resp.status == 504
            assert (await resp.json())["error"] == "upstream_timeout"
        assert server.requests == 1


async def test_connect_timeout_gives_502_unreachable(unaccepting_port: int) -> None:
    """A connect that does not complete within `connect` gives 502 `upstream_unreachable`."""
    config = dedicated(
        f"http://127.0.0.1:{unaccepting_port}", timeouts={"connect": "50ms"}, **ONE_ATTEMPT
    )
    async with running_sidecar(config) as sc:
        async with aiohttp.ClientSession() as session, session.get(sc.url(DEDICATED, "/x")) as resp:
            assert resp.status == 502
            assert resp.headers["x-sidecar-error"] == "upstream_unreachable"
            body = await resp.json()
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert body["error"] == "upstream_unreachable"
    assert lines[0]["outcome"] == "unreachable"
    assert 40 <= lines[0]["duration_ms"] < 500
    assert samples.value("sidecar_upstream_attempts_total", result="connect_failure") == 1


async def test_connect_timeout_is_bounded_by_total(unaccepting_port: int) -> None:
    """A hanging connect ends at the `total` deadline when that comes first: 504, not 502."""
    config = dedicated(
        f"http://127.0.0.1:{unaccepting_port}",
        timeouts={"connect": "5s", "total": "50ms"},
        **ONE_ATTEMPT,
    )
    async with (
        running_sidecar(config) as sc,
        aiohttp.ClientSession() as session,
        session.get(sc.url(DEDICATED, "/x")) as resp,
    ):
        assert resp.status == 504
        assert (await resp.json())["error"] == "upstream_timeout"


async def test_body_idle_timeout_closes_client_connection(upstream: HttpUpstream) -> None:
    """A body gap longer than `idle` after the head was relayed closes the client connection,
    and the request and its attempt are recorded as timeouts."""
    config = dedicated(upstream.url(), timeouts={"idle": "50ms"}, **ONE_ATTEMPT)
    async with running_sidecar(config) as sc:
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(b"GET /slow-body?chunks=4&delay=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, headers = await client.read_head()
            rest = await client.read_until_closed(within=0.25)
        await asyncio.sleep(0)  # let the handler finish and log
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert status == 200
    assert {k.lower(): v for k, v in headers}["content-length"] == "64"
    assert len(rest) < 64  # closed before the body completed
    assert lines[0]["status"] == 200
    assert lines[0]["outcome"] == "timeout"
    assert samples.value("sidecar_requests_total", outcome="timeout") == 1
    assert samples.value("sidecar_upstream_attempts_total", result="timeout") == 1
    assert samples.value("sidecar_upstream_attempts_total", result="success") == 0


async def test_slow_body_within_idle_completes(upstream: HttpUpstream) -> None:
    """Body gaps shorter than `idle` never cut a response, however long it takes overall."""
    config = dedicated(upstream.url(), timeouts={"idle": "200ms", "total": "50ms"})
    async with (
        running_sidecar(config) as sc,
        aiohttp.ClientSession() as session,
        session.get(sc.url(DEDICATED, "/slow-body?chunks=4&delay=0.03")) as resp,
    ):
        assert resp.status == 200
        assert len(await resp.read()) == 64


async def test_stalled_request_body_is_cut_after_idle(upstream: HttpUpstream) -> None:
    """A client that stops sending its announced body for longer than `idle` gets 408 and a
    closed connection, and the upstream is not left waiting."""
    config = dedicated(upstream.url(), timeouts={"idle": "50ms"}, **ONE_ATTEMPT)
    async with running_sidecar(config) as sc:
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            await client.send(b"x" * 10)
            response = await client.read_response()
            closed = await client.is_closed_within(0.5)
        lines = sc.access_lines()
    assert response.status == 408
    assert response.json()["error"] == "request_timeout"
    assert closed
    assert lines[0]["status"] == 408


async def test_idle_does_not_limit_the_wait_for_response_headers(upstream: HttpUpstream) -> None:
    """Once the request body is sent, waiting for the head is `per_try`'s job, not `idle`'s."""
    config = dedicated(upstream.url(), timeouts={"idle": "50ms", "per_try": "2s"})
    async with running_sidecar(config) as sc, RawClient(sc.port(DEDICATED)) as client:
        await client.send(
            b"POST /slow-headers?delay=0.2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
        )
        await asyncio.sleep(0.02)  # the body arrives after the attempt has started
        await client.send(b"body")
        response = await client.read_response()
    assert (response.status, response.body) == (200, b"slow")
