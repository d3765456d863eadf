"""The seam between the pipeline and the upstream side: a request in, a response head out.

Declared here, beside their implementation (`transport.py`, `connection.py`), so the upstream
side never imports the pipeline: the pipeline's `Exchange` satisfies `UpstreamRequest`
structurally, and the stages hold a `Transport[Exchange]`. Fakes in the test suite implement
the same protocols.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from sidecar.upstream.pool import EndpointPool
from sidecar.wire.body import RequestBody
from sidecar.wire.flow import BodySink
from sidecar.wire.headers import Headers


class UpstreamRequest(Protocol):
    """What the transport reads of a request to build and send it.

    `deadline` is the one field it writes: a request whose body was still arriving gets its
    `total` deadline only once that body has been sent, and retries count from it.
    """

    method: bytes
    target: bytes  # forwarded byte for byte (origin form)
    host_header: bytes | None  # None: use the endpoint's authority
    forward_headers: bytes  # serialised end-to-end headers
    request_id: str
    request_id_generated: bool  # a generated id is added to the head sent upstream
    body: RequestBody | None
    content_length: int | None  # None with a body: sent chunked
    head_only: bool
    deadline: float


class UpstreamResponse(Protocol):
    """A response whose head has arrived; its body is still streaming in."""

    status: int
    reason: bytes
    headers: Headers
    content_length: int | None
    has_body: bool

    @property
    def body_complete(self) -> bool: ...

    def take_buffered_body(self) -> list[bytes]: ...

    async def stream_to(self, sink: BodySink) -> None: ...

    def discard(self) -> None: ...

    def release(self) -> None: ...


RequestT_contra = TypeVar("RequestT_contra", bound=UpstreamRequest, contravariant=True)


class Transport(Protocol[RequestT_contra]):
    """Sends a request to one endpoint; resolves when the response head arrives.

    The head is due `per_try` after the request has been fully sent, and by
    `request.deadline`; a request whose body is still arriving gets its `total` deadline
    (`request.deadline`, updated) only once that body has been sent. The upload itself is
    governed by `idle_timeout`. Generic in the request so a caller may hand over (and a fake
    may read) its own richer type; the real transport takes any `UpstreamRequest`.
    """

    async def send(
        self,
        pool: EndpointPool,
        exchange: RequestT_contra,
        per_try: float,
        total: float,
        connect_timeout: float,
        idle_timeout: float,
    ) -> UpstreamResponse: ...
