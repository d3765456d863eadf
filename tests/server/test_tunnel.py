"""CONNECT tunnels byte by byte: what the client sends before the upstream is connected.

The client side runs on an in-memory transport, so the test decides exactly which bytes
arrive before the tunnel's connect task has had a chance to run; the target is a real
loopback TCP server that records what reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from sidecar.server.downstream import DownstreamProtocol
from sidecar.server.proxy import ListenerState
from sidecar.server.tunnel import EARLY_LIMIT
from tests.fakes import MemoryTransport, eventually
from tests.harness import running_sidecar
from tests.integration.configs import FORWARD, forward


class Sink:
    """A loopback TCP server that keeps every byte its one client sends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.received += data
        writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """A started `Sink`, closed after the test."""
    server = Sink()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def test_tunnel_pauses_the_client_past_the_early_limit_until_connected(sink: Sink) -> None:
    """Bytes sent before the tunnel is connected are buffered up to `EARLY_LIMIT`; past it
    the client's reading is paused, and resumed once the tunnel is up and has delivered them."""
    authority = f"127.0.0.1:{sink.port}"
    head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
    async with running_sidecar(forward()) as sc:
        assert sc.runtime.server is not None
        protocol = DownstreamProtocol(sc.runtime.server, ListenerState(FORWARD, None))
        transport = MemoryTransport(protocol)
        protocol.connection_made(cast(asyncio.BaseTransport, transport))
        protocol.data_received(head + b"a" * (EARLY_LIMIT // 2))
        protocol.data_received(b"b" * (EARLY_LIMIT // 2))
        assert not transport.reading_paused  # at the limit, not past it
        protocol.data_received(b"c")
        assert transport.reading_paused
        await eventually(lambda: transport.written.startswith(b"HTTP/1.1 200 "))
        assert not transport.reading_paused
        await eventually(lambda: len(sink.received) == EARLY_LIMIT + 1)
        assert bytes(sink.received) == b"a" * (EARLY_LIMIT // 2) + b"b" * (EARLY_LIMIT // 2) + b"c"
        transport.close()
