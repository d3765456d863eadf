"""Connection limits and the request metrics, over real sockets (SPEC §3.2 limits, §7)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.harness import running_sidecar
from tests.integration.configs import BIND, DEDICATED, config
from tests.integration.rawhttp import RawClient, scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration

GET_OK = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_max_connections_holds_extra_connections_until_one_closes(
    upstream: HttpUpstream,
) -> None:
    """At `max_connections` a further connection gets no answer until an earlier one closes."""
    text = config(
        listeners=[{"name": DEDICATED, "bind": BIND, "upstream": "svc"}],
        upstreams={"svc": {"endpoints": [upstream.url()]}},
        limits={"max_connections": 2},
    )
    async with running_sidecar(text) as sc:
        port = sc.port(DEDICATED)
        async with RawClient(port) as first, RawClient(port) as second, RawClient(port) as third:
            for client in (first, second):  # both served and kept open (keep-alive)
                await client.send(GET_OK)
                assert (await client.read_response()).body == b"ok"
            await third.send(GET_OK)
            waiting = asyncio.ensure_future(third.read_response())
            done, _ = await asyncio.wait({waiting}, timeout=0.1)
            assert not done, "the third connection was served beyond max_connections"
            assert upstream.count("/ok") == 2
            await first.close()
            async with asyncio.timeout(1.0):
                answer = await waiting
    assert (answer.status, answer.body) == (200, b"ok")
    assert upstream.count("/ok") == 3


async def test_metrics_count_requests_and_attempts_with_labels(upstream: HttpUpstream) -> None:
    """`/metrics` counts requests by upstream, route, method, code, outcome and attempts by
    upstream, endpoint and result."""
    refused = f"http://127.0.0.1:{closed_port()}"
    text = config(
        listeners=[
            {"name": DEDICATED, "bind": BIND, "upstream": "svc"},
            {"name": "down", "bind": BIND, "upstream": "gone"},
        ],
        upstreams={
            "svc": {
                "endpoints": [upstream.url()],
                "routes": [{"name": "health", "match": {"path": "/ok"}}],
            },
            "gone": {"endpoints": [refused], "retries": {"max_attempts": 1}},
        },
    )
    async with running_sidecar(text) as sc:
        async with aiohttp.ClientSession() as session:
            for method, path in [
                ("GET", "/ok"),
                ("GET", "/ok"),
                ("POST", "/echo"),
                ("GET", "/status/404"),
                ("GET", "/status/503"),
            ]:
                async with session.request(method, sc.url(DEDICATED, path)) as resp:
                    await resp.read()
            async with session.get(sc.url("down", "/x")) as resp:
                assert resp.status == 502
        samples = await scrape(sc.admin_url)

    def requests(**labels: str) -> float:
        return samples.value("sidecar_requests_total", **labels)

    def attempts(**labels: str) -> float:
        return samples.value("sidecar_upstream_attempts_total", **labels)

    svc = {"upstream": "svc"}
    assert requests(**svc, route="health", method="GET", code="200", outcome="success") == 2
    assert requests(**svc, route="default", method="POST", code="200", outcome="success") == 1
    assert requests(**svc, route="default", method="GET", code="404", outcome="success") == 1
    assert requests(**svc, route="default", method="GET", code="503", outcome="upstream_error") == 1
    assert requests(upstream="gone", code="502", outcome="unreachable") == 1
    assert requests() == 6
    endpoint = upstream.url().rstrip("/")
    assert attempts(**svc, endpoint=endpoint, result="success") == 4
    # The 503 is retried twice by default (max_attempts 3, `on` lists 503).
    assert attempts(**svc, endpoint=endpoint, result="http_5xx") == 3
    assert attempts(upstream="gone", endpoint=refused, result="connect_failure") == 1
    assert attempts() == 8
    assert samples.value("sidecar_retries_total", upstream="svc", reason="503") == 2
    assert samples.value("sidecar_request_duration_seconds_count", upstream="svc") == 5
