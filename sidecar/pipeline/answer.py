"""What a route's stages return: the answer the handler writes, and what it holds until then.

Stages never write to the client. The innermost one returns an `UpstreamAnswer` (the response
head it got, its body still streaming from the connection); `Fallback` may return a
`StoredAnswer` instead (a stored or static response). The handler writes whichever it gets
and then calls `settle()` exactly once, in a `finally`, however the write ended: the body
ended, the body broke off (the failure is passed in), the client went away, or nothing was
written at all. What an answer holds hangs off `settle`: the attempt's record (outlier
detection, its `AttemptFinished` event, the endpoint's in-flight slot), the upstream
connection, and the bulkhead slot of the request. An answer a stage decides not to return (a
fallback answers instead) is let go with `discard()`.

This is httpcore's `response_closed()` and linkerd's classification at end of stream: the
request's resources are released by whoever finishes the body, not by the stage that started
it, so no inner stage has to call an outer one and no stage waits for the client.
"""

from __future__ import annotations

from sidecar.errors import BodyStreamError
from sidecar.outcome import Outcome
from sidecar.resilience.gate import BulkheadGate
from sidecar.upstream.protocol import UpstreamResponse
from sidecar.wire.headers import Headers


class Answer:
    """The answer to one request, not yet written; `settle` lets go of what it holds."""

    __slots__ = ("gate",)

    # The request's bulkhead slot, set by the admission stage: held until the answer is
    # settled, so a slow body keeps counting against the bulkhead as it always has.
    gate: BulkheadGate | None

    def settle(self, failure: BodyStreamError | None = None) -> None:
        """The handler is done writing it (`failure`: the body broke off); idempotent."""
        self.release_slot()

    def discard(self) -> None:
        """It will never be written (a fallback answers instead); idempotent."""
        self.release_slot()

    def release_slot(self) -> None:
        gate = self.gate
        if gate is not None:
            self.gate = None
            gate.release()


class StoredAnswer(Answer):
    """A stored (cache) or static fallback response, complete in memory (SPEC §4.4)."""

    __slots__ = ("age", "body", "headers", "kind", "outcome", "status")

    def __init__(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        kind: bytes,
        age: bytes | None,
        outcome: Outcome,
    ) -> None:
        self.gate = None
        self.status = status
        self.headers = headers
        self.body = body
        self.kind = kind  # the `x-sidecar-fallback` value: b"cache" or b"static"
        self.age = age  # the `Age` header value of a stored response
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"StoredAnswer({self.status}, kind={self.kind.decode()}, body={len(self.body)}B)"


class UpstreamAnswer(Answer):
    """An upstream's response head, its body still to stream from the connection.

    `response` may be replaced by a wrapper around it (the fallback store's tee) before the
    answer is returned. Settling it hands the connection back to its pool (or closes it);
    the attempt loop's answers also record their attempt then (`forward.AttemptAnswer`).
    """

    __slots__ = ("response", "settled")

    def __init__(self, response: UpstreamResponse) -> None:
        self.gate = None
        self.response = response
        self.settled = False

    def settle(self, failure: BodyStreamError | None = None) -> None:
        if not self.settled:
            self.settled = True
            self.response.release()
        self.release_slot()

    def discard(self) -> None:
        if not self.settled:
            self.settled = True
            self.response.discard()
        self.release_slot()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.response!r}, settled={self.settled})"
