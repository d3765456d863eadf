"""Durations, sizes and ratios: the three unit-bearing scalar types of the config file.

This module owns how `250ms`, `64KiB` and `50%` are parsed and written back. The results
are plain Python numbers (float seconds, int bytes, float ratios in [0, 1]) so no code
outside `sidecar.config` ever handles units. Parsing is exact (decimal arithmetic), so
`format_duration(parse_duration(s))` reads back to the same float. It must not know about
any particular config field: field-specific bounds live on the models.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

DURATION_HINT = "use e.g. 250ms, 2s, 1m"
SIZE_HINT = "use e.g. 512B, 64KiB, 1MiB"
RATIO_HINT = "use e.g. 50% or 0.5"

_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
# Compound Go-style durations (`1m30s`) are accepted; each part is a number and a unit.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+")

_SIZE_UNITS: dict[str, int] = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def _shown(value: object) -> str:
    """How a rejected scalar is quoted in a message: strings in quotes, YAML spellings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def parse_duration(value: object) -> float:
    """`250ms`, `2s`, `1.5s`, `1m`, `1h`, `1m30s` → float seconds.

    A bare number is refused on purpose: `timeout: 5` could mean seconds or milliseconds,
    and a config that silently picks one is how outages start.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{_shown(value)} is not a duration ({DURATION_HINT})")
    if isinstance(value, (int, float)):
        raise ValueError(f"{_shown(value)} is not a duration: add a unit ({DURATION_HINT})")
    text = value.strip()
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{_shown(value)} is not a duration ({DURATION_HINT})")
    total = sum(
        (Decimal(number) * _DURATION_UNITS[unit]) for number, unit in _DURATION_PART.findall(text)
    )
    return float(total)


def format_duration(seconds: float) -> str:
    """Float seconds → the shortest exact spelling (`0.25` → `250ms`, `90` → `90s`)."""
    exact = Decimal(repr(float(seconds)))
    millis = exact * 1000
    if millis != millis.to_integral_value():
        return f"{format(exact.normalize(), 'f')}s"
    whole = int(millis)
    if whole == 0:
        return "0s"
    for unit, factor in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if whole % factor == 0:
            return f"{whole // factor}{unit}"
    return f"{whole}ms"


def parse_size(value: object) -> int:
    """`512B`, `64KiB`, `1MiB`, `1GiB` → int bytes; binary units only, a unit is required."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{_shown(value)} is not a size ({SIZE_HINT})")
    if isinstance(value, (int, float)):
        raise ValueError(f"{_shown(value)} is not a size: add a unit ({SIZE_HINT})")
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{_shown(value)} is not a size ({SIZE_HINT})")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def format_size(size: int) -> str:
    """Int bytes → the largest binary unit that divides it exactly (`1048576` → `1MiB`)."""
    for unit in ("GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit]
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def parse_ratio(value: object) -> float:
    """`50%` or `0.5` → 0.5; anything outside 0–100 % is an error, never clamped."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{_shown(value)} is not a ratio ({RATIO_HINT})")
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{_shown(value)} is not a ratio ({RATIO_HINT})")
        ratio = Decimal(match.group(1)) / 100
        if ratio > 1:
            raise ValueError(f"{_shown(value)} is outside 0%–100%")
        return float(ratio)
    if not 0 <= value <= 1:
        raise ValueError(
            f"{_shown(value)} is outside 0–1 (write a percentage like {value}% "
            "or a fraction like 0.5)"
        )
    return float(value)


def format_ratio(ratio: float) -> str:
    """Float ratio → a percentage string (`0.5` → `50%`, `0.125` → `12.5%`)."""
    percent = (Decimal(repr(float(ratio))) * 100).normalize()
    return f"{format(percent, 'f')}%"


def _positive(value: object) -> float:
    """A duration that must be longer than zero (timeouts, windows, intervals)."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{_shown(value)} must be longer than 0 ({DURATION_HINT})")
    return seconds


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^(\d+(\.\d+)?(ms|s|m|h))+$",
    "examples": ["250ms", "2s", "1m"],
}

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""Float seconds ≥ 0, written with a unit; JSON dumps write it back the same way."""

PositiveDuration = Annotated[
    float,
    BeforeValidator(_positive),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_DURATION_SCHEMA),
]
"""Float seconds > 0: for timeouts and windows, where zero would mean "never works"."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d+\s*(B|KiB|MiB|GiB)$",
            "examples": ["512B", "64KiB", "1MiB"],
        }
    ),
]
"""Int bytes, written with a binary unit."""

Ratio = Annotated[
    float,
    BeforeValidator(parse_ratio),
    PlainSerializer(format_ratio, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*%$"},
                {"type": "number", "minimum": 0, "maximum": 1},
            ],
            "examples": ["50%", 0.5],
        }
    ),
]
"""Float in [0, 1], written as `50%` or `0.5`."""
