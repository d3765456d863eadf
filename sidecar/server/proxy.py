"""The proxy's shared state and the request handler: route, run the route's stages, answer.

`handle()` is the one writer of an answer: the route's stages return one (`Answer`), and the
handler writes it through the responder and settles it, in a `finally`, however the write
ended. It is also the one place where errors become HTTP answers (through `errorpage`'s
table) and where every request ends in exactly one `RequestFinished` event. Everything a request
needs from the running config (router, limits, flags) is read through this object, so a
reload can swap it for new requests while in-flight ones finish under the old one.
"""

from __future__ import annotations

import asyncio
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sidecar.clock import Clock, wall_time
from sidecar.config import LimitsConfig, SidecarConfig
from sidecar.errors import (
    BadRequestError,
    BodyStreamError,
    LoopDetectedError,
    ProxyError,
    UnknownUpstreamError,
)
from sidecar.events import Observers, ProxyFault, RequestFinished, RequestRejected
from sidecar.outcome import AttemptResult, Outcome, outcome_for_status
from sidecar.pipeline.answer import StoredAnswer, UpstreamAnswer
from sidecar.pipeline.exchange import Exchange
from sidecar.pipeline.route import Router
from sidecar.server.requestid import RequestIds
from sidecar.server.tunnel import run_tunnel
from sidecar.upstream.loopguard import LoopGuard

if TYPE_CHECKING:
    from sidecar.server.downstream import DownstreamProtocol
    from sidecar.server.listener import ConnectionLimiter
    from sidecar.upstream.group import Upstream

_OUTCOME_BY_RESULT = {
    AttemptResult.TIMEOUT: Outcome.TIMEOUT,
    AttemptResult.RESET: Outcome.RESET,
    AttemptResult.CONNECT_FAILURE: Outcome.UNREACHABLE,
    AttemptResult.PROTOCOL_ERROR: Outcome.UPSTREAM_ERROR,
}


@dataclass(slots=True)
class ListenerState:
    """What a downstream connection needs to know about the listener it arrived on.

    One object per listener, shared by its connections and updated in place by a reload, so
    a keep-alive connection's next request follows the listener's current settings.
    """

    name: str
    upstream: str | None  # dedicated listener's upstream; None for forward listeners


class ProxyServer:
    """State shared by every downstream connection of the running config."""

    __slots__ = (
        "_connections",
        "_idle_waiters",
        "clock",
        "config",
        "draining",
        "include_query",
        "limiter",
        "limits",
        "loop",
        "loop_guard",
        "observers",
        "request_ids",
        "router",
        "sidecar_headers",
    )

    def __init__(
        self,
        config: SidecarConfig,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        observers: Observers,
        loop_guard: LoopGuard,
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.observers = observers
        self.loop_guard = loop_guard
        self.request_ids = RequestIds()
        self.draining = False
        self._connections: set[DownstreamProtocol] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self.limiter: ConnectionLimiter | None = None
        self.config = config
        self.router = router
        self.limits: LimitsConfig = config.limits
        self.sidecar_headers = config.response_headers
        self.include_query = config.access_log.include_query

    def apply(self, config: SidecarConfig, router: Router) -> None:
        """A reload: new requests use `config` and `router`; in-flight ones keep what they had."""
        self.config = config
        self.router = router
        self.limits = config.limits
        self.sidecar_headers = config.response_headers
        self.include_query = config.access_log.include_query
        if self.limiter is not None:
            self.limiter.limit = config.limits.max_connections

    # ---- connections ---------------------------------------------------------------------

    def connection_opened(self, conn: DownstreamProtocol) -> None:
        self._connections.add(conn)

    def connection_closed(self, conn: DownstreamProtocol) -> None:
        self._connections.discard(conn)
        if self.limiter is not None:
            self.limiter.closed()
        if not self._connections:
            for waiter in self._idle_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle_waiters.clear()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close_idle_connections(self) -> None:
        """Draining: connections with no request in progress are closed now."""
        for conn in list(self._connections):
            if conn.idle:
                conn.close()

    async def wait_connections_closed(self) -> None:
        if not self._connections:
            return
        waiter = self.loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def abort_all(self) -> None:
        for conn in list(self._connections):
            conn.abort()

    # ---- requests -------------------------------------------------------------------------------

    async def handle(self, exchange: Exchange, listener: ListenerState) -> None:
        """Run one exchange to its end; the only place errors become answers."""
        responder = exchange.responder
        upstream = None
        try:
            if exchange.method == b"CONNECT":
                await run_tunnel(self, exchange, listener)
                return
            if listener.upstream is not None:
                upstream = self.router.upstreams.get(listener.upstream)
                if upstream is None:  # the listener was removed by a reload: it is closing
                    raise UnknownUpstreamError(
                        f"listener {listener.name!r} no longer has an upstream (removed by a reload)"
                    )
                # The app addressed the sidecar (127.0.0.1:PORT); the upstream expects its own
                # name, as with nginx's proxy_pass: send the endpoint's authority as Host.
                exchange.host_header = None
            else:
                if not exchange.authority:
                    raise BadRequestError(
                        "a forward-proxy request needs a Host header or an absolute URL"
                    )
                if self.loop_guard.is_own_authority(exchange.authority):
                    raise LoopDetectedError("the request would be forwarded to the sidecar itself")
                upstream = self.router.by_authority(exchange.authority, tls=exchange.requires_tls)
            if exchange.requires_tls:
                _check_tls(upstream)
            exchange.upstream = upstream
            route = upstream.routes.match(exchange.method, exchange.path)
            exchange.route = route
            exchange.deadline = exchange.started + route.total
            upstream.inflight += 1
            try:
                assert route.pipeline is not None
                answer = await route.pipeline(exchange)
                # Written here and nowhere else; settled once however the write ends (the
                # body ended or broke off, the client went away), which records the attempt
                # and lets go of its connection and bulkhead slot.
                failure: BodyStreamError | None = None
                try:
                    if isinstance(answer, UpstreamAnswer):
                        response = answer.response
                        exchange.outcome = outcome_for_status(response.status)
                        await responder.relay(exchange, response)
                    else:
                        assert isinstance(answer, StoredAnswer)
                        exchange.outcome = answer.outcome
                        responder.send_fallback(
                            exchange,
                            answer.status,
                            answer.headers,
                            answer.body,
                            answer.kind,
                            answer.age,
                        )
                except BodyStreamError as error:
                    failure = error
                    raise
                finally:
                    answer.settle(failure)
            finally:
                upstream.inflight -= 1
        except ProxyError as error:
            exchange.outcome = error.outcome
            if isinstance(error, UnknownUpstreamError):
                self.observers.emit(RequestRejected("", "unknown_upstream"))
            if responder.head_sent:
                responder.abort()
            else:
                responder.send_error(exchange, error)
        except BodyStreamError as error:
            exchange.outcome = _OUTCOME_BY_RESULT.get(error.result, Outcome.RESET)
            responder.abort()
        except asyncio.CancelledError:
            exchange.outcome = Outcome.RESET if exchange.status == 0 else exchange.outcome
        except Exception:  # noqa: BLE001 - the handler's last resort: a bug must not kill the loop
            self.observers.emit(ProxyFault(exchange.request_id, traceback.format_exc()))
            if responder.head_sent:
                responder.abort()
            else:
                responder.send_error(exchange, ProxyError("internal error in the sidecar"))
        finally:
            self._finish(exchange, listener)
            responder.finished(exchange)

    def _finish(self, exchange: Exchange, listener: ListenerState) -> None:
        path = exchange.target if self.include_query else exchange.path
        upstream = exchange.upstream
        route = exchange.route
        self.observers.emit(
            RequestFinished(
                wall_time=exchange.wall_started,
                request_id=exchange.request_id,
                listener=listener.name,
                upstream=upstream.name if upstream is not None else "",
                route=route.label if route is not None else "",
                method=exchange.method.decode("latin-1"),
                path=path.decode("latin-1"),
                status=exchange.status,
                outcome=exchange.outcome,
                attempts=exchange.attempts,
                duration=self.loop.time() - exchange.started,
                bytes_in=exchange.bytes_in,
                bytes_out=exchange.bytes_out,
                circuit_state=route.breaker.state.value if route is not None else "",
                error=exchange.error,
            )
        )

    def rejected(self, listener: ListenerState, error: ProxyError, method: str) -> None:
        """A request refused while parsing (never forwarded) still shows in logs and metrics."""
        from sidecar.server.errorpage import status_for

        self.observers.emit(
            RequestFinished(
                wall_time=wall_time(),
                request_id="",
                listener=listener.name,
                upstream="",
                route="",
                method=method,
                path="",
                status=status_for(error),
                outcome=Outcome.REJECTED,
                attempts=0,
                duration=0.0,
                bytes_in=0,
                bytes_out=0,
                circuit_state="",
                error=error.code.value,
            )
        )

    def __repr__(self) -> str:
        return f"ProxyServer(connections={len(self._connections)}, draining={self.draining})"


def _check_tls(upstream: Upstream) -> None:
    """An `https://` request goes only to an upstream that originates TLS to every endpoint.

    The client chose https: sending its request (and its `Authorization`) in cleartext,
    even to a configured upstream, would silently downgrade it. Refused before any byte
    leaves, with what to do instead.
    """
    endpoints = upstream.config.endpoints
    if endpoints and all(endpoint.tls for endpoint in endpoints):
        return
    if not endpoints:
        where = (
            f"upstream {upstream.name!r} (shared by hosts past forward.max_implicit_upstreams) "
            "connects in cleartext"
        )
    else:
        where = f"upstream {upstream.name!r} has http:// endpoints"
    raise BadRequestError(
        f"the request is for an https:// URL but {where}, so it would leave in cleartext; "
        "use CONNECT (HTTPS_PROXY) or give the upstream https:// endpoints"
    )
