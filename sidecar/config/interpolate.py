"""`${VAR}` and `${VAR:-default}` substitution from the environment, before YAML parsing.

This module owns the substitution rules and the map back from positions in the
substituted text to positions in the file as written, so an error in a value that came
from `${TIMEOUT}` still points at the user's line and column. Rules, like a shell:
`${VAR}` needs VAR set (empty is fine); `${VAR:-default}` uses the default when VAR is
unset or empty; `$${` writes a literal `${`; YAML comments are left alone. The value is
inserted as text, so quote the placeholder when a value may contain YAML syntax.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.config.document import Position

_PLACEHOLDER = re.compile(r"\$(\$)?\{([^}\n]*)(\})?")
_SCALAR_STARTS = frozenset(" \t:-[{,")
_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Span:
    """One replacement: [new_start, new_end) in the output came from [old_start, old_end)."""

    new_start: int
    new_end: int
    old_start: int
    old_end: int


@dataclass(frozen=True, slots=True)
class InterpolationProblem:
    """A placeholder that could not be substituted, at its position in the file."""

    position: Position
    message: str


class SourceMap:
    """Maps positions in the substituted text back to the original text."""

    __slots__ = ("_new_lines", "_old_lines", "_spans")

    def __init__(self, old: str, new: str, spans: list[_Span]) -> None:
        self._spans = spans
        self._old_lines = _line_starts(old)
        self._new_lines = _line_starts(new)

    def original(self, position: Position) -> Position:
        """Where the character at `position` of the substituted text was written."""
        if not self._spans:
            return position
        line_index = min(position.line - 1, len(self._new_lines) - 1)
        offset = self._new_lines[line_index] + position.column - 1
        old = offset
        for span in self._spans:
            if offset < span.new_start:
                break
            if offset < span.new_end:
                old = span.old_start  # inside a substituted value: point at its `${`
                break
            old = offset - span.new_end + span.old_end
        line = bisect.bisect_right(self._old_lines, old) - 1
        return Position(line + 1, old - self._old_lines[line] + 1)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(match.end() for match in re.finditer("\n", text))
    return starts


def _comment_start(line: str) -> int:
    """Index of a `#` comment in one line, or its length; quotes are tracked roughly.

    A quote opens a string only where a YAML scalar can start (after `:`, `-`, `[`, `{`,
    `,`, a blank or at the start), so the apostrophe in `it's` does not hide a comment.
    """
    quote: str | None = None
    escaped = False
    previous = " "
    for index, char in enumerate(line):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote and quote == "'" and line[index + 1 : index + 2] == "'":
                escaped = True  # '' is a quote inside a single-quoted string
            elif char == quote:
                quote = None
        elif char in "'\"" and previous in _SCALAR_STARTS:
            quote = char
        elif char == "#" and previous.isspace():
            return index
        previous = char
    return len(line)


def interpolate(
    text: str, environ: Mapping[str, str]
) -> tuple[str, SourceMap, list[InterpolationProblem]]:
    """Substitute every placeholder outside comments; report each one that cannot be."""
    pieces: list[str] = []
    spans: list[_Span] = []
    problems: list[InterpolationProblem] = []
    old_offset = 0
    new_offset = 0
    for line_number, line in enumerate(text.splitlines(keepends=True), start=1):
        code_end = _comment_start(line)
        cursor = 0
        for match in _PLACEHOLDER.finditer(line, 0, code_end):
            replacement = _replace(match, environ, line_number, problems)
            if replacement is None:
                # Substitute nothing: the YAML stays parseable, and the loader mutes the
                # follow-on errors of this line (the placeholder error says it all).
                replacement = ""
            before = line[cursor : match.start()]
            pieces.append(before)
            new_offset += len(before)
            spans.append(
                _Span(
                    new_offset,
                    new_offset + len(replacement),
                    old_offset + match.start(),
                    old_offset + match.end(),
                )
            )
            pieces.append(replacement)
            new_offset += len(replacement)
            cursor = match.end()
        rest = line[cursor:]
        pieces.append(rest)
        new_offset += len(rest)
        old_offset += len(line)
    new_text = "".join(pieces)
    return new_text, SourceMap(text, new_text, spans), problems


def _replace(
    match: re.Match[str],
    environ: Mapping[str, str],
    line_number: int,
    problems: list[InterpolationProblem],
) -> str | None:
    """The text for one placeholder, or None (and a problem recorded) when it has none."""
    where = Position(line_number, match.start() + 1)
    if match.group(1):
        return "${" + match.group(2) + (match.group(3) or "")
    body = match.group(2)
    if match.group(3) is None:
        problems.append(InterpolationProblem(where, f"'${{{body}' is missing its closing '}}'"))
        return None
    parsed = _BODY.fullmatch(body)
    if parsed is None:
        problems.append(
            InterpolationProblem(
                where,
                f"'${{{body}}}' is not a valid placeholder (use ${{NAME}} or ${{NAME:-default}})",
            )
        )
        return None
    name, default = parsed.group(1), parsed.group(2)
    if default is not None and "${" in default:
        problems.append(
            InterpolationProblem(where, f"'${{{body}}}': nested placeholders are not supported")
        )
        return None
    value = environ.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        problems.append(
            InterpolationProblem(
                where,
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-value}})",
            )
        )
        return None
    return value
