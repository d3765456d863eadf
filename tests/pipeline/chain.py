"""A route's real stage chain over a scripted transport, for stage tests (STYLE.md, Tests).

`StageChain` loads a one-upstream config, builds every route's stages with `build_stages`
(as the runtime does) on a `FakeClock`, a `RecordingObserver` and a `ScriptedTransport`, and
plays the handler's part for one request: pick the route, set the deadline, run the chain,
write the answer it returns through the `RecordingResponder` and settle it. Errors the chain
raises reach the test unchanged; the handler's error table is not involved.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from sidecar.config import load_config_text
from sidecar.errors import BodyStreamError
from sidecar.events import Event, Observers
from sidecar.outcome import outcome_for_status
from sidecar.pipeline.answer import Answer, StoredAnswer, UpstreamAnswer
from sidecar.pipeline.exchange import Exchange, Stage
from sidecar.pipeline.route import Route, Router
from sidecar.pipeline.stages import build_stages
from sidecar.upstream.group import Upstream
from sidecar.upstream.loopguard import LoopGuard
from sidecar.wire.body import RequestBody
from tests.fakes import (
    FakeClock,
    NullProducer,
    RecordingObserver,
    RecordingResponder,
    ScriptedTransport,
)

__all__ = ["ENDPOINT_A", "ENDPOINT_B", "NO_JITTER", "Call", "StageChain", "stage_chain"]

UPSTREAM = "svc"
ENDPOINT_A = "http://a.svc:8080"
ENDPOINT_B = "http://b.svc:8080"
# Exact backoff values: 25 ms, 50 ms, 100 ms, … (the SPEC's initial and multiplier).
NO_JITTER: dict[str, Any] = {"jitter": "none"}
SEED = 20240611


@dataclass(slots=True)
class Call:
    """One request run through the chain: the exchange, the answer the chain returned for
    it, and what was written on it."""

    exchange: Exchange
    responder: RecordingResponder
    answer: Answer

    @property
    def status(self) -> int:
        return self.responder.status

    @property
    def body(self) -> bytes:
        return self.responder.body


class StageChain:
    """The stage chains of upstream `svc` and everything they were built with."""

    __slots__ = ("_next_id", "clock", "observer", "router", "transport", "upstream")

    def __init__(self, config_text: str, loop: asyncio.AbstractEventLoop) -> None:
        self.clock = FakeClock()
        self.observer = RecordingObserver()
        self.transport = ScriptedTransport(clock=self.clock)
        self._next_id = 0
        observers = Observers([self.observer])
        rng = random.Random(SEED)
        transport = self.transport
        clock = self.clock

        def stages(upstream: Upstream, route: Route) -> Stage:
            return build_stages(upstream, route, transport, clock, observers, rng)

        config = load_config_text(config_text, source="<stage test>")
        self.router = Router(
            config, loop, LoopGuard(), stages, random.Random(SEED), clock, observers
        )
        self.upstream = self.router.dedicated(UPSTREAM)

    @property
    def events(self) -> list[Event]:
        return self.observer.events

    def exchange(
        self,
        method: str = "GET",
        path: str = "/x",
        *,
        body: bytes | None = None,
        idempotency_key: bool = False,
    ) -> Exchange:
        """A parsed request as the downstream side hands it over (a body has fully arrived)."""
        self._next_id += 1
        request_body = None
        if body is not None:
            request_body = RequestBody(NullProducer(), retain_limit=0)
            request_body.feed(body)
            request_body.finish()
        exchange = Exchange(
            method=method.encode(),
            target=path.encode(),
            path=path.encode(),
            authority="svc.test:80",
            host_header=None,
            forward_headers=b"",
            request_id=f"req-{self._next_id}",
            request_id_generated=True,
            body=request_body,
            content_length=None if body is None else len(body),
            listener="app",
            responder=RecordingResponder(),
            client_http11=True,
            client_keep_alive=True,
            started=self.clock.now(),
            wall_started=0.0,
        )
        exchange.idempotency_key = idempotency_key
        return exchange

    def route(self, exchange: Exchange) -> Route:
        return self.upstream.routes.match(exchange.method, exchange.path)

    async def answer(self, exchange: Exchange) -> Answer:
        """Route, deadline from `total`, the route's chain: its answer, unwritten, unsettled."""
        route = self.route(exchange)
        exchange.upstream = self.upstream
        exchange.route = route
        exchange.deadline = exchange.started + route.total
        assert route.pipeline is not None
        return await route.pipeline(exchange)

    async def run(self, exchange: Exchange) -> Call:
        """The handler's part: route, deadline from `total`, the route's chain, then write
        the answer and settle it (as `ProxyServer.handle` does)."""
        responder = exchange.responder
        assert isinstance(responder, RecordingResponder)
        answer = await self.answer(exchange)
        failure: BodyStreamError | None = None
        try:
            if isinstance(answer, UpstreamAnswer):
                exchange.outcome = outcome_for_status(answer.response.status)
                await responder.relay(exchange, answer.response)
            else:
                assert isinstance(answer, StoredAnswer)
                exchange.outcome = answer.outcome
                responder.send_fallback(
                    exchange, answer.status, answer.headers, answer.body, answer.kind, answer.age
                )
        except BodyStreamError as error:
            failure = error
            raise
        finally:
            answer.settle(failure)
        return Call(exchange, responder, answer)

    async def call(
        self,
        method: str = "GET",
        path: str = "/x",
        *,
        body: bytes | None = None,
        idempotency_key: bool = False,
    ) -> Call:
        """Build an exchange and run it; whatever the chain raises propagates."""
        exchange = self.exchange(method, path, body=body, idempotency_key=idempotency_key)
        return await self.run(exchange)

    def close(self) -> None:
        self.router.close()

    def __repr__(self) -> str:
        return f"StageChain({self.upstream!r}, {self.transport!r}, {self.observer!r})"


def chain_config(endpoints: tuple[str, ...] = (ENDPOINT_A,), **policy: Any) -> str:
    """A config with one dedicated listener for upstream `svc` and the given policy keys."""
    document = {
        "version": 1,
        "listeners": [{"name": "app", "bind": "127.0.0.1:0", "upstream": UPSTREAM}],
        "upstreams": {UPSTREAM: {"endpoints": list(endpoints), **policy}},
    }
    return yaml.safe_dump(document, sort_keys=False)


@contextmanager
def stage_chain(endpoints: tuple[str, ...] = (ENDPOINT_A,), **policy: Any) -> Iterator[StageChain]:
    """A `StageChain` for upstream `svc` with `policy` (YAML spellings); closed afterwards."""
    chain = StageChain(chain_config(endpoints, **policy), asyncio.get_running_loop())
    try:
        yield chain
    finally:
        chain.close()
