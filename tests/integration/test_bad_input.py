"""Hostile request bytes on a dedicated listener (SPEC §9): refused, never forwarded.

Each case is written byte for byte on a raw loopback socket. The sidecar must answer with a
generated 4xx (SPEC §4.6 JSON, `Server: sidecar`, no request header value echoed) and close
the connection, and the `HttpUpstream` behind the listener must receive nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from tests.harness import RunningSidecar, running_sidecar, sidecar_yaml
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = 0.1  # limits.header_timeout below
MAX_HEADER_BYTES = 4096  # limits.max_header_bytes below
READ_TIMEOUT = 2.0

# Put in every hostile request: a generated error page must never echo it back.
SECRET = b"Authorization: Bearer MARKER-s3cr3t\r\n"
NEVER_ECHOED = (b"MARKER", b"s3cr3t", b"Injected", b"smuggled")


@dataclass(frozen=True, slots=True)
class Answer:
    """Everything the sidecar sent before closing: one status line, headers, body."""

    raw: bytes
    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def parse(cls, raw: bytes) -> Answer:
        head, sep, body = raw.partition(b"\r\n\r\n")
        assert sep, f"no complete response head in {raw!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            assert colon, f"malformed header line {line!r}"
            assert name.lower() not in headers, f"duplicate header {name!r}"
            headers[name.lower()] = value.strip()
        return cls(raw, int(status), headers, body)

    def json(self) -> dict[str, object]:
        payload = orjson.loads(self.body)
        assert isinstance(payload, dict)
        return payload


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[RunningSidecar, HttpUpstream]]:
    """A sidecar with a dedicated listener `app` in front of an `HttpUpstream`."""
    async with HttpUpstream("svc") as upstream:
        config = sidecar_yaml(
            f"""
            limits:
              header_timeout: 100ms
              max_header_bytes: 4KiB
            listeners:
              - name: app
                bind: 127.0.0.1:0
                upstream: svc
            upstreams:
              svc:
                endpoints: [{upstream.url("")}]
            """
        )
        async with running_sidecar(config) as sidecar:
            yield sidecar, upstream


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the sidecar closes; a connection left open fails the test."""
    pieces = []
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            with contextlib.suppress(ConnectionResetError):
                while data := await reader.read(65536):
                    pieces.append(data)
    except TimeoutError:
        pytest.fail(f"the connection was not closed; received {b''.join(pieces)!r}")
    return b"".join(pieces)


async def trickle_and_read(
    port: int, data: bytes, *, piece: int, gap: float, preface: bytes = b""
) -> bytes:
    """Send `preface` at once, then `data` `piece` bytes at a time, `gap` seconds apart, while
    reading concurrently; everything received until the sidecar closes. Plain sockets, so a
    write failing after the sidecar closed cannot hide the answer that arrived before it (a
    StreamReader would raise the write's error instead)."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                await loop.sock_sendall(sock, preface)
                await asyncio.sleep(gap)
                for start in range(0, len(data), piece):
                    await loop.sock_sendall(sock, data[start : start + piece])
                    await asyncio.sleep(gap)

        feeder = asyncio.create_task(trickle())
        pieces = []
        try:
            async with asyncio.timeout(READ_TIMEOUT):
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


async def send_hostile(port: int, request: bytes) -> Answer:
    """Write `request` in one go and read the answer up to the connection's close."""
    async with connect(port) as (reader, writer):
        writer.write(request)
        await writer.drain()
        return Answer.parse(await read_to_eof(reader))


def assert_generated_error(answer: Answer, status: int | tuple[int, ...], code: str) -> None:
    """A SPEC §4.6 error page: JSON body with the code, `Server: sidecar`, nothing echoed."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status in statuses, answer.raw
    assert answer.headers["server"] == "sidecar"
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert int(answer.headers["content-length"]) == len(answer.body)
    payload = answer.json()
    assert payload["error"] == code
    assert set(payload) <= {"error", "upstream", "detail", "retry_after_s"}
    assert isinstance(payload["detail"], str)
    for secret in NEVER_ECHOED:
        assert secret.lower() not in answer.raw.lower(), f"{secret!r} echoed in {answer.raw!r}"


def request(head: bytes, body: bytes = b"", *, version: bytes = b"HTTP/1.1") -> bytes:
    """Request bytes from `head` (method and target, then header lines): the version and the
    SECRET header go after the first line, the empty line and `body` at the end."""
    line, _, rest = head.partition(b"\r\n")
    return line + b" " + version + b"\r\n" + SECRET + rest + b"\r\n" + body


BAD_REQUESTS = [
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n")
        + b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n",
        id="content-length-with-transfer-encoding",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 6\r\n", b"hello!"
        ),
        id="duplicate-differing-content-length",
    ),
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nContent-Length: 5, 6\r\n", b"hello!"),
        id="content-length-list",
    ),
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nContent-Length: +5\r\n", b"hello"),
        id="content-length-with-sign",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"
        ),
        id="transfer-encoding-chunked-twice-in-list",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        id="transfer-encoding-chunked-on-two-lines",
    ),
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        id="transfer-encoding-gzip-chunked",
    ),
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: identity\r\n", b"hello"),
        id="transfer-encoding-identity",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
            version=b"HTTP/1.0",
        ),
        id="transfer-encoding-on-http10",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n",
            b"zz\r\nhello\r\n0\r\n\r\n",
        ),
        id="chunk-size-not-hex",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n",
            b"ffffffffffffffffffff\r\nhello\r\n",
        ),
        id="chunk-size-overflow",
    ),
    pytest.param(
        request(b"POST /echo\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n"),
        id="chunk-bare-lf",
    ),
    pytest.param(
        b"GET /echo HTTP/1.1\n" + SECRET + b"Host: svc\n\n",
        id="bare-lf-line-endings",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\nX-Other: 1\r\n"),
        id="bare-lf-after-header",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Folded: a\r\n Injected: 1\r\n"),
        id="obs-fold-continuation",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Value: a\x00Injected: 1\r\n"),
        id="nul-in-header-value",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Value: a\rInjected: 1\r\n"),
        id="bare-cr-in-header-value",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Value: a\nInjected: 1\r\n"),
        id="bare-lf-in-header-value",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Value: a\x7fInjected\r\n"),
        id="del-in-header-value",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX Name: 1\r\n"),
        id="space-in-header-name",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost : svc\r\n"),
        id="space-before-colon",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\n: no-name\r\n"),
        id="empty-header-name",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nNoColonHere\r\n"),
        id="header-line-without-colon",
    ),
    pytest.param(
        request(b"GET /a b\r\nHost: svc\r\n"),
        id="space-in-target",
    ),
    pytest.param(
        request(b"get /echo\r\nHost: svc\r\n"),
        id="lower-case-method",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\n", version=b"HTTP/1.2"),
        id="unknown-http-version",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\n", version=b"HTTP/2.0"),
        id="http20-request-line",
    ),
    pytest.param(
        b"GET /echo\r\n\r\n",
        id="http09-request-line",
    ),
    pytest.param(
        request(b"GET http://other.example/echo\r\nHost: svc\r\n"),
        id="absolute-uri-authority-differs-from-host",
    ),
    pytest.param(
        request(b"GET http://user:pw@svc/echo\r\nHost: svc\r\n"),
        id="absolute-uri-with-userinfo",
    ),
    pytest.param(
        request(b"GET ftp://svc/echo\r\nHost: svc\r\n"),
        id="absolute-uri-not-http",
    ),
    pytest.param(
        request(
            b"POST /echo\r\nHost: svc\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 5\r\n",
            b"hello",
        ),
        id="upgrade-with-body",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nHost: other.example\r\n"),
        id="two-host-headers",
    ),
    pytest.param(
        request(b"GET /echo\r\n"),
        id="http11-without-host",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: \r\n"),
        id="http11-empty-host",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: a b\r\n"),
        id="host-not-an-authority",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n"),
        id="two-request-ids",
    ),
]


@pytest.mark.parametrize("data", BAD_REQUESTS)
async def test_bad_request_is_refused_with_400_and_never_forwarded(proxied, data):
    """A malformed or ambiguous request gets a generated 400 and a close, and nothing is forwarded."""
    sidecar, upstream = proxied
    answer = await send_hostile(sidecar.port("app"), data)
    assert_generated_error(answer, 400, "bad_request")
    assert upstream.total == 0, upstream.requests


async def test_expect_other_than_continue_is_refused(proxied):
    """`Expect` with anything but 100-continue is answered 400 or 417 and never forwarded."""
    sidecar, upstream = proxied
    data = request(
        b"POST /echo\r\nHost: svc\r\nExpect: something-else\r\nContent-Length: 5\r\n", b"hello"
    )
    answer = await send_hostile(sidecar.port("app"), data)
    assert_generated_error(answer, (400, 417), "bad_request")
    assert upstream.total == 0, upstream.requests


def _many_headers() -> bytes:
    lines = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(60))
    return request(b"GET /echo\r\nHost: svc\r\n" + lines)


OVERSIZED = [
    pytest.param(
        request(b"GET /" + b"a" * (MAX_HEADER_BYTES + 1) + b"\r\nHost: svc\r\n"),
        id="long-request-line",
    ),
    pytest.param(
        b"GET /" + b"a" * (MAX_HEADER_BYTES + 1) + b" HTTP/1.0\r\n\r\n",
        id="long-request-line-without-headers",
    ),
    pytest.param(
        b"GET http://svc/" + b"a" * (MAX_HEADER_BYTES + 1) + b" HTTP/1.1\r\nHost: svc\r\n\r\n",
        id="long-absolute-uri",
    ),
    pytest.param(_many_headers(), id="many-headers"),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Big: " + b"v" * (MAX_HEADER_BYTES + 1) + b"\r\n"),
        id="one-huge-header",
    ),
    pytest.param(
        request(b"GET /echo\r\nHost: svc\r\nX-Big: " + b"v" * (64 * MAX_HEADER_BYTES)),
        id="unterminated-huge-header",
    ),
]


@pytest.mark.parametrize("data", OVERSIZED)
async def test_oversized_head_is_refused_with_431(proxied, data):
    """A request line plus headers over `max_header_bytes` gets 431 `request_too_large`, unforwarded."""
    sidecar, upstream = proxied
    answer = await send_hostile(sidecar.port("app"), data)
    assert_generated_error(answer, 431, "request_too_large")
    assert upstream.total == 0, upstream.requests


async def test_oversized_head_sent_in_small_pieces_is_refused_with_431(proxied):
    """The header size limit holds when the head trickles in over many reads."""
    sidecar, upstream = proxied
    head = request(b"GET /echo\r\nHost: svc\r\nX-Big: " + b"v" * (2 * MAX_HEADER_BYTES) + b"\r\n")
    raw = await trickle_and_read(sidecar.port("app"), head, piece=512, gap=0.002)
    assert_generated_error(Answer.parse(raw), 431, "request_too_large")
    assert upstream.total == 0


async def test_head_just_under_the_limit_is_forwarded(proxied):
    """A head a little under `max_header_bytes` is not mistaken for an oversized one."""
    sidecar, upstream = proxied
    filler = b"v" * (MAX_HEADER_BYTES - 200)
    data = (
        b"GET /echo HTTP/1.1\r\nHost: svc\r\nConnection: close\r\nX-Filler: " + filler + b"\r\n\r\n"
    )
    async with connect(sidecar.port("app")) as (reader, writer):
        writer.write(data)
        answer = Answer.parse(await read_to_eof(reader))
    assert answer.status == 200
    assert upstream.last().header("x-filler") == filler.decode()


async def test_slowloris_head_gets_408_then_close(proxied):
    """A head trickling in slower than `header_timeout` is answered 408 and the connection closed."""
    sidecar, upstream = proxied
    head = b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    # 3 bytes every 20 ms: the whole head would take ~0.5 s, five times the header timeout.
    raw = await trickle_and_read(sidecar.port("app"), head, piece=3, gap=0.02)
    elapsed = loop.time() - started
    assert_generated_error(Answer.parse(raw), 408, "request_timeout")
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0
    assert upstream.total == 0


async def test_slowloris_on_a_keepalive_connection_gets_408(proxied):
    """A second request trickling in on a keep-alive connection still gets its 408 before the close."""
    sidecar, upstream = proxied
    first = b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n"
    second = b"GET /echo HTTP/1.1\r\nHost: svc\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    raw = await trickle_and_read(sidecar.port("app"), second, piece=3, gap=0.02, preface=first)
    assert raw.startswith(b"HTTP/1.1 200 "), raw
    second_answer = raw.find(b"HTTP/1.1 408 ")
    assert second_answer > 0, raw
    assert_generated_error(Answer.parse(raw[second_answer:]), 408, "request_timeout")
    assert upstream.total == 1
    assert upstream.count("/ok") == 1


async def test_silent_connection_is_closed_after_header_timeout(proxied):
    """A client that connects and sends nothing is disconnected after about `header_timeout`."""
    sidecar, upstream = proxied
    loop = asyncio.get_running_loop()
    async with connect(sidecar.port("app")) as (reader, _):
        started = loop.time()
        raw = await read_to_eof(reader)
        elapsed = loop.time() - started
    if raw:
        assert_generated_error(Answer.parse(raw), 408, "request_timeout")
    assert HEADER_TIMEOUT * 0.9 <= elapsed < HEADER_TIMEOUT + 1.0
    assert upstream.total == 0


async def test_request_pipelined_after_a_rejected_one_is_dropped(proxied):
    """After a refusal the connection closes: a request pipelined behind it is neither answered nor forwarded."""
    sidecar, upstream = proxied
    data = request(b"GET /echo\r\nHost: svc\r\nHost: other\r\n") + (
        b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n"
    )
    answer = await send_hostile(sidecar.port("app"), data)
    assert_generated_error(answer, 400, "bad_request")
    assert b"HTTP/1.1" not in answer.body  # exactly one response before the close
    assert upstream.total == 0


async def test_bad_request_after_a_good_one_closes_the_keepalive_connection(proxied):
    """On a keep-alive connection a good request is served, then a bad one is refused and closes it."""
    sidecar, upstream = proxied
    async with connect(sidecar.port("app")) as (reader, writer):
        writer.write(b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
        async with asyncio.timeout(READ_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"content-length: 2\r\n" in head.lower()
            assert await reader.readexactly(2) == b"ok"
        writer.write(request(b"GET /echo\r\nHost: svc\r\nX-Value: a\x00b\r\n"))
        answer = Answer.parse(await read_to_eof(reader))
    assert_generated_error(answer, 400, "bad_request")
    assert upstream.total == 1
    assert upstream.count("/ok") == 1


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/echo/a%0d%0aInjected:%201", id="in-path"),
        pytest.param(b"/echo?q=a%0D%0AInjected:%201&r=%00", id="in-query"),
        pytest.param(b"/echo/a/../%2e%2e/b%2F", id="dot-segments"),
    ],
)
async def test_encoded_bytes_in_target_are_forwarded_verbatim(proxied, target):
    """Percent-encoded CR/LF, NUL and dot segments in the target reach the upstream byte for byte, never decoded."""
    sidecar, upstream = proxied
    data = b"GET " + target + b" HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    async with connect(sidecar.port("app")) as (reader, writer):
        writer.write(data)
        answer = Answer.parse(await read_to_eof(reader))
    assert answer.headers.get("x-sidecar-upstream") == "svc"  # the upstream's own answer
    assert "injected" not in answer.headers
    received = upstream.last()
    assert upstream.total == 1
    assert received.raw_path == target.decode("latin-1")
    assert not received.has_header("injected")


async def test_rejected_request_is_logged_without_its_headers(proxied):
    """A request refused while parsing still writes one access line, with its status and no header value."""
    sidecar, _ = proxied
    data = request(b"POST /echo\r\nHost: svc\r\nContent-Length: 1\r\nContent-Length: 2\r\n", b"ab")
    answer = await send_hostile(sidecar.port("app"), data)
    assert answer.status == 400
    (line,) = sidecar.access_lines()
    assert line["listener"] == "app"
    assert line["status"] == 400
    assert line["outcome"] == "rejected"
    assert b"MARKER" not in orjson.dumps(sidecar.log_lines())
