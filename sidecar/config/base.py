"""The base of every config model and the small field types they share.

This module owns what all config models have in common: frozen, unknown keys forbidden,
the list of "derived" fields the loader fills in (they are not keys of the file), and the
typed scalars used across sections (names usable as metric labels, HTTP methods, header
names, status codes, strict counts). It must not hold any section of the config itself.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
)

# Names end up as Prometheus label values and in dotted error paths; keep them plain.
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# RFC 9110 token characters, for methods and header field names.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ConfigModel(BaseModel):
    """Frozen, unknown keys refused; `derived_fields` are filled by the loader, not the user."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Field name → why it is not a key of the file (shown if a user writes it anyway).
    derived_fields: ClassVar[dict[str, str]] = {}

    @classmethod
    def file_keys(cls) -> tuple[str, ...]:
        """The keys a user may write for this section, in declaration order."""
        return tuple(name for name in cls.model_fields if name not in cls.derived_fields)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'max_attempts'?)` when a choice is close, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-' only "
            "(names become metric labels)"
        )
    return value


def _upper_methods(value: Any) -> Any:
    """Methods are matched case-sensitively on the wire, so we keep one spelling: upper."""
    if isinstance(value, list | tuple):
        return tuple(_method(item) for item in value)
    return value


def _method(item: Any) -> Any:
    if isinstance(item, str):
        if not _TOKEN.fullmatch(item):
            raise ValueError(f"{item!r} is not an HTTP method (use e.g. GET, POST)")
        return item.upper()
    return item


def _lower_headers(value: Any) -> Any:
    """Header names are case-insensitive; lowercase is how the runtime compares them."""
    if isinstance(value, list | tuple):
        return tuple(header_name(item) if isinstance(item, str) else item for item in value)
    return value


def header_name(item: str) -> str:
    """Validate and lowercase one header field name."""
    if not _TOKEN.fullmatch(item):
        raise ValueError(f"{item!r} is not a valid header name")
    return item.lower()


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are relative to the config file's folder, not the working directory.

    The loader passes that folder as `base_dir` in the validation context; without it
    (a model built in Python) the current directory is used.
    """
    path = value.expanduser()
    if path.is_absolute():
        return path
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return (Path(base) if base is not None else Path.cwd()) / path


Name = Annotated[str, Strict(), AfterValidator(_check_name)]
"""A name used as a metric label: `[A-Za-z0-9_.-]+`."""

Methods = Annotated[tuple[str, ...], BeforeValidator(_upper_methods)]
"""HTTP methods, uppercased."""

HeaderNames = Annotated[tuple[str, ...], BeforeValidator(_lower_headers)]
"""Header field names, lowercased."""

Count = Annotated[int, Strict(), Field(ge=0)]
"""A whole number ≥ 0; `true` or `"5"` are refused rather than coerced."""

PositiveCount = Annotated[int, Strict(), Field(ge=1)]
"""A whole number ≥ 1."""

Number = Annotated[float, Strict(), Field(ge=0)]
"""A number ≥ 0 (an integer is accepted)."""

Flag = Annotated[bool, Strict()]
"""`true` or `false` only; `yes`, `on` or `1` are refused."""


# 1xx cannot be a final response, so a status the sidecar answers with is 200–599.
Status = Annotated[int, Strict(), Field(ge=200, le=599)]
"""An HTTP status the sidecar itself answers with (static fallback, injected abort)."""
