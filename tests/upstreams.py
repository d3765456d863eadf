"""Fake upstream servers on 127.0.0.1 for integration and e2e tests.

Two kinds, both bound on port 0 and used as async context managers:

* `HttpUpstream`: an aiohttp application with well-formed but configurable answers (slow
  headers, slow or chunked bodies, echo, uploads, scripted failures). It logs every request it
  receives, so tests can assert what the sidecar actually forwarded.
* `RawUpstream`: an `asyncio.start_server` for what aiohttp will not do on purpose: resets
  before or in the middle of a response, a black hole, malformed bytes. Build one with
  `reset_before_headers()`, `reset_mid_body()`, `black_hole()` or `raw_response(data)`.

`closed_port()` returns a loopback port with nothing listening. This module must not import
`sidecar`: the fakes stay independent of the code under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web

__all__ = [
    "SET_COOKIE",
    "HttpUpstream",
    "RawConnection",
    "RawUpstream",
    "ReceivedRequest",
    "black_hole",
    "closed_port",
    "pattern_bytes",
    "raw_response",
    "reset_before_headers",
    "reset_mid_body",
]

HOST = "127.0.0.1"
SET_COOKIE = "session=s3cr3t; Path=/; HttpOnly"
_PATTERN = bytes(range(256)) * 16  # 4 KiB period; any slice of it is easy to regenerate


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """`n` bytes of the deterministic pattern the upstreams serve (byte i is `i % 256`)."""
    start = offset % 256
    reps = (start + n) // len(_PATTERN) + 1
    return (_PATTERN * reps)[start : start + n]


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the upstream saw it: method, raw target, headers in arrival order."""

    method: str
    raw_path: str  # path and query exactly as on the request line
    headers: tuple[tuple[str, str], ...]  # (name as sent, value), duplicates kept

    @property
    def path(self) -> str:
        """The raw path without its query string."""
        return self.raw_path.partition("?")[0]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None when absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None


class _Base:
    """Shared async-context-manager plumbing: `async with X() as x:` starts and stops it."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Addressed(_Base):
    """A server bound on 127.0.0.1 with a port known once started."""

    _port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def authority(self) -> str:
        """`127.0.0.1:PORT`, as in a Host header or an upstream's `hosts:` list."""
        return f"{HOST}:{self.port}"

    def url(self, path: str = "/") -> str:
        """An absolute `http://` URL on this server."""
        return f"http://{self.authority}{path}"


# ------------------------------------------------------------------------------------------
# aiohttp upstream


class HttpUpstream(_Addressed):
    """A well-behaved HTTP/1.1 upstream whose answers tests choose by path.

    Routes (any method unless noted; `S` are float seconds, `N` integers):

    * `/ok`: 200, body `ok`.
    * `/echo` and `/echo/...`: 200 JSON with `upstream` (this server's name), `method`,
      `raw_path` (path and query as received), `headers` (lower-cased name → value, duplicates
      joined with ", "), `raw_headers` ([name, value] pairs as received), `body_length` and
      `body_sha256`.
    * `/status/{code}`: that status with a small JSON body; query parameters become response
      headers (`/status/503?Retry-After=1`).
    * `/slow-headers?delay=S`: waits S seconds before the response head.
    * `/slow-body?chunks=N&delay=S&size=B`: head at once (Content-Length N*B), then N chunks of
      B bytes (default 16) of `pattern_bytes`, each after a gap of S seconds.
    * `/hang`: waits until `release()` is called (or the server closes), then 200.
    * `/bytes/{n}`: n bytes of `pattern_bytes` with Content-Length.
    * `/chunked/{n}`: n bytes of `pattern_bytes` with chunked transfer encoding.
    * `/upload`: reads the streamed request body; 200 JSON with `length` and `sha256`.
    * `/headers?Name=value&...`: 200 with the query parameters as response headers.
    * `/set-cookie`: 200 with `Set-Cookie: SET_COOKIE`.
    * `/health`: `health_status` (200 unless a test sets another), for active health checks.

    Every request, also to unknown paths, is appended to `requests` and counted in `counts`
    (keyed by raw path without query) before it is answered. `fail_next(n, status)` makes the
    next n requests, whatever their path, answer `status` instead.
    """

    def __init__(self, name: str = "upstream", *, port: int = 0) -> None:
        self.name = name
        self._bind_port = port  # 0: any free port; a saved port brings a server "back"
        self.requests: list[ReceivedRequest] = []
        self.counts: Counter[str] = Counter()
        self._fail_left = 0
        self._fail_status = 503
        self.health_status = 200
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- test-facing API ------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Requests received so far, on any path."""
        return len(self.requests)

    def count(self, path: str) -> int:
        """Requests received on `path` (raw path, without query string)."""
        return self.counts[path]

    def last(self) -> ReceivedRequest:
        """The most recent request; fails the test if none arrived."""
        assert self.requests, f"{self.name} received no request"
        return self.requests[-1]

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` requests, on any path, with `status` and a JSON body."""
        self._fail_left = count
        self._fail_status = status

    def release(self) -> None:
        """Let every request parked on `/hang` (now or later) complete."""
        self._release.set()

    async def start(self) -> None:
        # A short shutdown_timeout: parked handlers are cancelled instead of delaying teardown.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self._bind_port)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def __repr__(self) -> str:
        where = self.authority if self._port is not None else "not started"
        return f"HttpUpstream({self.name!r}, {where}, requests={self.total})"

    # -- application ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        @web.middleware
        async def record(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            received = ReceivedRequest(
                method=request.method,
                raw_path=request.raw_path,
                headers=tuple(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers
                ),
            )
            self.requests.append(received)
            self.counts[received.path] += 1
            if self._fail_left > 0:
                self._fail_left -= 1
                return web.json_response(
                    {"scripted_failure": self._fail_status}, status=self._fail_status
                )
            return await handler(request)

        app = web.Application(middlewares=[record])
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_route("*", "/status/{code:\\d{3}}", self._status)
        app.router.add_route("*", "/slow-headers", self._slow_headers)
        app.router.add_route("*", "/slow-body", self._slow_body)
        app.router.add_route("*", "/hang", self._hang)
        app.router.add_route("*", "/bytes/{n:\\d+}", self._bytes)
        app.router.add_route("*", "/chunked/{n:\\d+}", self._chunked)
        app.router.add_route("*", "/upload", self._upload)
        app.router.add_route("*", "/headers", self._headers)
        app.router.add_route("*", "/set-cookie", self._set_cookie)
        app.router.add_route("*", "/health", self._health)
        return app

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        length, digest = await _consume(request)
        joined: dict[str, str] = {}
        for key, value in request.headers.items():
            name = key.lower()
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        return web.json_response(
            {
                "upstream": self.name,
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": joined,
                "raw_headers": [
                    [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers
                ],
                "body_length": length,
                "body_sha256": digest,
            }
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        if code in (204, 304):
            response = web.Response(status=code)
        else:
            response = web.json_response({"status": code}, status=code)
        _add_query_headers(request, response)
        return response

    async def _slow_headers(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text="slow")

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        chunks = int(request.query.get("chunks", "3"))
        delay = float(request.query.get("delay", "0.05"))
        size = int(request.query.get("size", "16"))
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        response.content_length = chunks * size
        await response.prepare(request)  # a StreamResponse sends its head here, at once
        with contextlib.suppress(ConnectionError):
            for i in range(chunks):
                await asyncio.sleep(delay)
                await response.write(pattern_bytes(size, offset=i * size))
            await response.write_eof()
        return response

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        await self._release.wait()
        return web.Response(text="released")

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        return web.Response(body=pattern_bytes(n), content_type="application/octet-stream")

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        response = web.StreamResponse()
        response.content_type = "application/octet-stream"
        response.enable_chunked_encoding()
        await response.prepare(request)
        body = pattern_bytes(n)
        with contextlib.suppress(ConnectionError):
            for start in range(0, n, 4096):
                await response.write(body[start : start + 4096])
            await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        length, digest = await _consume(request)
        return web.json_response({"length": length, "sha256": digest})

    async def _headers(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        _add_query_headers(request, response)
        return response

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=self.health_status, text="health")

    async def _set_cookie(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(text="cookie set")
        response.headers["Set-Cookie"] = SET_COOKIE
        return response


async def _consume(request: web.Request) -> tuple[int, str]:
    """Read a request body as a stream; its length and sha256 hex digest."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return length, digest.hexdigest()


def _add_query_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.query.items():
        response.headers.add(name, value)


# ------------------------------------------------------------------------------------------
# raw asyncio upstreams


class RawConnection:
    """One accepted connection handed to a `RawUpstream` behaviour."""

    __slots__ = ("reader", "upstream", "writer")

    def __init__(
        self, upstream: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.upstream = upstream
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> bytes | None:
        """Read one request (head, then a Content-Length or chunked body); its head, or None
        when the client closed the connection before sending one."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        self.upstream.heads.append(head)
        headers: dict[bytes, bytes] = {}
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            await self._read_chunked_body()
        elif length := int(headers.get(b"content-length", b"0") or b"0"):
            await self.reader.readexactly(length)
        return head

    async def _read_chunked_body(self) -> None:
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields, up to the empty line
                return
            await self.reader.readexactly(size + 2)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Close with SO_LINGER 0, so the peer gets a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Behaviour = Callable[[RawConnection], Awaitable[None]]


class RawUpstream(_Addressed):
    """An asyncio TCP server that runs `behaviour` on each accepted connection.

    `connections` counts accepted connections and `requests` the request heads read (their
    bytes are kept in `heads`). Closing it stops listening and cancels every held connection.
    """

    def __init__(self, behaviour: Behaviour, name: str = "raw") -> None:
        self.name = name
        self.connections = 0
        self.heads: list[bytes] = []
        self._behaviour = behaviour
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def requests(self) -> int:
        return len(self.heads)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._behaviour(RawConnection(self, reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent garbage: nothing to assert here
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def __repr__(self) -> str:
        where = self.authority if self._port is not None else "not started"
        return (
            f"RawUpstream({self.name!r}, {where}, connections={self.connections}, "
            f"requests={self.requests})"
        )


async def _hold_forever() -> None:
    await asyncio.get_running_loop().create_future()


def reset_before_headers() -> RawUpstream:
    """Reads each request, then resets the connection (RST) without answering."""

    async def behaviour(conn: RawConnection) -> None:
        if await conn.read_request() is not None:
            conn.reset()

    return RawUpstream(behaviour, "reset_before_headers")


def reset_mid_body(content_length: int = 1000, sent: int = 100, pause: float = 0.05) -> RawUpstream:
    """Answers 200 with `Content-Length: content_length`, sends `sent` body bytes of
    `pattern_bytes`, waits `pause` seconds (so the head is surely read), then resets (RST)."""

    async def behaviour(conn: RawConnection) -> None:
        if await conn.read_request() is None:
            return
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {content_length}\r\n\r\n"
        ).encode()
        await conn.send(head + pattern_bytes(sent))
        await asyncio.sleep(pause)
        conn.reset()

    return RawUpstream(behaviour, "reset_mid_body")


def black_hole() -> RawUpstream:
    """Accepts connections and reads requests, but never answers or closes until shut down."""

    async def behaviour(conn: RawConnection) -> None:
        await conn.read_request()
        await _hold_forever()

    return RawUpstream(behaviour, "black_hole")


def raw_response(data: bytes, *, close: bool = True) -> RawUpstream:
    """Answers each request with exactly `data` (e.g. a malformed head or a bad chunk).

    With `close=True` the connection is closed (FIN) after the first answer; otherwise it stays
    open and every further request on it gets `data` again.
    """

    async def behaviour(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            await conn.send(data)
            if close:
                return

    return RawUpstream(behaviour, "raw_response")


def closed_port() -> int:
    """A loopback port with nothing listening on it (connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
