"""Fixtures for the integration tests that need more than `tests.upstreams` offers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

FILL_LIMIT = 16  # connections tried while filling an accept queue before giving up
CONNECT_PROBE = 0.1  # a loopback connect that takes longer than this is hanging


@pytest.fixture
async def unaccepting_port() -> AsyncIterator[int]:
    """A loopback port whose connects hang: a listener with backlog 0 that never accepts and
    whose accept queue is already full (the kernel then drops further SYNs).

    Skips the test when this kernel completes connects even with a full queue.
    """
    loop = asyncio.get_running_loop()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        for _ in range(FILL_LIMIT):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setblocking(False)
            try:
                async with asyncio.timeout(CONNECT_PROBE):
                    await loop.sock_connect(probe, ("127.0.0.1", port))
            except TimeoutError:
                probe.close()
                break
            fillers.append(probe)
        else:
            pytest.skip(
                f"connects to a full backlog-0 listener still complete on this kernel "
                f"({FILL_LIMIT} accepted), so a hanging connect cannot be staged"
            )
        yield port
    finally:
        for sock in fillers:
            with contextlib.suppress(OSError):
                sock.close()
        listener.close()
