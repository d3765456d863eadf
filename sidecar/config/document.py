"""YAML text → plain Python data plus the line and column of every key and value.

This module owns reading YAML the way the config needs it: YAML 1.2 scalars (`on`, `yes`
and `no` stay strings, only `true`/`false` are booleans, `1:30` is not a number), mapping
keys always as strings, merge keys (`<<: *common`), and duplicate keys reported as errors
instead of the last one silently winning. It must not know the config's schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from sidecar.config.issue import Loc

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


_SPECIAL_FLOATS = {
    ".inf": float("inf"),
    "+.inf": float("inf"),
    "-.inf": float("-inf"),
    ".nan": float("nan"),
}


class _CoreResolver(BaseResolver):
    """The YAML 1.2 core schema: fewer surprises than PyYAML's YAML 1.1 default."""


_CoreResolver.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreResolver.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _Loader(Reader, Scanner, Parser, Composer, _CoreResolver):
    """Parses to a node tree only; we build values ourselves to keep every position."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column in the text that was parsed."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class NodeMarks:
    """Where a value is written, and where its key is (None for list items and the root)."""

    key: Position | None
    value: Position


@dataclass(frozen=True, slots=True)
class YamlProblem:
    """A problem found while reading YAML (syntax, duplicate key, unsupported tag)."""

    position: Position | None
    loc: Loc
    message: str


@dataclass(slots=True)
class Document:
    """The parsed data (None for an empty file), the marks by path, and reading problems."""

    data: Any = None
    marks: dict[Loc, NodeMarks] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)
    empty: bool = False


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def parse_document(text: str) -> Document:
    """Parse one YAML document; syntax errors become problems rather than exceptions."""
    document = Document()
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark is not None else None
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        document.problems.append(YamlProblem(where, (), f"invalid YAML: {detail}"))
        return document
    except yaml.YAMLError as exc:
        document.problems.append(YamlProblem(None, (), f"invalid YAML: {exc}"))
        return document
    finally:
        loader.dispose()
    if root is None:
        document.empty = True
        return document
    builder = _Builder(document)
    document.data = builder.value(root, (), None)
    return document


class _Builder:
    """Walks the node tree once, recording marks and problems as it goes."""

    __slots__ = ("_document", "_reported", "_stack")

    def __init__(self, document: Document) -> None:
        self._document = document
        self._stack: list[int] = []  # ids of collections being built, to catch cycles
        # An anchored node is walked once per alias; report its problems only once.
        self._reported: set[tuple[Position, str]] = set()

    def value(self, node: Node, loc: Loc, key: Position | None) -> Any:
        self._document.marks.setdefault(loc, NodeMarks(key, _position(node)))
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self._stack:
            self._problem(node, loc, "an alias refers to itself (recursive structure)")
            return None
        self._stack.append(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [
                    self.value(item, (*loc, index), None) for index, item in enumerate(node.value)
                ]
            assert isinstance(node, MappingNode)
            return self._mapping(node, loc)
        finally:
            self._stack.pop()

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        own: dict[str, Any] = {}
        first_seen: dict[str, Position] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._problem(key_node, loc, "a mapping key must be a plain string")
                continue
            key = key_node.value
            if key == "<<" and key_node.style is None:
                merges.extend(
                    value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                )
                continue
            where = _position(key_node)
            if key in first_seen:
                self._problem(
                    key_node,
                    (*loc, key),
                    f"duplicate key {key!r} (first written on line {first_seen[key].line})",
                )
                continue
            first_seen[key] = where
            own[key] = self.value(value_node, (*loc, key), where)
        return self._merged(own, merges, loc)

    def _merged(self, own: dict[str, Any], merges: list[Node], loc: Loc) -> dict[str, Any]:
        """Apply `<<` merge keys: keys written here win, earlier merge sources beat later ones."""
        result = dict(own)
        for source in merges:
            if not isinstance(source, MappingNode):
                self._problem(source, loc, "'<<' must refer to a mapping (e.g. <<: *common)")
                continue
            inherited = self.value(source, loc, None)
            if isinstance(inherited, dict):
                for key, item in inherited.items():
                    result.setdefault(key, item)
        return result

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        text = node.value
        tag = node.tag
        if tag == _STR:
            return text
        try:
            if tag == _NULL:
                return None
            if tag == _BOOL:
                return text.lower() == "true"
            if tag == _INT:
                return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)
            if tag == _FLOAT:
                special = _SPECIAL_FLOATS.get(text.lower())
                return special if special is not None else float(text)
        except ValueError:
            self._problem(node, loc, f"{text!r} is not a valid {tag.rsplit(':', 1)[-1]}")
            return text
        self._problem(node, loc, f"unsupported YAML tag {tag!r}")
        return text

    def _problem(self, node: Node, loc: Loc, message: str) -> None:
        where = _position(node)
        if (where, message) not in self._reported:
            self._reported.add((where, message))
            self._document.problems.append(YamlProblem(where, loc, message))
