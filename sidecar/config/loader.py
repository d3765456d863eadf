"""Loading a config file: text → interpolation → YAML → merge → validation → issues.

This module owns the order of those steps and the rule that every problem is collected
and raised at once as one `ConfigError` (SPEC §3.4): interpolation, YAML, unknown-key and
value errors all come back together, sorted by position. It never exits the process and
never prints; the command line decides what to do with a `ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from sidecar.config.base import ConfigModel
from sidecar.config.document import Document, parse_document
from sidecar.config.explain import Explainer, Located
from sidecar.config.interpolate import SourceMap, interpolate
from sidecar.config.issue import ConfigError, ConfigIssue, Loc, dotted
from sidecar.config.merge import Merged, Origin, merge_config
from sidecar.config.root import SidecarConfig

M = TypeVar("M", bound=ConfigModel)


def load_config(path: str | Path) -> SidecarConfig:
    """Load and validate a config file; relative paths in it are relative to its folder."""
    file = Path(path)
    source = str(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue(source, None, None, "", "is not UTF-8 text")]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [ConfigIssue(source, None, None, "", f"cannot be read: {reason}")]
        ) from None
    # Absolute but not resolved: a reload must re-read the path it was given. A mounted
    # ConfigMap's file is a symlink through `..data` into a timestamped folder that the next
    # update replaces and deletes; the resolved path would keep pointing at the old folder.
    absolute = file.absolute()
    return _load(text, source, absolute.parent, absolute)


def load_config_text(
    text: str, source: str = "<string>", base_dir: Path | None = None
) -> SidecarConfig:
    """Validate config text; `source` names it in messages, `base_dir` anchors relative paths."""
    return _load(text, source, base_dir, None)


def load_section(model: type[M], data: object, loc: Loc, source: str = "request body") -> M:
    """Validate one section given as plain data, e.g. a `faults:` body sent to the admin API.

    `loc` is where the section would sit in a file (`("upstreams", "payments", "faults")`),
    so problems read exactly as `sidecar check` words them, with that dotted path; they are
    raised together as one `ConfigError` whose issues have no line numbers.
    """
    wrapped: Any = data
    for part in reversed(loc):
        wrapped = {part: wrapped}
    try:
        return model.model_validate(data, context={"base_dir": None})
    except ValidationError as exc:
        errors = exc.errors()
        for error in errors:
            error["loc"] = (*loc, *error["loc"])
        # Every node was written by the sender exactly where it is: origins are the identity.
        origins = {path: Origin(path) for path in _node_paths(wrapped, ())}
        explainer = Explainer(Merged(wrapped, origins, []), {})
        issues = [_issue(source, item, None) for item in explainer.explain(errors)]
        raise ConfigError(list(dict.fromkeys(issues))) from None


def _node_paths(node: Any, loc: Loc) -> Iterator[Loc]:
    yield loc
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _node_paths(child, (*loc, str(key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _node_paths(child, (*loc, index))


def _load(text: str, source: str, base_dir: Path | None, source_path: Path | None) -> SidecarConfig:
    substituted, source_map, interpolation_problems = interpolate(text, os.environ)
    found: list[Located] = [
        Located(problem.position, "", problem.message) for problem in interpolation_problems
    ]
    # A placeholder that could not be substituted is replaced by nothing, which then also
    # fails as a missing or empty value; that says nothing new, so those lines are muted.
    muted_lines = {problem.position.line for problem in interpolation_problems}
    document = parse_document(substituted)
    parsed: list[Located] = [
        Located(problem.position, dotted(problem.loc), problem.message)
        for problem in document.problems
    ]
    config, validation = _validate(document, base_dir, source_path)
    issues = [_issue(source, item, None) for item in found]
    for item in parsed + validation:
        issue = _issue(source, item, source_map)
        if issue.line not in muted_lines:
            issues.append(issue)
    if issues or config is None:
        raise ConfigError(_ordered(issues))
    return config


def _validate(
    document: Document, base_dir: Path | None, source_path: Path | None
) -> tuple[SidecarConfig | None, list[Located]]:
    """Validate the parsed data; returns the config, or None and what is wrong with it."""
    if document.empty:
        return None, [Located(None, "", "the file is empty; a config needs at least `version: 1`")]
    data = document.data
    if data is None:
        return None, []  # a YAML syntax error was already reported
    if not isinstance(data, dict):
        where = document.marks[()].value if () in document.marks else None
        keys = ", ".join(SidecarConfig.file_keys())
        kind = "a list" if isinstance(data, list) else f"the bare value {data!r}"
        return None, [Located(where, "", f"expected a mapping with keys {keys}, got {kind}")]
    merged = merge_config(data)
    merged.origins[()] = Origin(())
    explainer = Explainer(merged, document.marks)
    located = [explainer.derived_key(key.loc, key.reason) for key in merged.derived_keys]
    if source_path is not None:
        merged.data["source_path"] = source_path
    context = {"base_dir": base_dir}
    try:
        config = SidecarConfig.model_validate(merged.data, context=context)
    except ValidationError as exc:
        located += explainer.explain(exc.errors())
        return None, located
    return (None if located else config), located


def _issue(source: str, item: Located, source_map: SourceMap | None) -> ConfigIssue:
    position = item.position
    if position is not None and source_map is not None:
        position = source_map.original(position)
    line = None if position is None else position.line
    column = None if position is None else position.column
    return ConfigIssue(source, line, column, item.path, item.message)


def _ordered(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """File order, each issue once (a rule broken in `defaults` is seen once per upstream)."""
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda issue: (issue.line or 0, issue.column or 0))
