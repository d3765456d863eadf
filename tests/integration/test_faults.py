"""Fault injection over real sockets (SPEC §3.2 `faults`, §7): aborts that never reach the
upstream, injected resets, delays bounded by `per_try`, route-level faults, and the outage
rehearsal users run: faults open the breaker while the stored answer keeps being served."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sidecar.config import FaultPolicy
from tests.harness import RunningSidecar, running_sidecar
from tests.integration.configs import DEDICATED, dedicated
from tests.integration.rawhttp import RawResponse, raw_exchange, scrape
from tests.upstreams import HttpUpstream, pattern_bytes

pytestmark = pytest.mark.integration

ONE_ATTEMPT: dict[str, Any] = {"retries": {"max_attempts": 1}}
NO_BREAKER: dict[str, Any] = {"circuit_breaker": {"enabled": False}}


async def ask(sc: RunningSidecar, path: str = "/ok") -> RawResponse:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    return await raw_exchange(sc.port(DEDICATED), request)


async def test_faults_abort_status_answers_without_contacting_the_upstream(
    upstream: HttpUpstream,
) -> None:
    """`abort: 100%, status: 503` answers every request 503 with zero upstream requests; the
    default retries retry the 503, so each request counts three aborts."""
    faults = {"abort": {"percent": "100%", "status": 503}}
    async with running_sidecar(dedicated(upstream.url(), faults=faults, **NO_BREAKER)) as sc:
        responses = [await ask(sc) for _ in range(3)]
        samples = await scrape(sc.admin_url)
        lines = sc.access_lines()
    assert upstream.total == 0
    for response in responses:
        assert response.status == 503
        assert response.json()["error"] == "fault_injected"
        assert response.header("x-sidecar-attempts") == "3"
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="abort") == 9
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="delay") == 0
    assert samples.value("sidecar_retries_total", upstream="svc", reason="503") == 6
    assert [line["outcome"] for line in lines] == ["upstream_error"] * 3


async def test_faults_abort_reset_gives_502_upstream_reset(upstream: HttpUpstream) -> None:
    """`abort: {reset: true}` acts as a connection reset: 502 `upstream_reset`, no contact."""
    faults = {"abort": {"percent": "100%", "reset": True}}
    async with running_sidecar(dedicated(upstream.url(), faults=faults, **ONE_ATTEMPT)) as sc:
        response = await ask(sc)
        samples = await scrape(sc.admin_url)
        lines = sc.access_lines()
    assert upstream.total == 0
    assert response.status == 502
    assert response.header("x-sidecar-error") == "upstream_reset"
    assert response.json()["error"] == "upstream_reset"
    assert lines[0]["outcome"] == "reset"
    assert samples.value("sidecar_upstream_attempts_total", upstream="svc", result="reset") == 1
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="abort") == 1


async def test_faults_delay_adds_latency_and_the_upstream_still_answers(
    upstream: HttpUpstream,
) -> None:
    """`delay: 100%, 200ms` makes a request take at least 200 ms; the upstream then answers."""
    faults = {"delay": {"percent": "100%", "duration": "200ms"}}
    loop = asyncio.get_running_loop()
    async with running_sidecar(dedicated(upstream.url(), faults=faults, **ONE_ATTEMPT)) as sc:
        started = loop.time()
        response = await ask(sc)
        elapsed = loop.time() - started
        samples = await scrape(sc.admin_url)
    assert (response.status, response.body) == (200, b"ok")
    assert upstream.count("/ok") == 1
    assert 0.2 <= elapsed < 1.0
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="delay") == 1


async def test_faults_delay_past_per_try_times_out_without_contacting_the_upstream(
    upstream: HttpUpstream,
) -> None:
    """A delay longer than `per_try` ends the attempt at `per_try` as 504 `upstream_timeout`,
    and the request is never sent."""
    faults = {"delay": {"percent": "100%", "duration": "2s"}}
    policy = {"timeouts": {"per_try": "100ms"}, "faults": faults, **ONE_ATTEMPT}
    loop = asyncio.get_running_loop()
    async with running_sidecar(dedicated(upstream.url(), **policy)) as sc:
        started = loop.time()
        response = await ask(sc)
        elapsed = loop.time() - started
    assert response.status == 504
    assert response.header("x-sidecar-error") == "upstream_timeout"
    assert upstream.total == 0
    assert 0.1 <= elapsed < 0.6


async def test_faults_at_zero_percent_never_inject(upstream: HttpUpstream) -> None:
    """`percent: 0%` on both faults leaves every request untouched."""
    faults = {
        "delay": {"percent": "0%", "duration": "5s"},
        "abort": {"percent": "0%", "status": 500},
    }
    async with running_sidecar(dedicated(upstream.url(), faults=faults, **ONE_ATTEMPT)) as sc:
        statuses = [(await ask(sc)).status for _ in range(20)]
        samples = await scrape(sc.admin_url)
    assert statuses == [200] * 20
    assert upstream.count("/ok") == 20
    assert samples.value("sidecar_faults_injected_total") == 0


async def test_faults_on_a_route_apply_only_to_that_route(upstream: HttpUpstream) -> None:
    """A route's `faults` abort its own requests; the upstream's other paths are untouched."""
    routes = [
        {
            "match": {"path_prefix": "/status"},
            "faults": {"abort": {"percent": "100%", "status": 500}},
        }
    ]
    async with running_sidecar(dedicated(upstream.url(), routes=routes, **ONE_ATTEMPT)) as sc:
        faulty = await ask(sc, "/status/200")
        healthy = await ask(sc, "/ok")
        samples = await scrape(sc.admin_url)
    assert faulty.status == 500
    assert faulty.json()["error"] == "fault_injected"
    assert (healthy.status, healthy.body) == (200, b"ok")
    assert upstream.count("/status/200") == 0
    assert upstream.count("/ok") == 1
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="abort") == 1


async def test_faults_rehearsal_opens_the_breaker_and_serves_the_stored_answer(
    upstream: HttpUpstream,
) -> None:
    """With an answer stored, aborting every attempt opens the breaker and the app keeps
    getting the stored answer, while the upstream receives nothing more."""
    policy: dict[str, Any] = {
        "circuit_breaker": {"consecutive_failures": 3, "open_duration": "10s"},
        "fallback": {"cache": {"max_stale": "5m"}},
    }
    async with running_sidecar(dedicated(upstream.url(), **policy)) as sc:
        fresh = await ask(sc, "/bytes/256")
        # What `PUT /upstreams/svc/faults` sets: runtime faults replace the configured ones.
        assert sc.runtime.server is not None
        svc = sc.runtime.server.router.dedicated("svc")
        svc.runtime_faults = FaultPolicy.model_validate(
            {"abort": {"percent": "100%", "status": 503}}
        )
        tripping = await ask(sc, "/bytes/256")
        rejected = [await ask(sc, "/bytes/256") for _ in range(3)]
        samples = await scrape(sc.admin_url)
        lines = sc.access_lines()
    assert fresh.status == 200
    assert upstream.total == 1
    for served in (tripping, *rejected):
        assert (served.status, served.body) == (200, pattern_bytes(256))
        assert served.header("x-sidecar-fallback") == "cache"
    assert tripping.header("x-sidecar-attempts") == "3"
    assert [r.header("x-sidecar-attempts") for r in rejected] == ["0"] * 3
    assert samples.value("sidecar_faults_injected_total", upstream="svc", kind="abort") == 3
    assert samples.value("sidecar_circuit_state", upstream="svc", state="open") == 1
    assert samples.value("sidecar_fallbacks_total", upstream="svc", kind="cache") == 4
    assert [line["outcome"] for line in lines] == ["success"] + ["fallback_cache"] * 4
