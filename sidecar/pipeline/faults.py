"""The answer to an injected abort (SPEC §3.2 `faults`), made up by the sidecar.

Which attempts are delayed or aborted is drawn by `sidecar.resilience.faults.FaultInjector`;
an aborted attempt never contacts the upstream, and its answer is this response.
"""

from __future__ import annotations

import orjson

from sidecar.wire.flow import BodySink
from sidecar.wire.headers import Headers


class InjectedResponse:
    """An `UpstreamResponse` the sidecar makes up for an injected abort; nothing was sent."""

    __slots__ = ("_body", "content_length", "has_body", "headers", "reason", "status")

    def __init__(self, upstream: str, status: int, head_only: bool) -> None:
        body = orjson.dumps(
            {
                "error": "fault_injected",
                "upstream": upstream,
                "detail": f"injected {status} (faults.abort)",
            }
        )
        self.status = status
        self.reason = b"Injected Fault"
        self.headers: Headers = [(b"content-type", b"application/json")]
        self.content_length: int | None = len(body)
        self.has_body = not head_only
        self._body = body if not head_only else b""

    @property
    def body_complete(self) -> bool:
        return True

    def take_buffered_body(self) -> list[bytes]:
        body, self._body = self._body, b""
        return [body] if body else []

    async def stream_to(self, sink: BodySink) -> None:
        for piece in self.take_buffered_body():
            sink.write_body(piece)
        sink.end_body()

    def discard(self) -> None:
        self._body = b""

    def release(self) -> None:
        self._body = b""

    def __repr__(self) -> str:
        return f"InjectedResponse({self.status})"
