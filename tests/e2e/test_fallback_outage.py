"""An upstream outage through `sidecar run` (SPEC §4.2, §4.4, §7): the app keeps getting the
stored answer while the upstream is down and the circuit is open, and fresh answers again once
the upstream is back and the circuit has closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon import app_config, eventually, free_port, running_daemon
from tests.upstreams import HttpUpstream, pattern_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(15)]

PATH = "/bytes/1500"
OPEN_DURATION = 0.3  # seconds; `open_duration: 300ms` below


def outage_config(admin: int, app: int, upstream_port: int) -> str:
    return app_config(
        admin,
        app,
        f"""\
  svc:
    endpoints: [http://127.0.0.1:{upstream_port}]
    retries: {{max_attempts: 1}}
    timeouts: {{connect: 200ms}}
    circuit_breaker: {{consecutive_failures: 3, open_duration: 300ms, half_open_calls: 1}}
    fallback:
      cache: {{max_stale: 1m}}
""",
    )


def circuit_state(metrics_text: str) -> dict[str, float]:
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "sidecar_circuit_state" and sample.labels.get("upstream") == "svc"
    }


async def test_fallback_outage_keeps_the_app_answered_until_the_upstream_returns(
    tmp_path: Path,
) -> None:
    """Stored while healthy, served while the upstream refuses connections and while the
    circuit is open, then fresh again after `open_duration` once the upstream is back."""
    loop = asyncio.get_running_loop()
    admin, app = free_port(), free_port()
    url = f"http://127.0.0.1:{app}{PATH}"
    upstream = HttpUpstream("before")
    await upstream.start()
    port = upstream.port
    try:
        async with (
            running_daemon(tmp_path, outage_config(admin, app, port), admin) as daemon,
            aiohttp.ClientSession() as session,
        ):

            async def get() -> tuple[int, bytes, dict[str, str]]:
                async with session.get(url) as response:
                    return response.status, await response.read(), dict(response.headers)

            async def circuit() -> dict[str, float]:
                async with session.get(f"http://127.0.0.1:{admin}/metrics") as response:
                    return circuit_state(await response.text())

            started = loop.time()
            # Healthy: the answer is fresh, and stored on the way.
            status, body, headers = await get()
            assert (status, body) == (200, pattern_bytes(1500))
            assert "x-sidecar-fallback" not in headers
            assert upstream.count(PATH) == 1

            # Down: its port refuses connections; three failures open the circuit.
            await upstream.close()
            opened = 0.0  # a lower bound for the moment the breaker opens: before the 3rd failure
            for _ in range(3):
                opened = loop.time()
                status, body, headers = await get()
                assert (status, body) == (200, pattern_bytes(1500))
                assert headers["x-sidecar-fallback"] == "cache"
                assert headers["x-sidecar-attempts"] == "1"
            assert (await circuit())["open"] == 1
            status, body, headers = await get()
            assert (status, body) == (200, pattern_bytes(1500))
            assert headers["x-sidecar-fallback"] == "cache"
            assert headers["x-sidecar-attempts"] == "0"  # open: not even tried

            # Back: a new server on the very same port; after open_duration the half-open
            # trial reaches it, succeeds, and closes the circuit.
            returned = HttpUpstream("after", port=port)
            async with returned:
                answers: list[dict[str, str]] = []

                async def fresh_again() -> bool:
                    status, body, headers = await get()
                    assert (status, body) == (200, pattern_bytes(1500))
                    answers.append(headers)
                    return "x-sidecar-fallback" not in headers

                await eventually(fresh_again, 2.0, "a fresh answer after the upstream returned")
                assert loop.time() - opened >= OPEN_DURATION
                assert all(h["x-sidecar-fallback"] == "cache" for h in answers[:-1])
                assert returned.count(PATH) == 1  # the trial, and only the trial
                assert await circuit() == {"closed": 1, "open": 0, "half_open": 0}
                for _ in range(2):
                    status, _, headers = await get()
                    assert status == 200
                    assert "x-sidecar-fallback" not in headers
                assert returned.count(PATH) == 3
            assert loop.time() - started < 5.0

            def transitions() -> list[tuple[str, str]]:
                return [
                    (line["from_state"], line["to_state"])
                    for line in daemon.log_lines()
                    if str(line.get("msg", "")).startswith("circuit")
                ]

            async def logged_close() -> bool:
                return len(transitions()) == 3

            await eventually(logged_close, 2.0, "three circuit lines on stdout")
            assert transitions() == [
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed"),
            ]
    finally:
        await upstream.close()
