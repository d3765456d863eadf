"""Admission as a stage (SPEC §4.1 step 2): the token bucket and the bulkhead in front of the
attempt loop, over a scripted transport; bulkhead waits use real timeouts of tens of ms."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    UpstreamConnectError,
)
from sidecar.events import AttemptFinished, RequestRejected
from sidecar.outcome import AttemptResult
from tests.fakes import ScriptedResponse, Step, eventually
from tests.pipeline.chain import ENDPOINT_A, StageChain, stage_chain

SVC = "svc"
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}


def ok(body: bytes = b"ok") -> ScriptedResponse:
    return ScriptedResponse(200, [(b"content-type", b"text/plain")], body)


# ---- rate limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_limit", "retry_after"),
    [
        ({"rps": 2, "burst": 1}, 0.5),
        ({"rps": 0.5, "burst": 3}, 2.0),
        ({"rps": 10, "burst": 2}, 0.1),
    ],
    ids=["2rps", "half-rps", "10rps"],
)
async def test_admission_rate_limit_rejects_with_time_to_next_token(
    rate_limit: dict[str, Any], retry_after: float
) -> None:
    """Past `burst` immediate requests the next gets `RateLimitedError` with the refill time."""
    with stage_chain(rate_limit=rate_limit) as chain:
        burst = rate_limit["burst"]
        chain.transport.add(*(ok() for _ in range(burst + 1)))
        for _ in range(burst):
            assert (await chain.call()).status == 200
        chain.observer.clear()
        exchange = chain.exchange()
        with pytest.raises(RateLimitedError) as raised:
            await chain.run(exchange)
        assert raised.value.retry_after == pytest.approx(retry_after)
        assert chain.events == [RequestRejected(SVC, "rate_limited")]
        assert (chain.transport.calls, exchange.attempts) == (burst, 0)
        assert chain.upstream.gate.in_flight == 0  # refused before taking a bulkhead slot
        chain.clock.advance(retry_after)
        assert (await chain.call()).status == 200


async def test_admission_rate_limit_retry_after_shrinks_as_time_passes() -> None:
    """`retry_after` is the time to the next token from now, not a fixed period."""
    with stage_chain(rate_limit={"rps": 1, "burst": 1}) as chain:
        chain.transport.add(ok())
        await chain.call()
        waits = []
        for _ in range(3):
            with pytest.raises(RateLimitedError) as raised:
                await chain.call()
            waits.append(raised.value.retry_after)
            chain.clock.advance(0.25)
        assert waits == pytest.approx([1.0, 0.75, 0.5])


async def test_admission_rate_limit_is_shared_by_the_upstreams_routes() -> None:
    """Every route of an upstream takes from one bucket."""
    routes = [{"match": {"path_prefix": "/a"}}]
    with stage_chain(rate_limit={"rps": 1, "burst": 2}, routes=routes) as chain:
        chain.transport.add(ok(), ok())
        await chain.call("GET", "/a")
        await chain.call("GET", "/b")
        with pytest.raises(RateLimitedError):
            await chain.call("GET", "/a")


# ---- bulkhead ------------------------------------------------------------------------------


async def hold_one(chain: StageChain) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """Start a request whose attempt is parked in the transport until the event is set."""
    hold = asyncio.Event()
    chain.transport.add(Step(ok(b"held"), hold=hold))
    task = asyncio.create_task(chain.call())
    await eventually(lambda: chain.transport.calls == 1)
    return task, hold


@pytest.mark.parametrize(
    "bulkhead",
    [
        {"max_concurrent": 1, "max_queued": 0},
        {"max_concurrent": 1, "max_queued": 5, "queue_timeout": "0s"},
    ],
    ids=["no-queue", "zero-queue-timeout"],
)
async def test_admission_bulkhead_full_rejects_at_once(bulkhead: dict[str, Any]) -> None:
    """With every slot taken and no waiting allowed, a request is refused without waiting."""
    with stage_chain(bulkhead=bulkhead) as chain:
        held, hold = await hold_one(chain)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BulkheadFullError):
            await chain.call()
        assert loop.time() - started < 0.05
        assert chain.events == [RequestRejected(SVC, "bulkhead_full")]
        assert chain.transport.calls == 1
        hold.set()
        assert (await held).body == b"held"
        assert chain.upstream.gate.in_flight == 0


async def test_admission_bulkhead_queue_timeout_rejects_after_waiting() -> None:
    """A queued request that gets no slot within `queue_timeout` is refused after that wait."""
    bulkhead = {"max_concurrent": 1, "max_queued": 1, "queue_timeout": "30ms"}
    with stage_chain(bulkhead=bulkhead) as chain:
        held, hold = await hold_one(chain)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BulkheadFullError):
            await chain.call()
        waited = loop.time() - started
        assert 0.025 <= waited < 0.5
        assert chain.upstream.gate.queued == 0
        assert chain.observer.of_type(RequestRejected) == [RequestRejected(SVC, "bulkhead_full")]
        hold.set()
        await held


async def test_admission_bulkhead_queue_full_rejects_the_newcomer() -> None:
    """With the one queue place taken, a third request is refused at once."""
    bulkhead = {"max_concurrent": 1, "max_queued": 1, "queue_timeout": "1s"}
    with stage_chain(bulkhead=bulkhead) as chain:
        held, hold = await hold_one(chain)
        chain.transport.add(ok(b"queued"))
        queued = asyncio.create_task(chain.call())
        await eventually(lambda: chain.upstream.gate.queued == 1)
        with pytest.raises(BulkheadFullError):
            await chain.call()
        hold.set()
        assert (await held).body == b"held"
        assert (await queued).body == b"queued"
        assert chain.transport.calls == 2
        assert (chain.upstream.gate.in_flight, chain.upstream.gate.queued) == (0, 0)


async def test_admission_queued_request_gets_the_freed_slot() -> None:
    """A request waiting in the queue proceeds as soon as the slot in use is released."""
    bulkhead = {"max_concurrent": 1, "max_queued": 1, "queue_timeout": "1s"}
    with stage_chain(bulkhead=bulkhead) as chain:
        held, hold = await hold_one(chain)
        chain.transport.add(ok(b"second"))
        second = asyncio.create_task(chain.call())
        await eventually(lambda: chain.upstream.gate.queued == 1)
        assert chain.transport.calls == 1  # still waiting: not sent
        hold.set()
        assert (await held).body == b"held"
        assert (await second).body == b"second"
        assert chain.observer.of_type(RequestRejected) == []


async def test_admission_slot_is_released_after_an_upstream_error() -> None:
    """A request that ends in an attempt error gives its bulkhead slot back."""
    with stage_chain(retries=ONE_ATTEMPT, bulkhead={"max_concurrent": 1, "max_queued": 0}) as chain:
        chain.transport.add(UpstreamConnectError("refused"), ok())
        with pytest.raises(UpstreamConnectError):
            await chain.call()
        assert chain.upstream.gate.in_flight == 0
        assert (await chain.call()).status == 200


async def test_admission_slot_is_released_after_a_circuit_open_rejection() -> None:
    """A request the breaker refuses inside admission gives its bulkhead slot back."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s"}
    bulkhead = {"max_concurrent": 1, "max_queued": 0}
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=breaker, bulkhead=bulkhead) as chain:
        chain.transport.add(ScriptedResponse(503))
        await chain.call()
        for _ in range(2):  # a leaked slot would make the second one bulkhead_full
            with pytest.raises(CircuitOpenError):
                await chain.call()
        assert chain.upstream.gate.in_flight == 0


async def test_admission_slot_is_released_when_the_request_is_cancelled() -> None:
    """A client that goes away mid-attempt frees the slot and the endpoint's in-flight count."""
    with stage_chain(bulkhead={"max_concurrent": 1, "max_queued": 0}) as chain:
        held, _ = await hold_one(chain)
        assert chain.upstream.gate.in_flight == 1
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert chain.upstream.gate.in_flight == 0
        assert chain.upstream.pools[0].inflight == 0
        chain.transport.add(ok(b"next"))
        assert (await chain.call()).body == b"next"
        # The cancelled attempt never finished, so it was not classified.
        assert chain.observer.of_type(AttemptFinished) == [
            AttemptFinished(SVC, ENDPOINT_A, AttemptResult.SUCCESS, 0.0)
        ]
