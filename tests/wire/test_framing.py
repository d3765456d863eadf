"""Chunked encoding and fixed strings the sidecar writes."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import pytest

from sidecar.wire.framing import HttpDate, chunk, reason


def test_framing_chunk_writes_hex_size_data_and_crlf() -> None:
    """A chunk is `<hex size>CRLF<data>CRLF`."""
    assert b"".join(chunk(b"x" * 26)) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_framing_http_date_is_an_rfc_date_cached_per_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Date value is an IMF-fixdate, reused within a second and renewed after it."""
    now = [1_700_000_000.2]
    monkeypatch.setattr("sidecar.wire.framing.wall_time", lambda: now[0])
    date = HttpDate()
    first = date.value()
    assert first == b"Tue, 14 Nov 2023 22:13:20 GMT"
    assert parsedate_to_datetime(first.decode()).timestamp() == 1_700_000_000
    now[0] += 0.5
    assert date.value() is first
    now[0] += 1
    assert date.value() == b"Tue, 14 Nov 2023 22:13:21 GMT"


def test_framing_reason_covers_generated_statuses() -> None:
    """Every status the sidecar generates has its reason phrase."""
    for status in (400, 403, 408, 429, 431, 500, 502, 503, 504, 508):
        assert reason(status) != b"Unknown"
