"""`SidecarConfig`, the whole validated config, and the rules that span its sections.

This module owns the root model and the contradictions SPEC §3.3 names across sections:
listeners naming missing upstreams, two listeners on one address, two upstreams claiming
one host, an open proxy (`unknown_hosts: allow` on a non-loopback listener), an exposed
admin API without a token, and an upstream endpoint that is the sidecar itself. It also
builds the implicit upstreams of forward listeners. It must not read files.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sidecar.config.address import Endpoint
from sidecar.config.base import ConfigModel, Flag, did_you_mean
from sidecar.config.issue import RuleError, Violation
from sidecar.config.policy import PolicyConfig
from sidecar.config.process import (
    AccessLogConfig,
    AdminConfig,
    ForwardConfig,
    LimitsConfig,
    ListenerConfig,
    ShutdownConfig,
    UnknownHosts,
)
from sidecar.config.upstream import UpstreamConfig

_EGRESS = ListenerConfig.model_validate({"name": "egress", "bind": "127.0.0.1:15001"})


class SidecarConfig(ConfigModel):
    """The effective config: every upstream and route already carries its merged policy."""

    derived_fields: ClassVar[dict[str, str]] = {
        "source_path": "it is set to the file the config was loaded from"
    }

    version: Literal[1] = Field(description="Config format version; must be 1.")
    admin: AdminConfig = Field(default_factory=AdminConfig)
    listeners: tuple[ListenerConfig, ...] = Field(
        default=(_EGRESS,), description="Ports the application sends requests to."
    )
    forward: ForwardConfig = Field(default_factory=ForwardConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)
    response_headers: Flag = Field(
        default=True, description="Add the x-sidecar-* response headers (SPEC §4.5)."
    )
    defaults: PolicyConfig = Field(
        default_factory=PolicyConfig,
        description="The policy every upstream starts from; upstreams override it key by key.",
    )
    upstreams: dict[str, UpstreamConfig] = Field(
        default_factory=dict, description="Upstream services by name."
    )
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("listeners", mode="after")
    @classmethod
    def _at_least_one(cls, value: tuple[ListenerConfig, ...]) -> tuple[ListenerConfig, ...]:
        if not value:
            raise ValueError("at least one listener is needed (e.g. 127.0.0.1:15001)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SidecarConfig:
        problems = [
            *self._listener_problems(),
            *self._host_problems(),
            *self._exposure_problems(),
        ]
        if problems:
            raise RuleError(*problems)
        return self

    def _listener_problems(self) -> list[Violation]:
        problems: list[Violation] = []
        names: dict[str, int] = {}
        for index, listener in enumerate(self.listeners):
            if listener.name in names:
                problems.append(
                    Violation(
                        ("listeners", index, "name"),
                        f"{listener.name!r} is already the name of listeners[{names[listener.name]}]",
                    )
                )
            names.setdefault(listener.name, index)
            if listener.upstream is not None and listener.upstream not in self.upstreams:
                known = ", ".join(self.upstreams)
                hint = did_you_mean(listener.upstream, self.upstreams) or (
                    f" (configured: {known})" if known else " (no upstreams are configured)"
                )
                problems.append(
                    Violation(
                        ("listeners", index, "upstream"),
                        f"{listener.upstream!r} is not a configured upstream{hint}",
                    )
                )
            if listener.bind.overlaps(self.admin.bind):
                problems.append(
                    Violation(
                        ("listeners", index, "bind"),
                        f"{listener.bind} is the admin address ({self.admin.bind})",
                    )
                )
            for other_index, other in enumerate(self.listeners[:index]):
                if listener.bind.overlaps(other.bind):
                    problems.append(
                        Violation(
                            ("listeners", index, "bind"),
                            f"{listener.bind} is already used by listener {other.name!r} "
                            f"(listeners[{other_index}])",
                        )
                    )
        return problems

    def _host_problems(self) -> list[Violation]:
        problems: list[Violation] = []
        claimed: dict[str, str] = {}
        own = {str(listener.bind) for listener in self.listeners} | {str(self.admin.bind)}
        for name, upstream in self.upstreams.items():
            if upstream.name != name:
                problems.append(
                    Violation(
                        ("upstreams", name, "name"), f"{upstream.name!r} differs from its key"
                    )
                )
            for index, host in enumerate(upstream.hosts):
                if host in claimed and claimed[host] != name:
                    problems.append(
                        Violation(
                            ("upstreams", name, "hosts", index),
                            f"{host!r} is already claimed by upstream {claimed[host]!r}",
                            also=(("upstreams", name, "endpoints"),),
                        )
                    )
                claimed.setdefault(host, name)
            for index, endpoint in enumerate(upstream.endpoints):
                if endpoint.authority in own:
                    problems.append(
                        Violation(
                            ("upstreams", name, "endpoints", index),
                            f"{endpoint.url} is one of the sidecar's own addresses (a loop)",
                        )
                    )
        return problems

    def _exposure_problems(self) -> list[Violation]:
        problems: list[Violation] = []
        if self.forward.unknown_hosts is UnknownHosts.ALLOW:
            for index, listener in enumerate(self.listeners):
                if listener.upstream is None and not listener.bind.is_loopback:
                    problems.append(
                        Violation(
                            ("listeners", index, "bind"),
                            f"{listener.bind} is not loopback, so forward.unknown_hosts must be "
                            "deny (allow would make this an open proxy)",
                            also=(("forward", "unknown_hosts"),),
                        )
                    )
        if not self.admin.bind.is_loopback and self.admin.token_file is None:
            problems.append(
                Violation(
                    ("admin", "bind"),
                    f"{self.admin.bind} is not loopback, so admin.token_file is required",
                    also=(("admin",),),
                )
            )
        return problems

    def implicit_upstream(self, name: str, endpoint: Endpoint | None) -> UpstreamConfig:
        """An upstream for a host seen on a forward listener, built from `defaults`.

        `endpoint` None is the shared overflow upstream (`other`): it has no endpoints of
        its own, each request goes to its own authority. Built without validation, since
        such names (`api.example.com:443`) and an empty endpoint list are deliberate here.
        """
        policy = {key: getattr(self.defaults, key) for key in PolicyConfig.model_fields}
        endpoints = () if endpoint is None else (endpoint,)
        hosts = () if endpoint is None else (endpoint.authority,)
        return UpstreamConfig.model_construct(name=name, endpoints=endpoints, hosts=hosts, **policy)
