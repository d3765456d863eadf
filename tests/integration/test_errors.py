"""Upstream failures over real sockets and the answers they become (SPEC §4.3, §4.6, §9):
refused connects, resets before and during the body, malformed responses, and the shape of
every generated error."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.harness import running_sidecar
from tests.integration.configs import DEDICATED, FORWARD, dedicated, forward
from tests.integration.rawhttp import RawClient, raw_exchange, scrape
from tests.upstreams import (
    closed_port,
    pattern_bytes,
    raw_response,
    reset_before_headers,
    reset_mid_body,
)

pytestmark = pytest.mark.integration

ONE_ATTEMPT: dict[str, Any] = {"retries": {"max_attempts": 1}}
SECRET = "TOP-SECRET-7f3a"
GET_WITH_SECRETS = (
    f"GET /x?token={SECRET}-q HTTP/1.1\r\nHost: x\r\n"
    f"Authorization: Bearer {SECRET}-auth\r\nX-Api-Key: {SECRET}-key\r\n"
    f"Cookie: session={SECRET}-cookie\r\n\r\n"
).encode()
UPSTREAM_BODY_MARKER = b"UPSTREAM-INTERNAL-DETAIL"


async def test_refused_connect_gives_502_unreachable() -> None:
    """A refused connect gives 502 `upstream_unreachable` as the JSON of SPEC §4.6."""
    config = dedicated(f"http://127.0.0.1:{closed_port()}", **ONE_ATTEMPT)
    async with running_sidecar(config) as sc:
        response = await raw_exchange(sc.port(DEDICATED), GET_WITH_SECRETS)
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert response.status == 502
    assert response.header("content-type") == "application/json"
    assert response.header("server") == "sidecar"
    assert response.header("x-sidecar-error") == "upstream_unreachable"
    assert response.header("x-sidecar-upstream") == "svc"
    assert response.header("x-sidecar-attempts") == "1"
    body = response.json()
    assert set(body) == {"error", "upstream", "detail"}
    assert (body["error"], body["upstream"]) == ("upstream_unreachable", "svc")
    assert lines[0]["outcome"] == "unreachable"
    assert lines[0]["error"] == "upstream_unreachable"
    assert samples.value("sidecar_upstream_attempts_total", result="connect_failure") == 1
    assert samples.value("sidecar_requests_total", code="502", outcome="unreachable") == 1


@pytest.mark.parametrize(
    ("server_factory", "code"),
    [
        (reset_before_headers, "upstream_reset"),
        (lambda: raw_response(b""), "upstream_reset"),
        (lambda: raw_response(b"HTTP/1.1 200 OK\r\nContent-"), "upstream_reset"),
    ],
    ids=["rst-before-headers", "fin-before-headers", "fin-mid-head"],
)
async def test_connection_lost_before_headers_gives_502_reset(
    server_factory: Any, code: str
) -> None:
    """An upstream that resets or closes before a complete head gives 502 `upstream_reset`."""
    async with server_factory() as server:
        async with running_sidecar(dedicated(server.url(), **ONE_ATTEMPT)) as sc:
            response = await raw_exchange(sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            lines = sc.access_lines()
            samples = await scrape(sc.admin_url)
        assert server.requests == 1
    assert response.status == 502
    assert response.json()["error"] == code
    assert lines[0]["outcome"] == "reset"
    assert samples.value("sidecar_upstream_attempts_total", result="reset") == 1


async def test_reset_mid_body_truncates_and_closes_client_connection() -> None:
    """A reset after the head was relayed cannot become an error page: the client connection
    closes with the body short of its Content-Length, and the request is logged as a reset."""
    async with (
        reset_mid_body(content_length=1000, sent=100, pause=0.05) as server,
        running_sidecar(dedicated(server.url(), **ONE_ATTEMPT)) as sc,
    ):
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, headers = await client.read_head()
            received = await client.read_until_closed()
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert status == 200
    assert ("content-length", "1000") in [(k.lower(), v) for k, v in headers]
    assert received == pattern_bytes(100)
    assert lines[0]["status"] == 200
    assert lines[0]["outcome"] == "reset"
    assert samples.value("sidecar_upstream_attempts_total", result="reset") == 1
    assert samples.value("sidecar_upstream_attempts_total", result="success") == 0


MALFORMED = [
    b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + UPSTREAM_BODY_MARKER,
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    b"NOT HTTP AT ALL " + UPSTREAM_BODY_MARKER + b"\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]


@pytest.mark.parametrize(
    "answer",
    MALFORMED,
    ids=[
        "space-in-header-name",
        "control-char-in-value",
        "bad-chunk-size",
        "content-length-and-chunked",
        "differing-content-lengths",
        "negative-content-length",
        "four-digit-status",
        "not-http",
        "unsolicited-101",
    ],
)
async def test_malformed_upstream_response_gives_502_protocol_error(answer: bytes) -> None:
    """A malformed upstream response is never relayed: 502 `upstream_protocol_error`."""
    async with (
        raw_response(answer) as server,
        running_sidecar(dedicated(server.url(), **ONE_ATTEMPT)) as sc,
    ):
        response = await raw_exchange(sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert response.status == 502
    assert response.header("x-sidecar-error") == "upstream_protocol_error"
    assert response.json()["error"] == "upstream_protocol_error"
    assert UPSTREAM_BODY_MARKER not in response.body
    assert lines[0]["outcome"] == "upstream_error"
    assert samples.value("sidecar_upstream_attempts_total", result="protocol_error") == 1


async def test_malformed_upstream_connection_is_not_reused() -> None:
    """After a malformed answer the next request opens a fresh upstream connection."""
    answer = b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\nok"
    async with raw_response(answer, close=False) as server:
        async with running_sidecar(dedicated(server.url(), **ONE_ATTEMPT)) as sc:
            for _ in range(2):
                response = await raw_exchange(
                    sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                assert response.status == 502
        assert server.connections == 2


async def test_upstream_closing_idle_keepalive_connection_is_transparent() -> None:
    """An idle pooled connection the upstream closed is replaced: every request still gets 200."""
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"  # keep-alive, then FIN
    async with raw_response(answer, close=True) as server:
        async with running_sidecar(dedicated(server.url(), **ONE_ATTEMPT)) as sc:
            for _ in range(3):
                response = await raw_exchange(
                    sc.port(DEDICATED), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                assert (response.status, response.body) == (200, b"ok")
        assert server.requests == 3


async def _generated_error(case: str) -> bytes:
    """The head and body of one generated error answer, for a request carrying secrets."""
    malformed = b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n"
    async with contextlib.AsyncExitStack() as stack:
        if case == "unknown-host":
            config = forward(forward={"unknown_hosts": "deny"})
            port_of = FORWARD
        else:
            if case == "refused":
                url = f"http://127.0.0.1:{closed_port()}"
            else:
                server = reset_before_headers() if case == "reset" else raw_response(malformed)
                url = (await stack.enter_async_context(server)).url()
            config = dedicated(url, **ONE_ATTEMPT)
            port_of = DEDICATED
        sc = await stack.enter_async_context(running_sidecar(config))
        client = await stack.enter_async_context(RawClient(sc.port(port_of)))
        await client.send(GET_WITH_SECRETS)
        return await _one_answer(client)


async def _one_answer(client: RawClient) -> bytes:
    response = await client.read_response()
    head = "".join(f"{name}: {value}\r\n" for name, value in response.headers)
    return head.encode("latin-1") + response.body


@pytest.mark.parametrize(
    "case",
    ["refused", "reset", "malformed", "unknown-host"],
    ids=["refused", "reset", "malformed", "unknown-host"],
)
async def test_generated_errors_never_echo_request_headers(case: str) -> None:
    """No generated error repeats a request header value, cookie or query string."""
    answer = await _generated_error(case)
    assert b"application/json" in answer
    assert SECRET.encode() not in answer
