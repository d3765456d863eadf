"""Tests that the shipped config files load and that reference.yaml documents every key."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from sidecar.config import SidecarConfig, load_config
from sidecar.config.base import ConfigModel
from sidecar.config.document import parse_document
from sidecar.config.schema import config_models

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
REFERENCE = CONFIG_DIR / "reference.yaml"
EXAMPLES = sorted((CONFIG_DIR / "examples").glob("*.yaml"))


def _models_in(annotation: Any) -> list[type[ConfigModel]]:
    """Config models inside an annotation (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, ConfigModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _items_type(annotation: Any, container: type) -> Any:
    """The element type of `tuple[X, ...]` / value type of `dict[str, X]` inside `annotation`."""
    origin = typing.get_origin(annotation)
    if origin is container:
        args = typing.get_args(annotation)
        return args[-1] if container is dict else args[0]
    for arg in typing.get_args(annotation):
        found = _items_type(arg, container)
        if found is not None:
            return found
    return None


def _walk(value: Any, annotation: Any, seen: dict[type[ConfigModel], set[str]]) -> None:
    """Record, for every model, the keys written wherever the reference uses that model."""
    if isinstance(value, dict):
        models = _models_in(annotation)
        if models and typing.get_origin(annotation) is not dict:
            model = models[0]
            seen.setdefault(model, set()).update(value)
            for key, item in value.items():
                field = model.model_fields.get(key)
                if field is not None:
                    _walk(item, field.annotation, seen)
            return
        element = _items_type(annotation, dict)
        if element is not None:
            for item in value.values():
                _walk(item, element, seen)
    elif isinstance(value, list):
        element = _items_type(annotation, tuple)
        if element is not None:
            for item in value:
                _walk(item, element, seen)


@pytest.mark.parametrize("path", [REFERENCE, *EXAMPLES], ids=lambda p: p.name)
def test_shipped_config_loads(path: Path) -> None:
    """reference.yaml and every example are valid configs."""
    assert isinstance(load_config(path), SidecarConfig)


def test_examples_exist() -> None:
    """The three documented example setups are shipped."""
    assert [path.name for path in EXAMPLES] == [
        "dedicated-listener.yaml",
        "forward-proxy.yaml",
        "https-upstream.yaml",
    ]


def _documented(model: type[ConfigModel], seen: dict[type[ConfigModel], set[str]]) -> set[str]:
    """Keys shown for a model, counting those shown for its base (an upstream's policy keys
    are documented once, under `defaults`)."""
    keys: set[str] = set()
    for cls in model.__mro__:
        if isinstance(cls, type) and issubclass(cls, ConfigModel):
            keys |= seen.get(cls, set())
    return keys


def test_reference_names_every_field_of_every_model() -> None:
    """Every key a user may write, in every section, appears in reference.yaml."""
    document = parse_document(REFERENCE.read_text(encoding="utf-8"))
    seen: dict[type[ConfigModel], set[str]] = {}
    _walk(document.data, SidecarConfig, seen)
    missing = {
        name: sorted(set(model.file_keys()) - _documented(model, seen))
        for name, model in config_models().items()
        if set(model.file_keys()) - _documented(model, seen)
    }
    assert missing == {}


def test_reference_shows_the_defaults() -> None:
    """The `defaults` section of reference.yaml equals the models' own defaults."""
    reference = load_config(REFERENCE)
    assert reference.defaults == SidecarConfig.model_validate({"version": 1}).defaults
    assert reference.limits == SidecarConfig.model_validate({"version": 1}).limits
    assert reference.shutdown == SidecarConfig.model_validate({"version": 1}).shutdown
