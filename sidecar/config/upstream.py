"""Upstreams and their routes, as the runtime sees them: effective, defaults merged in.

This module owns `UpstreamConfig` (endpoints, the hosts it claims, load balancing, TLS,
outlier detection, health checks, routes) and `RouteConfig` (a match plus the policy
overrides a route may carry). Fields the loader derives rather than reads (`name` from the
mapping key, `own_breaker` from whether the route set `circuit_breaker`) are listed in
`derived_fields`. It must not merge: `sidecar.config.merge` hands it merged data.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sidecar.config.address import Endpoint, normalize_host, parse_host_entry
from sidecar.config.base import ConfigModel, Count, Flag, Methods, Name, PositiveCount, resolve_path
from sidecar.config.fallback import FallbackPolicy, FaultPolicy
from sidecar.config.issue import RuleError, Violation
from sidecar.config.policy import BreakerPolicy, PolicyConfig, RetryPolicy, TimeoutPolicy
from sidecar.config.units import PositiveDuration, Ratio, format_duration

ROUTE_POLICY_KEYS = ("timeouts", "retries", "circuit_breaker", "fallback", "faults")
"""The policy sections a route may override (SPEC §3.2); others are upstream-wide."""


class LoadBalancing(StrEnum):
    """How an endpoint is picked for each attempt."""

    ROUND_ROBIN = "round_robin"
    LEAST_REQUEST = "least_request"
    RANDOM = "random"


class TlsPolicy(ConfigModel):
    """TLS the sidecar originates to `https://` endpoints."""

    verify: Flag = Field(default=True, description="Verify the server certificate.")
    ca_file: Path | None = Field(
        default=None,
        description="PEM bundle to trust instead of the system store (relative to the file).",
    )
    server_name: str | None = Field(
        default=None, description="SNI and verified name; default: the endpoint host."
    )

    @field_validator("ca_file", mode="after")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Not checked for existence: it is usually a mounted secret that `sidecar check`
        # in CI cannot see. The runtime reads it at start and fails there, naming it.
        return None if value is None else resolve_path(value, info)

    @field_validator("server_name", mode="after")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        return None if value is None else normalize_host(value)


class OutlierPolicy(ConfigModel):
    """Passive health: eject an endpoint after consecutive failures (SPEC §4.1 step 4)."""

    consecutive_failures: Count = Field(
        default=5, description="Failures in a row that eject an endpoint (0 = off)."
    )
    base_ejection: PositiveDuration = Field(
        default=30.0, description="First ejection; longer for repeat offenders."
    )
    max_ejection: PositiveDuration = Field(
        default=300.0,
        description="Cap on one ejection, however often the endpoint was ejected before.",
    )
    max_ejected: Ratio = Field(
        default=0.5, description="Never eject more than this share of endpoints."
    )

    @model_validator(mode="after")
    def _ejection_bounds(self) -> OutlierPolicy:
        if self.max_ejection < self.base_ejection:
            raise RuleError(
                Violation(
                    ("max_ejection",),
                    f"max_ejection ({format_duration(self.max_ejection)}) must be at least "
                    f"base_ejection ({format_duration(self.base_ejection)})",
                    also=(("base_ejection",),),
                )
            )
        return self


class HealthCheckPolicy(ConfigModel):
    """Active health checks: a GET to `path` on every endpoint each `interval`."""

    path: str = Field(
        default="/health", description="Path (and query) requested with GET; must start with /."
    )
    interval: PositiveDuration = Field(default=10.0, description="Time between checks.")
    timeout: PositiveDuration = Field(default=1.0, description="A slower answer is a failure.")
    healthy: PositiveCount = Field(default=2, description="Passed checks in a row to return.")
    unhealthy: PositiveCount = Field(
        default=3, description="Failed checks in a row to leave rotation."
    )

    @field_validator("path", mode="after")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        # It is written as the request target: spaces or control characters would break
        # (or forge) the request line.
        if not value.isascii() or any(c <= " " or c == "\x7f" for c in value):
            raise ValueError(f"{value!r} must be ASCII without spaces or control characters")
        return value


class RouteMatch(ConfigModel):
    """Which requests a route takes; every given condition must hold."""

    path: str | None = Field(default=None, description="Exact path (without the query).")
    path_prefix: str | None = Field(default=None, description="Path prefix.")
    methods: Methods | None = Field(default=None, description="Methods; null matches all.")

    @model_validator(mode="after")
    def _consistent(self) -> RouteMatch:
        problems: list[Violation] = []
        if self.path is not None and self.path_prefix is not None:
            problems.append(Violation(("path_prefix",), "set path or path_prefix, not both"))
        for key in ("path", "path_prefix"):
            value = getattr(self, key)
            if value is not None and not value.startswith("/"):
                problems.append(Violation((key,), f"{value!r} must start with '/'"))
        if self.methods is not None and not self.methods:
            problems.append(
                Violation(("methods",), "an empty list matches nothing; omit it to match all")
            )
        if problems:
            raise RuleError(*problems)
        return self


class RouteConfig(ConfigModel):
    """A route inside an upstream: first match wins; its policy is the effective one.

    `timeouts`, `retries`, `circuit_breaker`, `fallback` and `faults` hold the upstream's
    effective values with the route's overrides merged in. `own_breaker` is true when the
    route set `circuit_breaker` itself; such a route gets its own breaker instance.
    """

    derived_fields: ClassVar[dict[str, str]] = {
        "own_breaker": "a route that sets circuit_breaker gets its own breaker"
    }

    name: Name | None = Field(
        default=None, description="Route label in metrics and logs (optional)."
    )
    match: RouteMatch = Field(description="Which requests this route takes.")
    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit_breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    fallback: FallbackPolicy = Field(default_factory=FallbackPolicy)
    faults: FaultPolicy | None = Field(default=None, description="Fault injection; off if null.")
    own_breaker: bool = Field(default=False, description="Set by the loader, not the file.")

    @property
    def label(self) -> str:
        """The `route` metric label: name, else the path or prefix, else the methods, else `*`."""
        if self.name is not None:
            return self.name
        match = self.match
        if match.path is not None:
            return match.path
        if match.path_prefix is not None:
            return match.path_prefix
        return ",".join(match.methods) if match.methods else "*"


class UpstreamConfig(PolicyConfig):
    """One upstream service: effective policy (defaults merged in) plus where it lives."""

    derived_fields: ClassVar[dict[str, str]] = {
        "name": "an upstream's name is its key under `upstreams`"
    }

    name: Name = Field(description="The key under `upstreams`.")
    endpoints: tuple[Endpoint, ...] = Field(
        min_length=1, description="One or more URLs; https:// originates TLS."
    )
    hosts: tuple[str, ...] = Field(
        default=(),
        validate_default=True,
        description="Authorities matched on forward listeners; default: the endpoints'.",
    )
    load_balancing: LoadBalancing = Field(
        default=LoadBalancing.ROUND_ROBIN, description="round_robin | least_request | random."
    )
    tls: TlsPolicy = Field(default_factory=TlsPolicy)
    outlier_detection: OutlierPolicy = Field(default_factory=OutlierPolicy)
    health_check: HealthCheckPolicy | None = Field(
        default=None, description="Active health checks; off if null."
    )
    routes: tuple[RouteConfig, ...] = Field(
        default=(), description="First match wins; a route overrides policy for its requests."
    )

    @field_validator("name", mode="after")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == "other":
            raise ValueError("'other' is reserved for the shared implicit upstream")
        return value

    @field_validator("hosts", mode="after")
    @classmethod
    def _effective_hosts(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        problems: list[Violation] = []
        hosts: list[str] = []
        for index, entry in enumerate(value):
            try:
                hosts.append(parse_host_entry(entry))
            except ValueError as exc:
                problems.append(Violation((index,), str(exc)))
        if problems:
            raise RuleError(*problems)
        if hosts:
            return tuple(hosts)
        endpoints: tuple[Endpoint, ...] = info.data.get("endpoints", ())
        return tuple(dict.fromkeys(endpoint.authority for endpoint in endpoints))

    @model_validator(mode="after")
    def _no_duplicates(self) -> UpstreamConfig:
        problems: list[Violation] = []
        seen = Counter[str]()
        for index, endpoint in enumerate(self.endpoints):
            seen[endpoint.url] += 1
            if seen[endpoint.url] == 2:
                problems.append(Violation(("endpoints", index), f"{endpoint.url} is listed twice"))
        names = Counter[str]()
        for index, route in enumerate(self.routes):
            if route.name is not None:
                names[route.name] += 1
                if names[route.name] == 2:
                    problems.append(
                        Violation(
                            ("routes", index, "name"), f"route name {route.name!r} is used twice"
                        )
                    )
        if problems:
            raise RuleError(*problems)
        return self
