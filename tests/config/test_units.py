"""Tests for `sidecar.config.units`: durations, sizes and ratios as written in the file."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.units import (
    format_duration,
    format_ratio,
    format_size,
    parse_duration,
    parse_ratio,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("0s", 0.0),
        (" 5s ", 5.0),
        ("0.5ms", 0.0005),
    ],
    ids=["millis", "seconds", "fraction", "minute", "hour", "compound", "zero", "spaces", "sub-ms"],
)
def test_parse_duration_accepts_units(text: str, seconds: float) -> None:
    """Every documented duration spelling parses to float seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("1 sec", "'1 sec' is not a duration (use e.g. 250ms, 2s, 1m)"),
        (5, "5 is not a duration: add a unit"),
        (2.5, "2.5 is not a duration: add a unit"),
        ("-1s", "'-1s' is not a duration"),
        ("5S", "'5S' is not a duration"),
        (True, "true is not a duration"),
        (None, "null is not a duration"),
        ("", "'' is not a duration"),
    ],
    ids=["words", "bare-int", "bare-float", "negative", "uppercase", "bool", "null", "empty"],
)
def test_parse_duration_rejects_with_hint(value: object, fragment: str) -> None:
    """A value that is not a duration names itself and shows valid spellings."""
    with pytest.raises(ValueError, match="not a duration") as info:
        parse_duration(value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.025, "25ms"), (1.0, "1s"), (60.0, "1m"), (90.0, "90s"), (7200.0, "2h"), (0.0, "0s")],
    ids=["millis", "second", "minute", "seconds", "hours", "zero"],
)
def test_format_duration_uses_largest_exact_unit(seconds: float, text: str) -> None:
    """Formatting picks the largest unit that divides the value exactly."""
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_duration_round_trips_whole_milliseconds(millis: int) -> None:
    """Any whole number of milliseconds survives format → parse unchanged."""
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_duration_round_trips_any_float(seconds: float) -> None:
    """Even values that are not whole milliseconds read back as the same float."""
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("512B", 512), ("64KiB", 65536), ("1MiB", 1 << 20), ("1GiB", 1 << 30), ("0B", 0)],
    ids=["bytes", "kib", "mib", "gib", "zero"],
)
def test_parse_size_accepts_binary_units(text: str, size: int) -> None:
    """Sizes with binary units parse to whole bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "value",
    [1024, "64KB", "1.5MiB", "1 MB", "-1B", "big", None],
    ids=["bare-int", "decimal-unit", "fraction", "si-unit", "negative", "word", "null"],
)
def test_parse_size_rejects_with_hint(value: object) -> None:
    """Anything but a whole number with B/KiB/MiB/GiB is refused, showing valid spellings."""
    with pytest.raises(ValueError, match=r"is not a size.*use e\.g\. 512B, 64KiB, 1MiB"):
        parse_size(value)


@given(st.integers(min_value=0, max_value=1 << 40))
def test_size_round_trips(size: int) -> None:
    """Any byte count survives format → parse unchanged."""
    assert parse_size(format_size(size)) == size


def test_format_size_uses_largest_exact_unit() -> None:
    """A size is written in the largest binary unit that divides it."""
    assert [format_size(n) for n in (1 << 20, 1536, 100)] == ["1MiB", "1536B", "100B"]


@pytest.mark.parametrize(
    ("value", "ratio"),
    [("50%", 0.5), ("12.5%", 0.125), ("0%", 0.0), ("100%", 1.0), (0.5, 0.5), (1, 1.0)],
    ids=["percent", "fraction-percent", "zero", "full", "float", "int-one"],
)
def test_parse_ratio_accepts_percent_or_fraction(value: object, ratio: float) -> None:
    """Ratios are written as a percentage or a fraction in [0, 1]."""
    assert parse_ratio(value) == ratio


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("150%", "outside 0%–100%"),
        (50, "outside 0–1 (write a percentage like 50%"),
        (-0.1, "outside 0–1"),
        ("half", "is not a ratio"),
        (True, "is not a ratio"),
    ],
    ids=["over-100-percent", "forgot-percent", "negative", "word", "bool"],
)
def test_parse_ratio_rejects_out_of_range(value: object, fragment: str) -> None:
    """Ratios outside 0–100 % are errors, never clamped."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_ratio(value)


@given(st.integers(min_value=0, max_value=1000))
def test_ratio_round_trips_tenths_of_percent(permille: int) -> None:
    """Percentages with one decimal read back as the same ratio."""
    ratio = permille / 1000
    assert parse_ratio(format_ratio(ratio)) == ratio
