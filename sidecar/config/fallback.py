"""What is served when an upstream fails, and the faults injected to rehearse failure.

This module owns the `fallback` section (the stale-if-error cache and the static response,
SPEC §4.4) and the `faults` section (delay and abort injection). These are settings only:
the cache store and the fault stage live in the runtime and must not be imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sidecar.config.base import (
    ConfigModel,
    Flag,
    HeaderNames,
    Methods,
    PositiveCount,
    Status,
    header_name,
    resolve_path,
)
from sidecar.config.failure import FailureKind, FallbackTriggers
from sidecar.config.issue import RuleError, Violation
from sidecar.config.units import Duration, Ratio, Size, format_size

# The sidecar frames the body itself and strips hop-by-hop headers (SPEC §4.5, §9), so a
# static response may not set them: they would contradict the framing actually sent.
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


_CACHEABLE_METHODS = frozenset({"GET", "HEAD"})

# SPEC §3.2's `serve_on`; also what a static-only fallback answers on (it has no cache section).
DEFAULT_SERVE_ON: tuple[FailureKind, ...] = (
    FailureKind.CIRCUIT_OPEN,
    FailureKind.TIMEOUT,
    FailureKind.CONNECT_FAILURE,
    FailureKind.RESET,
    FailureKind.HTTP_5XX,
    FailureKind.BULKHEAD_FULL,
)


class CachePolicy(ConfigModel):
    """Stale-if-error store: successful responses kept to be served when the upstream fails."""

    methods: Methods = Field(
        default=("GET", "HEAD"), description="Request methods whose responses are stored."
    )
    max_stale: Duration = Field(
        default=300.0, description="How old a stored response may be when served as fallback."
    )
    max_entries: PositiveCount = Field(default=10000, description="Most entries kept.")
    max_bytes: Size = Field(
        default=64 << 20, description="LRU bound on stored bytes across this upstream."
    )
    max_body: Size = Field(default=1 << 20, description="Larger responses are not stored.")
    key_headers: HeaderNames = Field(
        default=("accept",),
        description="Request headers that partition entries (lowercased); see cache safety.",
    )
    serve_on: FallbackTriggers = Field(
        default=DEFAULT_SERVE_ON,
        description="Failures and rejections on which a stored response is served.",
    )

    @model_validator(mode="after")
    def _safe_methods(self) -> CachePolicy:
        # The key has no request body, so a stored answer to an unsafe method would be served
        # to a different request (another user's POST): only safe methods may be stored.
        unsafe = [method for method in self.methods if method not in _CACHEABLE_METHODS]
        if unsafe:
            raise RuleError(
                Violation(
                    ("methods",),
                    f"{', '.join(unsafe)} cannot be stored: only GET and HEAD answers may be "
                    "served as fallbacks (the key does not include the request body)",
                )
            )
        return self

    @model_validator(mode="after")
    def _body_fits(self) -> CachePolicy:
        if self.max_body > self.max_bytes:
            raise RuleError(
                Violation(
                    ("max_body",),
                    f"max_body ({format_size(self.max_body)}) must not exceed max_bytes "
                    f"({format_size(self.max_bytes)})",
                    also=(("max_bytes",),),
                )
            )
        return self


class StaticResponsePolicy(ConfigModel):
    """A fixed answer served when no cached response applies (at most one of body/body_file)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    status: Status = Field(default=503, description="HTTP status of the static response.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Response headers (names lowercased)."
    )
    body: str | None = Field(default=None, description="Response body text.")
    body_file: Path | None = Field(
        default=None,
        description="File whose bytes are the body, relative to the config file's folder.",
    )

    @field_validator("headers", mode="after")
    @classmethod
    def _check_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        problems: list[Violation] = []
        clean: dict[str, str] = {}
        for name, value in headers.items():
            try:
                lowered = header_name(name)
            except ValueError as exc:
                problems.append(Violation((name,), str(exc)))
                continue
            if lowered in _FRAMING_HEADERS:
                problems.append(
                    Violation((name,), f"{name!r} cannot be set: the sidecar frames the body")
                )
            elif any(ch in value for ch in "\r\n\0"):
                problems.append(Violation((name,), "header values cannot contain CR, LF or NUL"))
            clean[lowered] = value
        if problems:
            raise RuleError(*problems)
        return clean

    @field_validator("body_file", mode="after")
    @classmethod
    def _resolve_body_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        if not path.is_file():
            raise ValueError(f"{str(value)!r} does not exist or is not a file (looked at {path})")
        return path

    @model_validator(mode="after")
    def _one_body(self) -> StaticResponsePolicy:
        if self.body is not None and self.body_file is not None:
            raise RuleError(Violation(("body_file",), "set body or body_file, not both"))
        return self

    def load_body(self) -> bytes:
        """The body bytes, read from `body_file` when set (once per applied config)."""
        if self.body_file is not None:
            return self.body_file.read_bytes()
        return (self.body or "").encode()


class FallbackPolicy(ConfigModel):
    """Fallbacks tried in order: a cached response, then the static one (SPEC §4.4)."""

    cache: CachePolicy | None = Field(
        default=None, description="Stale-if-error cache; off if null."
    )
    static: StaticResponsePolicy | None = Field(
        default=None, description="Static response; off if null."
    )


class DelayFault(ConfigModel):
    """Delay a share of requests before they are sent, to rehearse a slow upstream."""

    percent: Ratio = Field(default=1.0, description="Share of requests delayed (e.g. 10%).")
    duration: Duration = Field(description="How long each delayed request waits.")


class AbortFault(ConfigModel):
    """Fail a share of requests without contacting the upstream (status or reset)."""

    percent: Ratio = Field(default=1.0, description="Share of requests aborted (e.g. 5%).")
    status: Status | None = Field(default=None, description="Answer with this status…")
    reset: Flag = Field(default=False, description="…or act as if the connection was reset.")

    @model_validator(mode="after")
    def _one_kind(self) -> AbortFault:
        if (self.status is None) == (not self.reset):
            message = (
                "set exactly one of status (e.g. 503) or reset: true"
                if self.status is None
                else "status and reset: true cannot both be set"
            )
            raise RuleError(Violation(("status",), message, also=(("reset",),)))
        return self


class FaultPolicy(ConfigModel):
    """Fault injection for rehearsing outages; nothing is injected unless set."""

    delay: Annotated[DelayFault | None, Field(description="Injected delay.")] = None
    abort: Annotated[AbortFault | None, Field(description="Injected failure.")] = None
