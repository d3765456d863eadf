"""Config text for integration tests: the sidecar's YAML built from plain dicts.

Tests describe only what they care about (a listener kind, one upstream's policy); the admin
and shutdown keys come from `tests.harness.sidecar_yaml`. Every listener binds 127.0.0.1:0.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.harness import sidecar_yaml

__all__ = ["DEDICATED", "FORWARD", "config", "dedicated", "forward"]

DEDICATED = "app"  # the listener name `dedicated()` uses
FORWARD = "egress"  # the listener name `forward()` uses
BIND = "127.0.0.1:0"


def config(
    *, listeners: list[dict[str, Any]], upstreams: dict[str, Any] | None = None, **sections: Any
) -> str:
    """A complete config: the given listeners, upstreams and top-level sections."""
    document: dict[str, Any] = {"listeners": listeners}
    if upstreams:
        document["upstreams"] = upstreams
    document.update(sections)
    return sidecar_yaml(yaml.safe_dump(document, sort_keys=False))


def dedicated(endpoint: str, *, upstream: str = "svc", **policy: Any) -> str:
    """One dedicated listener `app` for one upstream with `endpoint` and the given keys."""
    return config(
        listeners=[{"name": DEDICATED, "bind": BIND, "upstream": upstream}],
        upstreams={upstream: {"endpoints": [endpoint], **policy}},
    )


def forward(upstreams: dict[str, Any] | None = None, **sections: Any) -> str:
    """One forward-proxy listener `egress`, plus the given upstreams and sections."""
    return config(listeners=[{"name": FORWARD, "bind": BIND}], upstreams=upstreams, **sections)
