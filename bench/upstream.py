"""A tiny keep-alive HTTP/1.1 upstream for bench/run.sh when nginx is not installed.

    python bench/upstream.py [--port 18180]

Serves GET /small (1024 bytes), GET /large (65536 bytes) and anything else as "ok\\n", on
127.0.0.1 only. It understands just what wrk and the sidecar send (GET, no request body) and
uses uvloop when available. nginx (`apt-get install nginx`) is faster and is preferred by run.sh:
with this upstream the "direct" figures mostly measure Python, not the loopback.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

SMALL = (b"0123456789abcdef" * 64)[:1023] + b"\n"
LARGE = bytes(range(256)) * 256


def _response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % len(body)
        + body
    )


RESPONSES = {b"/small": _response(SMALL), b"/large": _response(LARGE)}
DEFAULT = _response(b"ok\n")


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            self.transport.write(RESPONSES.get(target, DEFAULT))


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18180)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.port))
    else:
        uvloop.run(main(args.port))
