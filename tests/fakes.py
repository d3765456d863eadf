"""Typed fakes shared by the test suite: a hand-driven clock, an observer that records events,
a scripted transport with a recording responder for stage tests, and an in-memory socket
transport for driving the protocol classes byte by byte.

Fakes stand in for the seams of `sidecar` (`Clock`, `Observer`, `Transport`, `Responder`); they
do no I/O and never wait on real time, so policy and stage tests stay deterministic and fast.
Fakes for sockets live in `tests.upstreams`, not here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sidecar.clock import Clock
from sidecar.errors import AttemptError, BodyStreamError, ProxyError, UpstreamConnectError
from sidecar.events import Event, Observer
from sidecar.outcome import AttemptResult
from sidecar.pipeline.exchange import Exchange, Responder
from sidecar.upstream.pool import EndpointPool
from sidecar.upstream.protocol import Transport, UpstreamResponse
from sidecar.wire.flow import BodySink, Producer
from sidecar.wire.headers import Headers

__all__ = [
    "FakeClock",
    "MemoryTransport",
    "NullProducer",
    "RecordingObserver",
    "RecordingResponder",
    "ScriptedOutcome",
    "ScriptedResponse",
    "ScriptedTransport",
    "SentRequest",
    "Step",
    "StreamingResponse",
    "TruncatedResponse",
    "eventually",
]

E = TypeVar("E")


class FakeClock:
    """A `Clock` whose time moves only when a test calls `advance()` or code awaits `sleep()`.

    `sleep()` advances the clock by the requested amount at once and yields to the event loop
    once, so a backoff of 30 s costs nothing; every requested sleep is kept in `sleeps` so tests
    can assert the exact schedule.
    """

    __slots__ = ("_now", "sleeps")

    def __init__(self, start: float = 1000.0) -> None:
        # Start away from zero so code that treats 0.0 as "never" cannot pass by accident.
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        """Move time forward; moving it backwards is a bug in the test."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds}")
        self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:.3f}, sleeps={len(self.sleeps)})"


class RecordingObserver:
    """An `Observer` that keeps every event it is notified of, in order."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[Event] = []

    def notify(self, event: Event) -> None:
        self.events.append(event)

    def of_type(self, cls: type[E]) -> list[E]:
        """The recorded events that are instances of `cls`, in the order they arrived."""
        return [event for event in self.events if isinstance(event, cls)]

    def types(self) -> list[str]:
        """The class names of all recorded events, for asserting an exact sequence."""
        return [type(event).__name__ for event in self.events]

    def clear(self) -> None:
        self.events.clear()

    def __repr__(self) -> str:
        return f"RecordingObserver({len(self.events)} events)"


def _check_protocols(clock: FakeClock, observer: RecordingObserver) -> tuple[Clock, Observer]:
    """Never called: lets mypy prove the fakes satisfy the protocols they stand in for."""
    return clock, observer


# ------------------------------------------------------------------------------------------
# Stage tests: a scripted transport and a recording responder


class ScriptedResponse:
    """An `UpstreamResponse` whose head and whole body have arrived (`body_complete` is True).

    Header names are lower-case bytes, as the real transport delivers them. `released` and
    `discarded` show how the attempt that got this response was ended.
    """

    __slots__ = (
        "_taken",
        "body",
        "content_length",
        "discarded",
        "has_body",
        "headers",
        "reason",
        "released",
        "status",
    )

    def __init__(
        self,
        status: int = 200,
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        *,
        reason: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers: Headers = list(headers)
        self.body = body
        self.content_length: int | None = len(body)
        self.has_body = status not in (204, 304)
        self.released = False
        self.discarded = False
        self._taken = False

    @property
    def body_complete(self) -> bool:
        return True

    def take_buffered_body(self) -> list[bytes]:
        """The body, once; later calls get nothing (it has been handed over)."""
        if self._taken or not self.body:
            return []
        self._taken = True
        return [self.body]

    async def stream_to(self, sink: BodySink) -> None:
        for piece in self.take_buffered_body():
            sink.write_body(piece)
        sink.end_body()

    def discard(self) -> None:
        self.discarded = True

    def release(self) -> None:
        self.released = True

    def __repr__(self) -> str:
        return f"ScriptedResponse({self.status}, body={len(self.body)}B, released={self.released})"


class TruncatedResponse:
    """An `UpstreamResponse` whose body breaks off: `sent` bytes, then a reset (SPEC §4.3).

    The head announces `content_length`; streaming writes `sent` and raises `BodyStreamError`,
    as the real transport does when the connection drops mid-body.
    """

    __slots__ = (
        "content_length",
        "discarded",
        "has_body",
        "headers",
        "reason",
        "released",
        "sent",
        "status",
    )

    def __init__(
        self,
        sent: bytes,
        content_length: int,
        headers: Iterable[tuple[bytes, bytes]] = (),
        status: int = 200,
    ) -> None:
        self.status = status
        self.reason = b""
        self.headers: Headers = list(headers)
        self.sent = sent
        self.content_length: int | None = content_length
        self.has_body = True
        self.released = False
        self.discarded = False

    @property
    def body_complete(self) -> bool:
        return False

    def take_buffered_body(self) -> list[bytes]:
        return []

    async def stream_to(self, sink: BodySink) -> None:
        sink.write_body(self.sent)
        raise BodyStreamError("scripted reset mid-body", AttemptResult.RESET)

    def discard(self) -> None:
        self.discarded = True

    def release(self) -> None:
        self.released = True

    def __repr__(self) -> str:
        return f"TruncatedResponse({self.status}, {len(self.sent)}/{self.content_length}B)"


class StreamingResponse:
    """An `UpstreamResponse` whose head has arrived and whose body is still to come.

    The body (`body`) streams once the test sets `more` (a long poll, a download); with
    `breaks` it then breaks off as a reset would, after the bytes it had. `streaming` is set
    while a sink is reading it.
    """

    __slots__ = (
        "body",
        "breaks",
        "content_length",
        "discarded",
        "has_body",
        "headers",
        "more",
        "reason",
        "released",
        "status",
        "streaming",
    )

    def __init__(self, body: bytes, *, breaks: bool = False, status: int = 200) -> None:
        self.status = status
        self.reason = b""
        self.headers: Headers = []
        self.body = body
        self.breaks = breaks
        self.content_length: int | None = len(body) + (1 if breaks else 0)
        self.has_body = True
        self.more = asyncio.Event()
        self.streaming = asyncio.Event()
        self.released = False
        self.discarded = False

    @property
    def body_complete(self) -> bool:
        return False

    def take_buffered_body(self) -> list[bytes]:
        return []

    async def stream_to(self, sink: BodySink) -> None:
        self.streaming.set()
        await self.more.wait()
        sink.write_body(self.body)
        if self.breaks:
            raise BodyStreamError("scripted reset mid-body", AttemptResult.RESET)
        sink.end_body()

    def discard(self) -> None:
        self.discarded = True

    def release(self) -> None:
        self.released = True

    def __repr__(self) -> str:
        return f"StreamingResponse({self.status}, streaming={self.streaming.is_set()})"


ScriptedOutcome = ScriptedResponse | TruncatedResponse | StreamingResponse | AttemptError


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted attempt: what it produces, how long it takes, and what it waits for.

    `takes` seconds are added to the transport's `FakeClock` before the outcome (a timeout
    that used its whole `per_try`, a slow call); `hold` parks the attempt until the test sets
    the event (a request kept in flight, e.g. to fill a bulkhead).
    """

    outcome: ScriptedOutcome
    takes: float = 0.0
    hold: asyncio.Event | None = None


@dataclass(slots=True)
class SentRequest:
    """What one `send()` got: the endpoint, the attempt number, its deadline and body bytes."""

    endpoint: str
    attempt: int
    deadline: float
    body: bytes | None = None
    body_ended: bool = False


class _BodyRecorder:
    """The `BodyConsumer` a scripted attempt attaches a request body to."""

    __slots__ = ("_chunks", "_sent")

    def __init__(self, sent: SentRequest) -> None:
        self._sent = sent
        self._chunks: list[bytes] = []

    def write_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._sent.body = b"".join(self._chunks)

    def end_body(self) -> None:
        self._sent.body_ended = True

    def set_producer(self, producer: Producer | None) -> None:
        pass  # the scripted attempt never pushes back


class ScriptedTransport:
    """A `Transport` that answers each `send()` with the next scripted step, in order.

    A step is a `ScriptedResponse` (returned as the response head), an `AttemptError` (raised,
    as the real transport raises its translated failures) or a `Step` wrapping either. Every
    call is recorded in `sent`; unless the step is a refused connect, a request body is
    attached and read as the real transport does, so replayability is judged as in production. A `send()` beyond the script fails the
    test.
    """

    __slots__ = ("_clock", "_script", "sent")

    def __init__(
        self, script: Iterable[ScriptedOutcome | Step] = (), clock: FakeClock | None = None
    ) -> None:
        self._script: deque[Step] = deque()
        self._clock = clock
        self.sent: list[SentRequest] = []
        self.add(*script)

    def add(self, *steps: ScriptedOutcome | Step) -> None:
        """Append steps to the script."""
        self._script.extend(step if isinstance(step, Step) else Step(step) for step in steps)

    def clear(self) -> None:
        """Drop the steps not used yet (a request the breaker refused never sent its own)."""
        self._script.clear()

    @property
    def calls(self) -> int:
        return len(self.sent)

    @property
    def endpoints(self) -> list[str]:
        """The endpoint of every call, in order."""
        return [sent.endpoint for sent in self.sent]

    @property
    def remaining(self) -> int:
        return len(self._script)

    async def send(
        self,
        pool: EndpointPool,
        exchange: Exchange,
        per_try: float,
        total: float,
        connect_timeout: float,
        idle_timeout: float,
    ) -> UpstreamResponse:
        # The scripted request is sent at once, so its head deadline starts now.
        now = self._clock.now() if self._clock is not None else asyncio.get_running_loop().time()
        sent = SentRequest(pool.label, exchange.attempts, min(now + per_try, exchange.deadline))
        self.sent.append(sent)
        if not self._script:
            raise AssertionError(f"unscripted send #{len(self.sent)} to {pool.label}")
        step = self._script.popleft()
        if exchange.body is not None and not isinstance(step.outcome, UpstreamConnectError):
            exchange.body.attach(_BodyRecorder(sent))  # a refused connect sends nothing
        if step.hold is not None:
            await step.hold.wait()
        if step.takes:
            if self._clock is None:
                raise AssertionError("a Step with `takes` needs a ScriptedTransport(clock=...)")
            self._clock.advance(step.takes)
        if isinstance(step.outcome, AttemptError):
            raise step.outcome
        return step.outcome

    def __repr__(self) -> str:
        return f"ScriptedTransport(sent={len(self.sent)}, remaining={len(self._script)})"


class RecordingResponder:
    """A `Responder` that keeps what a stage answered instead of writing to a socket."""

    __slots__ = (
        "_head_sent",
        "aborted",
        "body",
        "errors",
        "fallback_age",
        "fallback_headers",
        "fallbacks",
        "finished_count",
        "status",
    )

    def __init__(self) -> None:
        self._head_sent = False
        self.status = 0
        self.body = b""
        self.errors: list[ProxyError] = []
        self.fallbacks: list[tuple[int, bytes, bytes]] = []  # (status, kind, body)
        self.fallback_headers: Headers = []  # of the last fallback, as the stage passed them
        self.fallback_age: bytes | None = None  # the `Age` value of the last fallback
        self.aborted = False
        self.finished_count = 0

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def relay(self, exchange: Exchange, response: UpstreamResponse) -> None:
        exchange.status = self.status = response.status
        self._head_sent = True
        if not response.has_body:  # HEAD, 204, 304: as the real responder, touch no body
            self.body = b""
            return
        chunks = response.take_buffered_body()
        if not response.body_complete:
            sink = _Collector()
            await response.stream_to(sink)
            chunks.extend(sink.chunks)
        self.body = b"".join(chunks)
        exchange.bytes_out = len(self.body)

    def send_error(self, exchange: Exchange, error: ProxyError) -> None:
        self.errors.append(error)
        self._head_sent = True

    def send_fallback(
        self,
        exchange: Exchange,
        status: int,
        headers: Headers,
        body: bytes,
        kind: bytes,
        age: bytes | None,
    ) -> None:
        exchange.status = self.status = status
        self.fallbacks.append((status, kind, body))
        self.fallback_headers = list(headers)
        self.fallback_age = age
        self.body = body
        self._head_sent = True

    def abort(self) -> None:
        self.aborted = True

    def finished(self, exchange: Exchange) -> None:
        self.finished_count += 1

    def __repr__(self) -> str:
        return f"RecordingResponder(status={self.status}, head_sent={self._head_sent})"


class _Collector:
    """A `BodySink` that keeps the chunks it is given."""

    __slots__ = ("chunks", "ended")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended = False

    def write_body(self, data: bytes) -> None:
        self.chunks.append(data)

    def end_body(self) -> None:
        self.ended = True

    def set_producer(self, producer: Producer | None) -> None:
        pass


class NullProducer:
    """A `Producer` for a request body that has fully arrived: pausing is recorded, not done."""

    __slots__ = ("pausers",)

    def __init__(self) -> None:
        self.pausers: list[object] = []

    @property
    def paused(self) -> bool:
        return bool(self.pausers)

    def pause_reading(self, by: object) -> None:
        if by not in self.pausers:
            self.pausers.append(by)

    def resume_reading(self, by: object) -> None:
        if by in self.pausers:
            self.pausers.remove(by)

    def __repr__(self) -> str:
        return f"NullProducer(pausers={self.pausers!r})"


class MemoryTransport:
    """The part of `asyncio.Transport` the sidecar's protocols use, recorded in memory.

    Drive a protocol byte by byte as uvicorn's protocol tests do: feed it with
    `protocol.data_received(...)`, then assert on `written`, `reading_paused`, `closed` and
    `aborted`. `close()` delivers `connection_lost(None)` on the next loop turn, as a socket
    would; `abort()` does it too, with the transport marked aborted. Writes after a close are
    kept apart in `written_after_close` so a test can prove nothing leaked past the end.
    """

    __slots__ = (
        "_lost",
        "_protocol",
        "aborted",
        "closed",
        "eof_written",
        "pause_count",
        "peername",
        "reading_paused",
        "write_buffer_size",
        "written",
        "written_after_close",
    )

    def __init__(
        self, protocol: asyncio.Protocol, peername: tuple[str, int] = ("127.0.0.1", 50000)
    ) -> None:
        self._protocol = protocol
        self._lost = False
        self.peername = peername
        self.written = bytearray()
        self.written_after_close = bytearray()
        self.reading_paused = False
        self.pause_count = 0  # pause_reading() calls that changed the state
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.write_buffer_size = 0

    # -- asyncio.Transport -------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.written_after_close += data
        else:
            self.written += data

    def writelines(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        for piece in pieces:
            self.write(piece)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.pause_count += 1
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def is_reading(self) -> bool:
        return not self.reading_paused and not self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self._connection_lost)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.write_buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peername if name == "peername" else default

    @property
    def ended(self) -> bool:
        """The protocol ended its side: closed, or sent FIN (the peer reads EOF either way)."""
        return self.closed or self.eof_written

    # -- test controls --------------------------------------------------------------------

    def take_written(self) -> bytes:
        """What the protocol wrote since the last call (and forget it)."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def peer_resets(self, exc: Exception | None = None) -> None:
        """The peer closed (None) or reset (an `OSError`) the connection: `connection_lost`."""
        self.closed = True
        self._connection_lost(exc)

    def fill_write_buffer(self) -> None:
        """The peer stopped reading: the protocol is told to pause writing."""
        self.write_buffer_size = 1 << 20
        self._protocol.pause_writing()

    def drain_write_buffer(self) -> None:
        """The peer read everything: the protocol is told to resume writing."""
        self.write_buffer_size = 0
        self._protocol.resume_writing()

    def _connection_lost(self, exc: Exception | None = None) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(exc)

    def __repr__(self) -> str:
        return (
            f"MemoryTransport(written={len(self.written)}, paused={self.reading_paused}, "
            f"closed={self.closed}, aborted={self.aborted})"
        )


async def eventually(condition: Callable[[], bool], within: float = 1.0) -> None:
    """Let other tasks run until `condition` holds; fails the test after `within` seconds.

    For state that has no event of its own to await (a bulkhead queue, a transport's call
    count); it yields to the loop between checks and never sleeps on real time.
    """
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polls state that offers nothing to await
            await asyncio.sleep(0)


def _check_stage_protocols(
    transport: ScriptedTransport,
    responder: RecordingResponder,
    response: ScriptedResponse,
    producer: NullProducer,
    truncated: TruncatedResponse,
    streaming: StreamingResponse,
) -> tuple[
    Transport[Exchange],
    Responder,
    UpstreamResponse,
    Producer,
    BodySink,
    UpstreamResponse,
    UpstreamResponse,
]:
    """Never called: lets mypy prove the stage fakes satisfy the protocols they stand in for."""
    return transport, responder, response, producer, _Collector(), truncated, streaming
