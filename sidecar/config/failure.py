"""The failure vocabulary of `retries.on`, `circuit_breaker.failure_on` and `serve_on`.

Each of these lists holds `FailureKind` members (named conditions) and plain `int` HTTP
status codes; that is the one typed representation the runtime matches against. YAML lets
users write `503` or `"503"`; both become the int 503. Each list accepts only the kinds
that make sense for it (a retry cannot be triggered by `circuit-open`). This module must
not classify responses; `sidecar.outcome` does that.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator

from sidecar.config.issue import RuleError, Violation


class FailureKind(StrEnum):
    """A named condition; status codes are listed as ints next to these."""

    CONNECT_FAILURE = "connect-failure"
    RESET = "reset"
    TIMEOUT = "timeout"
    HTTP_5XX = "5xx"
    CIRCUIT_OPEN = "circuit-open"
    BULKHEAD_FULL = "bulkhead-full"
    RATE_LIMITED = "rate-limited"


_UPSTREAM_KINDS = (
    FailureKind.CONNECT_FAILURE,
    FailureKind.RESET,
    FailureKind.TIMEOUT,
    FailureKind.HTTP_5XX,
)
_ALL_KINDS = tuple(FailureKind)


def _conditions(allowed: tuple[FailureKind, ...], what: str) -> Any:
    """Build a before-validator that normalizes one list and points at a bad element."""
    names = ", ".join(kind.value for kind in allowed)
    hint = f"use {names} or a 4xx/5xx status code like 503"

    def parse(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value  # pydantic reports "expected a list"
        items: list[FailureKind | int] = []
        problems: list[Violation] = []
        for index, item in enumerate(value):
            try:
                items.append(_condition(item, allowed, what, hint))
            except ValueError as exc:
                problems.append(Violation((index,), str(exc)))
        if problems:
            raise RuleError(*problems)
        return tuple(items)

    return parse


def _condition(
    item: object, allowed: tuple[FailureKind, ...], what: str, hint: str
) -> FailureKind | int:
    if isinstance(item, str) and item.strip().isdigit():
        item = int(item.strip())
    if isinstance(item, int) and not isinstance(item, bool):
        if 400 <= item <= 599:
            return item
        raise ValueError(f"{item} is not a {what}: only 4xx and 5xx status codes can be listed")
    if isinstance(item, str):
        kind = item.strip().lower()
        for member in allowed:
            if member.value == kind:
                return member
    shown = repr(item) if isinstance(item, str) else str(item)
    raise ValueError(f"{shown} is not a {what} ({hint})")


RetryConditions = Annotated[
    tuple[FailureKind | int, ...],
    BeforeValidator(_conditions(_UPSTREAM_KINDS, "retry condition")),
]
"""When an attempt is retried: connect-failure, reset, timeout, 5xx, or exact statuses."""

BreakerFailures = Annotated[
    tuple[FailureKind | int, ...],
    BeforeValidator(_conditions(_UPSTREAM_KINDS, "breaker failure")),
]
"""What counts as a failed call for the breaker; other 4xx never count unless listed."""

FallbackTriggers = Annotated[
    tuple[FailureKind | int, ...],
    BeforeValidator(_conditions(_ALL_KINDS, "fallback trigger")),
]
"""When a fallback is served: upstream failures, rejections, or exact statuses."""
