"""Tests for sidecar.observe.writer: batching, the periodic flush and a failing stream."""

from __future__ import annotations

import asyncio
import io
from typing import cast

import pytest

from sidecar.observe.writer import DEFAULT_LIMIT, LineWriter


class RecordingStream(io.BytesIO):
    """A binary stream that remembers each write() call and can write only part of a buffer."""

    def __init__(self, max_chunk: int | None = None) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.max_chunk = max_chunk

    def write(self, data: object) -> int:
        chunk = bytes(cast(bytes, data))
        if self.max_chunk is not None:
            chunk = chunk[: self.max_chunk]
        self.writes.append(chunk)
        return super().write(chunk)


class BrokenStream(io.BytesIO):
    """A stream whose reader went away, as stdout does when piped into a dead process."""

    def write(self, data: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_writer_buffers_lines_until_flush() -> None:
    """Lines stay in memory until flush(), which writes them all in one call."""
    stream = RecordingStream()
    writer = LineWriter(stream)
    writer.write_line(b"one\n")
    writer.write_line(b"two\n")
    assert stream.writes == []
    assert writer.pending == 8
    writer.flush()
    assert stream.writes == [b"one\ntwo\n"]
    assert writer.pending == 0


def test_writer_writes_once_when_limit_reached() -> None:
    """Reaching 64 KiB writes the whole batch with a single write()."""
    stream = RecordingStream()
    writer = LineWriter(stream)
    line = b"x" * 1023 + b"\n"
    for _ in range(DEFAULT_LIMIT // len(line) - 1):
        writer.write_line(line)
    assert stream.writes == []
    writer.write_line(line)
    assert [len(chunk) for chunk in stream.writes] == [DEFAULT_LIMIT]
    assert writer.pending == 0


def test_writer_flush_without_lines_writes_nothing() -> None:
    """An empty flush makes no write() call, so the timer costs nothing on a quiet sidecar."""
    stream = RecordingStream()
    LineWriter(stream).flush()
    assert stream.writes == []


async def test_writer_periodic_flush_shows_lines_on_a_quiet_sidecar() -> None:
    """With the periodic flush running a lone line reaches the stream without a flush() call."""
    stream = RecordingStream()
    writer = LineWriter(stream)
    writer.start_periodic_flush(asyncio.get_running_loop(), interval=0.01)
    writer.write_line(b"quiet\n")
    for _ in range(50):
        if stream.writes:
            break
        await asyncio.sleep(0.01)
    writer.stop()
    assert stream.getvalue() == b"quiet\n"


async def test_writer_stop_ends_periodic_flush() -> None:
    """After stop() lines wait for an explicit flush again."""
    stream = RecordingStream()
    writer = LineWriter(stream)
    writer.start_periodic_flush(asyncio.get_running_loop(), interval=0.01)
    writer.stop()
    writer.write_line(b"later\n")
    await asyncio.sleep(0.03)
    assert stream.writes == []
    assert "periodic=False" in repr(writer)


async def test_writer_close_stops_timer_and_flushes() -> None:
    """close() writes what is left, as the runtime's last step at shutdown."""
    stream = RecordingStream()
    writer = LineWriter(stream)
    writer.start_periodic_flush(asyncio.get_running_loop(), interval=10.0)
    writer.write_line(b"bye\n")
    writer.close()
    assert stream.getvalue() == b"bye\n"
    assert "periodic=False" in repr(writer)


def test_writer_completes_partial_writes() -> None:
    """A raw stream that takes a few bytes per call still receives the whole batch in order."""
    stream = RecordingStream(max_chunk=3)
    writer = LineWriter(stream)
    writer.write_line(b"abcdefgh\n")
    writer.flush()
    assert stream.getvalue() == b"abcdefgh\n"


def test_writer_drops_lines_on_broken_stream(capsys: pytest.CaptureFixture[str]) -> None:
    """A broken stdout never raises into the request path; lost lines are counted, told once."""
    writer = LineWriter(BrokenStream())
    for _ in range(2):
        writer.write_line(b"lost\n")
        writer.flush()
    assert writer.dropped == 2
    assert capsys.readouterr().err.count("log stream failed") == 1
