"""One request's journey through the sidecar, and the seams the stages see.

An `Exchange` is built by the downstream protocol once the request head is parsed and is
what every stage reads and annotates. Stages never see sockets and never write to the client:
they return an `Answer` (`sidecar.pipeline.answer`), which the proxy handler writes through
the `Responder` (the downstream side). They reach endpoints through a `Transport`
(`sidecar.upstream.protocol`), which an `Exchange` is the `UpstreamRequest` of.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from sidecar.outcome import Outcome
from sidecar.pipeline.answer import Answer

# `UpstreamResponse` is re-exported for the client protocol, which relays one.
from sidecar.upstream.protocol import UpstreamResponse as UpstreamResponse
from sidecar.wire.body import RequestBody
from sidecar.wire.headers import Headers

if TYPE_CHECKING:
    from sidecar.errors import ProxyError
    from sidecar.pipeline.route import Route
    from sidecar.upstream.group import Upstream


class Responder(Protocol):
    """The client side of an exchange: how the handler writes a stage's answer."""

    @property
    def head_sent(self) -> bool: ...

    async def relay(self, exchange: Exchange, response: UpstreamResponse) -> None: ...

    def send_error(self, exchange: Exchange, error: ProxyError) -> None: ...

    def send_fallback(
        self,
        exchange: Exchange,
        status: int,
        headers: Headers,
        body: bytes,
        kind: bytes,
        age: bytes | None,
    ) -> None: ...

    def abort(self) -> None: ...

    def finished(self, exchange: Exchange) -> None: ...


# A stage returns the answer for the handler to write (and settle), or raises a `ProxyError`.
Stage = Callable[["Exchange"], Awaitable[Answer]]


class Exchange:
    """Mutable per-request state; one object per request, slotted to stay cheap."""

    __slots__ = (
        "attempts",
        "authority",
        "body",
        "bytes_out",
        "client_http11",
        "client_keep_alive",
        "content_length",
        "deadline",
        "error",
        "forward_headers",
        "head_only",
        "host_header",
        "idempotency_key",
        "listener",
        "method",
        "outcome",
        "path",
        "request_id",
        "request_id_generated",
        "requires_tls",
        "responder",
        "route",
        "started",
        "status",
        "target",
        "tunnel_bytes_in",
        "upstream",
        "wall_started",
    )

    def __init__(
        self,
        *,
        method: bytes,
        target: bytes,
        path: bytes,
        authority: str,
        host_header: bytes | None,
        forward_headers: bytes,
        request_id: str,
        request_id_generated: bool,
        body: RequestBody | None,
        content_length: int | None,
        listener: str,
        responder: Responder,
        client_http11: bool,
        client_keep_alive: bool,
        started: float,
        wall_started: float,
    ) -> None:
        self.method = method
        self.target = target  # forwarded byte for byte (origin form)
        self.path = path  # target without the query, for routing and logs
        self.authority = authority  # normalised host:port the request is for
        self.host_header = host_header  # None: use the endpoint's authority
        self.forward_headers = forward_headers  # serialised end-to-end headers
        self.request_id = request_id
        self.request_id_generated = request_id_generated
        self.body = body
        self.content_length = content_length
        self.head_only = method == b"HEAD"
        self.idempotency_key = False  # the client marked a POST/PATCH as safe to retry
        self.requires_tls = False  # an `https://` URL: never sent upstream in cleartext
        self.listener = listener
        self.responder = responder
        self.client_http11 = client_http11
        self.client_keep_alive = client_keep_alive
        self.started = started
        self.wall_started = wall_started
        self.deadline = 0.0
        self.upstream: Upstream | None = None
        self.route: Route | None = None
        self.attempts = 0
        self.status = 0
        self.bytes_out = 0
        self.tunnel_bytes_in = 0  # CONNECT: bytes the client sent into the tunnel
        self.outcome = Outcome.SUCCESS
        self.error = ""

    def request_headers(self) -> list[tuple[bytes, bytes]]:
        """The end-to-end request headers, names lower-cased (parsed on demand: rare path)."""
        headers = []
        for line in self.forward_headers.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers.append((name.strip().lower(), value.strip()))
        return headers

    def url(self) -> bytes:
        """`http://authority/target`: the full URL the cache keys responses by."""
        return b"http://" + self.authority.encode() + self.target

    @property
    def bytes_in(self) -> int:
        return self.body.size if self.body is not None else self.tunnel_bytes_in

    def __repr__(self) -> str:
        upstream = self.upstream.name if self.upstream is not None else "-"
        return (
            f"<Exchange {self.request_id} {self.method.decode()} {self.path.decode(errors='replace')}"
            f" upstream={upstream} attempts={self.attempts} status={self.status}>"
        )
