"""One keep-alive HTTP/1.1 connection to an endpoint, carrying one exchange at a time.

An asyncio `Protocol` with llhttp (httptools) parsing the responses. It owns the framing of
the request it writes and the validation of the response head it reads; it hands body bytes
to a `BodySink` as they arrive and pauses its socket when the sink says so. It knows nothing
of routes, retries or the client: `transport.py` drives it, `pool.py` keeps it (seen from
here as a `ConnectionOwner`, so this module does not import the pool).

What it refuses to trust: a body that ends by a reset (RFC 9112 §8: incomplete, even when
close-delimited), and any byte after the end of the response to the request it sent (the
connection is out of step with the upstream: parsing stops, the bytes go nowhere and the
connection is closed, never pooled).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools

from sidecar.config import Endpoint
from sidecar.errors import (
    AttemptError,
    BodyStreamError,
    RequestTimeoutError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from sidecar.outcome import AttemptResult
from sidecar.upstream.deadline import HeadDeadline
from sidecar.wire.flow import BodySink, Pausers, Producer
from sidecar.wire.framing import LAST_CHUNK, chunk
from sidecar.wire.headers import HOP_BY_HOP, Headers, connection_tokens, is_valid_value

# Response bodies buffered before a sink is attached (a retry decision, or the task not yet
# scheduled) beyond this pause the socket rather than grow memory.
_PRE_SINK_BUFFER = 256 * 1024

_IDLE, _AWAITING_HEAD, _STREAMING, _DONE = range(4)


class ConnectionOwner(Protocol):
    """What a connection needs from the pool that keeps it (`pool.EndpointPool`): where to
    go when its exchange is done, and to be dropped when the peer closes it."""

    @property
    def endpoint(self) -> Endpoint: ...

    def release(self, conn: UpstreamConnection) -> None: ...

    def forget(self, conn: UpstreamConnection) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """A pooled upstream connection; also the `UpstreamResponse` its current exchange reads."""

    __slots__ = (
        "_body_buffer",
        "_body_buffered_bytes",
        "_body_error",
        "_chunked_request",
        "_closed",
        "_connection_named",
        "_deadline",
        "_done",
        "_head_future",
        "_head_only",
        "_idle_handle",
        "_idle_timeout",
        "_last_activity",
        "_loop",
        "_parser",
        "_paused_at",
        "_pausers",
        "_pool",
        "_request_producer",
        "_request_sent",
        "_response_started",
        "_sink",
        "_state",
        "_te_chunked",
        "_transport",
        "_write_paused",
        "close_delimited",
        "content_length",
        "has_body",
        "headers",
        "idle_since",
        "keep_alive",
        "reason",
        "requests_served",
        "status",
    )

    def __init__(self, pool: ConnectionOwner, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._state = _IDLE
        self._closed = False
        self._head_future: asyncio.Future[None] | None = None
        self._deadline = HeadDeadline(loop, self._on_head_deadline)
        self._done: asyncio.Future[None] | None = None
        self._sink: BodySink | None = None
        self._body_buffer: list[bytes] = []
        self._body_buffered_bytes = 0
        self._body_error: BaseException | None = None
        self._head_only = False
        self._chunked_request = False
        self._request_sent = False
        self._response_started = False  # a byte of the current exchange's response arrived
        self._request_producer: Producer | None = None
        self._write_paused = False
        self._pausers = Pausers()  # who paused reading: this connection, or the sink
        self._paused_at = 0.0
        self._idle_timeout = 0.0
        self._idle_handle: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._te_chunked = False
        self._connection_named: set[bytes] = set()
        self.requests_served = 0
        self.idle_since = 0.0  # when the pool took it back
        self.status = 0
        self.reason = b""
        self.headers: Headers = []
        self.content_length: int | None = None
        self.has_body = True
        self.close_delimited = False
        self.keep_alive = False

    # ---- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._state == _IDLE or self._state == _DONE:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self.abort()
            return
        self._last_activity = self._loop.time()
        self._response_started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _AfterResponseError):
                # The response is complete and stays valid; what follows it is not ours.
                self.abort()
                return
            detail = (
                str(cause) if isinstance(cause, _InvalidHeadError) else f"malformed response: {exc}"
            )
            self._fail(UpstreamProtocolError(detail))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        closed_here = self._closed  # we closed or aborted it ourselves
        self._closed = True
        self._cancel_idle_timer()
        self._deadline.cancel()
        self.set_producer(None)
        state = self._state
        if state == _AWAITING_HEAD:
            # A reused connection that dies before any byte of the answer was most likely
            # closed by the server while idle, as the request crossed its FIN: that says
            # nothing about the upstream's health.
            stale = self.requests_served > 0 and not self._response_started
            self._fail(
                UpstreamResetError(
                    "upstream closed the connection before the response headers",
                    upstream_fault=not stale,
                )
            )
        elif state == _STREAMING:
            if self.close_delimited and exc is None and not closed_here:
                self._message_complete()  # a close-delimited body ends with a clean close
            else:
                # A reset (or our own abort) ends no body, close-delimited or not.
                self._fail_body(BodyStreamError("upstream reset mid-body", AttemptResult.RESET))
        self._pool.forget(self)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._request_producer is not None:
            self._request_producer.pause_reading(self)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._request_producer is not None:
            self._request_producer.resume_reading(self)

    # ---- llhttp callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._state == _DONE:
            # llhttp parses on after a message ends, within the same read: a second
            # response to a request never sent (response splitting). Stop here.
            raise _AfterResponseError
        self._te_chunked = False
        self.headers = []
        self._connection_named = set()

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state != _AWAITING_HEAD:
            return  # trailers: never forwarded
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"content-length":
                self.content_length = int(value)
            elif lower == b"transfer-encoding":
                self._te_chunked = True  # llhttp accepts it only with `chunked` last
            elif lower == b"connection":
                self._connection_named |= connection_tokens(value)
            return
        if not is_valid_value(value):
            raise _InvalidHeadError(f"invalid value for response header {name!r}")
        self.headers.append((lower, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise _InvalidHeadError("upstream switched protocols without being asked to")
            self.content_length = None  # interim response (100, 103): wait for the real one
            return
        self.status = status
        if self._connection_named:
            self.headers = [h for h in self.headers if h[0] not in self._connection_named]
        self.has_body = not (self._head_only or status == 204 or status == 304)
        self.close_delimited = (
            self.has_body and self.content_length is None and not self._te_chunked
        )
        self._state = _STREAMING
        head_future = self._head_future
        if head_future is not None and not head_future.done():
            head_future.set_result(None)
        if self._head_only:
            # llhttp cannot be told a HEAD response has no body; end the message ourselves
            # and give the connection a fresh parser for its next exchange. The old parser
            # may still see the rest of this read: `on_body` refuses it.
            self.keep_alive = self._parser.should_keep_alive()
            self._parser = httptools.HttpResponseParser(self)
            self._message_complete()

    def on_body(self, body: bytes) -> None:
        if self._state != _STREAMING:
            raise _AfterResponseError  # body bytes after a HEAD response's end
        sink = self._sink
        if sink is not None:
            sink.write_body(body)
            return
        self._body_buffer.append(body)
        self._body_buffered_bytes += len(body)
        if self._body_buffered_bytes > _PRE_SINK_BUFFER:
            self.pause_reading(self)

    def on_message_complete(self) -> None:
        if self._state != _STREAMING:
            return  # an interim 1xx message
        self.keep_alive = self._parser.should_keep_alive()
        self._message_complete()

    # ---- the request side ----------------------------------------------------------------

    def start(
        self, head: bytes, *, head_only: bool, chunked: bool, idle_timeout: float
    ) -> asyncio.Future[None]:
        """Send a request head; the future resolves when the response head has arrived.

        No head deadline applies until `expire_head` sets one (health checks time the
        whole check themselves).
        """
        assert self._transport is not None
        assert self._state == _IDLE
        self._state = _AWAITING_HEAD
        self._head_only = head_only
        self._chunked_request = chunked
        self._request_sent = False
        self._response_started = False
        self._idle_timeout = idle_timeout
        self._last_activity = self._loop.time()
        self._deadline.reset()
        self.content_length = None
        self.status = 0
        self._body_buffer = []
        self._body_buffered_bytes = 0
        self._body_error = None
        self._sink = None
        self._head_future = self._loop.create_future()
        self._done = None
        self._transport.write(head)
        return self._head_future

    def expire_head(self, per_try: float, total: float, total_deadline: float | None) -> None:
        """The response head is due `per_try` after the request has been fully sent, and
        never after the request's `total` deadline.

        `total_deadline` None: the client is still sending the request, so `total` too
        starts when it has been sent (as Envoy's route timeout starts at the end of the
        downstream request); `total_deadline` then tells the transport when that is.
        Call before the body is attached: a complete body ends the request at once.
        """
        self._deadline.expect(per_try, total, total_deadline)

    @property
    def total_deadline(self) -> float | None:
        """The request's `total` deadline once the request has been sent (None before)."""
        return self._deadline.total_deadline

    def write_body(self, data: bytes) -> None:
        """Request body bytes from the client, framed as the head announced."""
        if self._transport is None or self._closed or not data:
            return
        self._last_activity = self._loop.time()
        if self._chunked_request:
            self._transport.writelines(chunk(data))
        else:
            self._transport.write(data)

    def end_body(self) -> None:
        """The request body is complete (or there was none): the head deadline starts now."""
        self._request_sent = True
        if self._transport is not None and not self._closed and self._chunked_request:
            self._transport.write(LAST_CHUNK)
        if self._state == _AWAITING_HEAD:
            self._deadline.request_sent()

    def set_producer(self, producer: Producer | None) -> None:
        """The downstream socket that feeds this request's body (paused when we are full).

        Letting go of one (detached, reused, or lost) releases this connection's pause on it.
        """
        previous = self._request_producer
        if previous is producer:
            return
        self._request_producer = producer
        if self._write_paused:
            if previous is not None:
                previous.resume_reading(self)
            if producer is not None:
                producer.pause_reading(self)

    def arm_idle_timer(self) -> None:
        """Watch for gaps longer than `idle` between body chunks in either direction."""
        if self._idle_handle is None and self._idle_timeout > 0:
            self._idle_handle = self._loop.call_at(
                self._last_activity + self._idle_timeout, self._check_idle
            )

    # ---- the response side (UpstreamResponse) ----------------------------------------------

    @property
    def body_complete(self) -> bool:
        return self._state == _DONE and self._body_error is None

    def failed_before_relay(self) -> AttemptError | None:
        """The body already broke off (it came in one read with the head) and nothing was
        relayed yet: the attempt can still fail as a whole instead of a truncated answer."""
        error = self._body_error
        if not isinstance(error, BodyStreamError) or self._sink is not None:
            return None
        if error.result == AttemptResult.PROTOCOL_ERROR:
            return UpstreamProtocolError(str(error))
        if error.result == AttemptResult.TIMEOUT:
            return UpstreamTimeoutError(str(error))
        return UpstreamResetError(str(error))

    def take_buffered_body(self) -> list[bytes]:
        """Body chunks that arrived before a sink was attached (handed over once)."""
        chunks = self._body_buffer
        self._body_buffer = []
        self._body_buffered_bytes = 0
        return chunks

    async def stream_to(self, sink: BodySink) -> None:
        """Pipe the rest of the body into `sink`; raises `BodyStreamError` if it breaks off."""
        if self._body_error is not None:
            raise self._body_error
        if self._state == _DONE:
            for piece in self.take_buffered_body():
                sink.write_body(piece)
            sink.end_body()
            return
        for piece in self.take_buffered_body():
            sink.write_body(piece)
        self._sink = sink
        sink.set_producer(self)
        self._done = self._loop.create_future()
        self.resume_reading(self)  # the buffer is handed over: only the sink pauses now
        self.arm_idle_timer()
        try:
            await self._done
        finally:
            sink.set_producer(None)

    def discard(self) -> None:
        """The exchange no longer wants this response: the connection cannot be reused."""
        self._sink = None
        self.close()

    def release(self) -> None:
        """The exchange is done with this response: back to the pool if reusable, else closed."""
        if self._state != _IDLE:
            self._sink = None
            self._pool.release(self)

    # ---- Producer (for the downstream sink) ---------------------------------------------------

    def pause_reading(self, by: object) -> None:
        """Stop reading the response for `by`: this connection (nobody takes the body
        yet) or the downstream sink (the client reads slower than the upstream sends)."""
        if self._pausers.add(by) and self._transport is not None and not self._closed:
            self._paused_at = self._loop.time()
            self._transport.pause_reading()

    def resume_reading(self, by: object) -> None:
        if self._pausers.discard(by) and self._transport is not None and not self._closed:
            # The time spent paused was the sidecar's choice, not the upstream's silence.
            now = self._loop.time()
            self._last_activity = min(now, self._last_activity + now - self._paused_at)
            self._transport.resume_reading()

    # ---- internals -------------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        return (
            self._state == _DONE
            and self.keep_alive
            and self._request_sent
            and not self._closed
            and not self._pausers
        )

    @property
    def closed(self) -> bool:
        """Closed, or closing: either way it must not carry another request."""
        transport = self._transport
        return self._closed or (transport is not None and transport.is_closing())

    def close(self) -> None:
        """Close for good; reset instead when request bytes are still unsent or queued.

        A graceful close first flushes the write buffer, and an upstream that answered
        early and stopped reading never lets it: the socket, its buffer and the client's
        pause would stay until the upstream closes. Nothing more is wanted from it.
        """
        transport = self._transport
        if transport is None or self._closed:
            return
        if not self._request_sent or transport.get_write_buffer_size():
            self.abort()
            return
        self._closed = True
        transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._closed = True
            self._transport.abort()

    def reset_for_reuse(self) -> None:
        self._state = _IDLE
        self._sink = None
        self.set_producer(None)
        self._head_future = None
        self._done = None
        self.requests_served += 1

    def _on_head_deadline(self) -> None:
        head_future = self._head_future
        if self._state != _AWAITING_HEAD or self._closed or head_future is None:
            return
        if not head_future.done():
            head_future.set_exception(
                UpstreamTimeoutError("no response headers before the deadline")
            )

    def _message_complete(self) -> None:
        self._state = _DONE
        self._cancel_idle_timer()
        self.resume_reading(self)  # nothing more to buffer: a pre-sink pause is over
        sink = self._sink
        if sink is not None:
            sink.end_body()
        done = self._done
        if done is not None and not done.done():
            done.set_result(None)

    def _fail(self, error: Exception) -> None:
        head_future = self._head_future
        if self._state == _AWAITING_HEAD and head_future is not None and not head_future.done():
            head_future.set_exception(error)
            self._state = _DONE
        elif self._state == _STREAMING:
            self._fail_body(BodyStreamError(str(error), AttemptResult.PROTOCOL_ERROR))
        self.abort()

    def _fail_body(self, error: BodyStreamError) -> None:
        self._state = _DONE
        self._body_error = error
        done = self._done
        if done is not None and not done.done():
            done.set_exception(error)

    def _check_idle(self) -> None:
        self._idle_handle = None
        if self._state == _DONE or self._closed:
            return
        if self._state == _AWAITING_HEAD and self._request_sent:
            return  # the request is sent: waiting for the head is per_try's job, not idle's
        now = self._loop.time()
        idle = self._idle_timeout
        if self._pausers:
            # Reading is paused by the sidecar: the upstream cannot be idle. A client that
            # has not taken the body for longer than `idle` is the client's failure.
            if not self._pausers.only(self) and now >= self._paused_at + idle:
                self._fail_body(
                    BodyStreamError(
                        "the client read nothing of the response for longer than idle",
                        AttemptResult.TIMEOUT,
                        upstream_fault=False,
                    )
                )
                self.abort()
                return
            self._idle_handle = self._loop.call_at(
                max(now, self._paused_at) + idle, self._check_idle
            )
            return
        due = self._last_activity + idle
        if now < due:
            self._idle_handle = self._loop.call_at(due, self._check_idle)
            return
        if self._state == _AWAITING_HEAD:
            # The request body stalled: the upstream's fault only if it stopped reading.
            self._fail(
                UpstreamTimeoutError("upstream stopped reading the request body")
                if self._write_paused
                else RequestTimeoutError("the request body stalled for longer than idle")
            )
            return
        self._fail_body(BodyStreamError("body idle timeout", AttemptResult.TIMEOUT))
        self.abort()

    def _cancel_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def __repr__(self) -> str:
        states = ("idle", "awaiting-head", "streaming", "done")
        return (
            f"<UpstreamConnection {self._pool.endpoint.authority} {states[self._state]}"
            f" served={self.requests_served} paused={self._pausers!r} closed={self._closed}>"
        )


class _InvalidHeadError(Exception):
    """Raised inside llhttp callbacks to abort parsing a response head we must refuse."""


class _AfterResponseError(Exception):
    """Raised inside llhttp callbacks when bytes follow the end of the response."""
