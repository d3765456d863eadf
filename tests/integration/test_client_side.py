"""The client side over real sockets: half-close, limits on every head of a keep-alive
connection, refusals in their turn, and `https://` URLs on a forward listener."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from sidecar.upstream.group import default_tls_context
from tests.harness import running_sidecar, sidecar_yaml
from tests.integration.configs import FORWARD, forward
from tests.integration.rawhttp import RawClient, raw_exchange
from tests.upstreams import HttpUpstream, RawConnection, RawUpstream, closed_port

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 0.1
SECRET = b"Bearer s3cr3t-token"


def _limits_config(upstream: HttpUpstream) -> str:
    return sidecar_yaml(f"""
        limits:
          header_timeout: {HEADER_TIMEOUT}s
          keepalive_timeout: 5s
          max_header_bytes: 4KiB
        listeners:
          - {{name: app, bind: "127.0.0.1:0", upstream: svc}}
        upstreams:
          svc:
            endpoints: ["{upstream.url("")}"]
        """)


async def _send_and_read_all(
    port: int, first: bytes, rest: bytes, *, piece: int, gap: float, pause: float = 0.0
) -> bytes:
    """Send `first`, wait `pause`, then `rest` in pieces `gap` seconds apart while reading;
    everything received until the sidecar closes (a connection left open fails the test)."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)

        async def feed() -> None:
            with contextlib.suppress(ConnectionError):
                await loop.sock_sendall(sock, first)
                await asyncio.sleep(pause)
                for start in range(0, len(rest), piece):
                    await loop.sock_sendall(sock, rest[start : start + piece])
                    await asyncio.sleep(gap)

        feeder = asyncio.create_task(feed())
        pieces = []
        try:
            async with asyncio.timeout(2.0):
                with contextlib.suppress(ConnectionResetError):
                    while received := await loop.sock_recv(sock, 65536):
                        pieces.append(received)
        except TimeoutError:
            pytest.fail(f"the connection was not closed; received {b''.join(pieces)!r}")
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
    return b"".join(pieces)


def _statuses(raw: bytes) -> list[bytes]:
    """The status codes of the answers in `raw`, in order (bodies here never hold a status line)."""
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)


async def test_half_closed_client_gets_its_answer_and_then_eof(upstream: HttpUpstream) -> None:
    """A client that shuts down its sending side after a request reads the answer, then EOF:
    the sidecar closes its socket instead of keeping it half-open."""
    async with running_sidecar(_limits_config(upstream)) as sc, RawClient(sc.port("app")) as client:
        await client.send(b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
        client.writer.write_eof()
        answer = await client.read_response()
        assert (answer.status, answer.body) == (200, b"ok")
        assert await client.is_closed_within(0.5)


async def test_slow_second_head_after_an_idle_pause_gets_408(upstream: HttpUpstream) -> None:
    """After one request and a keep-alive pause longer than `header_timeout`, a second head
    trickling in slowly is still answered 408 within about `header_timeout`, then closed."""
    slow = b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    async with running_sidecar(_limits_config(upstream)) as sc:
        loop = asyncio.get_running_loop()
        started = loop.time()
        raw = await _send_and_read_all(
            sc.port("app"),
            b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n",
            slow,
            piece=3,
            gap=0.02,
            pause=HEADER_TIMEOUT * 2.5,
        )
        elapsed = loop.time() - started
    assert _statuses(raw) == [b"200", b"408"]
    assert elapsed < HEADER_TIMEOUT * 2.5 + 0.5  # refused before the trickle (~0.7 s) ended
    assert upstream.count("/echo") == 0


async def test_oversized_pipelined_head_gets_431_after_the_answer_in_flight(
    upstream: HttpUpstream,
) -> None:
    """A head over `max_header_bytes` pipelined behind a slow request is answered 431 only
    after that request's own answer, and the connection is closed."""
    first = (
        b"GET /slow-headers?delay=0.2 HTTP/1.1\r\nHost: svc\r\n\r\n"
        b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Big: "
    )
    async with running_sidecar(_limits_config(upstream)) as sc:
        raw = await _send_and_read_all(sc.port("app"), first, b"a" * 65536, piece=1024, gap=0)
    assert _statuses(raw) == [b"200", b"431"]
    assert b"slow" in raw
    assert upstream.total == 1


def _upload_then_read(port: int, head: bytes, body: bytes) -> tuple[bytes, str]:
    """Send a whole upload as a plain client does (blocking, no reading meanwhile), then read
    until EOF; returns what was read and the error that broke the upload, if any."""
    error = ""
    received = b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(5.0)
        try:
            sock.sendall(head + body)
        except OSError as exc:
            error = type(exc).__name__
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            error = error or type(exc).__name__
    return received, error


async def test_answer_before_the_upload_ended_reaches_the_client(upstream: HttpUpstream) -> None:
    """An upstream that answers before reading the request body: the client, still uploading,
    reads the whole answer and then EOF, instead of losing it to a reset (lingering close)."""

    async def answer_early(conn: RawConnection) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")  # the head only; the body stays unread
        await conn.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        await asyncio.get_running_loop().create_future()  # hold the connection

    early = RawUpstream(answer_early, "answer_early")
    await early.start()
    try:
        config = sidecar_yaml(f"""
            listeners:
              - {{name: app, bind: "127.0.0.1:0", upstream: svc}}
            upstreams:
              svc:
                endpoints: ["{early.url("")}"]
            """)
        body = b"x" * (8 * 1024 * 1024)
        head = b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n" % len(body)
        async with running_sidecar(config) as sc:
            received, error = await asyncio.to_thread(_upload_then_read, sc.port("app"), head, body)
    finally:
        await early.close()
    assert error == ""
    assert received.startswith(b"HTTP/1.1 413 ")
    assert received.endswith(b"too big!")


# ---- https:// URLs on a forward listener ---------------------------------------------------------


class PlainListener:
    """A cleartext TCP server that keeps every byte it receives and closes after the first read."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError):
            self.received += await reader.read(65536)
        writer.close()

    async def __aenter__(self) -> PlainListener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
async def tls_upstream(ca: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS server on 127.0.0.1 whose certificate (from `ca`) names 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure auth={request.headers.get('Authorization')}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def _https_get(authority: str, path: str = "/hello") -> bytes:
    return (
        f"GET https://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n".encode()
        + b"Authorization: "
        + SECRET
        + b"\r\n\r\n"
    )


async def test_https_url_for_an_upstream_with_http_endpoints_is_refused_unsent() -> None:
    """An `https://` URL routed to a configured upstream with an `http://` endpoint gets 400
    naming CONNECT, and not one byte reaches that endpoint."""
    async with PlainListener() as plain:
        text = forward(
            {"plain": {"endpoints": [f"http://127.0.0.1:{plain.port}"], "hosts": ["secure.test"]}}
        )
        async with running_sidecar(text) as sc:
            answer = await raw_exchange(sc.port(FORWARD), _https_get("secure.test"))
        assert answer.status == 400
        assert answer.json()["error"] == "bad_request"
        assert "CONNECT" in answer.json()["detail"]
        assert (plain.connections, bytes(plain.received)) == (0, b"")


@pytest.fixture
def fresh_default_tls() -> Iterator[None]:
    """The shared default TLS context is built anew inside the test (which may point the
    trust store elsewhere) and forgotten after it, so no test sees another's trust store."""
    default_tls_context.cache_clear()
    yield
    default_tls_context.cache_clear()


async def test_https_url_for_an_unknown_host_goes_over_verified_tls(
    ca: trustme.CA,
    tls_upstream: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_default_tls: None,
) -> None:
    """An `https://` URL for a host no upstream claims is sent over TLS, verified against the
    system trust store (here pointed at the test CA), through its own implicit upstream."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    authority = f"127.0.0.1:{tls_upstream}"
    async with running_sidecar(forward()) as sc:
        answer = await raw_exchange(sc.port(FORWARD), _https_get(authority))
    assert (answer.status, answer.body) == (200, b"secure auth=" + SECRET)
    assert answer.header("x-sidecar-upstream") == f"https:{authority}"


async def test_https_url_for_an_unknown_cleartext_host_sends_no_cleartext() -> None:
    """An `https://` URL for a host that speaks only cleartext reaches it as a TLS handshake,
    never as HTTP: the request line and `Authorization` never leave the sidecar."""
    async with PlainListener() as plain:
        async with running_sidecar(forward()) as sc:
            answer = await raw_exchange(
                sc.port(FORWARD), _https_get(f"127.0.0.1:{plain.port}", "/x")
            )
        assert answer.status == 502
        received = bytes(plain.received)
        assert received.startswith(b"\x16\x03")  # a TLS handshake record
        assert SECRET not in received
        assert b"GET" not in received


async def test_https_url_past_max_implicit_upstreams_is_refused_unsent() -> None:
    """Past `max_implicit_upstreams` unknown hosts share `other`, which connects in cleartext:
    an `https://` URL is then refused with 400 and nothing reaches the host."""
    async with PlainListener() as plain:
        text = forward(forward={"unknown_hosts": "allow", "max_implicit_upstreams": 0})
        async with running_sidecar(text) as sc:
            answer = await raw_exchange(
                sc.port(FORWARD), _https_get(f"127.0.0.1:{plain.port}", "/x")
            )
        assert answer.status == 400
        assert "'other'" in answer.json()["detail"]
        assert (plain.connections, bytes(plain.received)) == (0, b"")


async def test_https_urls_for_new_hosts_share_one_default_tls_context(
    monkeypatch: pytest.MonkeyPatch, fresh_default_tls: None
) -> None:
    """Each new `https://` host gets its own implicit upstream but not its own TLS context: the
    system trust store is loaded once, not on the event loop for every new host."""
    loads: list[object] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    async with running_sidecar(forward()) as sc:
        for port in (closed_port(), closed_port()):
            answer = await raw_exchange(sc.port(FORWARD), _https_get(f"127.0.0.1:{port}", "/x"))
            assert answer.status == 502
    assert len(loads) == 1
