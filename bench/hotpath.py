"""The sidecar's own CPU cost per request, without sockets: a steady figure for A/B of a change.

    python bench/hotpath.py [-n 200000] [-c 32] [--cprofile]

bench/run.sh measures the whole thing, kernel included, on a machine other processes may be
using; its figures move by ±5% from one repetition to the next. This drives the same request
path in one process with in-memory transports instead: a real `Runtime` started from
bench/sidecar.yaml's settings (access log on, into /dev/null; metrics on), requests fed to
`DownstreamProtocol.data_received`, and every upstream connection answering with the bytes
nginx sends for /small. What it measures is the Python side only (parsing, routing, the
pipeline, relaying, events, metrics, the access line, and the event loop's own bookkeeping);
the system calls a real socket costs come on top.

It replaces one seam, `EndpointPool._connect`, so that "connecting" yields a connection
whose transport is in memory; everything else is the code under test, unchanged. Run it with
`PYTHONPATH=DIR` to measure another source tree (e.g. a copy taken before a change).
`--cprofile` runs it under cProfile and prints the functions with the most own time (cProfile
inflates call-heavy code; use it to see where, not how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import BinaryIO

import uvloop

# This checkout's sidecar, unless PYTHONPATH names another tree (its entries come first).
sys.path.append(str(Path(__file__).resolve().parent.parent))

from sidecar.config import load_config_text
from sidecar.server.downstream import DownstreamProtocol
from sidecar.server.proxy import ListenerState
from sidecar.server.runtime import Runtime
from sidecar.upstream.connection import UpstreamConnection
from sidecar.upstream.pool import EndpointPool

CONFIG = """
version: 1
admin: {bind: "127.0.0.1:0"}
listeners: [{name: bench, bind: "127.0.0.1:0", upstream: bench}]
forward: {unknown_hosts: deny}
shutdown: {drain_delay: 0s}
access_log: {enabled: true}
upstreams:
  bench: {endpoints: ["http://127.0.0.1:18180"]}
"""

# What wrk sends, and what nginx answers for /small (1 KiB).
REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:18182\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 23 Nov 2026 19:40:56 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Sun, 23 Nov 2026 19:35:11 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "69225f9f-400"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 1023 + b"\n"
)
RESPONSE_SIZE_TO_CLIENT = 1024  # the body; the head the sidecar writes comes with it


class MemoryTransport:
    """The part of `asyncio.Transport` the sidecar's protocols use, writing nowhere."""

    def __init__(self, protocol: asyncio.Protocol, on_write) -> None:
        self._protocol = protocol
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes) -> None:
        self._on_write(data)

    def writelines(self, pieces) -> None:
        self._on_write(b"".join(pieces))

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0  # every write is delivered at once

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 18180) if name == "peername" else default


async def _memory_connect(pool: EndpointPool, connect_timeout: float) -> UpstreamConnection:
    """Stands in for `EndpointPool._connect`: an upstream that answers every request head."""
    loop = asyncio.get_running_loop()
    conn = UpstreamConnection(pool, loop)

    def upstream_write(data: bytes) -> None:
        if data.endswith(b"\r\n\r\n"):  # a complete head (these requests have no body)
            loop.call_soon(conn.data_received, RESPONSE)  # as a socket read would

    conn.connection_made(MemoryTransport(conn, upstream_write))
    return conn


class Client:
    """One keep-alive client connection sending its next request as soon as one is answered."""

    def __init__(self, runtime: Runtime, listener: ListenerState, budget: list[int]) -> None:
        assert runtime.server is not None
        self._budget = budget
        self._loop = asyncio.get_running_loop()
        self.done = self._loop.create_future()
        self._protocol = DownstreamProtocol(runtime.server, listener)
        self._protocol.connection_made(MemoryTransport(self._protocol, self._answered))

    def send(self) -> None:
        if self._budget[0] <= 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        self._budget[0] -= 1
        self._protocol.data_received(REQUEST)

    def _answered(self, data: bytes) -> None:
        assert data.startswith(b"HTTP/1.1 200 "), data[:80]
        assert len(data) > RESPONSE_SIZE_TO_CLIENT  # head and the whole body in one write
        self._loop.call_soon(self.send)  # wrk reads the answer, then writes the next request


async def drive(requests: int, conns: int, log_stream: BinaryIO) -> float:
    """Run `requests` requests over `conns` connections; returns CPU seconds used."""
    config = load_config_text(CONFIG, source="bench/hotpath.py")
    runtime = Runtime(config=config, source="bench/hotpath.py", stream=log_stream)
    await runtime.start()
    try:
        listener = ListenerState("bench", "bench")
        budget = [requests]
        clients = [Client(runtime, listener, budget) for _ in range(conns)]
        started = time.process_time()
        for client in clients:
            client.send()
        await asyncio.gather(*(client.done for client in clients))
        return time.process_time() - started
    finally:
        runtime.request_shutdown()
        await runtime.wait_and_drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=200_000)
    parser.add_argument("-c", "--conns", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    EndpointPool._connect = _memory_connect  # type: ignore[method-assign]
    devnull = open(os.devnull, "wb")  # the access log's stdout  # noqa: SIM115

    uvloop.run(drive(5_000, args.conns, devnull))  # warm-up: imports, caches, label children
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        uvloop.run(drive(args.requests, args.conns, devnull))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    runs = [uvloop.run(drive(args.requests, args.conns, devnull)) for _ in range(args.rounds)]
    best = min(runs)
    print(
        f"{args.requests} requests over {args.conns} connections: "
        f"{best / args.requests * 1e6:.2f} µs of CPU per request, "
        f"{args.requests / best:,.0f} requests per CPU-second (best of {args.rounds})"
    )


if __name__ == "__main__":
    main()
