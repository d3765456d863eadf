"""Keep-alive connections to one endpoint: reuse idle ones, open new ones within `connect`.

The pool does bookkeeping only; which endpoint to use is `balancing.py`'s decision and what
to send is `transport.py`'s. A connection that is not provably reusable (response incomplete,
request body not fully sent, `Connection: close`) is closed instead of returned.

Idle connections expire after `idle_timeout` (`pool.idle_timeout`), which should be shorter
than the upstream's own keep-alive timeout: a server closes an idle connection without
warning, and a request sent just as it does is lost (the stale keep-alive race). Expiring
first makes that race rare; a request that cannot be resent safely (see `transport.py`)
also only takes a connection used within the last `SAFE_REUSE_IDLE` seconds, which is
HAProxy's `http-reuse safe` idea: a request that must not be lost goes on a connection the
server is known to be keeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl

from sidecar.config import Endpoint
from sidecar.errors import LoopDetectedError, UpstreamConnectError
from sidecar.upstream.connection import UpstreamConnection
from sidecar.upstream.loopguard import LoopGuard

# Idle connections kept per endpoint; more concurrent ones are closed when released.
MAX_IDLE_PER_ENDPOINT = 128

# Default of `pool.idle_timeout`: below the keep-alive timeout of common servers (Node.js and
# uvicorn 5 s, Apache 5 s, nginx 75 s).
DEFAULT_IDLE_TIMEOUT = 4.0

# A request that cannot be resent takes only a connection idle for less than this.
SAFE_REUSE_IDLE = 1.0


class EndpointPool:
    """Idle connections to one endpoint plus the live in-flight count balancers read."""

    __slots__ = (
        "_closing",
        "_expiry",
        "_idle",
        "_loop",
        "_loop_guard",
        "_server_hostname",
        "_ssl",
        "endpoint",
        "host_header",
        "idle_timeout",
        "inflight",
        "label",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        loop: asyncio.AbstractEventLoop,
        loop_guard: LoopGuard,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.label = endpoint.url
        default_port = 443 if endpoint.tls else 80
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        self.host_header = (
            host if endpoint.port == default_port else f"{host}:{endpoint.port}"
        ).encode()
        self._loop = loop
        self._loop_guard = loop_guard
        self._ssl = ssl_context if endpoint.tls else None
        self._server_hostname = (server_hostname or endpoint.host) if endpoint.tls else None
        # Oldest first: a connection is appended when released and reused from the end.
        self._idle: list[UpstreamConnection] = []
        self._expiry: asyncio.TimerHandle | None = None
        self._closing = False
        self.idle_timeout = idle_timeout  # changed by a reload through `set_idle_timeout`
        self.inflight = 0

    def sibling(self) -> EndpointPool:
        """A separate pool to the same endpoint with the same TLS settings and Host header.

        Health checks use one, so that their connections never mix with the traffic's.
        """
        return EndpointPool(
            self.endpoint,
            self._loop,
            self._loop_guard,
            self._ssl,
            self._server_hostname,
            self.idle_timeout,
        )

    async def acquire(
        self, connect_timeout: float, max_idle: float = math.inf
    ) -> tuple[UpstreamConnection, bool]:
        """An idle connection (reused=True) or a new one; raises `UpstreamConnectError`.

        Only a connection idle for less than `max_idle` is reused (the most recently used
        first); closed and expired ones met on the way are dropped.
        """
        idle = self._idle
        if idle:
            now = self._loop.time()
            while idle:
                conn = idle[-1]
                quiet = now - conn.idle_since
                if conn.closed or quiet >= self.idle_timeout:
                    idle.pop()
                    conn.close()
                    continue
                if quiet >= max_idle:
                    break  # every other one has been idle longer still
                idle.pop()
                return conn, True
        return await self._connect(connect_timeout), False

    async def _connect(self, connect_timeout: float) -> UpstreamConnection:
        endpoint = self.endpoint
        loop = self._loop
        try:
            async with asyncio.timeout(connect_timeout):
                transport, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self, loop),
                    endpoint.host,
                    endpoint.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except TimeoutError:
            raise UpstreamConnectError(
                f"no connection to {endpoint.authority} within {connect_timeout:g}s"
            ) from None
        except ssl.SSLError as exc:
            raise UpstreamConnectError(
                f"TLS handshake with {endpoint.authority} failed: {exc.reason}"
            ) from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UpstreamConnectError(
                f"cannot connect to {endpoint.authority}: {reason}"
            ) from None
        if self._loop_guard.is_own_address(transport.get_extra_info("peername")):
            transport.abort()
            raise LoopDetectedError(f"{endpoint.authority} is one of the sidecar's own listeners")
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the idle list when provably reusable, else closed."""
        if conn.reusable and not self._closing and len(self._idle) < MAX_IDLE_PER_ENDPOINT:
            conn.reset_for_reuse()
            conn.idle_since = now = self._loop.time()
            self._idle.append(conn)
            if self._expiry is None:
                self._expiry = self._loop.call_at(now + self.idle_timeout, self._expire)
        else:
            conn.close()

    def set_idle_timeout(self, idle_timeout: float) -> None:
        """A reload changed `pool.idle_timeout`: idle connections expire on the new schedule.

        The expiry timer is re-armed for the oldest idle connection, so a shorter timeout
        takes effect at once instead of when the timer armed for the old one fires.
        """
        self.idle_timeout = idle_timeout
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._idle and not self._closing:
            self._expiry = self._loop.call_at(self._idle[0].idle_since + idle_timeout, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for `idle_timeout`; one timer, re-armed when it fires."""
        self._expiry = None
        idle = self._idle
        deadline = self._loop.time() - self.idle_timeout
        expired = 0
        while expired < len(idle) and idle[expired].idle_since <= deadline:
            expired += 1
        if expired:
            stale = idle[:expired]
            del idle[:expired]
            for conn in stale:
                conn.close()
        if idle:
            self._expiry = self._loop.call_at(idle[0].idle_since + self.idle_timeout, self._expire)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed by the peer leaves the idle list at once."""
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close(self) -> None:
        """Close every idle connection; in-flight ones close when their exchange ends."""
        self._closing = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def __repr__(self) -> str:
        return (
            f"EndpointPool({self.endpoint.url}, idle={len(self._idle)}, inflight={self.inflight})"
        )
