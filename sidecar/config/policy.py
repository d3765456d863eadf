"""The per-upstream resilience policy: timeouts, retries, breaker, bulkhead, rate limit.

This module owns `PolicyConfig`, the shape of the `defaults` section and of the policy part
of every upstream and route, with every default declared next to its field (SPEC §3.2).
Rules that tie two fields of one section together live here as model validators. It must
not know about merging or files: `sidecar.config.merge` and the loader do that.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Strict, Tag, model_validator

from sidecar.config.base import ConfigModel, Count, Flag, Methods, Number, PositiveCount
from sidecar.config.failure import BreakerFailures, FailureKind, RetryConditions
from sidecar.config.fallback import FallbackPolicy, FaultPolicy
from sidecar.config.issue import RuleError, Violation
from sidecar.config.units import Duration, PositiveDuration, Ratio, Size, format_duration

_UPSTREAM_FAILURES = (
    FailureKind.CONNECT_FAILURE,
    FailureKind.RESET,
    FailureKind.TIMEOUT,
)


class TimeoutPolicy(ConfigModel):
    """Deadlines for one request; the runtime turns them into `connect-failure`/`timeout`."""

    connect: PositiveDuration = Field(default=1.0, description="Connecting to an endpoint.")
    per_try: PositiveDuration = Field(
        default=5.0,
        description="Until response headers arrive, per attempt, from when the request is sent.",
    )
    total: PositiveDuration = Field(
        default=15.0,
        description="Whole request incl. retries and backoff, until headers arrive; "
        "starts when the client's request (with its body) is complete.",
    )
    idle: PositiveDuration = Field(
        default=60.0, description="Longest gap between body chunks, either direction."
    )


class PoolPolicy(ConfigModel):
    """Keep-alive connections to each endpoint of an upstream."""

    idle_timeout: PositiveDuration = Field(
        default=4.0,
        description="A pooled connection idle this long is closed; keep it below the "
        "upstream's own keep-alive timeout.",
    )


class BackoffPolicy(ConfigModel):
    """Exponential backoff between attempts: initial × multiplier^n, capped at max."""

    initial: Duration = Field(default=0.025, description="Backoff before the first retry.")
    max: Duration = Field(default=1.0, description="Longest backoff.")
    multiplier: Annotated[float, Strict(), Field(ge=1)] = Field(
        default=2.0, description="Growth factor per retry (≥ 1)."
    )
    jitter: Literal["full", "none"] = Field(
        default="full", description="full: wait a random time in [0, backoff]."
    )

    @model_validator(mode="after")
    def _ordered(self) -> BackoffPolicy:
        if self.max < self.initial:
            raise RuleError(
                Violation(
                    ("max",),
                    f"max ({format_duration(self.max)}) must be at least initial "
                    f"({format_duration(self.initial)})",
                    also=(("initial",),),
                )
            )
        return self


class RetryBudgetPolicy(ConfigModel):
    """Retries may add at most `ratio` × requests (plus `min_per_second`) over `window`."""

    ratio: Ratio = Field(default=0.2, description="Retries allowed per request, as a ratio.")
    min_per_second: Number = Field(
        default=10.0, description="Retries always allowed per second, whatever the ratio."
    )
    window: PositiveDuration = Field(default=10.0, description="Period the ratio is judged over.")


class RetryPolicy(ConfigModel):
    """When and how often a failed attempt is tried again."""

    max_attempts: PositiveCount = Field(
        default=3, description="Attempts including the first; 1 disables retries."
    )
    on: RetryConditions = Field(
        default=(*_UPSTREAM_FAILURES, 502, 503, 504),
        description="Outcomes that are retried: connect-failure, reset, timeout, 5xx, or codes.",
    )
    methods: Methods = Field(
        default=("GET", "HEAD", "OPTIONS", "PUT", "DELETE"),
        description="Retryable methods; others only with an Idempotency-Key header.",
    )
    backoff: BackoffPolicy = Field(default_factory=BackoffPolicy)
    respect_retry_after: Flag = Field(
        default=True, description="Honour a 429/503 Retry-After up to max_retry_after."
    )
    max_retry_after: Duration = Field(
        default=5.0, description="A longer Retry-After means: do not retry."
    )
    budget: RetryBudgetPolicy = Field(default_factory=RetryBudgetPolicy)
    buffer_limit: Size = Field(
        default=1 << 20, description="Larger request bodies are streamed and never retried."
    )


class CountWindow(ConfigModel):
    """A breaker window of the last N calls instead of the last N seconds."""

    calls: PositiveCount = Field(description="Number of most recent calls judged.")


def _window_kind(value: Any) -> str:
    return "count" if isinstance(value, dict | CountWindow) else "duration"


BreakerWindow = Annotated[
    Annotated[PositiveDuration, Tag("duration")] | Annotated[CountWindow, Tag("count")],
    Discriminator(_window_kind),
]
"""`30s` (time-based) or `{calls: 100}` (count-based)."""


class BreakerPolicy(ConfigModel):
    """Circuit breaker thresholds (SPEC §4.2)."""

    enabled: Flag = Field(default=True, description="false: never open.")
    window: BreakerWindow = Field(
        default=30.0, description="Time window (30s) or count window ({calls: 100})."
    )
    minimum_calls: PositiveCount = Field(
        default=10, description="Rates are not judged below this many calls in the window."
    )
    failure_rate: Ratio = Field(default=0.5, description="Open when failures / calls ≥ this.")
    slow_call_rate: Ratio = Field(default=1.0, description="Open when slow calls / calls ≥ this.")
    slow_call_duration: PositiveDuration = Field(
        default=5.0, description="A call slower than this is slow."
    )
    consecutive_failures: Count = Field(
        default=5, description="Open after this many failures in a row (0 = off)."
    )
    open_duration: PositiveDuration = Field(
        default=5.0, description="First open period; doubles on each failed recovery."
    )
    max_open_duration: PositiveDuration = Field(
        default=60.0, description="Cap for the doubling open period."
    )
    half_open_calls: PositiveCount = Field(
        default=3, description="Trial calls in half-open; all must succeed to close."
    )
    failure_on: BreakerFailures = Field(
        default=(FailureKind.HTTP_5XX, *_UPSTREAM_FAILURES),
        description="What counts as a failure; 4xx only when listed (e.g. 429).",
    )

    @model_validator(mode="after")
    def _open_bounds(self) -> BreakerPolicy:
        if self.max_open_duration < self.open_duration:
            raise RuleError(
                Violation(
                    ("max_open_duration",),
                    f"max_open_duration ({format_duration(self.max_open_duration)}) "
                    f"must be at least open_duration ({format_duration(self.open_duration)})",
                    also=(("open_duration",),),
                )
            )
        if isinstance(self.window, CountWindow) and self.minimum_calls > self.window.calls:
            raise RuleError(
                Violation(
                    ("minimum_calls",),
                    f"minimum_calls ({self.minimum_calls}) must not exceed window.calls "
                    f"({self.window.calls}), or the rates could never be judged",
                    also=(("window", "calls"), ("window",)),
                )
            )
        return self


class BulkheadPolicy(ConfigModel):
    """Concurrency cap per upstream; excess waits in a bounded queue, then is rejected."""

    max_concurrent: PositiveCount = Field(
        default=100, description="In-flight requests to this upstream."
    )
    max_queued: Count = Field(default=100, description="Requests waiting for a slot.")
    queue_timeout: Duration = Field(default=1.0, description="Longest wait for a slot.")


class RateLimitPolicy(ConfigModel):
    """Token bucket per upstream; excess requests get 429 `rate_limited`."""

    rps: Annotated[float, Strict(), Field(gt=0)] = Field(description="Tokens added per second.")
    burst: PositiveCount = Field(description="Bucket size: requests allowed at once.")


class PolicyConfig(ConfigModel):
    """The policy every upstream starts from; upstreams and routes override it key by key."""

    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit_breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    bulkhead: BulkheadPolicy = Field(default_factory=BulkheadPolicy)
    rate_limit: RateLimitPolicy | None = Field(
        default=None, description="Token bucket; off if null."
    )
    fallback: FallbackPolicy = Field(default_factory=FallbackPolicy)
    faults: FaultPolicy | None = Field(default=None, description="Fault injection; off if null.")
    pool: PoolPolicy = Field(default_factory=PoolPolicy)
