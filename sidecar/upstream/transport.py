"""The only way the pipeline reaches an endpoint: send a request, get a response head.

Builds the request head (origin-form target byte for byte, the endpoint's or client's Host,
end-to-end headers, re-derived framing), streams the body, and turns every foreign failure
into the sidecar's own errors: a deadline into `UpstreamTimeoutError`, a reset into
`UpstreamResetError`.

Pooled keep-alive connections race with the server closing them while idle. A reused
connection that dies before any byte of the answer is therefore not held against the
upstream (`upstream_fault=False`), and the request is sent again, once, on a new
connection (never another pooled one: the server may have closed them all in one sweep)
when resending cannot duplicate it (an idempotent method, a body that can be replayed).
A request that cannot be resent takes only a recently used connection (see `pool.py`), so
it rarely meets the race at all.
"""

from __future__ import annotations

import asyncio
import math

from sidecar.errors import UpstreamResetError, UpstreamTimeoutError
from sidecar.upstream.connection import UpstreamConnection
from sidecar.upstream.pool import SAFE_REUSE_IDLE, EndpointPool
from sidecar.upstream.protocol import UpstreamRequest, UpstreamResponse

_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class HttpTransport:
    """HTTP/1.1 over pooled asyncio connections."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def send(
        self,
        pool: EndpointPool,
        exchange: UpstreamRequest,
        per_try: float,
        total: float,
        connect_timeout: float,
        idle_timeout: float,
    ) -> UpstreamResponse:
        loop = self._loop
        chunked = exchange.body is not None and exchange.content_length is None
        head = build_head(exchange, pool, chunked)
        max_idle = math.inf if _resendable(exchange) else SAFE_REUSE_IDLE
        for _ in range(2):
            remaining = exchange.deadline - loop.time()
            if remaining <= 0:
                raise UpstreamTimeoutError("no response headers before the deadline")
            try:
                conn, reused = await pool.acquire(min(connect_timeout, remaining), max_idle)
            except UpstreamTimeoutError:
                raise
            except Exception:
                if exchange.deadline - loop.time() <= 0:
                    raise UpstreamTimeoutError("no response headers before the deadline") from None
                raise
            try:
                await self._exchange_head(
                    conn, exchange, head, chunked, per_try, total, idle_timeout
                )
            except UpstreamResetError as error:
                if reused and not error.upstream_fault and _safe_to_resend(exchange):
                    # The idle connection was closed under us; nothing was processed. The
                    # server may have closed its other idle ones in the same sweep: resend
                    # on a new connection, never on another pooled one.
                    max_idle = 0.0
                    continue
                raise
            failure = conn.failed_before_relay()
            if failure is not None:
                raise failure  # a malformed or cut body that came with the head: still a 502
            return conn
        raise UpstreamResetError("upstream closed the connection before the response headers")

    async def _exchange_head(
        self,
        conn: UpstreamConnection,
        exchange: UpstreamRequest,
        head: bytes,
        chunked: bool,
        per_try: float,
        total: float,
        idle_timeout: float,
    ) -> None:
        head_future = conn.start(
            head, head_only=exchange.head_only, chunked=chunked, idle_timeout=idle_timeout
        )
        body = exchange.body
        # A body the client is still sending: the request is complete (and `total` starts)
        # only when its last byte has been passed on.
        arriving = body is not None and not body.complete
        conn.expire_head(per_try, total, None if arriving else exchange.deadline)
        if body is None:
            conn.end_body()
        else:
            body.attach(conn)
            if not body.complete:
                conn.arm_idle_timer()
        try:
            await head_future
        except BaseException:
            conn.abort()
            if body is not None:
                body.detach()
            raise
        finally:
            if arriving and conn.total_deadline is not None:
                exchange.deadline = conn.total_deadline  # what retries and backoff count from

    def __repr__(self) -> str:
        return "HttpTransport()"


def _safe_to_resend(exchange: UpstreamRequest) -> bool:
    body = exchange.body
    return exchange.method in _IDEMPOTENT and (body is None or body.can_replay)


def _resendable(exchange: UpstreamRequest) -> bool:
    """Whether the request could be resent after it has been sent, as far as known now."""
    body = exchange.body
    return exchange.method in _IDEMPOTENT and (
        body is None or (body.complete and body.size <= body.retain_limit)
    )


def build_head(exchange: UpstreamRequest, pool: EndpointPool, chunked: bool) -> bytes:
    """The request head sent upstream: always HTTP/1.1, framing derived by the sidecar."""
    host = exchange.host_header if exchange.host_header is not None else pool.host_header
    parts = [
        exchange.method,
        b" ",
        exchange.target,
        b" HTTP/1.1\r\nhost: ",
        host,
        b"\r\n",
        exchange.forward_headers,
    ]
    if exchange.request_id_generated:
        parts.append(b"x-request-id: " + exchange.request_id.encode() + b"\r\n")
    if exchange.body is None:
        if exchange.method in _BODY_METHODS:
            parts.append(b"content-length: 0\r\n")
    elif chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    else:
        parts.append(b"content-length: %d\r\n" % (exchange.content_length or 0))
    parts.append(b"\r\n")
    return b"".join(parts)
