"""Config hot reload over real loopback sockets (SPEC §6): a valid file takes effect for new
requests while load keeps flowing, an invalid or unbindable one changes nothing, breaker state
and the fallback store survive a reload that leaves their upstream alone, in-flight requests
finish under the config they started with, and listeners come and go without touching the
connections of the others.

Reloads are triggered two ways: by the file watcher (the file rewritten by atomic rename, or a
mounted ConfigMap's `..data` symlink swapped), and by `Runtime.reload()` itself, the code path
SIGHUP and `POST /reload` take, with the watcher stopped so every reload is counted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import yaml

from tests.harness import RunningSidecar, running_sidecar_file
from tests.integration.configs import DEDICATED, config
from tests.integration.rawhttp import RawClient, RawResponse, Samples, raw_exchange, scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
SVC = "svc"
BIND = f"{HOST}:0"
ONE_ATTEMPT: dict[str, Any] = {"max_attempts": 1}
BREAKER: dict[str, Any] = {"consecutive_failures": 2, "open_duration": "5s"}
CACHE: dict[str, Any] = {"max_stale": "5m"}
SLOW = "/slow-headers?delay=0.3"  # 504 under per_try 100ms, 200 under per_try 1s
LOAD_WORKERS = 4  # concurrent keep-alive clients, next to one sequential client
APPLY_WITHIN = 1.5  # a file change is applied by the watcher within this (debounce 200 ms)
SETTLE = 0.4  # long enough for the watcher to have seen any further change events
RELOADED = "config reloaded"
RELOAD_FAILED = "config reload failed; the running config is unchanged"


# ---- config files ----------------------------------------------------------------------------


def svc_config(
    endpoint: str | HttpUpstream,
    *,
    listeners: list[dict[str, Any]] | None = None,
    spare: str | None = None,
    sections: dict[str, Any] | None = None,
    **policy: Any,
) -> str:
    """Listener `app` for upstream `svc` (one attempt, plus `policy`); `spare` adds a second
    upstream nobody routes to, so a reload can change it alone."""
    url = endpoint if isinstance(endpoint, str) else endpoint.url("")
    upstreams: dict[str, Any] = {SVC: {"endpoints": [url], "retries": ONE_ATTEMPT, **policy}}
    if spare is not None:
        upstreams["spare"] = {"endpoints": [spare]}
    return config(
        listeners=listeners or [{"name": DEDICATED, "bind": BIND, "upstream": SVC}],
        upstreams=upstreams,
        **(sections or {}),
    )


class ConfigFile(Protocol):
    """A config file on disk and the way it is rewritten."""

    path: Path

    def write(self, text: str) -> None: ...


class RenamedFile:
    """A plain file, rewritten as editors and config management do: temp file, then rename."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "sidecar.yaml"

    def write(self, text: str) -> None:
        temp = self.path.with_name(f".{self.path.name}.tmp")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, self.path)


class ConfigMapVolume:
    """A mounted ConfigMap as the kubelet writes it: `sidecar.yaml -> ..data/sidecar.yaml`,
    `..data -> ..2026_a`; an update writes `..2026_b`, points `..data_tmp` at it, renames
    `..data_tmp` over `..data` and removes the old folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "sidecar.yaml"
        self._versions = 0
        self._current: Path | None = None

    def write(self, text: str) -> None:
        version = self.folder / f"..2026_{'abcdefghij'[self._versions]}"
        self._versions += 1
        version.mkdir()
        (version / "sidecar.yaml").write_text(text, encoding="utf-8")
        data = self.folder / "..data"
        if self._current is None:
            data.symlink_to(version.name)
            self.path.symlink_to("..data/sidecar.yaml")
        else:
            swap = self.folder / "..data_tmp"
            swap.symlink_to(version.name)
            os.replace(swap, data)
            shutil.rmtree(self._current)
        self._current = version


def plain_file(folder: Path, text: str) -> Path:
    path = folder / "sidecar.yaml"
    write(path, text)
    return path


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# ---- clients ---------------------------------------------------------------------------------


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {SVC}\r\n\r\n".encode()


async def ask(sc: RunningSidecar, path: str, listener: str = DEDICATED) -> RawResponse:
    """One GET on a fresh connection to `listener`."""
    return await raw_exchange(sc.port(listener), get(path))


def generated_error(response: RawResponse) -> str | None:
    """The code of a sidecar-generated error (`x-sidecar-error`), None for an upstream answer."""
    return response.header("x-sidecar-error")


class Load:
    """`GET /ok` on the dedicated listener until stopped: one client on a fresh connection per
    request and LOAD_WORKERS keep-alive clients; every status or failure is recorded."""

    def __init__(self, sc: RunningSidecar) -> None:
        self.url = sc.url(DEDICATED, "/ok")
        self.port = sc.port(DEDICATED)
        self.outcomes: list[int | str] = []
        self._stop = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._sequential())
            for _ in range(LOAD_WORKERS):
                group.create_task(self._keep_alive())
            try:
                await self._until(10)  # load is flowing before the change
                yield self
            finally:
                self._stop.set()

    async def _until(self, count: int) -> None:
        await poll_until(lambda: len(self.outcomes) >= count, 1.0, lambda: f"{count} answers")

    async def settle(self, more: int) -> None:
        """Wait for `more` further answers (the new config serving under load)."""
        await self._until(len(self.outcomes) + more)

    async def _sequential(self) -> None:
        while not self._stop.is_set():
            try:
                response = await raw_exchange(self.port, get("/ok"))
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.outcomes.append(f"sequential: {exc!r}")
            else:
                self.outcomes.append(response.status)

    async def _keep_alive(self) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not self._stop.is_set():
                try:
                    async with session.get(self.url) as response:
                        await response.read()
                        self.outcomes.append(response.status)
                except aiohttp.ClientError as exc:
                    self.outcomes.append(f"keep-alive: {exc!r}")

    @property
    def failures(self) -> list[int | str]:
        return [outcome for outcome in self.outcomes if outcome != 200]


# ---- what the sidecar says about its reloads -------------------------------------------------


async def poll_until(condition: Callable[[], bool], within: float, what: Callable[[], str]) -> None:
    """Check `condition` every 10 ms; fail the test with `what()` after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - the watcher's thread offers nothing to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {within}s: {what()}")


async def wait_for_generation(sc: RunningSidecar, generation: int) -> None:
    """Poll until the watcher has applied a change; fails after APPLY_WITHIN seconds."""
    await poll_until(
        lambda: sc.generation >= generation,
        APPLY_WITHIN,
        lambda: f"generation {generation}, reload log: {reload_lines(sc, None)}",
    )


def reload_lines(sc: RunningSidecar, msg: str | None = RELOADED) -> list[dict[str, Any]]:
    """The log lines with message `msg`, or every line about reloads for None."""
    return [
        line
        for line in sc.log_lines()
        if line.get("msg") == msg or (msg is None and "reload" in str(line.get("msg")))
    ]


def reloads(samples: Samples, result: str) -> float:
    return samples.value("sidecar_config_reloads_total", result=result)


def generation_gauge(samples: Samples) -> float:
    return samples.value("sidecar_config_generation")


async def reload_applied(sc: RunningSidecar, path: Path, text: str) -> None:
    """Rewrite the file and reload it the way SIGHUP does; the reload must take effect."""
    before = sc.generation
    write(path, text)
    outcome = await sc.runtime.reload()
    assert (outcome.applied, outcome.generation, outcome.message) == (True, before + 1, "applied")


# ---- reload under load -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [RenamedFile, ConfigMapVolume], ids=["atomic-rename", "configmap"])
async def test_reload_under_load_applies_the_new_policy_and_fails_no_request(
    tmp_path: Path, upstream: HttpUpstream, kind: type[RenamedFile | ConfigMapVolume]
) -> None:
    """A file change seen by the watcher while clients keep sending turns a per_try of 100ms
    into 1s and drops the `x-sidecar-*` headers, with every request answered 200 and exactly
    one new generation."""
    file = kind(tmp_path)
    file.write(svc_config(upstream, timeouts={"per_try": "100ms"}))
    async with running_sidecar_file(file.path) as sc:
        before = await ask(sc, SLOW)
        async with Load(sc).running() as load:
            file.write(
                svc_config(
                    upstream, timeouts={"per_try": "1s"}, sections={"response_headers": False}
                )
            )
            await wait_for_generation(sc, 2)
            await load.settle(20)
        after = await ask(sc, SLOW)
        await asyncio.sleep(SETTLE)  # any later event batch must find the file unchanged
        samples = await scrape(sc.admin_url)
        generation = sc.generation
        applied = reload_lines(sc)
    assert (before.status, generated_error(before)) == (504, "upstream_timeout")
    assert before.header("x-sidecar-upstream") == SVC
    assert load.failures == []
    assert len(load.outcomes) > 30
    assert (after.status, after.body) == (200, b"slow")
    assert not any(name.lower().startswith("x-sidecar-") for name, _ in after.headers)
    assert generation == 2
    assert [line["generation"] for line in applied] == [2]
    assert applied[0]["upstreams_kept"] == [SVC]  # only timeouts changed: pools and state kept
    assert (reloads(samples, "success"), reloads(samples, "error")) == (1, 0)
    assert generation_gauge(samples) == 2


@pytest.mark.parametrize("kind", [RenamedFile, ConfigMapVolume], ids=["atomic-rename", "configmap"])
async def test_reload_watcher_adds_a_route_on_each_of_two_changes(
    tmp_path: Path, upstream: HttpUpstream, kind: type[RenamedFile | ConfigMapVolume]
) -> None:
    """Two successive file changes each give one new generation, and the route the second one
    adds (a longer per_try for one path) takes effect."""
    file = kind(tmp_path)
    route = {"match": {"path": "/slow-headers"}, "timeouts": {"per_try": "1s"}}
    file.write(svc_config(upstream, timeouts={"per_try": "100ms"}))
    async with running_sidecar_file(file.path) as sc:
        file.write(
            svc_config(
                upstream, timeouts={"per_try": "100ms"}, spare=f"http://{HOST}:{closed_port()}"
            )
        )
        await wait_for_generation(sc, 2)
        before = await ask(sc, SLOW)
        file.write(svc_config(upstream, timeouts={"per_try": "100ms"}, routes=[route]))
        await wait_for_generation(sc, 3)
        after = await ask(sc, SLOW)
        await asyncio.sleep(SETTLE)
        applied = [line["generation"] for line in reload_lines(sc)]
    assert (before.status, generated_error(before)) == (504, "upstream_timeout")
    assert (after.status, after.body) == (200, b"slow")
    assert applied == [2, 3]


async def test_reload_watcher_catches_a_change_made_while_it_starts(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """A file changed after the start loaded it but before the watcher's watches were set up
    (no await in between) is still applied, as generation 2."""
    file = RenamedFile(tmp_path)
    file.write(svc_config(upstream))
    async with running_sidecar_file(file.path) as sc:
        file.write(svc_config(upstream, sections={"response_headers": False}))
        await wait_for_generation(sc, 2)
        after = await ask(sc, "/ok")
    assert (after.status, after.header("x-sidecar-upstream")) == (200, None)


@pytest.mark.parametrize(
    "rewrite",
    ["same-bytes", "touch", "same-values-new-layout"],
    ids=["same-bytes", "touch", "same-values-new-layout"],
)
async def test_reload_of_an_unchanged_config_keeps_the_generation(
    tmp_path: Path, upstream: HttpUpstream, rewrite: str
) -> None:
    """Rewriting the same bytes, touching the file or re-laying out the same values is
    "unchanged": no new generation, no reload logged, and a later real change is generation 2."""
    text = svc_config(upstream)
    path = plain_file(tmp_path, text)
    async with running_sidecar_file(path) as sc:
        match rewrite:
            case "same-bytes":
                write(path, text)
            case "touch":
                os.utime(path)
            case _:
                flow = yaml.safe_dump(yaml.safe_load(text), default_flow_style=True)
                write(path, f"# the same values in flow style\n{flow}")
        outcome = await sc.runtime.reload()
        await asyncio.sleep(SETTLE)  # the watcher has seen the rewrite too
        unchanged_generation = sc.generation
        write(path, svc_config(upstream, sections={"response_headers": False}))
        await wait_for_generation(sc, 2)
        await asyncio.sleep(SETTLE)
        applied = [line["generation"] for line in reload_lines(sc)]
        samples = await scrape(sc.admin_url)
    assert (outcome.applied, outcome.generation, outcome.message) == (True, 1, "unchanged")
    assert unchanged_generation == 1
    assert applied == [2]
    assert (reloads(samples, "success"), reloads(samples, "error")) == (1, 0)


# ---- invalid files ---------------------------------------------------------------------------

INVALID = [
    (
        "bad-duration",
        {"timeouts": {"per_try": "fast"}},
        r":\d+:\d+: upstreams\.svc\.timeouts\.per_try: 'fast' is not a duration",
    ),
    ("unknown-key", {"bogus": 1}, r":\d+:\d+: upstreams\.svc: unknown key 'bogus'"),
    ("yaml-syntax", None, r":\d+:\d+: invalid YAML"),
    ("file-removed", "", r": cannot be read"),
]


@pytest.mark.parametrize(
    ("change", "error"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
async def test_reload_of_an_invalid_file_keeps_the_old_config_and_counts_an_error(
    tmp_path: Path, upstream: HttpUpstream, change: dict[str, Any] | str | None, error: str
) -> None:
    """An invalid or unreadable file is refused: old timeouts and headers stay, the generation
    stays 1, and the error is logged with file:line:col and counted as `result="error"`."""
    path = plain_file(tmp_path, svc_config(upstream, timeouts={"per_try": "100ms"}))
    async with running_sidecar_file(path, watch=False) as sc:
        if isinstance(change, dict):
            bad = svc_config(upstream, sections={"response_headers": False}, **change)
            write(path, bad)
        elif change is None:
            write(path, "version: 1\nlisteners:\n  - name: app\n   bind: x\n")
        else:
            path.unlink()
        outcome = await sc.runtime.reload()
        still = await ask(sc, SLOW)
        generation = sc.generation
        failed = reload_lines(sc, RELOAD_FAILED)
        samples = await scrape(sc.admin_url)
    assert (outcome.applied, outcome.generation) == (False, 1)
    assert len(outcome.errors) == 1
    assert re.match(re.escape(str(path)) + error, outcome.errors[0]), outcome.errors
    assert (still.status, generated_error(still)) == (504, "upstream_timeout")
    assert still.header("x-sidecar-upstream") == SVC
    assert generation == 1
    assert len(failed) == 1
    assert (failed[0]["level"], failed[0]["errors"]) == ("error", outcome.errors)
    assert (reloads(samples, "success"), reloads(samples, "error")) == (0, 1)
    assert generation_gauge(samples) == 1


async def test_reload_after_a_refused_one_applies_the_fixed_file(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """Fixing the file after a refused reload applies it as generation 2."""
    path = plain_file(tmp_path, svc_config(upstream, timeouts={"per_try": "100ms"}))
    async with running_sidecar_file(path, watch=False) as sc:
        write(path, svc_config(upstream, timeouts={"per_try": "soon"}))
        refused = await sc.runtime.reload()
        await reload_applied(sc, path, svc_config(upstream, timeouts={"per_try": "1s"}))
        fixed = await ask(sc, SLOW)
    assert (refused.applied, refused.generation) == (False, 1)
    assert (fixed.status, fixed.body) == (200, b"slow")


def distinct_closed_ports() -> tuple[int, int]:
    """Two different loopback ports with nothing listening."""
    first = closed_port()
    second = closed_port()
    while second == first:
        second = closed_port()
    return first, second


# ---- state kept or reset ---------------------------------------------------------------------


async def open_breaker(sc: RunningSidecar, upstream: HttpUpstream, path: str = "/ok") -> None:
    """Two scripted 503s open svc's breaker (2 consecutive failures); the next is refused."""
    upstream.fail_next(2, 503)
    for _ in range(2):
        assert (await ask(sc, path)).status == 503
    refused = await ask(sc, path)
    assert (refused.status, generated_error(refused)) == (503, "circuit_open")


@pytest.mark.parametrize(
    "change",
    ["other-upstream-endpoints", "timeouts", "access-log"],
    ids=["other-upstream-endpoints", "timeouts", "access-log"],
)
async def test_reload_keeps_an_open_breaker_when_its_upstream_is_untouched(
    tmp_path: Path, upstream: HttpUpstream, change: str
) -> None:
    """A breaker opened before a reload that leaves svc's endpoints and breaker policy alone is
    still open after it: requests get `circuit_open` and never reach the upstream."""
    spare, moved = (f"http://{HOST}:{port}" for port in distinct_closed_ports())
    path = plain_file(tmp_path, svc_config(upstream, circuit_breaker=BREAKER, spare=spare))
    match change:
        case "other-upstream-endpoints":
            text = svc_config(upstream, circuit_breaker=BREAKER, spare=moved)
        case "timeouts":
            text = svc_config(
                upstream, circuit_breaker=BREAKER, spare=spare, timeouts={"per_try": "2s"}
            )
        case _:
            text = svc_config(
                upstream,
                circuit_breaker=BREAKER,
                spare=spare,
                sections={"access_log": {"include_query": True}},
            )
    async with running_sidecar_file(path, watch=False) as sc:
        await open_breaker(sc, upstream)
        await reload_applied(sc, path, text)
        after = await ask(sc, "/ok")
        line = reload_lines(sc)[0]
    assert (after.status, generated_error(after)) == (503, "circuit_open")
    assert upstream.count("/ok") == 2  # the two failures before the reload, nothing after
    assert SVC in line["upstreams_kept"]


async def test_reload_resets_the_breaker_when_endpoints_change(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """A reload that changes svc's endpoints gives it a fresh, closed breaker: the next
    request reaches the new endpoint and is answered 200."""
    path = plain_file(tmp_path, svc_config(upstream, circuit_breaker=BREAKER))
    async with HttpUpstream("replacement") as replacement:
        async with running_sidecar_file(path, watch=False) as sc:
            await open_breaker(sc, upstream)
            await reload_applied(sc, path, svc_config(replacement, circuit_breaker=BREAKER))
            after = await ask(sc, "/echo")
            line = reload_lines(sc)[0]
        assert after.status == 200
        assert after.json()["upstream"] == replacement.name
        assert replacement.count("/echo") == 1
    assert (line["upstreams_rebuilt"], line["upstreams_kept"]) == ([SVC], [])


SHORT_OPEN: dict[str, Any] = {**BREAKER, "open_duration": "400ms", "half_open_calls": 1}
ROUTE_PATH = "/status/200"


def breaker_config(upstream: HttpUpstream, where: str, breaker: dict[str, Any]) -> str:
    """svc with `breaker` on the upstream itself, or on a route `flaky` for /status."""
    if where == "upstream":
        return svc_config(upstream, circuit_breaker=breaker)
    route = {"name": "flaky", "match": {"path_prefix": "/status"}, "circuit_breaker": breaker}
    return svc_config(upstream, routes=[route])


@pytest.mark.parametrize("where", ["upstream", "route"], ids=["upstream", "route"])
async def test_reload_keeps_an_open_breaker_through_a_policy_change(
    tmp_path: Path, upstream: HttpUpstream, where: str
) -> None:
    """An open breaker (upstream's or a route's own) stays open through a reload that changes
    its failure_rate and consecutive_failures, then half-opens and closes as usual."""
    path = plain_file(tmp_path, breaker_config(upstream, where, SHORT_OPEN))
    target = "/ok" if where == "upstream" else ROUTE_PATH
    changed = {**SHORT_OPEN, "failure_rate": "30%", "consecutive_failures": 3}
    async with running_sidecar_file(path, watch=False) as sc:
        await open_breaker(sc, upstream, target)
        await reload_applied(sc, path, breaker_config(upstream, where, changed))
        during = await ask(sc, target)
        await asyncio.sleep(0.45)  # the 400ms open period ends
        trial = await ask(sc, target)
        closed = await ask(sc, target)
        line = reload_lines(sc)[0]
    assert (during.status, generated_error(during)) == (503, "circuit_open")
    assert (trial.status, closed.status) == (200, 200)
    assert upstream.count(target) == 4  # two failures, the trial, one after closing
    assert line["upstreams_kept"] == [SVC]


@pytest.mark.parametrize(
    ("name", "still_open"), [("flaky", True), ("renamed", False)], ids=["same-label", "relabelled"]
)
async def test_reload_keeps_a_route_breaker_by_its_label(
    tmp_path: Path, upstream: HttpUpstream, name: str, still_open: bool
) -> None:
    """A route's own open breaker survives a reload that keeps the route's label (only the
    upstream's timeouts change); a relabelled route starts with a fresh breaker."""

    def routes(label: str) -> list[dict[str, Any]]:
        return [{"name": label, "match": {"path_prefix": "/status"}, "circuit_breaker": BREAKER}]

    path = plain_file(tmp_path, svc_config(upstream, routes=routes("flaky")))
    async with running_sidecar_file(path, watch=False) as sc:
        await open_breaker(sc, upstream, "/status/200")
        text = svc_config(upstream, routes=routes(name), timeouts={"per_try": "2s"})
        await reload_applied(sc, path, text)
        route = await ask(sc, "/status/200")
        other = await ask(sc, "/ok")
    if still_open:
        assert (route.status, generated_error(route)) == (503, "circuit_open")
        assert upstream.count("/status/200") == 2
    else:
        assert (route.status, generated_error(route)) == (200, None)
        assert upstream.count("/status/200") == 3
    assert (other.status, other.body) == (200, b"ok")  # the upstream's own breaker stayed closed


@pytest.mark.parametrize(
    ("cache", "served_from_cache"),
    [
        (CACHE, True),
        ({"max_stale": "10m"}, True),
        ({"max_stale": "5m", "max_entries": 5}, True),
        ({"max_stale": "5m", "key_headers": ["accept", "x-tenant"]}, False),
    ],
    ids=[
        "cache-policy-unchanged",
        "max-stale-raised",
        "max-entries-lowered",
        "key-headers-changed",
    ],
)
async def test_reload_during_an_outage_keeps_the_fallback_store(
    tmp_path: Path, upstream: HttpUpstream, cache: dict[str, Any], served_from_cache: bool
) -> None:
    """A GET stored before an outage is served from the cache before and after a reload that
    changes timeouts or the cache policy; only new `key_headers` (which would make other
    keys) start an empty store."""
    path = plain_file(tmp_path, svc_config(upstream, fallback={"cache": CACHE}))
    async with running_sidecar_file(path, watch=False) as sc:
        fresh = await ask(sc, "/bytes/100")
        upstream.fail_next(2, 503)  # the outage
        before = await ask(sc, "/bytes/100")
        text = svc_config(upstream, fallback={"cache": cache}, timeouts={"per_try": "2s"})
        await reload_applied(sc, path, text)
        during = await ask(sc, "/bytes/100")
    assert (fresh.status, fresh.header("x-sidecar-fallback")) == (200, None)
    assert (before.status, before.header("x-sidecar-fallback")) == (200, "cache")
    assert upstream.count("/bytes/100") == 3  # the outage requests did reach the upstream
    if served_from_cache:
        assert (during.status, during.body) == (200, fresh.body)
        assert during.header("x-sidecar-fallback") == "cache"
    else:
        assert (during.status, during.header("x-sidecar-fallback")) == (503, None)


# ---- in-flight requests ----------------------------------------------------------------------

HANG_ROUTE: dict[str, Any] = {
    "match": {"path": "/hang"},
    "timeouts": {"per_try": "3s", "total": "3s"},
}


@pytest.mark.parametrize(
    "change",
    ["route-removed", "endpoints-changed", "upstream-removed"],
    ids=["route-removed", "endpoints-changed", "upstream-removed"],
)
async def test_reload_lets_an_inflight_request_finish_under_the_old_config(
    tmp_path: Path, upstream: HttpUpstream, change: str
) -> None:
    """A request parked on `/hang` while a reload removes its route (new per_try 100ms),
    replaces its endpoints or removes its upstream still completes 200 when released."""
    short = {"per_try": "100ms"}
    path = plain_file(tmp_path, svc_config(upstream, timeouts=short, routes=[HANG_ROUTE]))
    async with HttpUpstream("next") as other, running_sidecar_file(path, watch=False) as sc:
        parked = asyncio.create_task(ask(sc, "/hang"))
        await poll_until(
            lambda: upstream.count("/hang") == 1, 1.0, lambda: "the request parked on /hang"
        )
        match change:
            case "route-removed":
                text = svc_config(upstream, timeouts=short)
            case "endpoints-changed":
                text = svc_config(other, timeouts=short)
            case _:
                listener = {"name": DEDICATED, "bind": BIND, "upstream": "next"}
                text = config(
                    listeners=[listener],
                    upstreams={"next": {"endpoints": [other.url("")], "timeouts": short}},
                )
        await reload_applied(sc, path, text)
        await asyncio.sleep(0.3)  # well past the new config's per_try
        assert not parked.done()
        upstream.release()
        answer = await parked
        new = await ask(sc, SLOW)
    assert (answer.status, answer.body) == (200, b"released")
    assert answer.header("x-sidecar-upstream") == SVC
    assert (new.status, generated_error(new)) == (
        504,
        "upstream_timeout",
    )  # the new config's per_try


# ---- listeners -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_taken() -> Iterator[int]:
    """A loopback port held in LISTEN by the test, so the sidecar cannot bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


def listener(name: str, bind: str = BIND) -> dict[str, Any]:
    return {"name": name, "bind": bind, "upstream": SVC}


@pytest.mark.parametrize(
    "kept_bind", ["ephemeral", "fixed"], ids=["kept-by-name", "kept-by-address"]
)
async def test_reload_adds_and_removes_listeners_without_touching_a_kept_connection(
    tmp_path: Path, upstream: HttpUpstream, kept_bind: str
) -> None:
    """A reload that adds listener `new` and removes `old` makes `new` reachable and `old`
    refuse connections, while a keep-alive connection on the kept `app` listener keeps
    working on the same socket."""
    bind = BIND if kept_bind == "ephemeral" else f"{HOST}:{free_port()}"
    before = [listener(DEDICATED, bind), listener("old")]
    path = plain_file(tmp_path, svc_config(upstream, listeners=before))
    async with running_sidecar_file(path, watch=False) as sc:
        app_port, old_port = sc.port(DEDICATED), sc.port("old")
        async with RawClient(app_port) as client:
            await client.send(get("/echo"))
            first = await client.read_response()
            local = client.writer.get_extra_info("sockname")
            connections = sc.runtime.server.connection_count if sc.runtime.server else -1
            after = [listener(DEDICATED, bind), listener("new")]
            await reload_applied(sc, path, svc_config(upstream, listeners=after))
            await client.send(get("/echo"))
            second = await client.read_response()
            same_socket = client.writer.get_extra_info("sockname") == local
            still_connected = sc.runtime.server.connection_count if sc.runtime.server else -1
        added = await ask(sc, "/ok", "new")
        old_refused = await refused(old_port)
        names = sorted(sc.runtime.addresses)
        app_port_after = sc.port(DEDICATED)
    assert (first.status, second.status) == (200, 200)
    assert same_socket
    assert still_connected == connections == 1
    assert (added.status, added.body) == (200, b"ok")
    assert old_refused
    assert names == [DEDICATED, "new"]
    assert app_port_after == app_port


async def test_reload_with_an_unbindable_listener_changes_nothing(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """A reload whose new listener's port is taken is refused: the listener bound before it is
    released again, `old` stays, headers and timeouts stay, the generation stays 1."""
    fresh_port = free_port()
    path = plain_file(
        tmp_path,
        svc_config(
            upstream,
            listeners=[listener(DEDICATED), listener("old")],
            timeouts={"per_try": "100ms"},
        ),
    )
    with port_taken() as taken:
        async with running_sidecar_file(path, watch=False) as sc:
            listeners = [
                listener(DEDICATED),
                listener("fresh", f"{HOST}:{fresh_port}"),
                listener("blocked", f"{HOST}:{taken}"),
            ]
            text = svc_config(
                upstream,
                listeners=listeners,
                timeouts={"per_try": "1s"},
                sections={"response_headers": False},
            )
            write(path, text)
            outcome = await sc.runtime.reload()
            still = await ask(sc, SLOW)
            old = await ask(sc, "/ok", "old")
            fresh_refused = await refused(fresh_port)
            names = sorted(sc.runtime.addresses)
            failed = reload_lines(sc, RELOAD_FAILED)
            samples = await scrape(sc.admin_url)
            generation = sc.generation
    assert (outcome.applied, outcome.generation) == (False, 1)
    assert outcome.errors == [
        f"listener 'blocked' cannot bind {HOST}:{taken}: Address already in use"
    ]
    assert (still.status, generated_error(still)) == (504, "upstream_timeout")
    assert (old.status, old.header("x-sidecar-upstream")) == (200, SVC)
    assert fresh_refused
    assert names == [DEDICATED, "old"]
    assert generation == 1
    assert [line["errors"] for line in failed] == [outcome.errors]
    assert (reloads(samples, "success"), reloads(samples, "error")) == (0, 1)
    assert generation_gauge(samples) == 1


async def test_reload_retargets_open_connections_of_a_kept_listener(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """A keep-alive connection on a listener whose upstream a reload renames follows it."""
    first_config = config(
        listeners=[{"name": DEDICATED, "bind": BIND, "upstream": "before"}],
        upstreams={"before": {"endpoints": [upstream.url("")]}},
    )
    path = plain_file(tmp_path, first_config)
    async with (
        running_sidecar_file(path, watch=False) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(get("/ok"))
        first = await client.read_response()
        renamed = config(
            listeners=[{"name": DEDICATED, "bind": BIND, "upstream": "after"}],
            upstreams={"after": {"endpoints": [upstream.url("")]}},
        )
        await reload_applied(sc, path, renamed)
        await client.send(get("/ok"))
        second = await client.read_response()
    assert (first.status, first.header("x-sidecar-upstream")) == (200, "before")
    assert (second.status, second.header("x-sidecar-upstream")) == (200, "after")


async def test_reload_picks_up_an_edited_static_body_file(tmp_path: Path) -> None:
    """An edit to a static fallback's `body_file` alone is a change: the next reload serves it."""
    body = tmp_path / "degraded.json"
    body.write_text('{"v": 1}')
    dead = f"http://127.0.0.1:{closed_port()}"
    text = config(
        listeners=[{"name": DEDICATED, "bind": BIND, "upstream": "svc"}],
        upstreams={
            "svc": {
                "endpoints": [dead],
                "retries": ONE_ATTEMPT,
                "fallback": {"static": {"status": 503, "body_file": str(body)}},
            }
        },
    )
    path = plain_file(tmp_path, text)
    async with running_sidecar_file(path, watch=False) as sc:
        before = await ask(sc, "/x")
        body.write_text('{"v": 22}')  # a different size, so the change shows whatever the clock
        outcome = await sc.runtime.reload()
        after = await ask(sc, "/x")
        again = await sc.runtime.reload()
    assert (before.status, before.body) == (503, b'{"v": 1}')
    assert (outcome.applied, outcome.generation, outcome.message) == (True, 2, "applied")
    assert (after.status, after.body) == (503, b'{"v": 22}')
    assert (again.generation, again.message) == (2, "unchanged")


async def test_reload_refused_after_compiling_leaves_kept_state_under_its_old_policy(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """A reload that disables svc's open breaker but cannot bind a new listener is refused,
    and the breaker is still open under its old policy: a changed policy reaches kept state
    only when a reload commits."""
    path = plain_file(tmp_path, svc_config(upstream, circuit_breaker=BREAKER))
    with port_taken() as taken:
        async with running_sidecar_file(path, watch=False) as sc:
            await open_breaker(sc, upstream)
            text = svc_config(
                upstream,
                listeners=[listener(DEDICATED), listener("blocked", f"{HOST}:{taken}")],
                circuit_breaker={"enabled": False},
            )
            write(path, text)
            outcome = await sc.runtime.reload()
            after = await ask(sc, "/ok")
    assert not outcome.applied
    assert (after.status, generated_error(after)) == (503, "circuit_open")
    assert upstream.count("/ok") == 2


async def test_reload_keeps_an_ejection_through_an_outlier_policy_change(
    tmp_path: Path, upstream: HttpUpstream
) -> None:
    """An endpoint ejected before a reload that changes `outlier_detection` stays out of
    rotation after it: every request still needs a single attempt."""
    dead = f"http://{HOST}:{closed_port()}"

    def text(outliers: dict[str, Any]) -> str:
        return config(
            listeners=[listener(DEDICATED)],
            upstreams={
                SVC: {
                    "endpoints": [dead, upstream.url("")],
                    "outlier_detection": outliers,
                    "circuit_breaker": {"enabled": False},
                    "retries": {"backoff": {"initial": "1ms", "max": "1ms"}},
                }
            },
        )

    path = plain_file(tmp_path, text({"consecutive_failures": 2, "base_ejection": "30s"}))
    async with running_sidecar_file(path, watch=False) as sc:
        before = [await ask(sc, "/ok") for _ in range(6)]
        changed = {"consecutive_failures": 3, "base_ejection": "20s", "max_ejection": "1m"}
        await reload_applied(sc, path, text(changed))
        after = [await ask(sc, "/ok") for _ in range(4)]
    assert [r.status for r in before + after] == [200] * 10
    assert [r.header("x-sidecar-attempts") for r in before[-2:]] == ["1", "1"]
    assert [r.header("x-sidecar-attempts") for r in after] == ["1"] * 4
