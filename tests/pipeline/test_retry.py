"""The attempt loop as a stage (SPEC §4.1 steps 3–5, §4.2): the real chain of a route over a
scripted transport, asserting the answer, the backoff schedule and the exact event sequence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.errors import (
    AttemptError,
    CircuitOpenError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from sidecar.events import (
    AttemptFinished,
    CircuitTransitioned,
    Event,
    RequestRejected,
    RetryBudgetExhausted,
    RetryScheduled,
)
from sidecar.outcome import AttemptResult
from sidecar.resilience.breaker import CircuitState
from tests.fakes import ScriptedOutcome, ScriptedResponse, Step, eventually
from tests.pipeline.chain import ENDPOINT_A, ENDPOINT_B, NO_JITTER, stage_chain

SVC = "svc"
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
SUCCESS = AttemptResult.SUCCESS
HTTP_5XX = AttemptResult.HTTP_5XX


def ok(body: bytes = b"ok") -> ScriptedResponse:
    return ScriptedResponse(200, [(b"content-type", b"text/plain")], body)


def status(code: int, *headers: tuple[bytes, bytes]) -> ScriptedResponse:
    return ScriptedResponse(code, headers, b'{"status": %d}' % code)


def finished(result: AttemptResult, endpoint: str = ENDPOINT_A) -> AttemptFinished:
    return AttemptFinished(SVC, endpoint, result, 0.0)


def retry(reason: str, delay: float) -> RetryScheduled:
    return RetryScheduled(SVC, reason, delay)


def transition(before: str, after: str, reason: str, route: str = "default") -> Event:
    return CircuitTransitioned(SVC, route, before, after, reason)


# ---- backoff -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ({}, [0.025, 0.05, 0.1, 0.2]),
        ({"max": "60ms"}, [0.025, 0.05, 0.06, 0.06]),
        ({"initial": "10ms", "multiplier": 3}, [0.01, 0.03, 0.09, 0.27]),
    ],
    ids=["doubling", "capped-at-max", "multiplier-3"],
)
async def test_retry_backoff_schedule_without_jitter_is_exact(
    backoff: dict[str, Any], expected: list[float]
) -> None:
    """Four failed GETs then a 200: sleeps follow initial × multiplier^n capped at max."""
    retries = {"max_attempts": 5, "backoff": {**NO_JITTER, **backoff}}
    with stage_chain(retries=retries) as chain:
        chain.transport.add(status(503), status(502), status(504), status(503), ok(b"fine"))
        call = await chain.call()
        assert (call.status, call.body, call.exchange.attempts) == (200, b"fine", 5)
        assert chain.clock.sleeps == pytest.approx(expected)
        assert [e.delay for e in chain.observer.of_type(RetryScheduled)] == chain.clock.sleeps
        assert chain.transport.calls == 5


async def test_retry_event_sequence_for_two_failures_then_success() -> None:
    """Each failed attempt is finished and its retry scheduled, in order; the success is last."""
    with stage_chain(retries={"backoff": NO_JITTER}) as chain:
        first, second = status(503), status(502)
        chain.transport.add(first, second, ok())
        call = await chain.call()
        assert call.status == 200
        assert chain.events == [
            finished(HTTP_5XX),
            retry("503", 0.025),
            finished(HTTP_5XX),
            retry("502", 0.05),
            finished(SUCCESS),
        ]
        # Discarded answers gave their (complete) connection back; none reached the client.
        assert first.released
        assert second.released
        assert chain.transport.sent[2].attempt == 3


async def test_retry_full_jitter_delays_stay_within_their_caps() -> None:
    """With full jitter each retry waits a random time in [0, initial × 2^(n-1)]."""
    with stage_chain(retries={"max_attempts": 5}) as chain:
        chain.transport.add(*(status(503) for _ in range(4)), ok())
        call = await chain.call()
        assert call.status == 200
        caps = [0.025, 0.05, 0.1, 0.2]
        sleeps = chain.clock.sleeps
        assert len(sleeps) == len(caps)
        assert all(0.0 <= slept <= cap for slept, cap in zip(sleeps, caps, strict=True))
        assert sleeps != caps  # jitter was applied, not the bare exponential
        assert [e.delay for e in chain.observer.of_type(RetryScheduled)] == sleeps


@pytest.mark.parametrize(
    ("failure", "reason", "result"),
    [
        (UpstreamConnectError("refused"), "connect_failure", AttemptResult.CONNECT_FAILURE),
        (UpstreamResetError("reset"), "reset", AttemptResult.RESET),
        (UpstreamTimeoutError("slow"), "timeout", AttemptResult.TIMEOUT),
        (UpstreamProtocolError("bad head"), "protocol_error", AttemptResult.PROTOCOL_ERROR),
        (status(502), "502", HTTP_5XX),
        (status(504), "504", HTTP_5XX),
    ],
    ids=["connect-failure", "reset", "timeout", "protocol-error", "502", "504"],
)
async def test_retry_default_conditions_are_retried_with_their_reason(
    failure: ScriptedOutcome, reason: str, result: AttemptResult
) -> None:
    """Every default `retries.on` outcome is retried, and the retry names it as its reason."""
    with stage_chain(retries={"backoff": NO_JITTER}) as chain:
        chain.transport.add(failure, ok())
        call = await chain.call()
        assert call.status == 200
        assert chain.events == [finished(result), retry(reason, 0.025), finished(SUCCESS)]


@pytest.mark.parametrize("code", [500, 501, 429, 404], ids=["500", "501", "429", "404"])
async def test_retry_unlisted_status_is_answered_at_once(code: int) -> None:
    """A status outside `retries.on` is relayed after one attempt, with no retry."""
    with stage_chain() as chain:
        chain.transport.add(status(code), ok())
        call = await chain.call()
        assert (call.status, call.exchange.attempts, chain.transport.calls) == (code, 1, 1)
        assert chain.clock.sleeps == []
        assert chain.observer.of_type(RetryScheduled) == []


async def test_retry_exhausted_attempts_answer_the_last_response() -> None:
    """After `max_attempts` failures the last upstream answer is relayed unchanged."""
    with stage_chain(retries={"max_attempts": 3, "backoff": NO_JITTER}) as chain:
        last = ScriptedResponse(503, [(b"x-last", b"yes")], b"third")
        chain.transport.add(status(503), status(503), last)
        call = await chain.call()
        assert (call.status, call.body, call.exchange.attempts) == (503, b"third", 3)
        assert last.released
        assert not last.discarded
        assert chain.clock.sleeps == [0.025, 0.05]


async def test_retry_exhausted_attempts_raise_the_last_failure() -> None:
    """When no attempt got an answer the last attempt's error is raised for the handler."""
    with stage_chain(retries={"max_attempts": 2, "backoff": NO_JITTER}) as chain:
        last = UpstreamTimeoutError("second")
        chain.transport.add(UpstreamResetError("first"), last)
        with pytest.raises(UpstreamTimeoutError) as raised:
            await chain.call()
        assert raised.value is last
        assert chain.events == [
            finished(AttemptResult.RESET),
            retry("reset", 0.025),
            finished(AttemptResult.TIMEOUT),
        ]


# ---- Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "retries", "sleeps"),
    [
        (status(503, (b"retry-after", b"2")), {}, [2.0]),
        (status(429, (b"retry-after", b"1")), {"on": [429]}, [1.0]),
        (status(503, (b"retry-after", b"0")), {}, [0.0]),
        (status(503, (b"retry-after", b"5")), {"max_retry_after": "5s"}, [5.0]),
        (status(503, (b"retry-after", b"3")), {"respect_retry_after": False}, [0.025]),
        (status(502, (b"retry-after", b"3")), {}, [0.025]),
        (status(503, (b"retry-after", b"soon")), {}, [0.025]),
        (status(503, (b"retry-after", b"-1")), {}, [0.025]),
    ],
    ids=[
        "503-seconds",
        "429-seconds",
        "zero",
        "equal-to-max",
        "not-respected",
        "502-ignored",
        "invalid",
        "negative",
    ],
)
async def test_retry_after_seconds_replace_the_backoff(
    response: ScriptedResponse, retries: dict[str, Any], sleeps: list[float]
) -> None:
    """A 429/503 `Retry-After` in seconds is the wait before the retry; otherwise the backoff."""
    with stage_chain(retries={"backoff": NO_JITTER, **retries}) as chain:
        chain.transport.add(response, ok())
        call = await chain.call()
        assert (call.status, chain.transport.calls) == (200, 2)
        assert chain.clock.sleeps == sleeps
        assert [e.delay for e in chain.observer.of_type(RetryScheduled)] == sleeps


@pytest.mark.parametrize(
    ("retry_after", "max_retry_after"),
    [(b"10", "2s"), (b"6", "5s"), (b"99999999999999999999999", "5s")],
    ids=["10s-over-2s", "6s-over-default", "huge"],
)
async def test_retry_after_above_max_retry_after_is_not_retried(
    retry_after: bytes, max_retry_after: str
) -> None:
    """An upstream asking for longer than `max_retry_after` gets its answer relayed, no retry."""
    with stage_chain(retries={"max_retry_after": max_retry_after}) as chain:
        response = status(503, (b"retry-after", retry_after))
        chain.transport.add(response, ok())
        call = await chain.call()
        assert (call.status, call.exchange.attempts, chain.transport.calls) == (503, 1, 1)
        assert chain.clock.sleeps == []
        assert chain.events == [finished(HTTP_5XX)]


# ---- methods -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [status(503), UpstreamTimeoutError("slow"), UpstreamResetError("reset")],
    ids=["503", "timeout", "reset"],
)
async def test_retry_post_is_not_resent_once_it_may_have_arrived(
    failure: ScriptedOutcome,
) -> None:
    """A POST that reached the upstream (503, timeout, reset) is sent exactly once."""
    with stage_chain() as chain:
        chain.transport.add(failure, ok())
        exchange = chain.exchange("POST", body=b"charge=1")
        if isinstance(failure, AttemptError):
            with pytest.raises(type(failure)):
                await chain.run(exchange)
        else:
            call = await chain.run(exchange)
            assert call.status == 503
        assert (chain.transport.calls, exchange.attempts) == (1, 1)
        assert chain.observer.of_type(RetryScheduled) == []


async def test_retry_post_is_retried_after_a_connect_failure() -> None:
    """A refused connect sent nothing, so even a POST is retried, with its whole body."""
    with stage_chain(retries={"backoff": NO_JITTER}) as chain:
        chain.transport.add(UpstreamConnectError("refused"), ok())
        call = await chain.call("POST", body=b"charge=1")
        assert (call.status, chain.transport.calls) == (200, 2)
        assert chain.transport.sent[1].body == b"charge=1"
        assert chain.events == [
            finished(AttemptResult.CONNECT_FAILURE),
            retry("connect_failure", 0.025),
            finished(SUCCESS),
        ]


@pytest.mark.parametrize("method", ["POST", "PATCH"], ids=["post", "patch"])
async def test_retry_idempotency_key_makes_post_and_patch_retryable(method: str) -> None:
    """A POST or PATCH carrying an Idempotency-Key is retried on a 503 like a GET."""
    with stage_chain(retries={"backoff": NO_JITTER}) as chain:
        chain.transport.add(status(503), ok())
        call = await chain.call(method, body=b"{}", idempotency_key=True)
        assert (call.status, chain.transport.calls) == (200, 2)
        assert [sent.body for sent in chain.transport.sent] == [b"{}", b"{}"]


@pytest.mark.parametrize(
    ("method", "retried"),
    [("GET", True), ("POST", True), ("PUT", False), ("DELETE", False)],
    ids=["listed-get", "listed-post", "unlisted-put", "unlisted-delete"],
)
async def test_retry_methods_list_decides_what_is_retried(method: str, retried: bool) -> None:
    """Only methods in `retries.methods` are retried after a 503 (here GET and POST)."""
    with stage_chain(retries={"methods": ["GET", "POST"]}) as chain:
        chain.transport.add(status(503), ok())
        call = await chain.call(method)
        assert call.status == (200 if retried else 503)
        assert chain.transport.calls == (2 if retried else 1)


# ---- request bodies ------------------------------------------------------------------------


async def test_retry_body_larger_than_buffer_limit_is_not_retried() -> None:
    """A PUT body over `buffer_limit` was streamed, not kept: its 503 is relayed, not retried."""
    with stage_chain(retries={"buffer_limit": "16B"}) as chain:
        body = b"x" * 17
        chain.transport.add(status(503), ok())
        call = await chain.call("PUT", body=body)
        assert (call.status, chain.transport.calls) == (503, 1)
        assert chain.transport.sent[0].body == body


async def test_retry_body_within_buffer_limit_is_replayed_whole() -> None:
    """A PUT body within `buffer_limit` is kept and sent again in full on the retry."""
    with stage_chain(retries={"buffer_limit": "16B"}) as chain:
        body = b"y" * 16
        chain.transport.add(status(503), status(503), ok())
        call = await chain.call("PUT", body=body)
        assert (call.status, chain.transport.calls) == (200, 3)
        assert all(sent.body == body and sent.body_ended for sent in chain.transport.sent)


# ---- endpoints, deadline, budget -----------------------------------------------------------


@pytest.mark.parametrize(
    "balancing", ["round_robin", "least_request", "random"], ids=["rr", "least", "random"]
)
async def test_retry_goes_to_another_endpoint(balancing: str) -> None:
    """With two endpoints every retry after a refused connect goes to the other one."""
    policy = {"load_balancing": balancing, "circuit_breaker": {"enabled": False}}
    with stage_chain(endpoints=(ENDPOINT_A, ENDPOINT_B), **policy) as chain:
        for _ in range(10):
            chain.transport.add(UpstreamConnectError("refused"), ok())
            call = await chain.call()
            assert call.status == 200
            first, second = chain.transport.sent[-2:]
            assert (first.attempt, second.attempt) == (1, 2)
            assert first.endpoint != second.endpoint, chain.transport.endpoints
        successes = chain.observer.of_type(AttemptFinished)[1::2]
        assert [event.endpoint for event in successes] == chain.transport.endpoints[1::2]


async def test_retry_stops_when_the_backoff_would_pass_the_total_deadline() -> None:
    """With `total: 100ms` attempts start at 0, 25 and 75 ms; a 100 ms backoff would pass it."""
    retries = {"max_attempts": 5, "backoff": NO_JITTER}
    with stage_chain(retries=retries, timeouts={"total": "100ms"}) as chain:
        chain.transport.add(*(status(503) for _ in range(5)))
        start = chain.clock.now()
        call = await chain.call()
        assert (call.status, chain.transport.calls, call.exchange.attempts) == (503, 3, 3)
        assert chain.clock.sleeps == [0.025, 0.05]
        # Each attempt's own deadline is the request's: per_try (5 s) is later.
        assert {sent.deadline for sent in chain.transport.sent} == {start + 0.1}


async def test_retry_per_try_deadline_is_capped_by_the_total() -> None:
    """An attempt's deadline is `per_try` from its start, but never past `total`."""
    timeouts = {"per_try": "40ms", "total": "100ms"}
    with stage_chain(retries={"backoff": NO_JITTER}, timeouts=timeouts) as chain:
        timeout = UpstreamTimeoutError("no head")
        chain.transport.add(Step(timeout, takes=0.04), Step(timeout, takes=0.035), ok())
        start = chain.clock.now()
        with pytest.raises(UpstreamTimeoutError):
            await chain.call()
        # 0 → 40 ms, wait 25 ms, 65 → 100 ms; a 50 ms backoff then passes the deadline.
        assert [sent.deadline - start for sent in chain.transport.sent] == pytest.approx(
            [0.04, 0.1]
        )
        assert chain.clock.sleeps == [0.025]
        assert chain.transport.remaining == 1


@pytest.mark.parametrize(
    ("make_failure", "expected"),
    [
        (
            lambda: status(503),
            [
                finished(HTTP_5XX),
                retry("503", 0.025),
                RetryBudgetExhausted(SVC),
                finished(HTTP_5XX),
            ],
        ),
        (
            lambda: UpstreamConnectError("refused"),
            [
                finished(AttemptResult.CONNECT_FAILURE),
                retry("connect_failure", 0.025),
                finished(AttemptResult.CONNECT_FAILURE),
                RetryBudgetExhausted(SVC),
            ],
        ),
    ],
    ids=["response", "error"],
)
async def test_retry_budget_exhaustion_answers_with_the_last_failure(
    make_failure: Callable[[], ScriptedOutcome], expected: list[Event]
) -> None:
    """At 20% with no reserve, one request earns one retry; the next is refused by the budget."""
    retries = {"backoff": NO_JITTER, "budget": {"ratio": "20%", "min_per_second": 0}}
    with stage_chain(retries=retries) as chain:
        first, last = make_failure(), make_failure()
        chain.transport.add(first, last, ok())
        exchange = chain.exchange()
        if isinstance(last, AttemptError):
            with pytest.raises(UpstreamConnectError) as raised:
                await chain.run(exchange)
            assert raised.value is last
        else:
            assert isinstance(last, ScriptedResponse)
            call = await chain.run(exchange)
            assert (call.status, call.body) == (503, last.body)
            assert last.released
            assert not last.discarded
        assert chain.transport.calls == exchange.attempts == 2
        assert chain.events == expected
        assert chain.upstream.budget.retries == 1


async def test_retry_budget_is_shared_by_the_upstreams_routes() -> None:
    """Retries on one route spend the budget another route of the same upstream then lacks."""
    retries = {"backoff": NO_JITTER, "budget": {"ratio": "50%", "min_per_second": 0}}
    routes = [{"match": {"path_prefix": "/a"}, "timeouts": {"total": "10s"}}]
    with stage_chain(retries=retries, routes=routes) as chain:
        chain.transport.add(status(503), ok(), status(503))
        assert (await chain.call("GET", "/a")).status == 200
        assert (await chain.call("GET", "/b")).status == 503
        assert chain.observer.types().count("RetryBudgetExhausted") == 1


# ---- circuit breaker -----------------------------------------------------------------------

TRIP_ON_TWO: dict[str, Any] = {"consecutive_failures": 2, "open_duration": "1s"}


async def test_retry_stops_once_the_attempt_itself_opened_the_breaker() -> None:
    """The failure that opens the breaker is not retried, though attempts remain."""
    retries = {"max_attempts": 3, "backoff": NO_JITTER}
    with stage_chain(retries=retries, circuit_breaker=TRIP_ON_TWO) as chain:
        chain.transport.add(status(503), status(503), ok())
        call = await chain.call()
        assert (call.status, chain.transport.calls) == (503, 2)
        assert chain.events == [
            finished(HTTP_5XX),
            retry("503", 0.025),
            transition("closed", "open", "2 consecutive failures"),
            finished(HTTP_5XX),
        ]
        assert chain.upstream.breaker.state is CircuitState.OPEN


async def test_retry_refused_by_a_breaker_opened_during_the_backoff_raises_the_last_failure() -> (
    None
):
    """When another request opens the breaker during the backoff, the retry is off and the
    request fails with its own last error, not as a rejection."""
    retries = {"backoff": NO_JITTER}
    with stage_chain(retries=retries, circuit_breaker=TRIP_ON_TWO) as chain:
        mine = UpstreamResetError("first")
        chain.transport.add(mine, status(503))
        exchange = chain.exchange()
        retrying = asyncio.create_task(chain.run(exchange))
        await eventually(lambda: chain.clock.sleeps == [0.025])
        # The retrying request is parked in its backoff; a second failure opens the breaker.
        assert (await chain.call()).status == 503
        with pytest.raises(UpstreamResetError) as raised:
            await retrying
        assert raised.value is mine
        assert (chain.transport.calls, exchange.attempts) == (2, 1)
        assert chain.observer.of_type(RequestRejected) == []


async def test_retry_open_breaker_rejects_without_contacting_the_upstream() -> None:
    """While open, a request fails with `CircuitOpenError` (time left open) and sends nothing."""
    with stage_chain(retries={"max_attempts": 1}, circuit_breaker=TRIP_ON_TWO) as chain:
        chain.transport.add(status(503), status(503))
        for _ in range(2):
            await chain.call()
        chain.observer.clear()
        chain.clock.advance(0.4)
        exchange = chain.exchange()
        with pytest.raises(CircuitOpenError) as raised:
            await chain.run(exchange)
        assert raised.value.retry_after == pytest.approx(0.6)
        assert (chain.transport.calls, exchange.attempts) == (2, 0)
        assert chain.events == [RequestRejected(SVC, "circuit_open")]
        assert chain.upstream.gate.in_flight == 0  # the bulkhead slot was given back


async def test_retry_half_open_trial_gets_exactly_one_attempt() -> None:
    """A half-open trial answered with a retryable 429 (not a breaker failure) is not retried."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s", "half_open_calls": 2}
    retries = {"on": [429, 503], "backoff": NO_JITTER}
    with stage_chain(retries=retries, circuit_breaker=breaker) as chain:
        chain.transport.add(status(503), status(429), ok())
        assert (await chain.call()).status == 503  # opens the breaker
        chain.clock.advance(1.0)
        chain.observer.clear()
        call = await chain.call()
        assert (call.status, call.exchange.attempts, chain.transport.calls) == (429, 1, 2)
        assert chain.events == [
            transition("open", "half_open", "open duration 1s elapsed"),
            finished(SUCCESS),
        ]
        assert chain.upstream.breaker.state is CircuitState.HALF_OPEN


async def test_retry_trial_keeps_one_attempt_even_if_the_breaker_closes_meanwhile() -> None:
    """A request admitted as a trial stays a trial: an operator closing the breaker mid-call adds no retry."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s", "half_open_calls": 1}
    with stage_chain(retries={"backoff": NO_JITTER}, circuit_breaker=breaker) as chain:
        hold = asyncio.Event()
        chain.transport.add(status(503), Step(status(503), hold=hold), ok())
        await chain.call()
        chain.clock.advance(1.0)
        trial = asyncio.create_task(chain.call())
        await eventually(lambda: chain.transport.calls == 2)
        chain.upstream.breaker.force(CircuitState.CLOSED)
        hold.set()
        call = await trial
        assert (call.status, call.exchange.attempts, chain.transport.calls) == (503, 1, 2)
        assert chain.observer.of_type(RetryScheduled) == []


async def test_retry_half_open_admits_only_its_trials_then_closes() -> None:
    """With one trial slot a concurrent request is rejected; the trial's success closes it."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s", "half_open_calls": 1}
    with stage_chain(retries={"max_attempts": 1}, circuit_breaker=breaker) as chain:
        hold = asyncio.Event()
        chain.transport.add(status(503), Step(ok(b"trial"), hold=hold), ok(b"after"))
        await chain.call()
        chain.clock.advance(1.0)
        chain.observer.clear()
        trial = asyncio.create_task(chain.call())
        await eventually(lambda: chain.transport.calls == 2)
        with pytest.raises(CircuitOpenError) as raised:
            await chain.call()
        assert raised.value.retry_after == 0.0  # half-open: no time left open to wait for
        hold.set()
        assert (await trial).body == b"trial"
        assert (await chain.call()).body == b"after"
        # The call is judged at its response head, so the breaker closes before the trial's
        # body has been relayed and its attempt finishes.
        assert chain.events == [
            transition("open", "half_open", "open duration 1s elapsed"),
            RequestRejected(SVC, "circuit_open"),
            transition("half_open", "closed", "1 half-open trial succeeded"),
            finished(SUCCESS),
            finished(SUCCESS),
        ]


async def test_retry_cancelled_trial_frees_its_slot() -> None:
    """A trial whose client goes away mid-call gives its slot to the next request."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s", "half_open_calls": 1}
    with stage_chain(retries=ONE_ATTEMPT, circuit_breaker=breaker) as chain:
        chain.transport.add(status(503), Step(ok(b"never"), hold=asyncio.Event()), ok(b"next"))
        await chain.call()
        chain.clock.advance(1.0)
        trial = asyncio.create_task(chain.call())
        await eventually(lambda: chain.transport.calls == 2)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        call = await chain.call()
        assert call.body == b"next"
        assert chain.upstream.breaker.state is CircuitState.CLOSED


async def test_retry_failed_trial_reopens_for_twice_as_long() -> None:
    """A failed half-open trial opens the breaker again with the open duration doubled."""
    breaker = {"consecutive_failures": 1, "open_duration": "1s", "half_open_calls": 1}
    with stage_chain(circuit_breaker=breaker) as chain:
        chain.transport.add(status(503), status(503))
        await chain.call()
        chain.clock.advance(1.0)
        chain.observer.clear()
        call = await chain.call()
        assert (call.status, chain.transport.calls) == (503, 2)
        assert chain.events == [
            transition("open", "half_open", "open duration 1s elapsed"),
            transition("half_open", "open", "half-open trial failed"),
            finished(HTTP_5XX),
        ]
        with pytest.raises(CircuitOpenError) as raised:
            await chain.call()
        assert raised.value.retry_after == pytest.approx(2.0)


async def test_retry_breaker_failures_follow_failure_on_not_retries_on() -> None:
    """A 429 retried by `retries.on` is no breaker failure unless `failure_on` lists it."""
    breaker = {"consecutive_failures": 2, "open_duration": "1s"}
    with stage_chain(retries={"on": [429], "max_attempts": 3}, circuit_breaker=breaker) as chain:
        chain.transport.add(status(429), status(429), status(429))
        call = await chain.call()
        assert (call.status, chain.transport.calls) == (429, 3)
        assert chain.upstream.breaker.state is CircuitState.CLOSED
        assert chain.observer.of_type(CircuitTransitioned) == []


async def test_route_with_its_own_breaker_opens_alone() -> None:
    """A route that sets `circuit_breaker` has its own breaker; opening it leaves the upstream's closed."""
    routes = [
        {
            "name": "reports",
            "match": {"path_prefix": "/reports"},
            "circuit_breaker": {"consecutive_failures": 1, "open_duration": "1s"},
        }
    ]
    with stage_chain(retries={"max_attempts": 1}, routes=routes) as chain:
        chain.transport.add(status(503), ok(b"other"))
        reports = chain.route(chain.exchange("GET", "/reports/1"))
        assert reports.breaker is not chain.upstream.breaker
        assert (await chain.call("GET", "/reports/1")).status == 503
        with pytest.raises(CircuitOpenError):
            await chain.call("GET", "/reports/2")
        assert (await chain.call("GET", "/other")).body == b"other"
        assert reports.breaker.state is CircuitState.OPEN
        assert chain.upstream.breaker.state is CircuitState.CLOSED
        assert chain.observer.of_type(CircuitTransitioned) == [
            transition("closed", "open", "1 consecutive failures", route="reports")
        ]
        assert chain.upstream.breakers() == [
            (SVC, "default", "closed"),
            (SVC, "reports", "open"),
        ]
