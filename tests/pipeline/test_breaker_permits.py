"""Breaker permits inside the attempt loop (SPEC §4.2): every permit is judged or handed back
on every path, and a call is judged at its response head, never held open by its body."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.errors import (
    AttemptError,
    BodyStreamError,
    CircuitOpenError,
    ProxyError,
    UpstreamConnectError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from sidecar.events import AttemptFinished
from sidecar.outcome import AttemptResult
from sidecar.resilience.breaker import CircuitState
from tests.fakes import (
    ScriptedOutcome,
    ScriptedResponse,
    Step,
    StreamingResponse,
    TruncatedResponse,
    eventually,
)
from tests.pipeline.chain import ENDPOINT_A, StageChain, chain_config, stage_chain

ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
TRIP_ON_ONE_5XX: dict[str, Any] = {
    "consecutive_failures": 1,
    "open_duration": "1s",
    "half_open_calls": 1,
    "failure_on": ["5xx"],
}


def ok(body: bytes = b"ok") -> ScriptedResponse:
    return ScriptedResponse(200, [(b"content-type", b"text/plain")], body)


def unavailable() -> ScriptedResponse:
    return ScriptedResponse(503, [], b"down")


def state_of(chain: StageChain) -> CircuitState:
    """The breaker's state, read afresh (mypy would keep an earlier `is` narrowing)."""
    return chain.upstream.breaker.state


async def open_then_half_open(chain: StageChain) -> None:
    """Trip the breaker with one 503, then let its open duration pass."""
    chain.transport.add(unavailable())
    await chain.call()
    assert chain.upstream.breaker.state is CircuitState.OPEN
    chain.clock.advance(1.0)


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamTimeoutError("no response headers before the deadline"),
        UpstreamResetError("upstream closed the connection before the response headers"),
        UpstreamConnectError("cannot connect"),
    ],
    ids=["timeout", "reset", "connect-failure"],
)
async def test_permit_trial_failing_outside_failure_on_never_wedges_half_open(
    failure: AttemptError,
) -> None:
    """A trial that fails in a way `failure_on` does not list is judged, so the breaker recovers."""
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=TRIP_ON_ONE_5XX) as chain:
        await open_then_half_open(chain)
        chain.transport.add(failure, failure, ok(b"back"))
        for _ in range(2):  # more unlisted failures than there are trial slots
            with pytest.raises(type(failure)):
                await chain.call()
        assert chain.upstream.breaker.state is CircuitState.CLOSED
        assert (await chain.call()).body == b"back"


async def test_permit_closed_call_failing_outside_failure_on_is_counted() -> None:
    """In the closed state such a call is one more call in the window, not a dropped one."""
    breaker = {**TRIP_ON_ONE_5XX, "consecutive_failures": 0, "minimum_calls": 2}
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=breaker) as chain:
        chain.transport.add(UpstreamTimeoutError("no response headers before the deadline"))
        with pytest.raises(UpstreamTimeoutError):
            await chain.call()
        assert (chain.upstream.breaker.calls, chain.upstream.breaker.failures) == (1, 0)


async def test_permit_of_a_failure_not_the_upstreams_is_handed_back_unjudged() -> None:
    """A stale pooled connection's reset frees the trial slot and feeds neither breaker nor outliers."""
    outliers = {"consecutive_failures": 1}
    with stage_chain(
        retries=ONE_ATTEMPT, circuit_breaker=TRIP_ON_ONE_5XX, outlier_detection=outliers
    ) as chain:
        await open_then_half_open(chain)
        health = chain.upstream.outliers.health(ENDPOINT_A)
        assert health is not None
        failures_before = health.consecutive_failures
        stale = UpstreamResetError("idle connection closed by the upstream", upstream_fault=False)
        chain.transport.add(stale, ok(b"trial"))
        with pytest.raises(UpstreamResetError):
            await chain.call()
        breaker = chain.upstream.breaker
        assert breaker.state is CircuitState.HALF_OPEN  # no verdict: still waiting for a trial
        assert health.consecutive_failures == failures_before
        assert (await chain.call()).body == b"trial"
        assert state_of(chain) is CircuitState.CLOSED


async def test_permit_streaming_trial_closes_the_breaker_at_its_head() -> None:
    """A long body never holds a trial slot: its head closes the breaker and traffic flows."""
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=TRIP_ON_ONE_5XX) as chain:
        await open_then_half_open(chain)
        long_poll = StreamingResponse(b"events")
        chain.transport.add(long_poll, ok(b"other"))
        trial = asyncio.create_task(chain.call())
        await asyncio.wait_for(long_poll.streaming.wait(), 1.0)
        assert chain.upstream.breaker.state is CircuitState.CLOSED
        assert (await chain.call()).body == b"other"  # admitted while the trial still streams
        long_poll.more.set()
        assert (await trial).body == b"events"


async def test_permit_body_broken_after_head_feeds_outliers_not_the_breaker() -> None:
    """A body cut after a good head is an endpoint failure, judged by outliers; the breaker saw a success."""
    breaker = {**TRIP_ON_ONE_5XX, "failure_on": ["5xx", "reset"]}
    with stage_chain(
        retries=ONE_ATTEMPT,
        circuit_breaker=breaker,
        outlier_detection={"consecutive_failures": 2},
    ) as chain:
        chain.transport.add(TruncatedResponse(b"part", 10))
        with pytest.raises(BodyStreamError):
            await chain.call()
        assert chain.upstream.breaker.state is CircuitState.CLOSED
        assert (chain.upstream.breaker.calls, chain.upstream.breaker.failures) == (1, 0)
        assert chain.observer.of_type(AttemptFinished)[-1].result is AttemptResult.RESET
        health = chain.upstream.outliers.health(ENDPOINT_A)
        assert health is not None
        assert health.consecutive_failures == 1


async def test_permit_client_gone_during_trial_hands_the_slot_back() -> None:
    """A trial cancelled before its head (the client left) frees its slot for the next request."""
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=TRIP_ON_ONE_5XX) as chain:
        await open_then_half_open(chain)
        chain.transport.add(Step(ok(b"never"), hold=asyncio.Event()), ok(b"next"))
        trial = asyncio.create_task(chain.call())
        await eventually(lambda: chain.transport.calls == 2)
        with pytest.raises(CircuitOpenError):
            await chain.call()  # the only slot is taken
        chain.transport.clear()
        chain.transport.add(ok(b"next"))
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert (await chain.call()).body == b"next"
        assert chain.upstream.breaker.state is CircuitState.CLOSED


# ---- property: for any history, the breaker recovers once the upstream answers ----------------

_OUTCOMES = ("ok", "5xx", "429", "timeout", "reset", "connect", "stale", "truncated")


def _outcome(kind: str) -> ScriptedOutcome:
    match kind:
        case "ok":
            return ok()
        case "5xx":
            return unavailable()
        case "429":
            return ScriptedResponse(429, [], b"slow down")
        case "timeout":
            return UpstreamTimeoutError("no response headers before the deadline")
        case "reset":
            return UpstreamResetError("upstream closed the connection before the response headers")
        case "connect":
            return UpstreamConnectError("cannot connect")
        case "stale":
            return UpstreamResetError("idle connection closed", upstream_fault=False)
        case _:
            return TruncatedResponse(b"part", 10)


@dataclass(frozen=True, slots=True)
class Call:
    outcome: str
    held: bool  # parked in the transport (or, for "stream", in its body) until released


@dataclass(frozen=True, slots=True)
class Release:
    cancel: bool  # the client goes away instead


@dataclass(frozen=True, slots=True)
class Advance:
    seconds: float


_OPS = st.lists(
    st.one_of(
        st.builds(Call, st.sampled_from((*_OUTCOMES, "stream")), st.booleans()),
        st.builds(Release, st.booleans()),
        st.builds(Advance, st.sampled_from((0.1, 0.5, 1.0, 2.5))),
    ),
    max_size=30,
)


class _Held:
    __slots__ = ("release", "task")

    def __init__(self, task: asyncio.Task[Any], release: asyncio.Event) -> None:
        self.task = task
        self.release = release


async def _settle(task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(ProxyError, BodyStreamError, asyncio.CancelledError):
        await task


async def _history(
    ops: list[Call | Release | Advance],
    half_open_calls: int,
    failure_on: list[str],
    max_attempts: int,
) -> None:
    breaker_policy = {
        "consecutive_failures": 1,
        "open_duration": "1s",
        "max_open_duration": "4s",
        "half_open_calls": half_open_calls,
        "failure_on": failure_on,
    }
    config = chain_config(
        retries={"max_attempts": max_attempts, "backoff": {"jitter": "none"}},
        circuit_breaker=breaker_policy,
    )
    chain = StageChain(config, asyncio.get_running_loop())
    transport = chain.transport
    breaker = chain.upstream.breaker
    fillers = [ok(b"filler") for _ in range(max_attempts - 1)]
    held: list[_Held] = []
    try:
        for op in ops:
            if isinstance(op, Advance):
                chain.clock.advance(op.seconds)
            elif isinstance(op, Release):
                if held:
                    one = held.pop(0)
                    if op.cancel:
                        one.task.cancel()
                    else:
                        transport.add(*fillers)  # a retry after it finds its answers
                        one.release.set()
                    await _settle(one.task)
                    transport.clear()
            elif op.held:
                release = asyncio.Event()
                if op.outcome == "stream":
                    streaming = StreamingResponse(b"long")
                    streaming.more = release
                    transport.add(streaming)
                else:
                    transport.add(Step(_outcome(op.outcome), hold=release))
                before = transport.calls
                task = asyncio.create_task(chain.call())
                await eventually(lambda: task.done() or transport.calls > before)  # noqa: B023
                if task.done():
                    await _settle(task)
                    transport.clear()
                else:
                    held.append(_Held(task, release))
            else:
                outcome = ok(b"long") if op.outcome == "stream" else _outcome(op.outcome)
                transport.add(outcome, *fillers)
                await _settle(asyncio.create_task(chain.call()))
                transport.clear()
            trials_out: int = breaker._trials_out  # the invariant under test is internal state
            assert trials_out <= half_open_calls
        for one in held:
            one.release.set()
            transport.add(*fillers)
            await _settle(one.task)
            transport.clear()
        # The upstream answers from now on: within max_open_duration plus the trials, closed.
        chain.clock.advance(4.0)
        for _ in range(half_open_calls):
            transport.add(ok(b"healthy"))
            assert (await chain.call()).body == b"healthy"
        assert breaker.state is CircuitState.CLOSED
    finally:
        for one in held:
            one.task.cancel()
            await _settle(one.task)
        chain.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=_OPS,
    half_open_calls=st.integers(1, 3),
    failure_on=st.sampled_from((["5xx"], ["5xx", "timeout", "reset"], ["5xx", 429])),
    max_attempts=st.integers(1, 2),
)
def test_permit_breaker_always_recovers_once_the_upstream_answers(
    ops: list[Call | Release | Advance],
    half_open_calls: int,
    failure_on: list[str],
    max_attempts: int,
) -> None:
    """Whatever the history, trials never exceed half_open_calls and the breaker closes again."""
    asyncio.run(_history(ops, half_open_calls, failure_on, max_attempts))
