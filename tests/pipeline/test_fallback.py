"""The fallback stage and fault injection over a scripted transport (SPEC §3.2, §4.4): the order
cache → static → failure, the exact `CacheLookup`/`FallbackServed` sequences, rejections served
only when listed in `serve_on`, the tee that stores only complete bodies, and seeded faults."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from sidecar.config import FaultPolicy
from sidecar.errors import (
    BodyStreamError,
    BulkheadFullError,
    CircuitOpenError,
    ProxyError,
    RateLimitedError,
    UpstreamConnectError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from sidecar.events import (
    AttemptFinished,
    CacheLookup,
    FallbackServed,
    FaultInjected,
    RequestRejected,
    RetryScheduled,
)
from sidecar.outcome import AttemptResult, Outcome
from sidecar.pipeline.answer import StoredAnswer, UpstreamAnswer
from sidecar.resilience.breaker import CircuitState
from tests.fakes import ScriptedResponse, Step, TruncatedResponse, eventually
from tests.pipeline.chain import ENDPOINT_A, NO_JITTER, SEED, Call, StageChain, stage_chain

SVC = "svc"
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
NO_BREAKER: dict[str, Any] = {"enabled": False}
STATIC_BODY = b'{"degraded": true}'
STATIC: dict[str, Any] = {
    "status": 503,
    "headers": {"content-type": "application/json"},
    "body": STATIC_BODY.decode(),
}
CACHE: dict[str, Any] = {"max_stale": "60s"}
REFUSED = UpstreamConnectError("connection refused")


def ok(body: bytes = b"fresh", *headers: tuple[bytes, bytes]) -> ScriptedResponse:
    return ScriptedResponse(200, [(b"content-type", b"text/plain"), *headers], body)


def status(code: int) -> ScriptedResponse:
    return ScriptedResponse(code, [(b"content-type", b"application/json")], b'{"s": %d}' % code)


def attempt(result: AttemptResult) -> AttemptFinished:
    return AttemptFinished(SVC, ENDPOINT_A, result, 0.0)


def lookup(result: str) -> CacheLookup:
    return CacheLookup(SVC, result)


def served(kind: str) -> FallbackServed:
    return FallbackServed(SVC, kind)


def fallback(
    cache: dict[str, Any] | None = None, static: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"cache": cache, "static": static}


async def store_one(chain: StageChain, body: bytes = b"stored", path: str = "/x") -> None:
    """A successful GET whose answer the tee copies into the store."""
    chain.transport.add(ok(body))
    call = await chain.call("GET", path)
    assert (call.status, call.body) == (200, body)
    chain.observer.clear()


# ---- the chain: cache, then static, then the failure ---------------------------------------


async def test_fallback_serves_the_stored_answer_before_the_static_one() -> None:
    """With both configured, a refused connect is answered from the store, with its `Age`."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        await store_one(chain)
        chain.clock.advance(7.0)
        chain.transport.add(REFUSED)
        call = await chain.call()
        assert isinstance(call.answer, StoredAnswer)
        assert call.answer.outcome is Outcome.FALLBACK_CACHE
        assert call.responder.fallbacks == [(200, b"cache", b"stored")]
        assert call.responder.fallback_age == b"7"
        assert call.responder.fallback_headers == [(b"content-type", b"text/plain")]
        assert call.exchange.outcome is Outcome.FALLBACK_CACHE
        assert call.exchange.attempts == 1
        assert chain.events == [
            attempt(AttemptResult.CONNECT_FAILURE),
            lookup("hit"),
            served("cache"),
        ]


async def test_fallback_serves_static_when_nothing_is_stored() -> None:
    """A store miss falls through to the static response, which carries no `Age`."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        chain.transport.add(REFUSED)
        call = await chain.call()
        assert call.responder.fallbacks == [(503, b"static", STATIC_BODY)]
        assert call.responder.fallback_headers == [(b"content-type", b"application/json")]
        assert call.responder.fallback_age is None
        assert call.exchange.outcome is Outcome.FALLBACK_STATIC
        assert chain.events == [
            attempt(AttemptResult.CONNECT_FAILURE),
            lookup("miss"),
            served("static"),
        ]


async def test_fallback_static_alone_is_served_without_a_lookup() -> None:
    """Without a cache there is no lookup: the static response answers at once."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(static=STATIC)) as chain:
        chain.transport.add(UpstreamResetError("reset"))
        call = await chain.call()
        assert call.responder.fallbacks == [(503, b"static", STATIC_BODY)]
        assert chain.events == [attempt(AttemptResult.RESET), served("static")]


async def test_fallback_passes_the_error_on_when_nothing_applies() -> None:
    """A miss with no static response re-raises the attempt's own error, unchanged."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE)) as chain:
        chain.transport.add(REFUSED)
        with pytest.raises(UpstreamConnectError) as raised:
            await chain.call()
        assert raised.value is REFUSED
        assert chain.events == [attempt(AttemptResult.CONNECT_FAILURE), lookup("miss")]


async def test_fallback_relays_the_upstream_5xx_when_nothing_applies() -> None:
    """A final 503 with nothing stored and no static response reaches the client unchanged."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE)) as chain:
        answer = status(503)
        chain.transport.add(answer)
        call = await chain.call()
        assert isinstance(call.answer, UpstreamAnswer)
        assert (call.status, call.body) == (503, b'{"s": 503}')
        assert call.responder.fallbacks == []
        assert call.exchange.outcome is Outcome.UPSTREAM_ERROR
        assert chain.events == [lookup("miss"), attempt(AttemptResult.HTTP_5XX)]


async def test_fallback_answers_a_final_5xx_from_the_store() -> None:
    """A final upstream 503 is replaced by the stored answer; the 503 is never relayed."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        await store_one(chain)
        answer = status(503)
        chain.transport.add(answer)
        call = await chain.call()
        assert isinstance(call.answer, StoredAnswer)
        assert call.responder.fallbacks == [(200, b"cache", b"stored")]
        assert answer.released or answer.discarded
        assert chain.events == [lookup("hit"), served("cache"), attempt(AttemptResult.HTTP_5XX)]


@pytest.mark.parametrize(
    ("serve_on", "kind"),
    [
        (["timeout"], None),
        (["5xx"], b"cache"),
        ([503], b"cache"),
        ([502], None),
    ],
    ids=["5xx-not-listed", "5xx-listed", "exact-503-listed", "only-502-listed"],
)
async def test_fallback_answers_a_5xx_only_when_serve_on_lists_it(
    serve_on: list[Any], kind: bytes | None
) -> None:
    """`serve_on` decides whether a final 503 is replaced; otherwise it passes through."""
    cache = {**CACHE, "serve_on": serve_on}
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(cache)) as chain:
        await store_one(chain)
        chain.transport.add(status(503))
        call = await chain.call()
        if kind is None:
            assert (call.status, call.body, call.responder.fallbacks) == (503, b'{"s": 503}', [])
            assert chain.observer.of_type(CacheLookup) == []
        else:
            assert call.responder.fallbacks == [(200, kind, b"stored")]


async def test_fallback_serves_after_retries_are_exhausted() -> None:
    """Every retry runs first; the fallback answers only for the final failure."""
    retries = {"max_attempts": 3, "backoff": NO_JITTER}
    with stage_chain(retries=retries, fallback=fallback(CACHE)) as chain:
        await store_one(chain)
        chain.transport.add(REFUSED, REFUSED, REFUSED)
        call = await chain.call()
        assert call.responder.fallbacks == [(200, b"cache", b"stored")]
        assert call.exchange.attempts == 3
        assert chain.observer.types() == [
            "AttemptFinished",
            "RetryScheduled",
            "AttemptFinished",
            "RetryScheduled",
            "AttemptFinished",
            "CacheLookup",
            "FallbackServed",
        ]


async def test_fallback_is_not_consulted_while_the_upstream_answers() -> None:
    """A fresh 200 is relayed even when a stored answer exists: no lookup, no fallback."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        await store_one(chain, b"old")
        chain.transport.add(ok(b"new"))
        call = await chain.call()
        assert (call.status, call.body, call.responder.fallbacks) == (200, b"new", [])
        assert chain.events == [attempt(AttemptResult.SUCCESS)]


# ---- stale limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "age", "kind"),
    [
        (None, 59.0, b"cache"),
        (None, 61.0, b"static"),
        (b"max-age=0, stale-if-error=5", 4.0, b"cache"),
        (b"max-age=0, stale-if-error=5", 6.0, b"static"),
        (b"stale-if-error=120", 100.0, b"cache"),
        (b"stale-if-error=0", 1.0, b"static"),
    ],
    ids=[
        "within-max-stale",
        "past-max-stale",
        "within-stale-if-error",
        "past-stale-if-error",
        "stale-if-error-beyond-max-stale",
        "stale-if-error-0",
    ],
)
async def test_fallback_serves_an_entry_only_within_its_stale_limit(
    cache_control: bytes | None, age: float, kind: bytes
) -> None:
    """An entry older than `max_stale`, or its own `stale-if-error=N` when set, is not served."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        headers = [(b"cache-control", cache_control)] if cache_control is not None else []
        chain.transport.add(ok(b"stored", *headers))
        await chain.call()
        chain.clock.advance(age)
        chain.transport.add(REFUSED)
        call = await chain.call()
        assert [(k, b) for _, k, b in call.responder.fallbacks] == [
            (kind, b"stored" if kind == b"cache" else STATIC_BODY)
        ]


# ---- rejections ----------------------------------------------------------------------------


async def fill_bulkhead(chain: StageChain) -> tuple[asyncio.Task[Call], asyncio.Event]:
    """Start a request whose attempt stays parked in the transport until the event is set."""
    hold = asyncio.Event()
    chain.transport.add(Step(ok(b"held"), hold=hold))
    task = asyncio.create_task(chain.call())
    calls = chain.transport.calls
    await eventually(lambda: chain.transport.calls == calls + 1)
    return task, hold


REJECTIONS: list[tuple[str, str, type[ProxyError], dict[str, Any]]] = [
    ("circuit-open", "circuit_open", CircuitOpenError, {}),
    (
        "bulkhead-full",
        "bulkhead_full",
        BulkheadFullError,
        {"bulkhead": {"max_concurrent": 1, "max_queued": 0}},
    ),
    # Two tokens: one for the stored answer, one spent just before the rejected request.
    ("rate-limited", "rate_limited", RateLimitedError, {"rate_limit": {"rps": 0.001, "burst": 2}}),
]


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
@pytest.mark.parametrize(
    ("trigger", "reason", "error", "policy"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
async def test_fallback_serves_a_rejection_only_when_serve_on_lists_it(
    trigger: str, reason: str, error: type[ProxyError], policy: dict[str, Any], listed: bool
) -> None:
    """A rejected request never reaches the transport; it gets the stored answer if and only
    if its rejection is listed in `serve_on`, else the rejection error itself."""
    others = ["timeout", "connect-failure", "reset", "5xx"]
    serve_on = [*others, trigger] if listed else others
    cache = {**CACHE, "serve_on": serve_on}
    config = {"retries": ONE_ATTEMPT, "fallback": fallback(cache), **policy}
    with stage_chain(**config) as chain:
        await store_one(chain)
        held = None
        if trigger == "circuit-open":
            chain.upstream.breaker.force(CircuitState.OPEN)
        elif trigger == "bulkhead-full":
            held = await fill_bulkhead(chain)
        else:
            chain.transport.add(ok(b"second"))
            await chain.call("GET", "/other")  # spends the last token
        chain.observer.clear()
        calls = chain.transport.calls
        if listed:
            call = await chain.call()
            assert call.responder.fallbacks == [(200, b"cache", b"stored")]
            assert call.exchange.attempts == 0
            assert chain.events == [RequestRejected(SVC, reason), lookup("hit"), served("cache")]
        else:
            with pytest.raises(error):
                await chain.call()
            assert chain.events == [RequestRejected(SVC, reason)]
        assert chain.transport.calls == calls
        if held is not None:
            task, hold = held
            hold.set()
            assert (await task).body == b"held"


async def test_fallback_static_only_serves_circuit_open_by_default() -> None:
    """With only a static response, the SPEC default `serve_on` applies: circuit-open is in it."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(static=STATIC)) as chain:
        chain.upstream.breaker.force(CircuitState.OPEN)
        call = await chain.call()
        assert call.responder.fallbacks == [(503, b"static", STATIC_BODY)]
        assert chain.transport.calls == 0
        assert chain.events == [RequestRejected(SVC, "circuit_open"), served("static")]


# ---- the tee -------------------------------------------------------------------------------


@pytest.mark.parametrize("announced", [10, None], ids=["content-length", "unknown-length"])
async def test_fallback_tee_stores_nothing_when_the_body_breaks_off(announced: int | None) -> None:
    """A 200 whose body resets mid-way is abandoned by the tee: a later failure finds nothing."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        truncated = TruncatedResponse(b"part", 10, [(b"content-type", b"text/plain")])
        truncated.content_length = announced
        chain.transport.add(truncated)
        with pytest.raises(BodyStreamError):
            await chain.call()
        store = chain.route(chain.exchange()).store
        assert store is not None
        assert (store.entries, store.bytes) == (0, 0)
        chain.observer.clear()
        chain.transport.add(REFUSED)
        call = await chain.call()
        assert call.responder.fallbacks == [(503, b"static", STATIC_BODY)]
        assert chain.events == [
            attempt(AttemptResult.CONNECT_FAILURE),
            lookup("miss"),
            served("static"),
        ]


async def test_fallback_tee_stores_a_head_answer_that_has_no_body() -> None:
    """A HEAD answer is complete with its head: it is stored and serves a later HEAD."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE)) as chain:
        head = ScriptedResponse(200, [(b"content-type", b"text/plain")])
        head.has_body = False  # as the transport delivers any answer to a HEAD
        head.content_length = 4096
        chain.transport.add(head)
        assert (await chain.call("HEAD")).status == 200
        chain.transport.add(REFUSED)
        call = await chain.call("HEAD")
        assert call.responder.fallbacks == [(200, b"cache", b"")]
        chain.transport.add(REFUSED)
        with pytest.raises(UpstreamConnectError):
            await chain.call("GET")  # a HEAD entry never answers a GET


@pytest.mark.parametrize(
    "header",
    [
        (b"cache-control", b"no-store"),
        (b"cache-control", b"private, max-age=60"),
        (b"set-cookie", b"session=s3cr3t"),
    ],
    ids=["no-store", "private", "set-cookie"],
)
async def test_fallback_tee_never_stores_unsafe_answers(header: tuple[bytes, bytes]) -> None:
    """`no-store`, `private` and `Set-Cookie` answers are relayed but never stored."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE)) as chain:
        chain.transport.add(ok(b"secret", header))
        call = await chain.call()
        assert (call.status, call.body) == (200, b"secret")
        chain.transport.add(REFUSED)
        with pytest.raises(UpstreamConnectError):
            await chain.call()
        assert chain.observer.of_type(CacheLookup) == [lookup("miss")]


async def test_fallback_guarded_request_is_bypassed() -> None:
    """A request with `Authorization` not in `key_headers` is neither stored nor looked up."""
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE, STATIC)) as chain:
        first = chain.exchange()
        first.forward_headers = b"authorization: Bearer a\r\n"
        chain.transport.add(ok(b"for-a"))
        await chain.run(first)
        second = chain.exchange()
        second.forward_headers = b"authorization: Bearer a\r\n"
        chain.transport.add(REFUSED)
        call = await chain.run(second)
        assert call.responder.fallbacks == [(503, b"static", STATIC_BODY)]
        assert chain.observer.of_type(CacheLookup) == [lookup("bypass")]


# ---- faults --------------------------------------------------------------------------------

# random.Random(SEED).random() < 0.5 over 20 draws, one draw per attempt ("A" = aborted).
ABORT_PATTERN = "..AA..AA..AAAA.AAAAA"


async def test_faults_abort_half_of_the_attempts_in_the_seeded_pattern() -> None:
    """At 50% the upstream's injected rng decides each attempt, one draw per attempt."""
    faults = {"abort": {"percent": "50%", "status": 503}}
    policy: dict[str, Any] = {
        "retries": ONE_ATTEMPT,
        "circuit_breaker": NO_BREAKER,
        "faults": faults,
    }
    with stage_chain(**policy) as chain:
        pattern = ""
        for _ in ABORT_PATTERN:
            if chain.transport.remaining == 0:  # an aborted attempt leaves its answer unasked
                chain.transport.add(ok())
            call = await chain.call()
            pattern += "A" if call.status == 503 else "."
        assert pattern == ABORT_PATTERN
        assert chain.transport.calls == ABORT_PATTERN.count(".")
        assert chain.observer.of_type(FaultInjected) == [
            FaultInjected(SVC, "abort")
        ] * ABORT_PATTERN.count("A")
        assert (
            "".join("A" if draw < 0.5 else "." for draw in _draws(len(ABORT_PATTERN)))
            == ABORT_PATTERN
        )


def _draws(n: int) -> list[float]:
    rng = random.Random(SEED)
    return [rng.random() for _ in range(n)]


async def test_faults_delay_is_drawn_before_abort_for_each_attempt() -> None:
    """With both at 50% each attempt draws delay first, then abort: the pattern is exact."""
    faults = {
        "delay": {"percent": "50%", "duration": "1s"},
        "abort": {"percent": "50%", "status": 500},
    }
    policy: dict[str, Any] = {
        "retries": ONE_ATTEMPT,
        "circuit_breaker": NO_BREAKER,
        "faults": faults,
    }
    draws = _draws(16)
    expected = [(draws[2 * i] < 0.5, draws[2 * i + 1] < 0.5) for i in range(8)]
    assert expected == [
        (False, False),
        (True, True),
        (False, False),
        (True, True),
        (False, False),
        (True, True),
        (True, True),
        (False, True),
    ]
    with stage_chain(**policy) as chain:
        seen = []
        for _ in expected:
            chain.clock.sleeps.clear()
            if chain.transport.remaining == 0:
                chain.transport.add(ok())
            call = await chain.call()
            seen.append((chain.clock.sleeps == [1.0], call.status == 500))
        assert seen == expected
        assert [e.kind for e in chain.observer.of_type(FaultInjected)] == [
            kind
            for delayed, aborted in expected
            for kind, on in (("delay", delayed), ("abort", aborted))
            if on
        ]


async def test_faults_abort_status_never_contacts_the_upstream_and_is_retried() -> None:
    """An injected 503 is an attempt's answer: retried as a 503, the transport never called."""
    faults = {"abort": {"percent": "100%", "status": 503}}
    retries = {"max_attempts": 3, "backoff": NO_JITTER}
    with stage_chain(retries=retries, faults=faults) as chain:
        call = await chain.call()
        assert call.status == 503
        assert b"fault_injected" in call.body
        assert call.exchange.attempts == 3
        assert chain.transport.calls == 0
        abort = FaultInjected(SVC, "abort")
        failed = attempt(AttemptResult.HTTP_5XX)
        assert chain.events == [
            abort,
            failed,
            RetryScheduled(SVC, "503", 0.025),
            abort,
            failed,
            RetryScheduled(SVC, "503", 0.05),
            abort,
            failed,
        ]


async def test_faults_abort_reset_acts_as_a_reset() -> None:
    """`abort: {reset: true}` fails each attempt as a reset before anything is sent."""
    faults = {"abort": {"percent": "100%", "reset": True}}
    retries = {"max_attempts": 2, "backoff": NO_JITTER}
    with stage_chain(retries=retries, faults=faults) as chain:
        with pytest.raises(UpstreamResetError):
            await chain.call()
        assert chain.transport.calls == 0
        assert chain.observer.of_type(AttemptFinished) == [attempt(AttemptResult.RESET)] * 2


async def test_faults_delay_counts_against_the_attempt_deadline() -> None:
    """A delay shorter than `per_try` is slept, then the request goes out with the same
    deadline it had before the delay."""
    faults = {"delay": {"percent": "100%", "duration": "200ms"}}
    policy: dict[str, Any] = {
        "retries": ONE_ATTEMPT,
        "timeouts": {"per_try": "1s"},
        "faults": faults,
    }
    with stage_chain(**policy) as chain:
        started = chain.clock.now()
        chain.transport.add(ok())
        call = await chain.call()
        assert (call.status, call.body) == (200, b"fresh")
        assert chain.clock.sleeps == [0.2]
        assert chain.transport.sent[0].deadline == pytest.approx(started + 1.0)
        assert chain.observer.of_type(FaultInjected) == [FaultInjected(SVC, "delay")]


async def test_faults_delay_longer_than_per_try_times_out_without_sending() -> None:
    """A delay past `per_try` waits out the attempt's deadline and ends it as a timeout."""
    faults = {"delay": {"percent": "100%", "duration": "2s"}}
    policy: dict[str, Any] = {
        "retries": ONE_ATTEMPT,
        "timeouts": {"per_try": "100ms"},
        "faults": faults,
    }
    with stage_chain(**policy) as chain:
        with pytest.raises(UpstreamTimeoutError):
            await chain.call()
        assert chain.clock.sleeps == pytest.approx([0.1])
        assert chain.transport.calls == 0
        (finished,) = chain.observer.of_type(AttemptFinished)
        assert finished.result is AttemptResult.TIMEOUT
        assert finished.duration == pytest.approx(0.1)


async def test_faults_at_zero_percent_never_inject() -> None:
    """`percent: 0%` configures the faults but never applies them."""
    faults = {
        "delay": {"percent": "0%", "duration": "1s"},
        "abort": {"percent": "0%", "status": 503},
    }
    with stage_chain(retries=ONE_ATTEMPT, faults=faults) as chain:
        for _ in range(20):
            chain.transport.add(ok())
            assert (await chain.call()).status == 200
        assert chain.transport.calls == 20
        assert chain.clock.sleeps == []
        assert chain.observer.of_type(FaultInjected) == []


async def test_faults_abort_with_a_stored_answer_serves_the_fallback() -> None:
    """An injected 503 on the final attempt is answered from the store, like a real one."""
    faults = {"abort": {"percent": "100%", "status": 503}}
    with stage_chain(retries=ONE_ATTEMPT, fallback=fallback(CACHE)) as chain:
        await store_one(chain)
        chain.upstream.runtime_faults = FaultPolicy.model_validate(faults)
        call = await chain.call()
        assert call.responder.fallbacks == [(200, b"cache", b"stored")]
        assert chain.transport.calls == 1  # only the call that stored it
        assert chain.events == [
            FaultInjected(SVC, "abort"),
            lookup("hit"),
            served("cache"),
            attempt(AttemptResult.HTTP_5XX),
        ]
