"""Config reload of `sidecar run -c FILE` as an operator triggers it (SPEC §6): SIGHUP, an edit
of the file with no signal at all, and `POST /reload` on the admin API. The observable change
is `response_headers: false`: the `x-sidecar-*` headers disappear from proxied answers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon import Daemon, eventually, free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
APPLY_WITHIN = 1.0  # a file change is applied within this, signal or not (debounce 200 ms)
SETTLE = 0.4  # long enough for the watcher to have handled any further change events
RELOADED = "config reloaded"
RELOAD_FAILED = "config reload failed; the running config is unchanged"


def render(
    admin: int,
    app: int,
    upstream: HttpUpstream,
    response_headers: bool = True,
    per_try: str = "5s",
    policy: str = "",
) -> str:
    """The daemon's config: admin and listener `app` (for upstream svc) on fixed ports, plus
    `policy` lines (already indented) inside svc."""
    return f"""\
version: 1
admin:
  bind: {HOST}:{admin}
listeners:
  - name: app
    bind: {HOST}:{app}
    upstream: svc
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
response_headers: {str(response_headers).lower()}
upstreams:
  svc:
    endpoints: [{upstream.url("")}]
    timeouts: {{per_try: {per_try}}}
{policy}"""


@dataclass(frozen=True, slots=True)
class Sidecar:
    """A ready daemon, its config file and its ports."""

    daemon: Daemon
    path: Path
    admin: int
    app: int
    upstream: HttpUpstream

    def config(
        self, *, response_headers: bool = True, per_try: str = "5s", policy: str = ""
    ) -> str:
        return render(self.admin, self.app, self.upstream, response_headers, per_try, policy)

    def write(self, text: str) -> None:
        """Replace the file as editors do: a temp file renamed over it."""
        temp = self.path.with_name(".sidecar.yaml.tmp")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, self.path)

    async def get(self, path: str = "/ok") -> tuple[int, dict[str, str]]:
        """Status and lower-cased headers of a GET through the dedicated listener."""
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.get(f"http://{HOST}:{self.app}{path}") as response,
        ):
            await response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}

    async def has_sidecar_headers(self) -> bool:
        status, headers = await self.get()
        assert status == 200
        return "x-sidecar-upstream" in headers

    async def admin_post(self, path: str) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.post(f"http://{HOST}:{self.admin}{path}") as response,
        ):
            body = await response.json(content_type=None)
            return response.status, body

    async def generation(self) -> int:
        """The generation `GET /state` reports."""
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.get(f"http://{HOST}:{self.admin}/state") as response,
        ):
            assert response.status == 200
            state = await response.json()
        generation: int = state["generation"]
        return generation

    async def metric(self, name: str, **labels: str) -> float:
        async with (
            aiohttp.ClientSession(trust_env=False) as session,
            session.get(f"http://{HOST}:{self.admin}/metrics") as response,
        ):
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def log(self, msg: str) -> list[dict[str, Any]]:
        return [line for line in self.daemon.log_lines() if line.get("msg") == msg]


@pytest.fixture
async def sidecar(tmp_path: Path, upstream: HttpUpstream) -> AsyncIterator[Sidecar]:
    """A ready `sidecar run -c FILE` with a dedicated listener for `upstream` (headers on)."""
    admin, app = free_port(), free_port()
    async with running_daemon(tmp_path, render(admin, app, upstream), admin) as daemon:
        yield Sidecar(daemon, tmp_path / "sidecar.yaml", admin, app, upstream)


async def test_sighup_applies_the_edited_file(sidecar: Sidecar) -> None:
    """An edit followed by SIGHUP takes effect (the `x-sidecar-*` headers disappear) as exactly
    one new generation, however many triggers saw the edit."""
    assert await sidecar.has_sidecar_headers()
    sidecar.write(sidecar.config(response_headers=False))
    sidecar.daemon.signal(signal.SIGHUP)

    async def applied() -> bool:
        return not await sidecar.has_sidecar_headers()

    await eventually(applied, APPLY_WITHIN, "the reloaded config drops the x-sidecar headers")
    await asyncio.sleep(SETTLE)
    assert sidecar.daemon.returncode is None
    assert await sidecar.generation() == 2
    assert await sidecar.metric("sidecar_config_generation") == 2
    assert await sidecar.metric("sidecar_config_reloads_total", result="success") == 1
    assert [line["generation"] for line in sidecar.log(RELOADED)] == [2]


async def test_sighup_with_an_unchanged_file_keeps_serving(sidecar: Sidecar) -> None:
    """SIGHUP does not stop the daemon (its default action would); with the file unchanged it
    is a no-op: still serving, still generation 1, nothing logged."""
    for _ in range(2):
        sidecar.daemon.signal(signal.SIGHUP)
        await asyncio.sleep(0.1)
    assert sidecar.daemon.returncode is None
    assert await sidecar.has_sidecar_headers()
    assert await sidecar.generation() == 1
    assert sidecar.log(RELOADED) == sidecar.log(RELOAD_FAILED) == []


async def test_file_change_without_a_signal_is_applied_within_a_second(sidecar: Sidecar) -> None:
    """Rewriting the file alone (no signal) applies it within a second."""
    assert await sidecar.has_sidecar_headers()
    sidecar.write(sidecar.config(response_headers=False))

    async def applied() -> bool:
        return not await sidecar.has_sidecar_headers()

    await eventually(applied, APPLY_WITHIN, "the edited file applied without a signal")
    assert await sidecar.generation() == 2
    assert await sidecar.metric("sidecar_config_generation") == 2


async def test_invalid_edit_keeps_the_running_config_and_counts_an_error(
    sidecar: Sidecar,
) -> None:
    """An invalid edit is refused: the headers stay, the generation stays 1, and the error is
    logged with file:line:col and counted."""
    sidecar.write(sidecar.config(response_headers=False, per_try="soon"))

    async def counted() -> bool:
        return await sidecar.metric("sidecar_config_reloads_total", result="error") >= 1

    await eventually(counted, APPLY_WITHIN, "the refused reload counted as an error")
    assert await sidecar.has_sidecar_headers()
    assert await sidecar.generation() == 1
    assert await sidecar.metric("sidecar_config_generation") == 1
    failed = sidecar.log(RELOAD_FAILED)
    assert failed
    pattern = re.escape(str(sidecar.path)) + r":\d+:\d+: upstreams\.svc\.timeouts\.per_try: "
    assert all(re.match(pattern, error) for error in failed[0]["errors"]), failed[0]["errors"]
    assert sidecar.log(RELOADED) == []


@pytest.mark.parametrize("valid", [True, False], ids=["valid-200", "invalid-422"])
async def test_post_reload_answers_with_the_generation_or_the_errors(
    sidecar: Sidecar, valid: bool
) -> None:
    """`POST /reload` answers 200 with the new generation for a valid edit, and 422 with the
    file:line:col errors (generation unchanged) for an invalid one."""
    sidecar.write(sidecar.config(response_headers=False, per_try="1s" if valid else "soon"))
    status, body = await sidecar.admin_post("/reload")
    if valid:
        assert status == 200
        assert (body["applied"], body["generation"]) == (True, 2)
        assert await sidecar.generation() == 2
        assert not await sidecar.has_sidecar_headers()
    else:
        assert status == 422
        assert (body["error"], body["generation"]) == ("invalid_config", 1)
        pattern = re.escape(str(sidecar.path)) + r":\d+:\d+: upstreams\.svc\.timeouts\.per_try: "
        assert [bool(re.match(pattern, error)) for error in body["errors"]] == [True]
        assert await sidecar.generation() == 1
        assert await sidecar.has_sidecar_headers()


def outage_policy(failure_rate: str, max_stale: str) -> str:
    """svc: one attempt, a breaker that opens after 2 failures in a row, a fallback store."""
    return f"""\
    retries: {{max_attempts: 1}}
    circuit_breaker: {{consecutive_failures: 2, failure_rate: {failure_rate}, open_duration: 1m}}
    fallback:
      cache: {{max_stale: {max_stale}}}
"""


async def test_sighup_during_an_outage_keeps_the_open_circuit_and_the_stored_answers(
    sidecar: Sidecar,
) -> None:
    """A SIGHUP that changes the breaker's failure_rate and the cache's max_stale while svc is
    down keeps the circuit open and keeps serving the stored answer, with no request sent."""
    sidecar.write(sidecar.config(policy=outage_policy("50%", "5m")))
    assert (await sidecar.admin_post("/reload"))[0] == 200
    assert (await sidecar.get("/bytes/64"))[0] == 200  # stored
    sidecar.upstream.fail_next(2, 503)
    for _ in range(2):  # two failures open the circuit; both are answered from the store
        status, headers = await sidecar.get("/bytes/64")
        assert (status, headers.get("x-sidecar-fallback")) == (200, "cache")
    sent = sidecar.upstream.count("/bytes/64")
    sidecar.write(sidecar.config(policy=outage_policy("30%", "10m")))
    sidecar.daemon.signal(signal.SIGHUP)

    async def applied() -> bool:
        return await sidecar.generation() == 3

    await eventually(applied, APPLY_WITHIN, "the SIGHUP reload applied")
    status, headers = await sidecar.get("/bytes/64")
    assert (status, headers.get("x-sidecar-fallback")) == (200, "cache")
    assert sidecar.upstream.count("/bytes/64") == sent  # the circuit is still open
    assert sidecar.daemon.returncode is None
