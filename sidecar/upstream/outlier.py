"""Outlier detection (passive health, SPEC §4.1 steps 3–4): eject endpoints that keep failing.

Every attempt is one result for its endpoint. After `consecutive_failures` failures in a row
an endpoint is ejected for `base_ejection` × the number of times it has been ejected (so a
repeat offender stays out longer, as in Envoy), but never more than `max_ejected` of the
upstream's endpoints at once: with one endpoint nothing is ever ejected, because there would
be nowhere else to send. Ejection ends by itself when its time is up. A pure, clock-driven
policy object: the caller emits the returned events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sidecar.clock import Clock
from sidecar.config import OutlierPolicy


@dataclass(frozen=True, slots=True)
class Ejection:
    """An endpoint was taken out of rotation until `until` (clock time)."""

    endpoint: str
    duration: float
    until: float
    failures: int


class EndpointHealth:
    """One endpoint's record: its failure streak and ejection schedule."""

    __slots__ = ("consecutive_failures", "ejected_until", "ejections")

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0

    def __repr__(self) -> str:
        return (
            f"EndpointHealth(failures={self.consecutive_failures}, "
            f"ejected_until={self.ejected_until:.3f}, ejections={self.ejections})"
        )


class OutlierDetector:
    """Ejection decisions for the endpoints of one upstream."""

    __slots__ = ("_clock", "_health", "_max_ejected", "_policy")

    def __init__(self, policy: OutlierPolicy, clock: Clock, endpoints: list[str]) -> None:
        self._policy = policy
        self._clock = clock
        self._health = {endpoint: EndpointHealth() for endpoint in endpoints}
        self._max_ejected = math.floor(policy.max_ejected * len(endpoints) + 1e-9)

    def is_ejected(self, endpoint: str) -> bool:
        health = self._health.get(endpoint)
        return health is not None and health.ejected_until > self._clock.now()

    def ejected(self) -> list[str]:
        """Endpoints out of rotation now."""
        now = self._clock.now()
        return [endpoint for endpoint, health in self._health.items() if health.ejected_until > now]

    def health(self, endpoint: str) -> EndpointHealth | None:
        return self._health.get(endpoint)

    def record(self, endpoint: str, failed: bool) -> Ejection | None:
        """One attempt's result for `endpoint`; returns the ejection it causes, if any."""
        health = self._health.get(endpoint)
        if health is None:
            return None
        if not failed:
            health.consecutive_failures = 0
            return None
        health.consecutive_failures += 1
        threshold = self._policy.consecutive_failures
        if threshold == 0 or health.consecutive_failures < threshold:
            return None
        now = self._clock.now()
        if health.ejected_until > now or len(self.ejected()) >= self._max_ejected:
            return None
        health.ejections += 1
        duration = self._policy.base_ejection * health.ejections
        health.ejected_until = now + duration
        failures, health.consecutive_failures = health.consecutive_failures, 0
        return Ejection(endpoint, duration, health.ejected_until, failures)

    def __repr__(self) -> str:
        return f"OutlierDetector(endpoints={len(self._health)}, ejected={self.ejected()})"
