"""Loading a config file: text → interpolation → YAML → merge → validation → issues.

This module owns the order of those steps and the rule that every problem is collected
and raised at once as one `ConfigError` (SPEC §3.4): interpolation, YAML, unknown-key and
value errors all come back together, sorted by position. It never exits the process and
never prints; the command line decides what to do with a `ConfigError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from sidecar.config.document import Document, parse_document
from sidecar.config.explain import Explainer, Located
from sidecar.config.interpolate import SourceMap, interpolate
from sidecar.config.issue import ConfigError, ConfigIssue, dotted
from sidecar.config.merge import Origin, merge_config
from sidecar.config.root import SidecarConfig


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
    return _load(text, source, file.parent, file.resolve())


def load_config_text(
    text: str, source: str = "<string>", base_dir: Path | None = None
) -> SidecarConfig:
    """Validate config text; `source` names it in messages, `base_dir` anchors relative paths."""
    return _load(text, source, base_dir, None)


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
