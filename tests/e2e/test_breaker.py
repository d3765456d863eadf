"""The circuit breaker of `sidecar run` end to end (SPEC §4.2, §4.6, §7, §8): real clients, a
real upstream whose failures the test controls, the metrics and the log lines it leaves."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon import Daemon, app_config, eventually, fetch, free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e

OPEN_DURATION = 0.3  # seconds; `open_duration: 300ms` below


def breaker_config(admin: int, app: int, upstream: HttpUpstream) -> str:
    return app_config(
        admin,
        app,
        f"""\
  svc:
    endpoints: [{upstream.url("")}]
    retries: {{max_attempts: 1}}
    circuit_breaker: {{consecutive_failures: 3, open_duration: 300ms, half_open_calls: 1}}
""",
    )


def svc_samples(metrics_text: str, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """The samples of metric `name` for upstream `svc`, keyed by the values of labels `keys`."""
    return {
        tuple(sample.labels[key] for key in keys): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("upstream") == "svc"
    }


def circuit_lines(process: Daemon) -> list[dict[str, Any]]:
    return [line for line in process.log_lines() if str(line.get("msg", "")).startswith("circuit")]


async def test_breaker_opens_on_failures_rejects_then_closes_after_a_good_trial(tmp_path, upstream):
    """Three upstream 503s open the circuit, requests then get 503 `circuit_open` without reaching
    the upstream, and after `open_duration` one successful trial closes it again."""
    admin, app = free_port(), free_port()
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{app}/ok"

    async def get() -> requests.Response:
        return await asyncio.to_thread(fetch, "GET", url, timeout=2.0)

    async with running_daemon(tmp_path, breaker_config(admin, app, upstream), admin) as process:
        # Closed: three failures in a row are passed through unchanged, one attempt each.
        upstream.fail_next(3, 503)
        sent_last_failure = 0.0
        for _ in range(3):
            sent_last_failure = loop.time()
            response = await get()
            assert response.status_code == 503
            assert response.json() == {"scripted_failure": 503}  # the upstream's own answer
            assert "x-sidecar-error" not in response.headers
            assert response.headers["x-sidecar-attempts"] == "1"
        assert upstream.total == 3

        # Open: answered by the sidecar, nothing reaches the upstream.
        for _ in range(3):
            response = await get()
            assert response.status_code == 503
            assert response.headers["x-sidecar-error"] == "circuit_open"
            assert response.headers["x-sidecar-attempts"] == "0"
            assert response.headers["retry-after"] == "1"  # ≤ 300 ms left, rounded up
            body = response.json()
            assert body["error"] == "circuit_open"
            assert body["upstream"] == "svc"
            assert body["retry_after_s"] == 1
        assert upstream.total == 3

        # The upstream has healed (its scripted failures are used up). Once `open_duration` has
        # passed, the next request is the one half-open trial; it succeeds and closes the circuit.
        answers: list[requests.Response] = []

        async def trial_went_through() -> bool:
            answers.append(await get())
            return answers[-1].status_code == 200

        await eventually(trial_went_through, 2.0, "a request after open_duration got 200")
        assert loop.time() - sent_last_failure >= OPEN_DURATION
        assert all(r.headers.get("x-sidecar-error") == "circuit_open" for r in answers[:-1])
        assert upstream.total == 4  # the trial, and only the trial
        for _ in range(3):
            response = await get()
            assert response.status_code == 200
            assert "x-sidecar-error" not in response.headers
        assert upstream.total == 7

        metrics = await asyncio.to_thread(fetch, "GET", f"http://127.0.0.1:{admin}/metrics")
        text = metrics.text
        assert svc_samples(text, "sidecar_circuit_transitions_total", "from", "to") == {
            ("closed", "open"): 1,
            ("open", "half_open"): 1,
            ("half_open", "closed"): 1,
        }
        assert svc_samples(text, "sidecar_circuit_state", "state") == {
            ("closed",): 1,
            ("open",): 0,
            ("half_open",): 0,
        }
        rejected = svc_samples(text, "sidecar_rejected_total", "reason")
        assert rejected[("circuit_open",)] == len(answers) - 1 + 3

        async def logged_close() -> bool:
            return any(line["msg"] == "circuit closed" for line in circuit_lines(process))

        await eventually(logged_close, 2.0, "a `circuit closed` line on stdout")
        opened, half_open, closed = circuit_lines(process)
        assert opened["msg"] == "circuit opened"
        assert opened["level"] == "warning"
        assert opened["upstream"] == "svc"
        assert opened["reason"] == "3 consecutive failures"
        assert (opened["from_state"], opened["to_state"]) == ("closed", "open")
        assert (half_open["msg"], half_open["level"]) == ("circuit half-open", "info")
        assert (closed["msg"], closed["level"]) == ("circuit closed", "info")
        assert closed["reason"] == "1 half-open trial succeeded"
