"""The fallback chain over real sockets (SPEC §4.4, §4.5, §7, §8): stored answers served with
`x-sidecar-fallback: cache` and `Age` on every listed failure, the static response after them,
the original failure when nothing applies, cache safety, and the metrics and log lines left.

An "outage" is the upstream failing on purpose: `fail_next` (a 503), a handler that stalls (a
timeout), a closed server (a refused connect), or a breaker or bulkhead that refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.harness import RunningSidecar, running_sidecar
from tests.integration.configs import DEDICATED, dedicated
from tests.integration.rawhttp import RawClient, RawResponse, raw_exchange, scrape
from tests.upstreams import HttpUpstream, closed_port, pattern_bytes

pytestmark = pytest.mark.integration

ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
CACHE: dict[str, Any] = {"max_stale": "5m"}
STATIC_BODY = '{"degraded": true}'
STATIC: dict[str, Any] = {
    "status": 503,
    "headers": {"content-type": "application/json"},
    "body": STATIC_BODY,
}
SCRIPTED_503 = b'{"scripted_failure": 503}'


def config(
    upstream: HttpUpstream | str,
    *,
    cache: dict[str, Any] | None = CACHE,
    static: dict[str, Any] | None = None,
    retries: dict[str, Any] = ONE_ATTEMPT,
    **policy: Any,
) -> str:
    endpoint = upstream if isinstance(upstream, str) else upstream.url("")
    return dedicated(
        endpoint, retries=retries, fallback={"cache": cache, "static": static}, **policy
    )


def request(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def ask(sc: RunningSidecar, path: str, *headers: str, method: str = "GET") -> RawResponse:
    """One request on a fresh connection to the dedicated listener."""
    return await raw_exchange(
        sc.port(DEDICATED), request(method, path, *headers), head_only=method == "HEAD"
    )


async def outage(
    sc: RunningSidecar, upstream: HttpUpstream, path: str, *headers: str, method: str = "GET"
) -> RawResponse:
    """The same request while the upstream answers 503 (one attempt)."""
    upstream.fail_next(1, 503)
    return await ask(sc, path, *headers, method=method)


def fallback_kind(response: RawResponse) -> str | None:
    return response.header("x-sidecar-fallback")


class Switchboard:
    """Extra routes on an `HttpUpstream` (added before it starts) that the test switches:
    `/switch` answers 200 `switch` unless `stalled` (then its head never comes), and `/lang`
    answers with the request's `Accept-Language` and `Vary: Accept-Language`."""

    def __init__(self, upstream: HttpUpstream) -> None:
        self.stalled = False
        upstream.app.router.add_route("*", "/switch", self._switch)
        upstream.app.router.add_route("*", "/lang", self._lang)

    async def _switch(self, request: web.Request) -> web.StreamResponse:
        if self.stalled:
            await asyncio.sleep(2.0)  # far past per_try; cancelled when the upstream closes
        return web.Response(text="switch")

    async def _lang(self, request: web.Request) -> web.StreamResponse:
        lang = request.headers.get("Accept-Language", "none")
        return web.Response(text=f"lang={lang}", headers={"Vary": "Accept-Language"})


@asynccontextmanager
async def switchable() -> AsyncIterator[tuple[HttpUpstream, Switchboard]]:
    upstream = HttpUpstream("switchable")
    board = Switchboard(upstream)
    async with upstream:
        yield upstream, board


# ---- serving the stored answer -------------------------------------------------------------


async def test_fallback_outage_serves_the_stored_bytes_with_a_growing_age(
    upstream: HttpUpstream,
) -> None:
    """After a stored GET, an outage gets the same bytes with `x-sidecar-fallback: cache` and
    an `Age` of 0 at once and of 1 a second later."""
    loop = asyncio.get_running_loop()
    async with running_sidecar(config(upstream)) as sc:
        fresh = await ask(sc, "/bytes/3000")
        stored_at = loop.time()
        at_once = await outage(sc, upstream, "/bytes/3000")
        await asyncio.sleep(1.0)
        later = await outage(sc, upstream, "/bytes/3000")
        waited = loop.time() - stored_at
        assert upstream.count("/bytes/3000") == 3
    assert (fresh.status, fresh.body, fallback_kind(fresh)) == (200, pattern_bytes(3000), None)
    assert not fresh.has_header("age")
    for served in (at_once, later):
        assert served.status == 200
        assert served.body == pattern_bytes(3000)
        assert fallback_kind(served) == "cache"
        assert served.header("content-type") == "application/octet-stream"
        assert served.header("content-length") == "3000"
        assert served.header("x-sidecar-upstream") == "svc"
        assert served.header("x-sidecar-attempts") == "1"
        assert served.header_values("age") == [served.header("age")]  # exactly one
    assert at_once.header("age") == "0"
    assert 1 <= int(later.header("age") or "-1") <= waited


async def test_fallback_age_includes_the_upstreams_own_age(upstream: HttpUpstream) -> None:
    """A stored response that arrived with `Age: 100` is served with an Age of at least 100."""
    async with running_sidecar(config(upstream)) as sc:
        fresh = await ask(sc, "/headers?Age=100")
        served = await outage(sc, upstream, "/headers?Age=100")
    assert fresh.header("age") == "100"
    assert fallback_kind(served) == "cache"
    assert served.header_values("age") == ["100"]


@pytest.mark.parametrize(
    ("max_stale", "cache_control", "wait", "expected"),
    [
        ("100ms", None, 0.15, "static"),
        ("5m", None, 0.15, "cache"),
        ("100ms", "stale-if-error=60", 0.15, "cache"),
        ("5m", "stale-if-error=0", 0.05, "static"),
    ],
    ids=["past-max-stale", "within-max-stale", "stale-if-error-extends", "stale-if-error-0"],
)
async def test_fallback_serves_an_entry_only_within_its_stale_limit(
    upstream: HttpUpstream,
    max_stale: str,
    cache_control: str | None,
    wait: float,
    expected: str,
) -> None:
    """An entry older than `max_stale`, or than its own `stale-if-error=N`, is not served: the
    static response answers instead."""
    path = "/headers?X-Kind=entry"
    if cache_control is not None:
        path += f"&Cache-Control={cache_control}"
    sidecar = config(upstream, cache={"max_stale": max_stale}, static=STATIC)
    async with running_sidecar(sidecar) as sc:
        assert (await ask(sc, path)).status == 200
        await asyncio.sleep(wait)
        served = await outage(sc, upstream, path)
    assert fallback_kind(served) == expected
    if expected == "cache":
        assert (served.status, served.body) == (200, b"ok")
    else:
        assert (served.status, served.body) == (503, STATIC_BODY.encode())


# ---- cache safety --------------------------------------------------------------------------


async def test_fallback_keeps_bearer_tokens_apart(upstream: HttpUpstream) -> None:
    """With `authorization` keyed, Bearer A's stored answer is served to A only; Bearer B and
    an anonymous request get the static response."""
    cache = {**CACHE, "key_headers": ["accept", "authorization"]}
    async with running_sidecar(config(upstream, cache=cache, static=STATIC)) as sc:
        stored = await ask(sc, "/echo", "Authorization: Bearer token-a")
        as_a = await outage(sc, upstream, "/echo", "Authorization: Bearer token-a")
        as_b = await outage(sc, upstream, "/echo", "Authorization: Bearer token-b")
        anonymous = await outage(sc, upstream, "/echo")
        samples = await scrape(sc.admin_url)
    assert stored.json()["headers"]["authorization"] == "Bearer token-a"
    assert (fallback_kind(as_a), as_a.body) == ("cache", stored.body)
    for other in (as_b, anonymous):
        assert (other.status, fallback_kind(other)) == (503, "static")
        assert other.body == STATIC_BODY.encode()
    assert samples.value("sidecar_cache_lookups_total", upstream="svc", result="hit") == 1
    assert samples.value("sidecar_cache_lookups_total", upstream="svc", result="miss") == 2


async def test_fallback_never_stores_or_serves_unkeyed_credentials(upstream: HttpUpstream) -> None:
    """Without `authorization` in `key_headers`, a request carrying it is neither stored nor
    served: the same request and an anonymous one both get the static response."""
    async with running_sidecar(config(upstream, static=STATIC)) as sc:
        stored = await ask(sc, "/echo", "Authorization: Bearer token-a")
        again = await outage(sc, upstream, "/echo", "Authorization: Bearer token-a")
        anonymous = await outage(sc, upstream, "/echo")
        samples = await scrape(sc.admin_url)
    assert stored.status == 200
    assert (again.status, fallback_kind(again)) == (503, "static")
    assert (anonymous.status, fallback_kind(anonymous)) == (503, "static")
    assert samples.value("sidecar_cache_entries", upstream="svc") == 0
    assert samples.value("sidecar_cache_lookups_total", upstream="svc", result="bypass") == 1
    assert samples.value("sidecar_cache_lookups_total", upstream="svc", result="miss") == 1


@pytest.mark.parametrize(
    "path",
    ["/headers?Cache-Control=no-store", "/headers?Cache-Control=private", "/set-cookie"],
    ids=["no-store", "private", "set-cookie"],
)
async def test_fallback_never_stores_unsafe_responses(upstream: HttpUpstream, path: str) -> None:
    """`no-store`, `private` and `Set-Cookie` answers are relayed but never stored: an outage
    afterwards gets the upstream's 503, never the earlier body."""
    async with running_sidecar(config(upstream)) as sc:
        fresh = await ask(sc, path)
        failed = await outage(sc, upstream, path)
        samples = await scrape(sc.admin_url)
    assert fresh.status == 200
    assert (failed.status, failed.body, fallback_kind(failed)) == (503, SCRIPTED_503, None)
    assert samples.value("sidecar_cache_entries", upstream="svc") == 0


async def test_fallback_never_serves_post_from_the_store(upstream: HttpUpstream) -> None:
    """A POST is neither stored nor answered from a GET entry for the same URL."""
    async with running_sidecar(config(upstream)) as sc:
        assert (await ask(sc, "/ok")).status == 200
        assert (await ask(sc, "/ok", "Content-Length: 0", method="POST")).status == 200
        failed = await outage(sc, upstream, "/ok", "Content-Length: 0", method="POST")
        get = await outage(sc, upstream, "/ok")
        samples = await scrape(sc.admin_url)
    assert (failed.status, failed.body, fallback_kind(failed)) == (503, SCRIPTED_503, None)
    assert (get.status, get.body, fallback_kind(get)) == (200, b"ok", "cache")
    assert samples.value("sidecar_cache_entries", upstream="svc") == 1


async def test_fallback_vary_partitions_entries() -> None:
    """A response with `Vary: Accept-Language` is stored per language and served per language;
    a language never stored gets the static response."""
    async with (
        switchable() as (upstream, _),
        running_sidecar(config(upstream, static=STATIC)) as sc,
    ):
        await ask(sc, "/lang", "Accept-Language: en")
        await ask(sc, "/lang", "Accept-Language: de")
        english = await outage(sc, upstream, "/lang", "Accept-Language: en")
        german = await outage(sc, upstream, "/lang", "Accept-Language: de")
        french = await outage(sc, upstream, "/lang", "Accept-Language: fr")
    assert (english.body, fallback_kind(english)) == (b"lang=en", "cache")
    assert (german.body, fallback_kind(german)) == (b"lang=de", "cache")
    assert english.header("vary") == "Accept-Language"
    assert (french.status, fallback_kind(french)) == (503, "static")


async def test_fallback_cache_bytes_stay_within_max_bytes(upstream: HttpUpstream) -> None:
    """Filling far past `max_bytes` (100 × 4 KiB into 64 KiB) keeps the gauge within the bound,
    evicting the least recently used: the newest entry is served, the oldest is gone."""
    cache = {**CACHE, "max_bytes": "64KiB", "max_body": "8KiB"}
    async with (
        running_sidecar(config(upstream, cache=cache)) as sc,
        aiohttp.ClientSession() as session,
    ):
        for n in range(100):
            async with session.get(sc.url(DEDICATED, f"/bytes/4096?n={n}")) as resp:
                assert resp.status == 200
                assert len(await resp.read()) == 4096
        samples = await scrape(sc.admin_url)
        upstream.fail_next(1, 503)
        async with session.get(sc.url(DEDICATED, "/bytes/4096?n=99")) as newest:
            newest_kind = newest.headers.get("x-sidecar-fallback")
            assert await newest.read() == pattern_bytes(4096)
        upstream.fail_next(1, 503)
        async with session.get(sc.url(DEDICATED, "/bytes/4096?n=0")) as oldest:
            oldest_status = oldest.status
            oldest_kind = oldest.headers.get("x-sidecar-fallback")
    stored_bytes = samples.value("sidecar_cache_bytes", upstream="svc")
    entries = samples.value("sidecar_cache_entries", upstream="svc")
    assert 60 * 1024 <= stored_bytes <= 64 * 1024
    assert 10 <= entries < 16
    assert newest_kind == "cache"
    assert (oldest_status, oldest_kind) == (503, None)


# ---- every listed failure -------------------------------------------------------------------


async def test_fallback_serves_on_an_open_circuit_without_contacting_the_upstream(
    upstream: HttpUpstream,
) -> None:
    """Two 503s open the breaker; requests are then answered from the store with zero
    attempts while the upstream receives nothing."""
    policy = {"circuit_breaker": {"consecutive_failures": 2, "open_duration": "10s"}}
    async with running_sidecar(config(upstream, **policy)) as sc:
        await ask(sc, "/bytes/64")
        upstream.fail_next(2, 503)
        failing = [await ask(sc, "/bytes/64") for _ in range(2)]
        received = upstream.total
        rejected = [await ask(sc, "/bytes/64") for _ in range(3)]
        samples = await scrape(sc.admin_url)
    assert [fallback_kind(r) for r in failing] == ["cache", "cache"]
    assert upstream.total == received == 3
    for response in rejected:
        assert (response.status, response.body) == (200, pattern_bytes(64))
        assert fallback_kind(response) == "cache"
        assert response.header("x-sidecar-attempts") == "0"
    assert samples.value("sidecar_circuit_state", upstream="svc", state="open") == 1
    assert samples.value("sidecar_rejected_total", upstream="svc", reason="circuit_open") == 3
    assert samples.value("sidecar_fallbacks_total", upstream="svc", kind="cache") == 5


async def test_fallback_serves_on_connect_failure_after_the_upstream_stops() -> None:
    """An entry stored while the upstream was up is served once its port refuses connections,
    after every retry: `x-sidecar-attempts` says 3."""
    retries = {"max_attempts": 3, "backoff": {"initial": "5ms", "max": "10ms"}}
    upstream = HttpUpstream("stopping")
    async with upstream, running_sidecar(config(upstream, retries=retries)) as sc:
        fresh = await ask(sc, "/bytes/512")
        await upstream.close()
        served = await ask(sc, "/bytes/512")
        samples = await scrape(sc.admin_url)
    assert fresh.status == 200
    assert (served.status, served.body, fallback_kind(served)) == (200, pattern_bytes(512), "cache")
    assert served.header("x-sidecar-attempts") == "3"
    assert samples.value("sidecar_upstream_attempts_total", result="connect_failure") >= 1
    assert samples.value("sidecar_requests_total", code="200", outcome="fallback_cache") == 1


async def test_fallback_serves_on_timeout() -> None:
    """A stalled upstream past `per_try` gets the stored answer, not a 504."""
    async with switchable() as (upstream, board):
        sidecar = config(upstream, timeouts={"per_try": "100ms"})
        async with running_sidecar(sidecar) as sc:
            assert (await ask(sc, "/switch")).body == b"switch"
            board.stalled = True
            served = await ask(sc, "/switch")
            samples = await scrape(sc.admin_url)
    assert (served.status, served.body, fallback_kind(served)) == (200, b"switch", "cache")
    assert served.header("x-sidecar-attempts") == "1"
    assert samples.value("sidecar_upstream_attempts_total", result="timeout") == 1


async def test_fallback_serves_on_bulkhead_full(upstream: HttpUpstream) -> None:
    """With the only bulkhead slot held, a request gets the stored answer without a queue."""
    policy = {"bulkhead": {"max_concurrent": 1, "max_queued": 0}}
    async with running_sidecar(config(upstream, **policy)) as sc:
        await ask(sc, "/bytes/64")
        held = asyncio.create_task(ask(sc, "/hang"))
        try:
            async with asyncio.timeout(2.0):
                while upstream.count("/hang") == 0:  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.005)
            served = await ask(sc, "/bytes/64")
        finally:
            upstream.release()
            released = await held
        samples = await scrape(sc.admin_url)
    assert released.body == b"released"
    assert (served.status, served.body, fallback_kind(served)) == (200, pattern_bytes(64), "cache")
    assert served.header("x-sidecar-attempts") == "0"
    assert upstream.count("/bytes/64") == 1
    assert samples.value("sidecar_rejected_total", upstream="svc", reason="bulkhead_full") == 1


async def test_fallback_serve_on_without_5xx_passes_the_503_through(
    upstream: HttpUpstream,
) -> None:
    """When `serve_on` does not list `5xx`, an upstream 503 reaches the client unchanged."""
    cache = {**CACHE, "serve_on": ["timeout", "connect-failure"]}
    async with running_sidecar(config(upstream, cache=cache, static=STATIC)) as sc:
        await ask(sc, "/bytes/64")
        failed = await outage(sc, upstream, "/bytes/64")
    assert (failed.status, failed.body, fallback_kind(failed)) == (503, SCRIPTED_503, None)


async def test_fallback_serves_head_from_a_head_entry_without_a_body(
    upstream: HttpUpstream,
) -> None:
    """A stored HEAD answer is served to a HEAD request as a head alone: the next response on
    the same connection follows it directly."""
    async with running_sidecar(config(upstream)) as sc:
        fresh = await ask(sc, "/bytes/100", method="HEAD")
        upstream.fail_next(1, 503)
        async with RawClient(sc.port(DEDICATED)) as client:
            await client.send(request("HEAD", "/bytes/100") + request("GET", "/ok"))
            served = await client.read_response(head_only=True)
            after = await client.read_response()
        get = await outage(sc, upstream, "/bytes/100")
    assert (fresh.status, fresh.header("content-length")) == (200, "100")
    assert (served.status, fallback_kind(served)) == (200, "cache")
    assert served.header("content-type") == "application/octet-stream"
    assert not served.has_header("content-length")  # unknown here; never a false 0
    assert (after.status, after.body) == (200, b"ok")
    assert (get.status, fallback_kind(get)) == (503, None)  # a HEAD entry never answers a GET


# ---- static, overrides, and nothing at all --------------------------------------------------


async def test_fallback_static_body_file(upstream: HttpUpstream, tmp_path: Path) -> None:
    """A static response with `body_file` serves the file's bytes with its status and headers."""
    page = tmp_path / "degraded.html"
    page.write_bytes(b"<h1>degraded \xe2\x9c\x93</h1>\n")
    static = {"status": 200, "headers": {"content-type": "text/html"}, "body_file": str(page)}
    async with running_sidecar(config(upstream, cache=None, static=static)) as sc:
        served = await outage(sc, upstream, "/ok")
    assert (served.status, served.body) == (200, page.read_bytes())
    assert served.header("content-type") == "text/html"
    assert fallback_kind(served) == "static"
    assert not served.has_header("age")


async def test_fallback_route_overrides_the_static_response(upstream: HttpUpstream) -> None:
    """A route that sets `fallback.static` serves its own body; other paths get the upstream's."""
    routes = [
        {
            "match": {"path_prefix": "/special"},
            "fallback": {"static": {"status": 200, "body": "special fallback"}},
        }
    ]
    sidecar = config(upstream, cache=None, static=STATIC, routes=routes)
    async with running_sidecar(sidecar) as sc:
        special = await outage(sc, upstream, "/special/x")
        other = await outage(sc, upstream, "/other")
    assert (special.status, special.body, fallback_kind(special)) == (
        200,
        b"special fallback",
        "static",
    )
    assert (other.status, other.body, fallback_kind(other)) == (
        503,
        STATIC_BODY.encode(),
        "static",
    )


async def test_fallback_nothing_stored_returns_the_upstreams_503_unchanged(
    upstream: HttpUpstream,
) -> None:
    """With no entry for the URL and no static response, the upstream's 503 passes through."""
    async with running_sidecar(config(upstream)) as sc:
        await ask(sc, "/bytes/64")
        failed = await outage(sc, upstream, "/bytes/65")
        lines = sc.access_lines()
    assert (failed.status, failed.body, fallback_kind(failed)) == (503, SCRIPTED_503, None)
    assert failed.header("content-type") == "application/json; charset=utf-8"
    assert lines[-1]["outcome"] == "upstream_error"


async def test_fallback_nothing_stored_returns_the_generated_error() -> None:
    """A refused connect with an empty store and no static response gives 502 unreachable."""
    async with running_sidecar(config(f"http://127.0.0.1:{closed_port()}")) as sc:
        failed = await ask(sc, "/x")
        samples = await scrape(sc.admin_url)
    assert failed.status == 502
    assert failed.header("x-sidecar-error") == "upstream_unreachable"
    assert failed.json()["error"] == "upstream_unreachable"
    assert fallback_kind(failed) is None
    assert samples.value("sidecar_cache_lookups_total", upstream="svc", result="miss") == 1
    assert samples.value("sidecar_fallbacks_total") == 0


# ---- metrics and logs ----------------------------------------------------------------------


async def test_fallback_counts_and_logs_every_kind(upstream: HttpUpstream) -> None:
    """Each fallback is counted by kind and lookup result, and logged with its outcome."""
    async with running_sidecar(config(upstream, static=STATIC)) as sc:
        await ask(sc, "/bytes/64")
        hit = await outage(sc, upstream, "/bytes/64")
        miss = await outage(sc, upstream, "/bytes/99")
        bypass = await outage(sc, upstream, "/bytes/64", "Cookie: session=1")
        samples = await scrape(sc.admin_url)
        lines = sc.access_lines()
    assert [fallback_kind(r) for r in (hit, miss, bypass)] == ["cache", "static", "static"]
    assert samples.value("sidecar_fallbacks_total", upstream="svc", kind="cache") == 1
    assert samples.value("sidecar_fallbacks_total", upstream="svc", kind="static") == 2
    for result in ("hit", "miss", "bypass"):
        assert samples.value("sidecar_cache_lookups_total", upstream="svc", result=result) == 1
    assert samples.value("sidecar_requests_total", code="200", outcome="fallback_cache") == 1
    assert samples.value("sidecar_requests_total", code="503", outcome="fallback_static") == 2
    assert samples.value("sidecar_cache_entries", upstream="svc") == 1
    assert samples.value("sidecar_cache_bytes", upstream="svc") > 64
    assert [(line["status"], line["outcome"]) for line in lines] == [
        (200, "success"),
        (200, "fallback_cache"),
        (503, "fallback_static"),
        (503, "fallback_static"),
    ]
    assert all(line["attempts"] == 1 for line in lines)
