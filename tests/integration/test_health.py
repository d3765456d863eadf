"""Active health checks over real loopback sockets: what a check sends and how it is judged,
an endpoint whose `/health` fails leaving rotation and coming back, panic mode, probes that
end with the sidecar, and a reload that keeps a checker's state."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from sidecar.clock import LoopClock
from sidecar.config import Endpoint, HealthCheckPolicy
from sidecar.events import EndpointHealthChanged, Observers
from sidecar.upstream.group import Upstream
from sidecar.upstream.health import HealthChecker, HealthProbe
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.pool import EndpointPool
from tests.fakes import FakeClock, RecordingObserver
from tests.harness import RunningSidecar, running_sidecar, running_sidecar_file
from tests.integration.configs import DEDICATED, config
from tests.integration.rawhttp import raw_exchange, scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration

SVC = "svc"
# Fast checks: two failures (about 100-150 ms with the first check's jitter) take an endpoint
# out, two passes bring it back.
CHECKS: dict[str, Any] = {
    "path": "/health",
    "interval": "50ms",
    "timeout": "200ms",
    "healthy": 2,
    "unhealthy": 2,
}
WITHIN = 1.5  # a change of health shows within this (a few intervals, with slack for CI)


def svc_config(*endpoints: HttpUpstream, health_check: dict[str, Any] | None = CHECKS) -> str:
    """Listener `app` for upstream `svc` over `endpoints`, with only health checks judging them."""
    upstream: dict[str, Any] = {
        "endpoints": [endpoint.url("") for endpoint in endpoints],
        "outlier_detection": {"consecutive_failures": 0},
        "circuit_breaker": {"enabled": False},
        "retries": {"max_attempts": 1},
    }
    if health_check is not None:
        upstream["health_check"] = health_check
    return config(
        listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": SVC}],
        upstreams={SVC: upstream},
    )


def svc(sc: RunningSidecar) -> Upstream:
    """The running `svc` upstream (after a reload, the new config's)."""
    server = sc.runtime.server
    assert server is not None
    return server.router.dedicated(SVC)


async def until(condition: Callable[[], bool], what: str, within: float = WITHIN) -> None:
    """Check `condition` every 10 ms; fail the test naming `what` after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - health is probe state, nothing to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {within}s: {what}")


async def send(sc: RunningSidecar, count: int) -> list[int]:
    """`count` GETs of /ok on fresh connections; their statuses."""
    statuses = []
    for _ in range(count):
        request = f"GET /ok HTTP/1.1\r\nHost: {SVC}\r\n\r\n".encode()
        statuses.append((await raw_exchange(sc.port(DEDICATED), request)).status)
    return statuses


def health_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("health-check")]


def endpoint_health(document: dict[str, Any]) -> list[tuple[str, bool]]:
    """(url, healthy) of each endpoint of `svc` in a /state document."""
    return [(e["url"], e["healthy"]) for e in document["upstreams"][SVC]["endpoints"]]


# ---- one check -----------------------------------------------------------------------------


def _probe(policy: HealthCheckPolicy, pool: EndpointPool) -> HealthProbe:
    """A probe over `pool` alone, never started: tests call `check()` themselves."""
    clock = LoopClock()
    checker = HealthChecker(policy, clock, [pool.label])
    return HealthProbe(SVC, policy, checker, [pool], clock, random.Random(0), Observers())


def _pool(url: str, loop_guard: LoopGuard | None = None) -> EndpointPool:
    loop = asyncio.get_running_loop()
    return EndpointPool(Endpoint.parse(url), loop, loop_guard or LoopGuard())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ok", (True, "status 200")),
        ("/status/204", (True, "status 204")),
        ("/status/503", (False, "status 503")),
        ("/status/301", (False, "status 301")),
        ("/no-such-path", (False, "status 404")),
        ("/slow-headers?delay=1", (False, "no answer within 0.1s")),
    ],
    ids=["200", "204", "503", "redirect", "404", "too-slow"],
)
async def test_health_check_passes_only_on_2xx_within_timeout(
    upstream: HttpUpstream, path: str, expected: tuple[bool, str]
) -> None:
    """A check passes on a 2xx head within `timeout`; another status or no answer fails it."""
    policy = HealthCheckPolicy.model_validate({"path": path, "timeout": "100ms"})
    pool = _pool(upstream.url(""))
    assert await _probe(policy, pool).check(pool) == expected


async def test_health_check_sends_get_with_host_and_user_agent(upstream: HttpUpstream) -> None:
    """The check is `GET path` with the pool's Host, its own User-Agent and Connection: close."""
    pool = _pool(upstream.url(""))
    await _probe(HealthCheckPolicy(path="/health?deep=1"), pool).check(pool)
    request = upstream.last()
    assert (request.method, request.raw_path) == ("GET", "/health?deep=1")
    assert request.header("host") == upstream.authority
    assert request.header("user-agent") == "sidecar-health-check"
    assert request.header("connection") == "close"
    assert pool.idle_count == 0  # a check's connection is never kept


async def test_health_check_fails_on_refused_connect_and_on_own_address(
    upstream: HttpUpstream,
) -> None:
    """A refused connect fails the check; so does an endpoint that is the sidecar itself."""
    refused = _pool(f"http://127.0.0.1:{closed_port()}")
    passed, detail = await _probe(HealthCheckPolicy(), refused).check(refused)
    assert (passed, detail.startswith("cannot connect to 127.0.0.1:")) == (False, True)
    guard = LoopGuard()
    guard.add("127.0.0.1", upstream.port)
    looped = _pool(upstream.url(""), guard)
    passed, detail = await _probe(HealthCheckPolicy(), looped).check(looped)
    assert (passed, "own listeners" in detail) == (False, True)


async def test_health_probe_schedule_and_events(upstream: HttpUpstream) -> None:
    """First check after a random share of `interval`, then `interval` after each check ends;
    the check that crosses `unhealthy` emits one EndpointHealthChanged."""
    upstream.health_status = 503
    policy = HealthCheckPolicy.model_validate(CHECKS)
    pool = _pool(upstream.url(""))
    clock, observer = FakeClock(), RecordingObserver()
    checker = HealthChecker(policy, clock, [pool.label])
    probe = HealthProbe(
        SVC, policy, checker, [pool], clock, random.Random(7), Observers([observer])
    )
    probe.start()
    try:
        await until(lambda: upstream.count("/health") >= 4, "four checks")
    finally:
        await probe.stop()
    assert health_tasks() == []
    assert clock.sleeps[0] == random.Random(7).uniform(0.0, policy.interval)
    assert set(clock.sleeps[1:]) == {policy.interval}
    assert observer.events == [
        EndpointHealthChanged(SVC, pool.label, False, "2 checks failed (last: status 503)")
    ]


@pytest.fixture
async def tls_endpoint() -> AsyncIterator[tuple[trustme.CA, int]]:
    """An HTTPS server on 127.0.0.1 with a certificate for `localhost`; /health answers 200."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text=f"host={request.host}")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield ca, port
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("trusted", [True, False], ids=["ca-file", "unknown-ca"])
async def test_health_check_uses_the_upstreams_tls_settings(
    tls_endpoint: tuple[trustme.CA, int], tmp_path: Path, trusted: bool
) -> None:
    """An https:// endpoint is checked over TLS verified with the upstream's `tls` settings."""
    ca, port = tls_endpoint
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = {"ca_file": str(ca_file)} if trusted else {}
    text = config(
        listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": SVC}],
        upstreams={
            SVC: {
                "endpoints": [f"https://localhost:{port}"],
                "tls": tls,
                "health_check": {"interval": "1m"},
            }
        },
    )
    async with running_sidecar(text) as sc:
        upstream = svc(sc)
        assert upstream.probe is not None
        passed, detail = await upstream.probe.check(upstream.pools[0].sibling())
    if trusted:
        assert (passed, detail) == (True, "status 200")
    else:
        assert (passed, detail.startswith("TLS handshake with localhost")) == (False, True)


# ---- in the running sidecar ----------------------------------------------------------------


async def test_health_failing_endpoint_leaves_rotation_and_returns() -> None:
    """B's /health answers 503: after `unhealthy` checks it gets no traffic; healed, it gets
    traffic again after `healthy` passes; /state, the gauge and the log follow."""
    async with HttpUpstream("a") as a, HttpUpstream("b") as b:
        b.health_status = 503
        url_a, url_b = a.url(""), b.url("")
        async with running_sidecar(svc_config(a, b)) as sc:
            health = svc(sc).health
            assert health is not None
            await until(lambda: not health.is_healthy(url_b), "B unhealthy")
            served_by_b = b.count("/ok")
            assert await send(sc, 6) == [200] * 6
            assert b.count("/ok") == served_by_b
            samples = await scrape(sc.admin_url)
            assert samples.value("sidecar_endpoint_healthy", endpoint=url_b) == 0.0
            assert samples.value("sidecar_endpoint_healthy", endpoint=url_a) == 1.0
            assert samples.value("sidecar_endpoint_ejected", endpoint=url_b) == 0.0
            assert endpoint_health(await state(sc)) == [(url_a, True), (url_b, False)]

            b.health_status = 200
            await until(lambda: health.is_healthy(url_b), "B healthy again")
            assert await send(sc, 4) == [200] * 4
            assert b.count("/ok") == served_by_b + 2
            changes = [
                (line["msg"], line["level"], line["endpoint"])
                for line in sc.log_lines()
                if line.get("msg") in ("endpoint unhealthy", "endpoint healthy")
            ]
    assert changes == [
        ("endpoint unhealthy", "warning", url_b),
        ("endpoint healthy", "info", url_b),
    ]


async def test_health_all_unhealthy_panic_mode_still_sends() -> None:
    """With every endpoint unhealthy, requests are still balanced over all of them."""
    async with HttpUpstream("a") as a, HttpUpstream("b") as b:
        a.health_status = b.health_status = 503
        async with running_sidecar(svc_config(a, b)) as sc:
            health = svc(sc).health
            assert health is not None
            await until(lambda: health.all_unhealthy, "both unhealthy")
            before = (a.count("/ok"), b.count("/ok"))
            assert await send(sc, 4) == [200] * 4
            assert (a.count("/ok") - before[0], b.count("/ok") - before[1]) == (2, 2)


async def test_health_probes_stop_at_shutdown() -> None:
    """The checks run while the sidecar serves and leave no task behind when it stops."""
    async with HttpUpstream("a") as a:
        async with running_sidecar(svc_config(a)) as sc:
            probe = svc(sc).probe
            assert probe is not None
            assert probe.running
            assert len(health_tasks()) == 1
            await until(lambda: a.count("/health") >= 2, "two checks")
        assert (probe.running, health_tasks()) == (False, [])
        checks = a.count("/health")
        await asyncio.sleep(0.15)  # three intervals: a probe still running would check again
        assert a.count("/health") == checks


async def test_health_reload_keeps_checker_state_when_endpoints_are_unchanged(
    tmp_path: Path,
) -> None:
    """A reload that changes other policy keeps the unhealthy verdict and the running probe;
    one that drops `health_check` stops the probe and puts the endpoint back in rotation."""
    async with HttpUpstream("a") as a, HttpUpstream("b") as b:
        b.health_status = 503
        path = tmp_path / "sidecar.yaml"
        path.write_text(svc_config(a, b), encoding="utf-8")
        async with running_sidecar_file(path, watch=False) as sc:
            before = svc(sc)
            assert before.health is not None
            assert before.probe is not None
            await until(lambda: not before.is_healthy(b.url("")), "B unhealthy")

            changed = svc_config(a, b).replace("max_attempts: 1", "max_attempts: 2")
            path.write_text(changed, encoding="utf-8")
            assert (await sc.runtime.reload()).applied
            after = svc(sc)
            assert after is not before
            assert (after.health, after.probe) == (before.health, before.probe)
            assert before.probe.running
            assert not after.is_healthy(b.url(""))
            assert len(health_tasks()) == 2

            path.write_text(svc_config(a, b, health_check=None), encoding="utf-8")
            assert (await sc.runtime.reload()).applied
            assert svc(sc).probe is None
            assert svc(sc).is_healthy(b.url(""))
            assert before.probe.stopped
            await until(lambda: not health_tasks(), "the dropped probe's tasks ended")


async def state(sc: RunningSidecar) -> dict[str, Any]:
    """GET /state on the admin API."""
    async with aiohttp.ClientSession() as session, session.get(f"{sc.admin_url}/state") as resp:
        assert resp.status == 200
        document: dict[str, Any] = await resp.json()
        return document
