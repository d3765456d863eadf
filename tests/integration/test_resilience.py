"""Retries, circuit breakers, bulkheads and rate limits over real loopback sockets (SPEC §3.2,
§4.1, §4.2, §4.6, §7, §8): what the client gets, what the upstream saw, and what the metrics and
logs say about it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.fakes import eventually
from tests.harness import RunningSidecar, running_sidecar
from tests.integration.configs import DEDICATED, config, dedicated
from tests.integration.rawhttp import RawResponse, Samples, raw_exchange, scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration

SVC = "svc"
FAST_BACKOFF: dict[str, Any] = {"initial": "1ms", "max": "2ms"}
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: svc\r\n\r\n".encode()


def post(path: str, body: bytes = b"{}") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: svc\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def send(sc: RunningSidecar, request: bytes) -> RawResponse:
    return await raw_exchange(sc.port(DEDICATED), request)


def transitions(samples: Samples, before: str, after: str, **labels: str) -> float:
    """`sidecar_circuit_transitions_total` of upstream svc from `before` to `after`."""
    return samples.value(
        "sidecar_circuit_transitions_total", upstream=SVC, **{"from": before, "to": after}, **labels
    )


def states_at_one(
    samples: Samples, name: str = "sidecar_circuit_state", **labels: str
) -> list[str]:
    """The states a circuit-state gauge of upstream svc shows as current (value 1)."""
    return [
        state
        for state in ("closed", "open", "half_open")
        if samples.value(name, upstream=SVC, state=state, **labels) == 1
    ]


def circuit_lines(sc: RunningSidecar) -> list[dict[str, Any]]:
    return [line for line in sc.log_lines() if str(line.get("msg", "")).startswith("circuit ")]


def assert_generated(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    """A generated SPEC §4.6 error: status, JSON content type, `x-sidecar-error`; its body."""
    assert response.status == status
    assert response.header("content-type") == "application/json"
    assert response.header("x-sidecar-error") == code
    body: dict[str, Any] = response.json()
    assert (body["error"], body["upstream"]) == (code, SVC)
    return body


# ---- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "sent"),
    [(get("/status/503"), 3), (post("/status/503"), 1)],
    ids=["get-retried", "post-sent-once"],
)
async def test_resilience_503_is_retried_only_for_retryable_methods(
    upstream: HttpUpstream, request_bytes: bytes, sent: int
) -> None:
    """A GET answered 503 is sent `max_attempts` times; a POST is sent exactly once."""
    retries = {"max_attempts": 3, "backoff": FAST_BACKOFF}
    async with running_sidecar(dedicated(upstream.url(""), retries=retries)) as sc:
        response = await send(sc, request_bytes)
        samples = await scrape(sc.admin_url)
    assert response.status == 503
    assert response.json() == {"status": 503}  # the upstream's own answer, unchanged
    assert response.header("x-sidecar-attempts") == str(sent)
    assert upstream.count("/status/503") == sent
    assert samples.value("sidecar_retries_total", upstream=SVC, reason="503") == sent - 1


async def test_resilience_retry_after_connect_refused_goes_to_the_other_endpoint(
    upstream: HttpUpstream,
) -> None:
    """A refused connect to the first endpoint is retried on the healthy second one."""
    endpoints = [f"http://127.0.0.1:{closed_port()}", upstream.url("")]
    text = config(
        listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": SVC}],
        upstreams={SVC: {"endpoints": endpoints, "retries": {"backoff": FAST_BACKOFF}}},
    )
    async with running_sidecar(text) as sc:
        response = await send(sc, get("/ok"))
        samples = await scrape(sc.admin_url)
    assert (response.status, response.body) == (200, b"ok")
    assert response.header("x-sidecar-attempts") == "2"
    assert upstream.count("/ok") == 1
    assert samples.value("sidecar_retries_total", upstream=SVC, reason="connect_failure") == 1
    assert samples.value("sidecar_upstream_attempts_total", result="connect_failure") == 1


@pytest.mark.parametrize(
    ("retry_after", "attempts", "min_wait", "max_wait"),
    [(1, 2, 0.95, 1.8), (10, 1, 0.0, 0.5)],
    ids=["1s-honoured", "10s-over-max-not-retried"],
)
async def test_resilience_retry_after_delays_or_prevents_the_retry(
    upstream: HttpUpstream, retry_after: int, attempts: int, min_wait: float, max_wait: float
) -> None:
    """A 503 `Retry-After: 1` is waited out before the retry; `Retry-After: 10` over a 2 s max is
    answered at once."""
    retries = {"max_attempts": 2, "max_retry_after": "2s", "backoff": FAST_BACKOFF}
    loop = asyncio.get_running_loop()
    async with running_sidecar(dedicated(upstream.url(""), retries=retries)) as sc:
        started = loop.time()
        response = await send(sc, get(f"/status/503?Retry-After={retry_after}"))
        waited = loop.time() - started
    assert response.status == 503
    assert response.header("retry-after") == str(retry_after)  # the upstream's, passed through
    assert response.header("x-sidecar-attempts") == str(attempts)
    assert upstream.count("/status/503") == attempts
    assert min_wait <= waited < max_wait


async def test_resilience_retry_budget_bounds_retries_under_total_failure(
    upstream: HttpUpstream,
) -> None:
    """With a 20% budget and no reserve, 50 failing requests cause about 10 retries, not 100."""
    requests = 50
    retries = {
        "max_attempts": 3,
        "backoff": FAST_BACKOFF,
        "budget": {"ratio": "20%", "min_per_second": 0, "window": "1m"},
    }
    breaker = {"enabled": False}  # keep every request reaching the upstream
    text = dedicated(upstream.url(""), retries=retries, circuit_breaker=breaker)
    async with running_sidecar(text) as sc:
        for _ in range(requests):
            assert (await send(sc, get("/status/503"))).status == 503
        samples = await scrape(sc.admin_url)
    retried = samples.value("sidecar_retries_total", upstream=SVC)
    assert 0 < retried <= 0.2 * requests + 1
    assert upstream.count("/status/503") == requests + retried
    assert samples.value("sidecar_retry_budget_exhausted_total", upstream=SVC) >= requests - retried


# ---- circuit breaker -----------------------------------------------------------------------

BREAKER: dict[str, Any] = {
    "consecutive_failures": 3,
    "open_duration": "200ms",
    "half_open_calls": 2,
}


async def test_resilience_open_circuit_rejects_without_reaching_the_upstream(
    upstream: HttpUpstream,
) -> None:
    """Three 503s open the circuit; then requests get 503 `circuit_open` and the upstream sees none."""
    text = dedicated(upstream.url(""), retries=ONE_ATTEMPT, circuit_breaker=BREAKER)
    async with running_sidecar(text) as sc:
        upstream.fail_next(3, 503)
        for _ in range(3):
            assert (await send(sc, get("/ok"))).json() == {"scripted_failure": 503}
        rejected = [await send(sc, get("/ok")) for _ in range(2)]
        samples = await scrape(sc.admin_url)
        access = sc.access_lines()
        events = circuit_lines(sc)
    assert upstream.total == 3
    for response in rejected:
        body = assert_generated(response, 503, "circuit_open")
        assert response.header("retry-after") == "1"  # 200 ms left open, rounded up
        assert body["retry_after_s"] == 1
        assert response.header("x-sidecar-attempts") == "0"
    assert transitions(samples, "closed", "open") == 1
    assert states_at_one(samples) == ["open"]
    assert samples.value("sidecar_rejected_total", upstream=SVC, reason="circuit_open") == 2
    assert samples.value("sidecar_requests_total", upstream=SVC, outcome="rejected") == 2
    assert [line["circuit_state"] for line in access] == [
        "closed",
        "closed",
        "open",
        "open",
        "open",
    ]
    assert [(line["outcome"], line.get("error")) for line in access[3:]] == [
        ("rejected", "circuit_open")
    ] * 2
    [opened] = events
    assert (opened["level"], opened["msg"]) == ("warning", "circuit opened")
    assert (opened["upstream"], opened["from_state"], opened["to_state"]) == (SVC, "closed", "open")
    assert "3 consecutive failures" in opened["reason"]


async def test_resilience_half_open_admits_only_its_trials_then_closes(
    upstream: HttpUpstream,
) -> None:
    """After `open_duration`, exactly `half_open_calls` trials go through; their success closes it."""
    text = dedicated(upstream.url(""), retries=ONE_ATTEMPT, circuit_breaker=BREAKER)
    loop = asyncio.get_running_loop()
    async with running_sidecar(text) as sc:
        upstream.fail_next(3, 503)
        for _ in range(3):
            await send(sc, get("/ok"))
        opened_at = loop.time()
        await asyncio.sleep(0.25)  # open_duration (200 ms) passes: the next request is a trial
        trials = [asyncio.create_task(send(sc, get("/hang"))) for _ in range(2)]
        await eventually(lambda: upstream.count("/hang") == 2, within=2.0)
        extra = await send(sc, get("/hang"))
        samples_half_open = await scrape(sc.admin_url)
        upstream.release()
        answers = await asyncio.gather(*trials)
        after = await send(sc, get("/ok"))
        samples = await scrape(sc.admin_url)
        events = circuit_lines(sc)
    assert loop.time() - opened_at < 2.5
    assert [answer.status for answer in answers] == [200, 200]
    body = assert_generated(extra, 503, "circuit_open")
    assert body["retry_after_s"] == 1
    assert upstream.count("/hang") == 2  # the third request never reached it
    assert states_at_one(samples_half_open) == ["half_open"]
    assert (after.status, after.body) == (200, b"ok")
    assert states_at_one(samples) == ["closed"]
    for before, to in [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]:
        assert transitions(samples, before, to) == 1, (before, to)
    assert [(line["level"], line["msg"]) for line in events] == [
        ("warning", "circuit opened"),
        ("info", "circuit half-open"),
        ("info", "circuit closed"),
    ]


async def test_resilience_route_breaker_opens_without_affecting_other_paths(
    upstream: HttpUpstream,
) -> None:
    """A route with its own breaker opens alone: its path is refused, other paths still flow."""
    routes = [
        {
            "name": "flaky",
            "match": {"path_prefix": "/status"},
            "circuit_breaker": {"consecutive_failures": 2, "open_duration": "5s"},
        }
    ]
    text = dedicated(upstream.url(""), retries=ONE_ATTEMPT, routes=routes)
    async with running_sidecar(text) as sc:
        for _ in range(2):
            assert (await send(sc, get("/status/503"))).status == 503
        refused = await send(sc, get("/status/200"))
        fine = [await send(sc, get("/ok")) for _ in range(3)]
        samples = await scrape(sc.admin_url)
        access = sc.access_lines()
        events = circuit_lines(sc)
    assert_generated(refused, 503, "circuit_open")
    assert upstream.count("/status/200") == 0
    assert [response.status for response in fine] == [200, 200, 200]
    assert states_at_one(samples, "sidecar_route_circuit_state", route="flaky") == ["open"]
    assert states_at_one(samples) == ["closed"]
    route_opened = {"route": "flaky", "from": "closed", "to": "open"}
    assert samples.value("sidecar_route_circuit_transitions_total", **route_opened) == 1
    assert samples.value("sidecar_circuit_transitions_total", upstream=SVC) == 0
    assert [(line["route"], line["circuit_state"]) for line in access] == [
        ("flaky", "closed"),
        ("flaky", "open"),
        ("flaky", "open"),
        ("default", "closed"),
        ("default", "closed"),
        ("default", "closed"),
    ]
    [opened] = events
    assert (opened["msg"], opened["route"]) == ("circuit opened", "flaky")


# ---- admission -----------------------------------------------------------------------------


async def test_resilience_full_bulkhead_rejects_at_once(upstream: HttpUpstream) -> None:
    """With one slot, no queue and a request parked upstream, the next gets 503 `bulkhead_full` at once."""
    bulkhead = {"max_concurrent": 1, "max_queued": 0}
    loop = asyncio.get_running_loop()
    async with running_sidecar(dedicated(upstream.url(""), bulkhead=bulkhead)) as sc:
        parked = asyncio.create_task(send(sc, get("/hang")))
        await eventually(lambda: upstream.count("/hang") == 1, within=2.0)
        started = loop.time()
        response = await send(sc, get("/ok"))
        waited = loop.time() - started
        upstream.release()
        released = await parked
        after = await send(sc, get("/ok"))
        samples = await scrape(sc.admin_url)
    assert_generated(response, 503, "bulkhead_full")
    assert waited < 0.5
    assert (released.status, after.status) == (200, 200)
    assert upstream.count("/ok") == 1  # only the request after the release
    assert samples.value("sidecar_rejected_total", upstream=SVC, reason="bulkhead_full") == 1


async def test_resilience_rate_limit_answers_429_with_retry_after(upstream: HttpUpstream) -> None:
    """With `{rps: 1, burst: 2}` the third immediate request gets 429 `rate_limited`, Retry-After ≥ 1."""
    async with running_sidecar(
        dedicated(upstream.url(""), rate_limit={"rps": 1, "burst": 2})
    ) as sc:
        responses = [await send(sc, get("/ok")) for _ in range(3)]
        samples = await scrape(sc.admin_url)
        access = sc.access_lines()
    assert [response.status for response in responses[:2]] == [200, 200]
    limited = responses[2]
    body = assert_generated(limited, 429, "rate_limited")
    retry_after = limited.header("retry-after")
    assert retry_after is not None
    assert int(retry_after) >= 1
    assert body["retry_after_s"] == int(retry_after)
    assert upstream.count("/ok") == 2
    assert samples.value("sidecar_rejected_total", upstream=SVC, reason="rate_limited") == 1
    assert samples.value("sidecar_rejected_total", upstream=SVC, reason="bulkhead_full") == 0
    assert (access[2]["status"], access[2]["outcome"], access[2]["attempts"]) == (
        429,
        "rejected",
        0,
    )
