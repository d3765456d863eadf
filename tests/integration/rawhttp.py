"""A raw HTTP/1.1 client on a loopback socket, and a Prometheus scrape reader, for integration tests.

aiohttp normalises what it sends and hides how an answer was framed; these tests need both:
exact request bytes (targets with `..` and `%2e`, pipelining, `Expect: 100-continue`,
forbidden framing) and the exact status line, headers and framing of each answer. The parser
here is deliberately independent of the sidecar's (llhttp): it reads a head up to the empty
line, then a body by `Transfer-Encoding: chunked`, `Content-Length` or connection close.
Every read is bounded in time so a proxy that never answers fails the test instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["RawClient", "RawResponse", "Samples", "raw_exchange", "scrape"]

HOST = "127.0.0.1"
READ_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One response as it came off the wire; header names keep their case, duplicates kept."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunked: bool  # the body arrived with chunked transfer coding

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None when absent."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def json(self) -> Any:
        return orjson.loads(self.body)


class RawClient:
    """One client connection: write bytes as given, read complete responses one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def reader(self) -> asyncio.StreamReader:
        assert self._reader is not None, "RawClient is not connected"
        return self._reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        assert self._writer is not None, "RawClient is not connected"
        return self._writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self) -> tuple[int, str, tuple[tuple[str, str], ...]]:
        """Status, reason and headers of the next response head (interim 1xx heads included)."""
        async with asyncio.timeout(READ_TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", f"unexpected status line {status_line!r}"
        headers = []
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep, f"malformed header line {line!r}"
            headers.append((name, value.strip()))
        return int(status), reason[0] if reason else "", tuple(headers)

    async def read_response(self, *, head_only: bool = False) -> RawResponse:
        """The next complete final response; `head_only` for the answer to a HEAD request."""
        status, reason, headers = await self.read_head()
        while 100 <= status < 200:
            status, reason, headers = await self.read_head()
        fields = {name.lower(): value for name, value in headers}
        chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        async with asyncio.timeout(READ_TIMEOUT):
            if head_only or status in (204, 304):
                body = b""
            elif chunked:
                body = await self._read_chunked()
            elif "content-length" in fields:
                body = await self.reader.readexactly(int(fields["content-length"]))
            else:
                body = await self.reader.read()
        return RawResponse(status, reason, headers, body, chunked)

    async def _read_chunked(self) -> bytes:
        pieces: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return b"".join(pieces)
            pieces.append(await self.reader.readexactly(size))
            assert await self.reader.readexactly(2) == b"\r\n", "chunk not followed by CRLF"

    async def read_until_closed(self, within: float = READ_TIMEOUT) -> bytes:
        """Everything the server sends until it closes (or resets) the connection."""
        pieces: list[bytes] = []
        async with asyncio.timeout(within):
            with contextlib.suppress(ConnectionResetError):
                while data := await self.reader.read(65536):
                    pieces.append(data)
        return b"".join(pieces)

    async def is_closed_within(self, seconds: float) -> bool:
        """Whether the server closes the connection (EOF or reset) within `seconds`, with no
        further bytes sent."""
        try:
            async with asyncio.timeout(seconds):
                data = await self.reader.read(1)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"expected the connection to close, got {data!r}"
        return True

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            self._writer = None


async def raw_exchange(port: int, request: bytes, *, head_only: bool = False) -> RawResponse:
    """Send `request` on a fresh connection and read one response."""
    async with RawClient(port) as client:
        await client.send(request)
        return await client.read_response(head_only=head_only)


class Samples:
    """The samples of one `/metrics` scrape, looked up by name and a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum over every sample of `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self._samples
            if sample_name == name and labels.items() <= sample_labels.items()
        )

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [labels for sample_name, labels, _ in self._samples if sample_name == name]


async def scrape(admin_url: str) -> Samples:
    """GET /metrics on the admin API."""
    async with aiohttp.ClientSession() as session, session.get(f"{admin_url}/metrics") as resp:
        assert resp.status == 200
        return Samples(await resp.text())
