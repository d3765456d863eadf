"""SIGTERM on `sidecar run` (SPEC §6): readiness off at once, keep serving for `drain_delay`,
finish in-flight requests, exit 0; a second signal cuts the drain short."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest
import requests

from tests.e2e.daemon import eventually, fetch, free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e


def drain_config(admin: int, app: int, upstream: HttpUpstream, delay: str, timeout: str) -> str:
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: app
    bind: 127.0.0.1:{app}
    upstream: svc
shutdown:
  drain_delay: {delay}
  drain_timeout: {timeout}
upstreams:
  svc:
    endpoints: [{upstream.url("")}]
"""


def fetch_or_error(url: str) -> requests.Response | requests.RequestException:
    """A GET that returns the client's exception instead of raising it (run in a thread)."""
    try:
        return fetch("GET", url)
    except requests.RequestException as exc:
        return exc


async def wait_until_received(upstream: HttpUpstream, path: str) -> None:
    async def received() -> bool:
        return upstream.count(path) > 0

    await eventually(received, 3.0, f"the upstream received {path}")


async def wait_not_ready(admin: int, within: float) -> None:
    async def draining() -> bool:
        response = await asyncio.to_thread(fetch, "GET", f"http://127.0.0.1:{admin}/readyz")
        return response.status_code == 503

    await eventually(draining, within, "/readyz answered 503")


async def test_sigterm_drains_then_exits_zero(tmp_path: Path, upstream: HttpUpstream):
    """After SIGTERM readiness is 503 at once, new requests are served for `drain_delay`, the in-flight one completes, and the exit code is 0."""
    admin, app = free_port(), free_port()
    drain_delay, drain_timeout = 1.0, 3.0
    config = drain_config(admin, app, upstream, f"{drain_delay}s", f"{drain_timeout}s")
    loop = asyncio.get_running_loop()
    async with running_daemon(tmp_path, config, admin) as daemon:
        # The in-flight request outlives drain_delay, so the drain really waits for it.
        slow = asyncio.ensure_future(
            asyncio.to_thread(fetch_or_error, f"http://127.0.0.1:{app}/slow-headers?delay=2.0")
        )
        await wait_until_received(upstream, "/slow-headers")
        signalled = loop.time()
        daemon.signal(signal.SIGTERM)

        await wait_not_ready(admin, within=0.5)  # "at once": well inside drain_delay

        during_delay = await asyncio.to_thread(fetch_or_error, f"http://127.0.0.1:{app}/ok")
        assert loop.time() - signalled < drain_delay, "too slow to test the drain delay"
        assert isinstance(during_delay, requests.Response), during_delay
        assert during_delay.status_code == 200

        await asyncio.sleep(drain_delay + 0.3 - (loop.time() - signalled))
        after_delay = await asyncio.to_thread(fetch_or_error, f"http://127.0.0.1:{app}/ok")
        assert isinstance(after_delay, requests.ConnectionError), after_delay
        assert not slow.done()

        in_flight = await slow
        assert isinstance(in_flight, requests.Response), in_flight
        assert in_flight.status_code == 200
        assert in_flight.text == "slow"

        code = await daemon.wait_exit(drain_delay + drain_timeout + 1.0)
        elapsed = loop.time() - signalled
        assert code == 0, daemon.stderr_text()
        assert 1.8 <= elapsed <= drain_delay + drain_timeout
        events = [line["msg"] for line in daemon.log_lines()]
        assert "shutdown started" in events
        assert "shutdown finished" in events
    assert upstream.count("/ok") == 1  # the request after drain_delay never got through


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_signal_with_idle_keepalive_client_exits_after_drain_delay(
    tmp_path, upstream, signum
):
    """With only an idle keep-alive client, a signal ends the process soon after `drain_delay`, not `drain_timeout`."""
    admin, app = free_port(), free_port()
    config = drain_config(admin, app, upstream, "300ms", "5s")
    loop = asyncio.get_running_loop()
    async with running_daemon(tmp_path, config, admin) as daemon:
        reader, writer = await asyncio.open_connection("127.0.0.1", app)
        try:
            writer.write(b"GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
            async with asyncio.timeout(2.0):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert await reader.readexactly(2) == b"ok"
            signalled = loop.time()
            daemon.signal(signum)
            async with asyncio.timeout(3.0):
                assert await reader.read() == b""  # the idle connection is closed by the drain
            code = await daemon.wait_exit(3.0)
            elapsed = loop.time() - signalled
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    assert code == 0
    assert 0.25 <= elapsed < 2.0


async def test_second_sigterm_during_drain_exits_at_once(tmp_path, upstream):
    """A second SIGTERM during a long drain ends the process at once, in-flight request or not."""
    admin, app = free_port(), free_port()
    config = drain_config(admin, app, upstream, "10s", "10s")
    loop = asyncio.get_running_loop()
    async with running_daemon(tmp_path, config, admin) as daemon:
        hanging = asyncio.ensure_future(
            asyncio.to_thread(fetch_or_error, f"http://127.0.0.1:{app}/hang")
        )
        await wait_until_received(upstream, "/hang")
        daemon.signal(signal.SIGTERM)
        await wait_not_ready(admin, within=1.0)  # the first signal is being handled
        second = loop.time()
        daemon.signal(signal.SIGTERM)
        code = await daemon.wait_exit(2.0)
        elapsed = loop.time() - second
        outcome = await hanging
    assert code == 0
    assert elapsed < 1.0
    assert isinstance(outcome, requests.ConnectionError), outcome  # abandoned, not answered
