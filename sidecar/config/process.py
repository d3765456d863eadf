"""Process-wide sections: admin API, listeners, forward-proxy behaviour, shutdown, limits.

This module owns the sections that configure the daemon itself rather than an upstream
(SPEC §3.2, `admin` to `response_headers`). Rules that need more than one section (a
listener naming an upstream, two listeners on one port) live on `SidecarConfig`, not here.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from sidecar.config.address import BindAddress
from sidecar.config.base import ConfigModel, Count, Flag, Name, PositiveCount, resolve_path
from sidecar.config.units import Duration, PositiveDuration, Size


class UnknownHosts(StrEnum):
    """What a forward listener does with a host no upstream claims."""

    ALLOW = "allow"  # proxy it through an implicit upstream built from `defaults`
    DENY = "deny"  # answer 403 `unknown_upstream`


class AdminConfig(ConfigModel):
    """The admin API (health, readiness, metrics, state, config, reload)."""

    bind: BindAddress = Field(
        default=BindAddress("127.0.0.1", 15000), description="Admin API address."
    )
    token_file: Path | None = Field(
        default=None,
        description="Bearer token for mutating endpoints; required if bind is not loopback.",
    )

    @field_validator("token_file", mode="after")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Resolved but not opened: it is a mounted secret, read by the runtime at start.
        return None if value is None else resolve_path(value, info)


class ListenerConfig(ConfigModel):
    """A port the application sends requests to: forward proxy, or dedicated to one upstream."""

    name: Name = Field(description="Listener name, in logs.")
    bind: BindAddress = Field(description="Address to listen on (port 0: any free port).")
    upstream: str | None = Field(
        default=None,
        description="Dedicated listener: every request goes to this upstream. "
        "Without it the listener is a forward proxy that routes by host.",
    )


class ForwardConfig(ConfigModel):
    """How forward listeners treat hosts no upstream claims."""

    unknown_hosts: UnknownHosts = Field(
        default=UnknownHosts.ALLOW,
        description="allow | deny; allow is refused on a non-loopback listener.",
    )
    max_implicit_upstreams: Count = Field(
        default=100, description="Beyond this, unknown hosts share the implicit upstream 'other'."
    )


class ShutdownConfig(ConfigModel):
    """Graceful shutdown after SIGTERM (SPEC §6)."""

    drain_delay: Duration = Field(
        default=5.0, description="Keep serving new requests this long after SIGTERM."
    )
    drain_timeout: Duration = Field(
        default=15.0, description="Then wait this long for in-flight requests."
    )


class LimitsConfig(ConfigModel):
    """Downstream limits that protect the sidecar from its own clients (SPEC §9)."""

    max_connections: PositiveCount = Field(
        default=1024, description="Downstream connections; more wait in the kernel backlog."
    )
    header_timeout: PositiveDuration = Field(
        default=10.0, description="Request line + headers must arrive within this (else 408)."
    )
    max_header_bytes: Size = Field(
        default=64 << 10, description="Request line + headers (else 431)."
    )
    keepalive_timeout: PositiveDuration = Field(
        default=60.0,
        description="A keep-alive client connection with no request for this long is closed.",
    )


class AccessLogConfig(ConfigModel):
    """The per-request JSON access line on stdout."""

    enabled: Flag = Field(default=True, description="One JSON line per request on stdout.")
    include_query: Flag = Field(
        default=False, description="Log query strings (they can hold secrets)."
    )
