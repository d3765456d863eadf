"""Composes a route's stage chain once, when the config loads (never per request).

Outermost first: admission (rate limit, bulkhead; shared by the upstream's routes) → the
attempt loop (breaker permit, retries with backoff and budget) → the forwarder (one attempt,
then the relay). Fallback wraps admission, because it answers for its rejections too.
"""

from __future__ import annotations

import random

from sidecar.clock import Clock
from sidecar.events import Observers
from sidecar.outcome import FailureMatcher
from sidecar.pipeline.admission import Admission
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.pipeline.fallback import Fallback
from sidecar.pipeline.forward import Forwarder
from sidecar.pipeline.guard import BreakerGuard
from sidecar.pipeline.retry import AttemptLoop
from sidecar.pipeline.route import Route
from sidecar.resilience.backoff import Backoff
from sidecar.upstream.group import Upstream
from sidecar.upstream.protocol import Transport


def build_stages(
    upstream: Upstream,
    route: Route,
    transport: Transport[Exchange],
    clock: Clock,
    observers: Observers,
    rng: random.Random,
) -> Stage:
    """The stage chain for one route of one upstream."""
    config = route.config
    assert route.budget is not None
    attempts = AttemptLoop(
        upstream=upstream.name,
        route=route.label,
        forwarder=Forwarder(upstream, route, transport, clock, observers, upstream.faults),
        guard=BreakerGuard(route.breaker, upstream.name, route.label, observers),
        breaker_failures=FailureMatcher(config.circuit_breaker.failure_on),
        policy=config.retries,
        backoff=Backoff(config.retries.backoff, rng),
        budget=route.budget,
        clock=clock,
        observers=observers,
    )
    admission = Admission(
        upstream.name,
        attempts,
        upstream.gate,
        upstream.config.bulkhead.queue_timeout,
        upstream.rate_limit,
        observers,
    )
    fallback = config.fallback
    if fallback.cache is None and fallback.static is None:
        return admission
    serve_on = fallback.cache.serve_on if fallback.cache is not None else None
    return Fallback(upstream.name, admission, route.store, fallback.static, serve_on, observers)
