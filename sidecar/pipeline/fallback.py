"""SPEC §4.4: when an upstream fails or a request is rejected, answer from the fallbacks.

The outermost stage of a route. On a failure listed in `serve_on` (or a rejection by the
breaker or the bulkhead, when listed), it serves, in order: a stored response for the same
cache key no older than its stale limit (`x-sidecar-fallback: cache`, with `Age`), then the
static response (`x-sidecar-fallback: static`); otherwise the failure goes on unchanged.
This stage alone decides `serve_on`, for raised failures and for an upstream answer the inner
stages return (e.g. a 503 after the retries): such an answer is discarded and the fallback is
returned in its place. The store is never consulted while the upstream answers; an answer
that passes through is wrapped in a tee that copies a storable body into the store as it
streams to the client, never delaying it.
"""

from __future__ import annotations

from sidecar.cache import FallbackStore, Recorder
from sidecar.config import DEFAULT_SERVE_ON, FailureKind, StaticResponsePolicy
from sidecar.errors import (
    AttemptError,
    BulkheadFullError,
    CircuitOpenError,
    ProxyError,
    RateLimitedError,
    StartupError,
)
from sidecar.events import CacheLookup, FallbackServed, Observers
from sidecar.outcome import FailureMatcher, Outcome, classify_status
from sidecar.pipeline.answer import Answer, StoredAnswer, UpstreamAnswer
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.upstream.protocol import UpstreamResponse
from sidecar.wire.flow import BodySink, Producer
from sidecar.wire.headers import Headers

_REJECTIONS: dict[type[ProxyError], FailureKind] = {
    CircuitOpenError: FailureKind.CIRCUIT_OPEN,
    BulkheadFullError: FailureKind.BULKHEAD_FULL,
    RateLimitedError: FailureKind.RATE_LIMITED,
}


class Fallback:
    """The fallback chain of one route: stored response, then static response."""

    __slots__ = (
        "_failures",
        "_next",
        "_observers",
        "_rejections",
        "_static",
        "_static_body",
        "_static_headers",
        "_upstream",
        "store",
    )

    def __init__(
        self,
        upstream: str,
        next_stage: Stage,
        store: FallbackStore | None,
        static: StaticResponsePolicy | None,
        serve_on: tuple[FailureKind | int, ...] | None,
        observers: Observers,
    ) -> None:
        triggers = serve_on if serve_on is not None else DEFAULT_SERVE_ON
        self._upstream = upstream
        self._next = next_stage
        self.store = store
        self._static = static
        # Read once per config (a reload reads it again): serving never touches the disk, and a
        # file deleted after the start cannot turn a fallback into a 500.
        self._static_body = b""
        self._static_headers: Headers = []
        if static is not None:
            try:
                self._static_body = static.load_body()
            except OSError as exc:
                raise StartupError(
                    f"upstreams.{upstream}.fallback.static.body_file: cannot read "
                    f"{static.body_file}: {exc.strerror or exc}"
                ) from None
            self._static_headers = [
                (name.encode(), value.encode()) for name, value in static.headers.items()
            ]
        self._failures = FailureMatcher(triggers)
        self._rejections = frozenset(kind for kind in triggers if not isinstance(kind, int))
        self._observers = observers

    async def __call__(self, exchange: Exchange) -> Answer:
        try:
            answer = await self._next(exchange)
        except ProxyError as error:
            if not self._triggered_by(error):
                raise
            fallback = self.serve(exchange)
            if fallback is None:
                raise
            return fallback
        if not isinstance(answer, UpstreamAnswer):
            return answer
        try:
            status = answer.response.status
            if self._failures.matches(classify_status(status), status):
                # The last attempt got an upstream answer (e.g. 503): a fallback instead?
                fallback = self.serve(exchange)
                if fallback is not None:
                    answer.discard()
                    return fallback
            answer.response = self.tee(exchange, answer.response)
        except BaseException:
            answer.discard()  # a bug: the answer will never reach the handler to be settled
            raise
        return answer

    def _triggered_by(self, error: ProxyError) -> bool:
        if isinstance(error, AttemptError):
            return self._failures.matches(error.result)
        kind = _REJECTIONS.get(type(error))
        return kind is not None and kind in self._rejections

    def serve(self, exchange: Exchange) -> StoredAnswer | None:
        """The stored response, else the static response; None when neither applies."""
        store = self.store
        if store is not None:
            headers = exchange.request_headers()
            key = store.request_key(exchange.method, exchange.url(), headers)
            cached = store.lookup(key, headers) if key is not None else None
            result = "bypass" if key is None else ("hit" if cached is not None else "miss")
            self._observers.emit(CacheLookup(self._upstream, result))
            if cached is not None:
                self._observers.emit(FallbackServed(self._upstream, "cache"))
                return StoredAnswer(
                    cached.status,
                    cached.headers,
                    cached.body,
                    b"cache",
                    cached.age_header(),
                    Outcome.FALLBACK_CACHE,
                )
        static = self._static
        if static is not None:
            self._observers.emit(FallbackServed(self._upstream, "static"))
            return StoredAnswer(
                static.status,
                self._static_headers,
                self._static_body,
                b"static",
                None,
                Outcome.FALLBACK_STATIC,
            )
        return None

    def tee(self, exchange: Exchange, response: UpstreamResponse) -> UpstreamResponse:
        """Copy a storable answer into the store while it streams to the client."""
        store = self.store
        if store is None:
            return response
        headers = exchange.request_headers()
        key = store.request_key(exchange.method, exchange.url(), headers)
        if key is None:
            return response
        recorder = store.begin(
            key, headers, response.status, response.headers, response.content_length
        )
        if recorder is None:
            return response
        if not response.has_body:
            # A HEAD (or 204) answer is complete with its head: nothing will stream through
            # a tee to finish the recording, so store it now.
            recorder.finish()
            return response
        return TeeResponse(response, recorder)

    def __repr__(self) -> str:
        return f"Fallback(upstream={self._upstream!r}, store={self.store!r}, static={self._static is not None})"


class TeeResponse:
    """An `UpstreamResponse` whose body is also recorded; stored only if it completes."""

    __slots__ = ("_inner", "_recorder", "content_length", "has_body", "headers", "reason", "status")

    def __init__(self, inner: UpstreamResponse, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder
        self.status = inner.status
        self.reason = inner.reason
        self.headers: Headers = inner.headers
        self.content_length = inner.content_length
        self.has_body = inner.has_body

    @property
    def body_complete(self) -> bool:
        return self._inner.body_complete

    def take_buffered_body(self) -> list[bytes]:
        chunks = self._inner.take_buffered_body()
        for piece in chunks:
            self._recorder.add(piece)
        if self._inner.body_complete:
            self._recorder.finish()
        return chunks

    async def stream_to(self, sink: BodySink) -> None:
        tee = _TeeSink(sink, self._recorder)
        try:
            await self._inner.stream_to(tee)
        except BaseException:
            self._recorder.abandon()
            raise
        self._recorder.finish()

    def discard(self) -> None:
        self._recorder.abandon()
        self._inner.discard()

    def release(self) -> None:
        self._inner.release()

    def __repr__(self) -> str:
        return f"TeeResponse({self._inner!r})"


class _TeeSink:
    """Passes body bytes on to the client and hands a reference to the recorder (no copy)."""

    __slots__ = ("_recorder", "_sink")

    def __init__(self, sink: BodySink, recorder: Recorder) -> None:
        self._sink = sink
        self._recorder = recorder

    def write_body(self, data: bytes) -> None:
        self._sink.write_body(data)
        self._recorder.add(data)

    def end_body(self) -> None:
        self._sink.end_body()

    def set_producer(self, producer: Producer | None) -> None:
        self._sink.set_producer(producer)
