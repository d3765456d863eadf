"""Config errors as the user sees them: where (file, line, column, dotted path) and what.

This module owns the shape of a config error (`ConfigIssue`), the exception that carries
all of them at once (`ConfigError`), and `RuleError`, the exception model validators raise
so that a cross-field rule can still point at the one field the user has to change. It
must not decide what is valid; the models and the loader do that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file, printed as `file:line:col: path: message`."""

    source: str
    line: int | None  # 1-based; None when the problem has no place (empty file, I/O)
    column: int | None  # 1-based
    path: str  # dotted, e.g. `upstreams.payments.timeouts.connect`; "" for the file
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ValueError):
    """A config could not be loaded; `issues` holds every problem found, in file order.

    A ValueError (the stdlib meaning: a bad value) and deliberately independent of the
    request-path errors in `sidecar.errors`, so loading never imports runtime code.
    """

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


@dataclass(frozen=True, slots=True)
class Violation:
    """A rule broken inside one model, located relative to that model.

    `at` is the field the message talks about. When the user did not write that field
    (it came from a default), the loader tries the paths in `also`, then falls back to
    the model itself, so the error lands on a line the user actually wrote.
    """

    at: Loc
    message: str
    also: tuple[Loc, ...] = ()


class RuleError(ValueError):
    """Raised by model validators; pydantic keeps it in the error's context for the loader."""

    def __init__(self, *violations: Violation) -> None:
        self.violations = violations
        super().__init__("; ".join(_plain(v) for v in violations))


def _plain(violation: Violation) -> str:
    """How a violation reads when a model is built in Python rather than from a file."""
    where = ".".join(str(part) for part in violation.at)
    return f"{where}: {violation.message}" if where else violation.message


def dotted(loc: Loc) -> str:
    """`("upstreams", "a", "routes", 0, "match")` → `upstreams.a.routes[0].match`.

    Keys that contain a dot are bracketed (`upstreams['api.v1'].hosts`) so the path stays
    unambiguous for upstream names like `api.v1`.
    """
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part or "." in part or " " in part:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text
