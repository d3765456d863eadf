"""Composes a route's stage chain once, when the config loads (never per request).

Today the chain is the forwarder alone; admission (rate limit, bulkhead, breaker), the retry
loop and fallback wrap it here in later versions, outermost first: fallback → admission →
attempts → forward.
"""

from __future__ import annotations

from sidecar.clock import Clock
from sidecar.events import Observers
from sidecar.pipeline.exchange import Stage, Transport
from sidecar.pipeline.forward import Forwarder
from sidecar.pipeline.route import Route
from sidecar.upstream.group import Upstream


def build_stages(
    upstream: Upstream, route: Route, transport: Transport, clock: Clock, observers: Observers
) -> Stage:
    """The stage chain for one route of one upstream."""
    return Forwarder(upstream, route, transport, clock, observers)
