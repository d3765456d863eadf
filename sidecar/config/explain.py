"""Turning pydantic's validation errors into `ConfigIssue`s a person can act on.

This module owns the message wording of SPEC §3.4 for errors the models find: it finds
the line the user wrote (through the merge origins and the YAML marks), names the dotted
path, the value and what would be valid, suggests the closest key for typos, and expands
`RuleError`s into one issue per broken rule. It must not decide validity itself.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from sidecar.config.base import ConfigModel, did_you_mean
from sidecar.config.document import NodeMarks, Position
from sidecar.config.issue import Loc, RuleError, dotted
from sidecar.config.merge import Merged, Origin
from sidecar.config.root import SidecarConfig


@dataclass(frozen=True, slots=True)
class Located:
    """An issue before the source name and the interpolation map are applied."""

    position: Position | None
    path: str
    message: str


def shown(value: object) -> str:
    """A value as it would be written in YAML, quoted when it is a string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def _step(annotation: Any, part: str | int) -> Any:
    """The type found one path element below `annotation`, or None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _step(typing.get_args(annotation)[0], part)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _step(arg, part)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return None if field is None else field.annotation
    if origin in (tuple, list) and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return typing.get_args(annotation)[1]
    return None


def _model(annotation: Any) -> type[ConfigModel] | None:
    """The config model class inside an annotation (through Annotated and Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model(arg)
        if found is not None:
            return found
    return None


def model_at(loc: Loc) -> type[ConfigModel] | None:
    """Which config model describes the mapping at `loc` (None if not a model)."""
    annotation: Any = SidecarConfig
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return _model(annotation)


def unknown_key_message(key: str, valid: tuple[str, ...]) -> str:
    """`unknown key 'x' (did you mean 'y'?)`, or the list of valid keys when none is close."""
    hint = did_you_mean(key, valid) or f" (valid keys: {', '.join(valid)})"
    return f"unknown key {key!r}{hint}"


class Explainer:
    """Maps errors at paths of the merged data to positions in the file as written."""

    __slots__ = ("_marks", "_merged")

    def __init__(self, merged: Merged, marks: dict[Loc, NodeMarks]) -> None:
        self._merged = merged
        self._marks = marks

    def explain(self, errors: list[ErrorDetails]) -> Iterator[Located]:
        """One or more located issues per pydantic error (a RuleError may carry several)."""
        for error in errors:
            loc = self._clean(error["loc"], keep_last=error["type"] == "missing")
            context = error.get("ctx") or {}
            cause = context.get("error")
            if error["type"] == "value_error" and isinstance(cause, RuleError):
                for violation in cause.violations:
                    candidates = [(*loc, *at) for at in (violation.at, *violation.also)]
                    target = self._preferred(loc, candidates)
                    yield self._locate(target or loc, violation.message, at_key=False)
            elif error["type"] == "extra_forbidden":
                model = model_at(loc[:-1])
                valid = model.file_keys() if model is not None else ()
                message = unknown_key_message(str(loc[-1]), valid)
                yield self._locate(loc, message, at_key=True, path_of_parent=True)
            else:
                yield self._locate(loc, self._message(error, loc, cause), at_key=False)

    def derived_key(self, loc: Loc, reason: str) -> Located:
        """A key such as `name` inside an upstream, which the loader fills in itself."""
        message = f"{str(loc[-1])!r} cannot be set here: {reason}"
        return self._at_file_loc(loc, message, True, True)

    def _clean(self, loc: tuple[str | int, ...], *, keep_last: bool) -> Loc:
        """Drop union tags and validator names pydantic puts in `loc`: keep real data keys."""
        clean: list[str | int] = []
        node: Any = self._merged.data
        for index, part in enumerate(loc):
            child = _child(node, part)
            if child is not _ABSENT:
                node = child
            elif not (keep_last and index == len(loc) - 1):
                continue
            clean.append(part)
        return tuple(clean)

    def _preferred(self, loc: Loc, candidates: list[Loc]) -> Loc | None:
        """The field a broken rule is reported at: one written right here if possible.

        When an upstream sets `open_duration: 40s` over a `max_open_duration: 30s` from
        `defaults`, the upstream's line is the one that made the rule fail.
        """
        origins = self._merged.origins
        written = [candidate for candidate in candidates if candidate in origins]
        here = origins[loc].loc if loc in origins else None
        for candidate in written:
            if here is not None and origins[candidate].loc[: len(here)] == here:
                return candidate
        return written[0] if written else None

    def _locate(
        self, loc: Loc, message: str, *, at_key: bool, path_of_parent: bool = False
    ) -> Located:
        """Find the longest written prefix of `loc`, then translate it to the file path."""
        origins = self._merged.origins
        depth = len(loc)
        while depth > 0 and loc[:depth] not in origins:
            depth -= 1
        origin = origins.get(loc[:depth], Origin(()))
        file_loc = (*origin.loc, *loc[depth:])
        exact = depth == len(loc)
        return self._at_file_loc(
            file_loc, message, at_key or origin.key or not exact, path_of_parent, origin.loc
        )

    def _at_file_loc(
        self,
        file_loc: Loc,
        message: str,
        at_key: bool,
        path_of_parent: bool,
        marked: Loc | None = None,
    ) -> Located:
        marks = self._marks.get(file_loc if marked is None else marked)
        position: Position | None = None
        if marks is not None:
            position = marks.key if at_key and marks.key is not None else marks.value
        path = dotted(file_loc[:-1] if path_of_parent else file_loc)
        return Located(position, path, message)

    def _message(self, error: ErrorDetails, loc: Loc, cause: object) -> str:
        kind = error["type"]
        value = error.get("input")
        context = error.get("ctx") or {}
        if kind == "missing":
            model = model_at(loc[:-1])
            field = model.model_fields.get(str(loc[-1])) if model is not None else None
            about = f" ({_lower_first(field.description)})" if field and field.description else ""
            return f"required key is missing{about}"
        if isinstance(cause, Exception) and kind in ("value_error", "assertion_error"):
            return str(cause)
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            model = model_at(loc)
            keys = f" with keys {', '.join(model.file_keys())}" if model is not None else ""
            if isinstance(value, list):
                return f"expected a mapping{keys}, got a list"
            if value is None:
                return f"expected a mapping{keys}, got nothing (null)"
            return f"expected a mapping{keys}, got the bare value {shown(value)}"
        template = _TEMPLATES.get(kind)
        if template is not None:
            bounds = {key: _number(bound) for key, bound in context.items()}
            return template.format(value=shown(value), **bounds)
        return f"{error['msg']}, got {shown(value)}"


_ABSENT = object()


def _number(value: object) -> object:
    """`0.0` → `0` in messages: bounds are declared as floats but read as whole numbers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _child(node: Any, part: str | int) -> Any:
    """`node[part]` when the data really has it, else `_ABSENT`."""
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return _ABSENT


def _lower_first(text: str) -> str:
    """A field description as a parenthetical: `One or more URLs.` → `one or more URLs`."""
    text = text.rstrip(".")
    if len(text) > 1 and text[1].islower():
        return text[0].lower() + text[1:]
    return text


_TEMPLATES: dict[str, str] = {
    "int_type": "expected a whole number, got {value}",
    "int_parsing": "expected a whole number, got {value}",
    "int_from_float": "expected a whole number, got {value}",
    "float_type": "expected a number, got {value}",
    "float_parsing": "expected a number, got {value}",
    "bool_type": "expected true or false, got {value}",
    "bool_parsing": "expected true or false, got {value}",
    "string_type": "expected a string, got {value}",
    "tuple_type": "expected a list, got {value}",
    "list_type": "expected a list, got {value}",
    "literal_error": "{value} is not valid here (expected {expected})",
    "enum": "{value} is not valid here (expected {expected})",
    "greater_than_equal": "must be at least {ge}, got {value}",
    "greater_than": "must be greater than {gt}, got {value}",
    "less_than_equal": "must be at most {le}, got {value}",
    "less_than": "must be less than {lt}, got {value}",
    "too_short": "needs at least {min_length} item(s), got {actual_length}",
    "too_long": "allows at most {max_length} item(s), got {actual_length}",
    "path_type": "expected a file path, got {value}",
    "finite_number": "expected a finite number, got {value}",
}
