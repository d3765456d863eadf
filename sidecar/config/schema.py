"""The JSON Schema of the config file, for editors and CI (`sidecar schema`).

This module owns the difference between the models and the file: the schema describes
what a user writes, so fields the loader derives (`name` of an upstream, `own_breaker`
of a route, `source_path`) are left out, and defaults are shown the way they are written
in YAML (`5s`, `1MiB`, `50%`) rather than as the numbers the models hold.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import TypeAdapter
from pydantic_core import PydanticUndefined

from sidecar.config.base import ConfigModel
from sidecar.config.root import SidecarConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def config_models() -> dict[str, type[ConfigModel]]:
    """Every config model reachable from `SidecarConfig`, by class name (the `$defs` keys)."""
    found: dict[str, type[ConfigModel]] = {}
    pending: list[type[ConfigModel]] = [SidecarConfig]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            pending.extend(_models_in(field.annotation))
    return found


def _models_in(annotation: Any) -> list[type[ConfigModel]]:
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _written_defaults(model: type[ConfigModel]) -> dict[str, Any]:
    """Each plain default as it would be written in YAML (through the field's serializer)."""
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.default is PydanticUndefined or name in model.derived_fields:
            continue
        annotation: Any = field.annotation
        if field.metadata:
            annotation = Annotated[annotation, *field.metadata]
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        defaults[name] = adapter.dump_python(field.default, mode="json")
    return defaults


def _finish(node: dict[str, Any], model: type[ConfigModel]) -> None:
    """Drop derived fields and rewrite defaults in their written form."""
    properties: dict[str, Any] = node.get("properties", {})
    for name in model.derived_fields:
        properties.pop(name, None)
    if "required" in node:
        node["required"] = [name for name in node["required"] if name not in model.derived_fields]
        if not node["required"]:
            del node["required"]
    for name, value in _written_defaults(model).items():
        if name in properties:
            properties[name]["default"] = value


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file."""
    schema = SidecarConfig.model_json_schema()
    models = config_models()
    _finish(schema, SidecarConfig)
    for name, definition in schema.get("$defs", {}).items():
        if name in models:
            _finish(definition, models[name])
    # Upstream names become metric labels; say so where editors can check it.
    schema["properties"]["upstreams"]["propertyNames"] = {"pattern": r"^[A-Za-z0-9_.-]+$"}
    schema["title"] = "resilience sidecar config"
    return {"$schema": SCHEMA_DIALECT, **schema}
