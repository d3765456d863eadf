"""What crosses the proxy untouched and what never does: hop-by-hop headers, the request target,
cookies, redirects and content codings (SPEC §4.5, §9)."""

from __future__ import annotations

import gzip

import aiohttp
import pytest

from tests.harness import running_sidecar
from tests.integration.configs import DEDICATED, FORWARD, dedicated, forward
from tests.integration.rawhttp import RawClient, raw_exchange
from tests.upstreams import SET_COOKIE, HttpUpstream, raw_response

pytestmark = pytest.mark.integration


async def test_request_hop_by_hop_headers_never_reach_upstream(upstream: HttpUpstream) -> None:
    """Connection, headers it names, Keep-Alive, TE, Proxy-* never reach the upstream."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        request = (
            b"GET /echo HTTP/1.1\r\nHost: x\r\n"
            b"Connection: keep-alive, X-Hop-Secret\r\n"
            b"X-Hop-Secret: only-for-the-proxy\r\n"
            b"Keep-Alive: timeout=5\r\n"
            b"Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\n"
            b"X-End-To-End: kept\r\n"
            b"Authorization: Bearer for-the-upstream\r\n\r\n"
        )
        response = await raw_exchange(sc.port(DEDICATED), request)
    assert response.status == 200
    received = {name.lower() for name, _ in upstream.last().headers}
    for hop in ("connection", "x-hop-secret", "keep-alive", "proxy-authorization"):
        assert hop not in received, hop
    assert {"proxy-connection", "te"}.isdisjoint(received)
    assert upstream.last().header("x-end-to-end") == "kept"
    assert upstream.last().header("authorization") == "Bearer for-the-upstream"


async def test_response_hop_by_hop_headers_never_reach_client() -> None:
    """The upstream's Connection, headers it names, Keep-Alive and framing are not passed as-is."""
    answer = (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive, X-Hop-Secret\r\n"
        b"X-Hop-Secret: only-for-the-proxy\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Authenticate: Basic realm=upstream\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"X-End-To-End: kept\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with (
        raw_response(answer) as server,
        running_sidecar(dedicated(server.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n")
        response = await client.read_response()
    assert (response.status, response.body) == (200, b"hello world")
    names = [name.lower() for name, _ in response.headers]
    for hop in ("x-hop-secret", "keep-alive", "proxy-authenticate", "transfer-encoding"):
        assert hop not in names, hop
    assert response.header_values("connection") in ([], ["close"])
    assert response.header("x-end-to-end") == "kept"


async def test_response_framing_is_derived_by_the_sidecar() -> None:
    """An upstream's chunked framing is re-derived: one framing header, the body intact."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    async with raw_response(answer) as server, running_sidecar(dedicated(server.url())) as sc:
        response = await raw_exchange(sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.body == b"hello world"
    framing = response.header_values("transfer-encoding") + response.header_values("content-length")
    assert len(framing) == 1, response.headers


@pytest.mark.parametrize(
    "target",
    [
        "/a/../b/%2e%2e/?q=%20x",
        "/echo/%7Euser/x%2Fy;p=1?a=b&a=c&&",
        "//double//slash/./",
        "/query?with=%3F%26&empty=",
    ],
    ids=["dot-segments-and-escapes", "encoded-slash-and-params", "double-slashes", "escaped-query"],
)
@pytest.mark.parametrize("listener", ["dedicated", "forward"], ids=["dedicated", "forward"])
async def test_request_target_is_forwarded_byte_for_byte(
    upstream: HttpUpstream, target: str, listener: str
) -> None:
    """The request target reaches the upstream exactly as the client wrote it, unnormalised."""
    text = (
        dedicated(upstream.url())
        if listener == "dedicated"
        else forward({"svc": {"endpoints": [upstream.url()]}})
    )
    async with running_sidecar(text) as sc:
        if listener == "dedicated":
            port, line = sc.port(DEDICATED), target
        else:
            port, line = sc.port(FORWARD), f"http://{upstream.authority}{target}"
        request = f"GET {line} HTTP/1.1\r\nHost: {upstream.authority}\r\n\r\n".encode()
        await raw_exchange(port, request)
    assert upstream.last().raw_path == target


async def test_sidecar_keeps_no_cookies(upstream: HttpUpstream) -> None:
    """A Set-Cookie reaches the client unchanged and is never replayed on later requests."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
    ):
        async with session.get(sc.url(DEDICATED, "/set-cookie")) as resp:
            assert resp.headers.getall("set-cookie") == [SET_COOKIE]
        async with session.get(sc.url(DEDICATED, "/echo")) as resp:
            echoed = await resp.json()
    assert "cookie" not in echoed["headers"]


async def test_sidecar_follows_no_redirects(upstream: HttpUpstream) -> None:
    """A 302 from the upstream is relayed unchanged; its Location is never fetched."""
    async with running_sidecar(dedicated(upstream.url())) as sc, aiohttp.ClientSession() as session:
        url = sc.url(DEDICATED, "/status/302?Location=/ok")
        async with session.get(url, allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["location"] == "/ok"
            assert await resp.json() == {"status": 302}
    assert upstream.count("/status/302") == 1
    assert upstream.count("/ok") == 0


async def test_sidecar_decompresses_nothing() -> None:
    """A gzip body passes byte-identical with its Content-Encoding; Accept-Encoding is forwarded."""
    payload = gzip.compress(b"compressible " * 500)
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % len(payload)
    ) + payload
    async with raw_response(answer) as server, running_sidecar(dedicated(server.url())) as sc:
        request = b"GET /x HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        response = await raw_exchange(sc.port(DEDICATED), request)
        assert b"\r\nAccept-Encoding: gzip\r\n" in server.heads[0]
    assert response.header("content-encoding") == "gzip"
    assert response.header("content-length") == str(len(payload))
    assert response.body == payload
