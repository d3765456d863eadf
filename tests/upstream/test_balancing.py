"""Endpoint choice: round robin, random and least request (power of two choices)."""

from __future__ import annotations

import asyncio
import random

import pytest

from sidecar.config import Endpoint, LoadBalancing
from sidecar.upstream.balancing import LeastRequest, RoundRobin, make_balancer
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.pool import EndpointPool


@pytest.fixture
def pools() -> list[EndpointPool]:
    """Three pools on distinct endpoints (nothing is connected)."""
    loop = asyncio.new_event_loop()
    try:
        return [
            EndpointPool(Endpoint.parse(f"http://10.0.0.{i}:80"), loop, LoopGuard())
            for i in (1, 2, 3)
        ]
    finally:
        loop.close()


def test_balancing_round_robin_cycles_through_endpoints(pools: list[EndpointPool]) -> None:
    """Round robin visits every endpoint in order, then starts again."""
    balancer = RoundRobin(pools)
    assert [balancer.pick() for _ in range(4)] == [pools[0], pools[1], pools[2], pools[0]]


def test_balancing_round_robin_avoids_the_endpoint_just_tried(pools: list[EndpointPool]) -> None:
    """A retry passing `avoid` gets another endpoint when there is one."""
    balancer = RoundRobin(pools)
    assert balancer.pick(avoid=pools[0]) is pools[1]


def test_balancing_single_endpoint_is_returned_even_when_avoided(pools: list[EndpointPool]) -> None:
    """With one endpoint, avoiding it is impossible and it is used again."""
    balancer = RoundRobin(pools[:1])
    assert balancer.pick(avoid=pools[0]) is pools[0]


def test_balancing_least_request_prefers_the_less_loaded_of_two(pools: list[EndpointPool]) -> None:
    """P2C never picks the busiest endpoint when the two sampled differ in load."""
    pools[0].inflight, pools[1].inflight, pools[2].inflight = 10, 0, 5
    balancer = LeastRequest(pools, random.Random(7))
    picks = [balancer.pick() for _ in range(50)]
    assert pools[0] not in picks
    assert pools[1] in picks


@pytest.mark.parametrize("kind", list(LoadBalancing), ids=str)
def test_balancing_every_kind_picks_a_configured_endpoint(
    kind: LoadBalancing, pools: list[EndpointPool]
) -> None:
    """Each configured algorithm returns only the upstream's own endpoints."""
    balancer = make_balancer(kind, pools, random.Random(1))
    assert {balancer.pick() for _ in range(30)} <= set(pools)
