"""The embedded default config (SPEC §3.1), used by `sidecar run` when given no file.

It is written as YAML and loaded through the same loader as any file, so it can never
drift from what a user could write: admin on 127.0.0.1:15000, one forward-proxy listener
`egress` on 127.0.0.1:15001, unknown hosts allowed (each gets an implicit upstream built
from `defaults`), and every other key at its declared default.
"""

from __future__ import annotations

from functools import cache

from sidecar.config.loader import load_config_text
from sidecar.config.root import SidecarConfig

DEFAULT_SOURCE = "<embedded default>"

DEFAULT_CONFIG_YAML = """\
version: 1
admin:
  bind: 127.0.0.1:15000
listeners:
  - name: egress
    bind: 127.0.0.1:15001
forward:
  unknown_hosts: allow
"""


@cache
def default_config() -> SidecarConfig:
    """The embedded default; built once, shared safely because configs are frozen."""
    return load_config_text(DEFAULT_CONFIG_YAML, source=DEFAULT_SOURCE)
