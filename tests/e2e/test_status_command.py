"""`sidecar status` against a real `sidecar run` (SPEC §2): every upstream and its state."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from tests.e2e.daemon import app_config, child_env, fetch, free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e


def _config(admin: int, app: int, upstream: HttpUpstream) -> str:
    return app_config(
        admin,
        app,
        f"""\
  svc:
    endpoints: [{upstream.url("")}]
    retries: {{max_attempts: 1}}
    circuit_breaker: {{consecutive_failures: 2, open_duration: 30s}}
  reports:
    endpoints: [{upstream.url("")}]
    hosts: [reports.internal]
""",
    )


async def _status(admin: int, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "status",
        "--admin",
        f"http://127.0.0.1:{admin}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_status_command_names_each_upstream_and_its_circuit_state(
    tmp_path: os.PathLike[str], upstream: HttpUpstream
) -> None:
    """After two failures open `svc`'s circuit, `sidecar status` lists svc as open and reports as closed."""
    admin, app = free_port(), free_port()
    async with running_daemon(tmp_path, _config(admin, app, upstream), admin):  # type: ignore[arg-type]
        upstream.fail_next(2, 503)
        for _ in range(2):
            response = await asyncio.to_thread(
                fetch, "GET", f"http://127.0.0.1:{app}/ok", timeout=2.0
            )
            assert response.status_code == 503
        code, table, _ = await _status(admin)
        json_code, raw, _ = await _status(admin, "--json")
    assert code == 0
    rows = {
        line.split()[0]: line
        for line in table.splitlines()
        if line.split()[:1] in (["svc"], ["reports"])
    }
    assert "open" in rows["svc"].split()
    assert "closed" in rows["reports"].split()
    assert "\x1b[" not in table  # not a TTY: plain text
    assert json_code == 0
    state = json.loads(raw)
    assert state["upstreams"]["svc"]["circuit"]["state"] == "open"
    assert state["upstreams"]["reports"]["circuit"]["state"] == "closed"


async def test_status_command_fails_naming_the_url_when_nothing_answers() -> None:
    """With no admin API at the address, `sidecar status` exits 1 and names the URL."""
    admin = free_port()
    code, _, err = await _status(admin)
    assert code == 1
    assert f"http://127.0.0.1:{admin}" in err
