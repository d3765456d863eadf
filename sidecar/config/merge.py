"""Merging `defaults` into upstreams and upstreams into routes, remembering who wrote what.

This module owns the merge semantics (SPEC §3.2): an upstream overrides `defaults` key by
key, nested mappings merge recursively, lists and scalars replace, an explicit `null`
replaces; a route merges the same way over its upstream's effective policy. Alongside the
merged data it records, for every node, the path where the user wrote it, so a bad value
inherited from `defaults` is reported once, at its line in `defaults`, not once per
upstream. It works on plain data before validation and must not judge values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar.config.base import ConfigModel
from sidecar.config.issue import Loc
from sidecar.config.policy import PolicyConfig
from sidecar.config.root import SidecarConfig
from sidecar.config.upstream import ROUTE_POLICY_KEYS, RouteConfig, UpstreamConfig


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a merged node was written: a path in the file; `key` means "at its key"."""

    loc: Loc
    key: bool = False


@dataclass(frozen=True, slots=True)
class DerivedKey:
    """A key the user wrote that the loader derives itself (e.g. `name` in an upstream)."""

    loc: Loc
    reason: str


Source = Callable[[Loc], Origin]


@dataclass(slots=True)
class Merged:
    """The data to validate, each node's origin, and derived keys written by hand."""

    data: Any
    origins: dict[Loc, Origin]
    derived_keys: list[DerivedKey]


def _raw(loc: Loc) -> Source:
    return lambda rest: Origin((*loc, *rest))


def _child(source: Source, key: str | int) -> Source:
    return lambda rest: source((key, *rest))


class _Merger:
    __slots__ = ("derived", "origins")

    def __init__(self) -> None:
        self.origins: dict[Loc, Origin] = {}
        self.derived: list[DerivedKey] = []

    def place(self, value: Any, source: Source, dst: Loc) -> Any:
        """Copy a value to `dst`, recording the origin of it and of everything inside it."""
        self.origins[dst] = source(())
        if isinstance(value, dict):
            return {k: self.place(v, _child(source, k), (*dst, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.place(v, _child(source, i), (*dst, i)) for i, v in enumerate(value)]
        return value

    def overlay(
        self, base: Any, base_source: Source, top: Any, top_source: Source, dst: Loc
    ) -> Any:
        """`top` over `base`: mappings merge key by key; anything else in `top` replaces."""
        if not (isinstance(base, dict) and isinstance(top, dict)):
            return self.place(top, top_source, dst)
        self.origins[dst] = top_source(())
        out: dict[str, Any] = {}
        for key, value in base.items():
            if key in top:
                out[key] = self.overlay(
                    value, _child(base_source, key), top[key], _child(top_source, key), (*dst, key)
                )
            else:
                out[key] = self.place(value, _child(base_source, key), (*dst, key))
        for key, value in top.items():
            if key not in base:
                out[key] = self.place(value, _child(top_source, key), (*dst, key))
        return out

    def refuse_derived(
        self, raw: dict[str, Any], loc: Loc, model: type[ConfigModel]
    ) -> dict[str, Any]:
        """Drop keys the loader derives, noting each so it is reported as unknown."""
        derived: dict[str, str] = model.derived_fields
        for key in raw:
            if key in derived:
                self.derived.append(DerivedKey((*loc, key), derived[key]))
        return {k: v for k, v in raw.items() if k not in derived}

    def upstream(self, name: str, raw: Any, defaults: dict[str, Any]) -> Any:
        loc: Loc = ("upstreams", name)
        if not isinstance(raw, dict):
            return self.place(raw, _raw(loc), loc)
        raw = self.refuse_derived(raw, loc, UpstreamConfig)
        own = {k: v for k, v in raw.items() if k != "routes"}
        merged = self.overlay(defaults, _raw(("defaults",)), own, _raw(loc), loc)
        self.origins[(*loc, "name")] = Origin(loc, key=True)
        merged["name"] = name
        if "routes" in raw:
            merged["routes"] = self.routes(raw["routes"], merged, loc)
        return merged

    def routes(self, raw: Any, upstream: dict[str, Any], upstream_loc: Loc) -> Any:
        loc: Loc = (*upstream_loc, "routes")
        if not isinstance(raw, list):
            return self.place(raw, _raw(loc), loc)
        self.origins[loc] = Origin(loc)
        return [self.route(item, upstream, upstream_loc, (*loc, i)) for i, item in enumerate(raw)]

    def route(self, raw: Any, upstream: dict[str, Any], upstream_loc: Loc, loc: Loc) -> Any:
        if not isinstance(raw, dict):
            return self.place(raw, _raw(loc), loc)
        raw = self.refuse_derived(raw, loc, RouteConfig)
        inherited = {k: upstream[k] for k in ROUTE_POLICY_KEYS if k in upstream}
        merged: dict[str, Any] = self.overlay(
            inherited, self._merged_source(upstream_loc), raw, _raw(loc), loc
        )
        self.origins[(*loc, "own_breaker")] = Origin(loc)
        merged["own_breaker"] = "circuit_breaker" in raw
        return merged

    def _merged_source(self, loc: Loc) -> Source:
        """A source that reads origins already recorded under `loc` (the merged upstream)."""
        return lambda rest: self.origins[(*loc, *rest)]


def merge_config(raw: dict[str, Any]) -> Merged:
    """Produce the data `SidecarConfig` validates: upstreams and routes fully merged."""
    merger = _Merger()
    raw = merger.refuse_derived(raw, (), SidecarConfig)
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key != "upstreams":
            data[key] = merger.place(value, _raw((key,)), (key,))
    defaults_raw = raw.get("defaults")
    policy_keys = PolicyConfig.file_keys()
    defaults = (
        {k: v for k, v in defaults_raw.items() if k in policy_keys}
        if isinstance(defaults_raw, dict)
        else {}
    )
    if "upstreams" in raw:
        upstreams = raw["upstreams"]
        if isinstance(upstreams, dict):
            merger.origins[("upstreams",)] = Origin(("upstreams",))
            data["upstreams"] = {
                name: merger.upstream(name, value, defaults) for name, value in upstreams.items()
            }
        else:
            data["upstreams"] = merger.place(upstreams, _raw(("upstreams",)), ("upstreams",))
    return Merged(data, merger.origins, merger.derived)
