"""CONNECT tunnels (SPEC §1): TCP to the target, then bytes both ways, untouched.

The sidecar applies the connect timeout, loop protection and the upstream's routing to the
tunnel's target; once the tunnel is up nothing in it is parsed, retried or intercepted.
Back-pressure works like the HTTP path: each side pauses the other's reading.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from sidecar.errors import (
    BadRequestError,
    LoopDetectedError,
    UpstreamConnectError,
)
from sidecar.pipeline.exchange import Exchange
from sidecar.pipeline.guard import BreakerGuard

if TYPE_CHECKING:
    from sidecar.server.downstream import DownstreamProtocol
    from sidecar.server.proxy import ListenerState, ProxyServer

ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"

# Bytes a client may send into a tunnel before it is connected; above this its reading is
# paused until the upstream is up (a TLS ClientHello is well under it).
EARLY_LIMIT = 64 << 10


class Tunnel:
    """The downstream half of a tunnel: buffers early bytes until the upstream is connected.

    Early bytes are bounded by `EARLY_LIMIT`: past it the client's socket stops being read.
    The tunnel pauses the client's transport itself, as `TunnelUpstream` does for
    back-pressure once connected: no request parsing or body flow shares the socket any
    more (CONNECT has no body), so nothing else pauses or resumes it meanwhile, and the
    early pause ends in `connected()` before the upstream's back-pressure can start.
    """

    __slots__ = (
        "_closed",
        "_done",
        "_downstream",
        "_downstream_eof",
        "_early",
        "_early_paused",
        "_early_size",
        "_upstream",
        "_upstream_eof",
        "bytes_in",
        "bytes_out",
    )

    def __init__(self, downstream: DownstreamProtocol, early: bytes) -> None:
        self._downstream = downstream
        self._early: list[bytes] = [early] if early else []
        self._early_size = len(early)
        self._early_paused = False
        self._upstream: asyncio.Transport | None = None
        self._done: asyncio.Future[None] | None = None
        self._closed = False
        # A half-close is passed on; once both sides have sent EOF nothing can flow any more,
        # and the tunnel must close itself (asyncio keeps half-closed transports open).
        self._downstream_eof = False
        self._upstream_eof = False
        self.bytes_in = len(early)
        self.bytes_out = 0

    def connected(self, upstream: asyncio.Transport, done: asyncio.Future[None]) -> None:
        """The upstream TCP connection is up: flush early bytes and start splicing."""
        self._upstream = upstream
        self._done = done
        if self._early_paused:  # first: flushing may pause the client again (back-pressure)
            self._early_paused = False
            client = self._downstream.transport
            if client is not None:
                client.resume_reading()
        for piece in self._early:
            upstream.write(piece)
        self._early.clear()
        self._early_size = 0
        if self._downstream_eof and upstream.can_write_eof():
            upstream.write_eof()

    def to_upstream(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self._upstream is not None:
            self._upstream.write(data)
            return
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > EARLY_LIMIT and not self._early_paused:
            client = self._downstream.transport
            if client is not None:
                self._early_paused = True
                client.pause_reading()

    def to_downstream(self, data: bytes, transport: asyncio.Transport | None) -> None:
        self.bytes_out += len(data)
        if transport is not None:
            transport.write(data)

    def downstream_eof(self) -> None:
        self._downstream_eof = True
        if self._upstream is not None and self._upstream.can_write_eof():
            self._upstream.write_eof()
        if self._upstream_eof:
            self.close()

    def upstream_eof(self, downstream: asyncio.Transport | None) -> bool:
        """The target sent EOF; False when the upstream transport should simply close."""
        self._upstream_eof = True
        if downstream is None or not downstream.can_write_eof():
            return False
        downstream.write_eof()
        if self._downstream_eof:
            self.close()
        return True

    def pause_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def close(self) -> None:
        """Either side went away: close the other and end the tunnel."""
        if self._closed:
            return
        self._closed = True
        if self._upstream is not None:
            self._upstream.close()
        self._downstream.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def __repr__(self) -> str:
        return (
            f"Tunnel(in={self.bytes_in}, out={self.bytes_out}, up={self._upstream is not None}, "
            f"early={self._early_size}, paused={self._early_paused})"
        )


class TunnelUpstream(asyncio.Protocol):
    """The upstream half: bytes from the target go straight to the client."""

    __slots__ = ("_downstream_transport", "_transport", "_tunnel")

    def __init__(self, tunnel: Tunnel, downstream_transport: asyncio.Transport | None) -> None:
        self._tunnel = tunnel
        self._downstream_transport = downstream_transport
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._tunnel.to_downstream(data, self._downstream_transport)

    def eof_received(self) -> bool:
        return self._tunnel.upstream_eof(self._downstream_transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tunnel.close()

    def pause_writing(self) -> None:
        if self._downstream_transport is not None:
            self._downstream_transport.pause_reading()

    def resume_writing(self) -> None:
        if self._downstream_transport is not None:
            self._downstream_transport.resume_reading()


async def run_tunnel(server: ProxyServer, exchange: Exchange, listener: ListenerState) -> None:
    """CONNECT: admitted by the upstream's breaker, connected within `connect`, then spliced.

    The connect is the tunnel's one call for the breaker (a failure to connect counts, what
    flows later does not); nothing is retried once the tunnel is up.
    """
    from sidecar.server.downstream import DownstreamProtocol

    downstream = exchange.responder
    assert isinstance(downstream, DownstreamProtocol), "CONNECT arrives on a downstream connection"
    tunnel = downstream.tunnel
    if listener.upstream is not None:
        raise BadRequestError("CONNECT is only accepted on forward-proxy listeners")
    if server.loop_guard.is_own_authority(exchange.authority):
        raise LoopDetectedError("the tunnel would connect to the sidecar itself")
    upstream = server.router.by_authority(exchange.authority)
    exchange.upstream = upstream
    route = upstream.routes.default
    exchange.route = route
    guard = BreakerGuard(upstream.breaker, upstream.name, route.label, server.observers)
    permit = guard.try_acquire()
    if permit is None:
        raise guard.refused()
    host, _, port = exchange.authority.rpartition(":")
    exchange.attempts = 1
    clock = server.clock
    started = clock.now()
    try:
        async with asyncio.timeout(route.connect):
            transport, _ = await server.loop.create_connection(
                lambda: TunnelUpstream(tunnel, downstream.transport), host.strip("[]"), int(port)
            )
    except TimeoutError:
        guard.record(permit, True, clock.now() - started)
        raise UpstreamConnectError(
            f"no connection to {exchange.authority} within {route.connect:g}s"
        ) from None
    except OSError as exc:
        guard.record(permit, True, clock.now() - started)
        raise UpstreamConnectError(
            f"cannot connect to {exchange.authority}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        guard.release(permit)  # cancelled: the client went away before the connect ended
        raise
    guard.record(permit, False, clock.now() - started)
    if server.loop_guard.is_own_address(transport.get_extra_info("peername")):
        transport.abort()
        raise LoopDetectedError("the tunnel would connect to the sidecar itself")
    done: asyncio.Future[None] = server.loop.create_future()
    downstream.write_raw(ESTABLISHED)
    exchange.status = 200
    tunnel.connected(transport, done)
    try:
        await done
    finally:  # also when the client's disconnect cancels this task: the counts are logged
        exchange.bytes_out = tunnel.bytes_out
        exchange.tunnel_bytes_in = tunnel.bytes_in
