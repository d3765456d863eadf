"""The kinds of state an upstream and its routes keep in the reload bank, and the two pieces
that are carried as one: an upstream's endpoint pools, and its active health checks.

Only declarations: which state survives and when is decided where it is built
(`upstream/group.py` for an upstream's, `pipeline/route.py` for its routes'), through the
bank (`upstream/bank.py`). A kind that `closes` is closed by the reload that drops it.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from dataclasses import dataclass

from sidecar.cache import FallbackStore
from sidecar.resilience.breaker import CircuitBreaker
from sidecar.resilience.budget import RetryBudget
from sidecar.resilience.gate import BulkheadGate
from sidecar.resilience.ratelimit import TokenBucket
from sidecar.upstream.balancing import Balancer
from sidecar.upstream.bank import Kind
from sidecar.upstream.health import HealthChecker, HealthProbe
from sidecar.upstream.outlier import OutlierDetector
from sidecar.upstream.pool import EndpointPool


class EndpointPools:
    """An upstream's connections: one pool per endpoint, the overflow upstream's per-authority
    pools, and the TLS context they share. Carried as one piece; closed as one."""

    __slots__ = ("context", "dynamic", "pools")

    def __init__(
        self,
        context: ssl.SSLContext | None,
        pools: list[EndpointPool],
        dynamic: OrderedDict[str, EndpointPool],
    ) -> None:
        self.context = context
        self.pools = pools
        self.dynamic = dynamic

    def close(self) -> None:
        """Close every pool; connections in flight close when their exchange ends."""
        for pool in (*self.pools, *self.dynamic.values()):
            pool.close()

    def __repr__(self) -> str:
        return f"EndpointPools(pools={len(self.pools)}, dynamic={len(self.dynamic)})"


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """An upstream's active health checks: the verdicts and the probe feeding them."""

    health: HealthChecker
    probe: HealthProbe

    def close(self) -> None:
        """Stop the probe: no config uses these checks any more."""
        self.probe.cancel()


POOLS: Kind[EndpointPools] = Kind("pools", closes=True)
BALANCER: Kind[Balancer | None] = Kind("balancer")
INFLIGHT: Kind[list[int]] = Kind("inflight")
OUTLIERS: Kind[OutlierDetector] = Kind("outliers")
HEALTH: Kind[HealthChecks | None] = Kind("health", closes=True)
BREAKER: Kind[CircuitBreaker] = Kind("breaker")
BUDGET: Kind[RetryBudget] = Kind("budget")
GATE: Kind[BulkheadGate] = Kind("gate")
BUCKET: Kind[TokenBucket | None] = Kind("bucket")
STORE: Kind[FallbackStore] = Kind("store")
