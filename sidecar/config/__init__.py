"""The configuration: pydantic models with their defaults, YAML loading, units, schema.

Everything the rest of the sidecar needs from configuration is re-exported here; other
packages import from `sidecar.config`, never from its modules. Loading collects every
problem into one `ConfigError` and never exits the process.
"""

from __future__ import annotations

from sidecar.config.address import BindAddress, Endpoint
from sidecar.config.default import DEFAULT_SOURCE, default_config
from sidecar.config.failure import FailureKind
from sidecar.config.fallback import (
    DEFAULT_SERVE_ON,
    AbortFault,
    CachePolicy,
    DelayFault,
    FallbackPolicy,
    FaultPolicy,
    StaticResponsePolicy,
)
from sidecar.config.issue import ConfigError, ConfigIssue
from sidecar.config.loader import load_config, load_config_text, load_section
from sidecar.config.policy import (
    BackoffPolicy,
    BreakerPolicy,
    BulkheadPolicy,
    CountWindow,
    PolicyConfig,
    RateLimitPolicy,
    RetryBudgetPolicy,
    RetryPolicy,
    TimeoutPolicy,
)
from sidecar.config.process import (
    AccessLogConfig,
    AdminConfig,
    ForwardConfig,
    LimitsConfig,
    ListenerConfig,
    ShutdownConfig,
    UnknownHosts,
)
from sidecar.config.root import SidecarConfig
from sidecar.config.schema import config_json_schema
from sidecar.config.units import (
    format_duration,
    format_ratio,
    format_size,
    parse_duration,
    parse_ratio,
    parse_size,
)
from sidecar.config.upstream import (
    HealthCheckPolicy,
    LoadBalancing,
    OutlierPolicy,
    RouteConfig,
    RouteMatch,
    TlsPolicy,
    UpstreamConfig,
)

__all__ = [
    "DEFAULT_SERVE_ON",
    "DEFAULT_SOURCE",
    "AbortFault",
    "AccessLogConfig",
    "AdminConfig",
    "BackoffPolicy",
    "BindAddress",
    "BreakerPolicy",
    "BulkheadPolicy",
    "CachePolicy",
    "ConfigError",
    "ConfigIssue",
    "CountWindow",
    "DelayFault",
    "Endpoint",
    "FailureKind",
    "FallbackPolicy",
    "FaultPolicy",
    "ForwardConfig",
    "HealthCheckPolicy",
    "LimitsConfig",
    "ListenerConfig",
    "LoadBalancing",
    "OutlierPolicy",
    "PolicyConfig",
    "RateLimitPolicy",
    "RetryBudgetPolicy",
    "RetryPolicy",
    "RouteConfig",
    "RouteMatch",
    "ShutdownConfig",
    "SidecarConfig",
    "StaticResponsePolicy",
    "TimeoutPolicy",
    "TlsPolicy",
    "UnknownHosts",
    "UpstreamConfig",
    "config_json_schema",
    "default_config",
    "format_duration",
    "format_ratio",
    "format_size",
    "load_config",
    "load_config_text",
    "load_section",
    "parse_duration",
    "parse_ratio",
    "parse_size",
]
