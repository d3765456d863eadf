"""Stages return an answer and write nothing (STYLE.md, the data plane): what the chain
returns, and what settling or discarding it releases (the attempt's record, its connection,
the endpoint's in-flight slot, the bulkhead slot), exactly once."""

from __future__ import annotations

from typing import Any

from sidecar.errors import BodyStreamError, UpstreamConnectError
from sidecar.events import AttemptFinished, CacheLookup, FallbackServed
from sidecar.outcome import AttemptResult, Outcome
from sidecar.pipeline.answer import StoredAnswer, UpstreamAnswer
from sidecar.pipeline.exchange import Exchange
from sidecar.pipeline.forward import AttemptAnswer
from tests.fakes import RecordingResponder, ScriptedResponse, StreamingResponse
from tests.pipeline.chain import ENDPOINT_A, StageChain, stage_chain

SVC = "svc"
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
ONE_SLOT: dict[str, Any] = {"max_concurrent": 1, "max_queued": 0}
STATIC: dict[str, Any] = {"status": 503, "body": "degraded"}


def ok(body: bytes = b"ok") -> ScriptedResponse:
    return ScriptedResponse(200, [(b"content-type", b"text/plain")], body)


def responder_of(chain: StageChain) -> tuple[Exchange, RecordingResponder]:
    exchange = chain.exchange()
    responder = exchange.responder
    assert isinstance(responder, RecordingResponder)
    return exchange, responder


async def test_answer_upstream_is_returned_unwritten_until_the_handler_settles_it() -> None:
    """The chain returns the attempt's response without writing it; settling records the attempt."""
    with stage_chain(retries=ONE_ATTEMPT, bulkhead=ONE_SLOT) as chain:
        response = ok(b"body")
        chain.transport.add(response)
        exchange, responder = responder_of(chain)
        answer = await chain.answer(exchange)
        assert isinstance(answer, AttemptAnswer)
        assert answer.response is response
        assert answer.attempt.status == 200
        assert (responder.head_sent, responder.status, exchange.status) == (False, 0, 0)
        # Until settled, the answer holds the connection, the endpoint's and the bulkhead's slots.
        assert chain.observer.of_type(AttemptFinished) == []
        assert not response.released
        assert chain.upstream.pools[0].inflight == 1
        assert chain.upstream.gate.in_flight == 1
        answer.settle()
        assert response.released
        assert not response.discarded
        assert chain.upstream.pools[0].inflight == 0
        assert chain.upstream.gate.in_flight == 0
        assert chain.observer.of_type(AttemptFinished) == [
            AttemptFinished(SVC, ENDPOINT_A, AttemptResult.SUCCESS, 0.0)
        ]


async def test_answer_settles_exactly_once() -> None:
    """A second settle or a late discard releases nothing twice and emits no second event."""
    with stage_chain(retries=ONE_ATTEMPT, bulkhead={"max_concurrent": 2, "max_queued": 0}) as chain:
        chain.transport.add(ok(), ok())
        held = await chain.answer(chain.exchange())  # keeps one slot for the whole test
        exchange, _ = responder_of(chain)
        answer = await chain.answer(exchange)
        assert chain.upstream.gate.in_flight == 2
        answer.settle()
        answer.settle()
        answer.discard()
        assert chain.upstream.gate.in_flight == 1  # the other answer's slot is untouched
        assert chain.upstream.pools[0].inflight == 1
        assert len(chain.observer.of_type(AttemptFinished)) == 1
        held.settle()
        assert chain.upstream.gate.in_flight == 0


async def test_answer_settled_with_a_broken_body_records_the_attempt_as_failed() -> None:
    """The failure passed to `settle` classifies the attempt for outlier detection."""
    with stage_chain(retries=ONE_ATTEMPT, outlier_detection={"consecutive_failures": 2}) as chain:
        chain.transport.add(ok())
        answer = await chain.answer(chain.exchange())
        answer.settle(BodyStreamError("reset mid-body", AttemptResult.RESET))
        assert chain.observer.of_type(AttemptFinished)[-1].result is AttemptResult.RESET
        health = chain.upstream.outliers.health(ENDPOINT_A)
        assert health is not None
        assert health.consecutive_failures == 1


async def test_answer_discarded_closes_its_connection_and_frees_its_slots() -> None:
    """An answer that will never be written drops its unread response and its slots."""
    with stage_chain(retries=ONE_ATTEMPT, bulkhead=ONE_SLOT) as chain:
        streaming = StreamingResponse(b"unread")
        chain.transport.add(streaming)
        answer = await chain.answer(chain.exchange())
        assert isinstance(answer, UpstreamAnswer)
        answer.discard()
        assert streaming.discarded
        assert not streaming.released
        assert chain.upstream.pools[0].inflight == 0
        assert chain.upstream.gate.in_flight == 0
        assert len(chain.observer.of_type(AttemptFinished)) == 1


async def test_answer_fallback_is_returned_unwritten() -> None:
    """A fallback in place of a failure is a stored answer the handler writes, not the stage."""
    with stage_chain(retries=ONE_ATTEMPT, bulkhead=ONE_SLOT, fallback={"static": STATIC}) as chain:
        chain.transport.add(UpstreamConnectError("refused"))
        exchange, responder = responder_of(chain)
        answer = await chain.answer(exchange)
        assert isinstance(answer, StoredAnswer)
        assert (answer.status, answer.kind, answer.body, answer.age) == (
            503,
            b"static",
            b"degraded",
            None,
        )
        assert answer.outcome is Outcome.FALLBACK_STATIC
        assert responder.fallbacks == []
        assert not responder.head_sent
        assert exchange.outcome is Outcome.SUCCESS  # accounting is the handler's, once written
        assert chain.upstream.gate.in_flight == 0  # the failed request's slot went with it
        assert chain.observer.of_type(FallbackServed) == [FallbackServed(SVC, "static")]


async def test_answer_returned_5xx_is_replaced_by_the_fallback_stage() -> None:
    """The fallback stage, not the attempt loop, swaps a final 503 for the fallback answer."""
    with stage_chain(
        retries=ONE_ATTEMPT, bulkhead=ONE_SLOT, fallback={"static": STATIC, "cache": None}
    ) as chain:
        failed = ScriptedResponse(503, body=b"down")
        chain.transport.add(failed)
        exchange, responder = responder_of(chain)
        answer = await chain.answer(exchange)
        assert isinstance(answer, StoredAnswer)
        assert failed.released or failed.discarded
        assert chain.upstream.pools[0].inflight == 0
        assert chain.upstream.gate.in_flight == 0
        assert not responder.head_sent
        assert chain.observer.of_type(CacheLookup) == []
        assert chain.observer.of_type(AttemptFinished) == [
            AttemptFinished(SVC, ENDPOINT_A, AttemptResult.HTTP_5XX, 0.0)
        ]
