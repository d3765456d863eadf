"""Choosing the endpoint for an attempt: round robin, random, least request (P2C).

Pure choice over a list of pools; a retry passes the endpoint it just tried as `avoid` so that
a different one is preferred when there is one (SPEC §4.1 step 3).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from sidecar.config import LoadBalancing
from sidecar.upstream.pool import EndpointPool


class Balancer(Protocol):
    def pick(self, avoid: EndpointPool | None = None) -> EndpointPool: ...


class RoundRobin:
    __slots__ = ("_next", "_pools")

    def __init__(self, pools: Sequence[EndpointPool]) -> None:
        self._pools = tuple(pools)
        self._next = 0

    def pick(self, avoid: EndpointPool | None = None) -> EndpointPool:
        pools = self._pools
        index = self._next % len(pools)
        self._next = index + 1
        pool = pools[index]
        if pool is avoid and len(pools) > 1:
            return self.pick()
        return pool

    def __repr__(self) -> str:
        return f"RoundRobin(endpoints={len(self._pools)}, next={self._next})"


class RandomChoice:
    __slots__ = ("_pools", "_rng")

    def __init__(self, pools: Sequence[EndpointPool], rng: random.Random) -> None:
        self._pools = tuple(pools)
        self._rng = rng

    def pick(self, avoid: EndpointPool | None = None) -> EndpointPool:
        return self._rng.choice(_candidates(self._pools, avoid))

    def __repr__(self) -> str:
        return f"RandomChoice(endpoints={len(self._pools)})"


class LeastRequest:
    """Power of two choices on in-flight counts: near-optimal and O(1) per pick."""

    __slots__ = ("_pools", "_rng")

    def __init__(self, pools: Sequence[EndpointPool], rng: random.Random) -> None:
        self._pools = tuple(pools)
        self._rng = rng

    def pick(self, avoid: EndpointPool | None = None) -> EndpointPool:
        candidates = _candidates(self._pools, avoid)
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(candidates, 2)
        return first if first.inflight <= second.inflight else second

    def __repr__(self) -> str:
        return f"LeastRequest(endpoints={len(self._pools)})"


def _candidates(
    pools: tuple[EndpointPool, ...], avoid: EndpointPool | None
) -> Sequence[EndpointPool]:
    """The pools to choose from: all of them, or all but `avoid` when another one exists.

    Returns the balancer's own tuple in the common case (no `avoid`), so a first attempt
    allocates nothing.
    """
    if avoid is None or len(pools) == 1:
        return pools
    return [pool for pool in pools if pool is not avoid] or pools


def make_balancer(
    kind: LoadBalancing, pools: Sequence[EndpointPool], rng: random.Random
) -> Balancer:
    if kind == LoadBalancing.ROUND_ROBIN:
        return RoundRobin(pools)
    if kind == LoadBalancing.RANDOM:
        return RandomChoice(pools, rng)
    return LeastRequest(pools, rng)
