"""Outlier detection (passive health, SPEC §4.1 steps 3–4): eject endpoints that keep failing.

Every attempt is one result for its endpoint. After `consecutive_failures` failures in a row
an endpoint is ejected for `base_ejection` × its ejection multiplier, never longer than
`max_ejection`, and never more than `max_ejected` of the upstream's endpoints at once: with
one endpoint nothing is ever ejected, because there would be nowhere else to send. Ejection
ends by itself when its time is up.

The multiplier counts the endpoint's recent ejections, as Envoy's does: each ejection adds
one (it stops growing once `base_ejection` × multiplier reaches `max_ejection`), and each full
`base_ejection` the endpoint then spends back in rotation without being ejected takes one
off. The decay is computed from the clock when the endpoint is next looked at, so no timer
runs. A pure, clock-driven policy object: the caller emits the returned events.
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
    """One endpoint's record: its failure streak, ejection multiplier and schedule.

    `decay_from` is the clock time from which time in rotation counts towards taking one off
    `ejections` (the end of the last ejection, then the end of each decay period).
    """

    __slots__ = ("consecutive_failures", "decay_from", "ejected_until", "ejections")

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.decay_from = 0.0

    def __repr__(self) -> str:
        return (
            f"EndpointHealth(failures={self.consecutive_failures}, "
            f"ejected_until={self.ejected_until:.3f}, ejections={self.ejections})"
        )


class OutlierDetector:
    """Ejection decisions for the endpoints of one upstream."""

    __slots__ = ("_clock", "_health", "_max_ejected", "_max_multiplier", "_policy")

    def __init__(self, policy: OutlierPolicy, clock: Clock, endpoints: list[str]) -> None:
        self._policy = policy
        self._clock = clock
        self._health = {endpoint: EndpointHealth() for endpoint in endpoints}
        self._max_ejected = math.floor(policy.max_ejected * len(endpoints) + 1e-9)
        # The first multiplier whose ejection reaches the cap: counting further would only
        # make a recovered endpoint wait longer for the decay to bring it down.
        self._max_multiplier = math.ceil(policy.max_ejection / policy.base_ejection - 1e-9)

    def is_ejected(self, endpoint: str) -> bool:
        health = self._health.get(endpoint)
        return health is not None and health.ejected_until > self._clock.now()

    def ejected(self) -> list[str]:
        """Endpoints out of rotation now."""
        now = self._clock.now()
        return [endpoint for endpoint, health in self._health.items() if health.ejected_until > now]

    def health(self, endpoint: str) -> EndpointHealth | None:
        """The endpoint's record, its multiplier brought up to date with the clock."""
        health = self._health.get(endpoint)
        if health is not None:
            self._decay(health, self._clock.now())
        return health

    def ejection_duration(self, ejections: int) -> float:
        """How long the ejection with multiplier `ejections` lasts: base × n, capped."""
        return min(self._policy.base_ejection * ejections, self._policy.max_ejection)

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
        self._decay(health, now)
        health.ejections = min(health.ejections + 1, self._max_multiplier)
        duration = self.ejection_duration(health.ejections)
        health.ejected_until = health.decay_from = now + duration
        failures, health.consecutive_failures = health.consecutive_failures, 0
        return Ejection(endpoint, duration, health.ejected_until, failures)

    def reconfigure(self, policy: OutlierPolicy) -> None:
        """Apply a policy changed by a reload, keeping every endpoint's record (SPEC §6).

        Failure runs, multipliers and current ejections are kept. The multiplier is first
        brought up to date under the policy in force until now, then clamped to what the
        new policy can reach; an ejection in progress ends no later than `max_ejection` from
        now. `max_ejected` and `consecutive_failures` apply from the next failure on.
        """
        now = self._clock.now()
        for health in self._health.values():
            self._decay(health, now)
        self._policy = policy
        self._max_ejected = math.floor(policy.max_ejected * len(self._health) + 1e-9)
        self._max_multiplier = math.ceil(policy.max_ejection / policy.base_ejection - 1e-9)
        latest = now + policy.max_ejection
        for health in self._health.values():
            health.ejections = min(health.ejections, self._max_multiplier)
            if health.ejected_until > latest:
                # Time in rotation counts from the new, earlier end of the ejection.
                health.ejected_until = health.decay_from = latest

    def _decay(self, health: EndpointHealth, now: float) -> None:
        """Take one off the multiplier for each full `base_ejection` spent in rotation."""
        if health.ejections == 0 or now <= health.ejected_until:
            return
        base = self._policy.base_ejection
        periods = int((now - health.decay_from) / base + 1e-9)
        if periods <= 0:
            return
        if periods >= health.ejections:
            health.ejections = 0
            health.decay_from = now
        else:
            health.ejections -= periods
            health.decay_from += periods * base

    def __repr__(self) -> str:
        return f"OutlierDetector(endpoints={len(self._health)}, ejected={self.ejected()})"
