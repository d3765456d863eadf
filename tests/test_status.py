"""Tests for `sidecar status`: rendering `/state` JSON, `--json`, and an unusable admin API."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from rich.console import Console

from sidecar.cli import main
from sidecar.status import header_line, render_plain, render_rich, rows, run_status, state_url
from tests.upstreams import closed_port, raw_response

pytestmark = pytest.mark.timeout(20)

ANSI = re.compile(r"\x1b\[")


def _circuit(state: str, forced: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "state": state,
        "forced": forced,
        "since": 1_795_461_302.0,
        "until": None,
        "retry_after_s": 0.0,
        "calls": 40,
        "failures": 2,
        "slow": 0,
        "failure_rate": 0.05,
        "slow_call_rate": 0.0,
        "consecutive_failures": 0,
        **extra,
    }


SAMPLE: dict[str, Any] = {
    "version": "0.1.0",
    "generation": 3,
    "config_source": "/etc/sidecar/sidecar.yaml",
    "ready": True,
    "draining": False,
    "upstreams": {
        "payments": {
            "circuit": _circuit("open", until=1_795_461_307.0, retry_after_s=4.2),
            "routes": {"reports": _circuit("half_open")},
            "inflight": 3,
            "queued": 2,
            "requests_per_s": 41.25,
            "error_rate": 0.5,
            "p99_ms": 812.4,
            "endpoints": [
                {
                    "url": "http://payments-0:8080",
                    "ejected": True,
                    "ejected_until": 1_795_461_332.0,
                    "consecutive_failures": 5,
                    "inflight": 0,
                },
                {
                    "url": "http://payments-1:8080",
                    "ejected": False,
                    "ejected_until": None,
                    "consecutive_failures": 0,
                    "inflight": 3,
                },
            ],
            "cache": {"entries": 120, "bytes": 48_000},
            "faults": None,
            "recent_transitions": [
                {
                    "at": 1_795_461_302.0,
                    "route": "default",
                    "from": "closed",
                    "to": "open",
                    "reason": "5 consecutive failures",
                }
            ],
        },
        "catalog": {
            "circuit": _circuit("closed", forced="closed"),
            "routes": {},
            "inflight": 0,
            "queued": 0,
            "requests_per_s": 2.0,
            "error_rate": 0.0,
            "p99_ms": None,
            "endpoints": [
                {
                    "url": "http://catalog:8080",
                    "ejected": False,
                    "ejected_until": None,
                    "consecutive_failures": 0,
                    "inflight": 0,
                }
            ],
            "cache": None,
            "faults": {"abort": {"percent": 0.05, "status": 503}},
            "recent_transitions": [],
        },
    },
}


class TtyStream(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
async def admin() -> AsyncIterator[str]:
    """An aiohttp server answering `/state` with SAMPLE, plus two broken variants."""

    async def state(request: web.Request) -> web.Response:
        return web.json_response(SAMPLE)

    async def broken(request: web.Request) -> web.Response:
        return web.json_response({"error": "boom"}, status=500)

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/state", state)
    app.router.add_get("/broken/state", broken)
    app.router.add_get("/html/state", not_json)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def run_cli(*argv: str) -> int:
    """`main(argv)` off the event loop: it blocks on urllib while the test server answers."""
    return await asyncio.to_thread(main, list(argv))


def test_status_plain_render_lists_every_upstream_and_state() -> None:
    """Plain output has the header, every upstream and route, and each circuit state."""
    text = render_plain(SAMPLE)
    lines = text.splitlines()
    assert lines[0] == ("sidecar 0.1.0 | generation 3 | config /etc/sidecar/sidecar.yaml | ready")
    squeezed = [" ".join(line.split()) for line in lines[1:5]]
    assert squeezed == [
        "UPSTREAM CIRCUIT REQ/S ERRORS P99 INFLIGHT EJECTED CACHE",
        "catalog closed (forced) 2.0 0.0% - 0 0/1 off",
        "payments open 41.2 50.0% 812ms 3 +2q 1/2 120",
        "route reports half-open",
    ]
    assert "payments: open since" in text
    assert "(5 consecutive failures), trial calls in 4.2s" in text
    assert ANSI.search(text) is None


def test_status_rich_render_colours_circuit_states() -> None:
    """On a terminal the table is coloured and still names every upstream and state."""
    out = io.StringIO()
    render_rich(SAMPLE, Console(file=out, force_terminal=True, width=120, color_system="standard"))
    text = out.getvalue()
    assert ANSI.search(text) is not None
    plain = ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", text))
    for expected in ("payments", "catalog", "└ reports", "open", "half-open", "closed (forced)"):
        assert expected in plain


def test_status_rows_tolerate_missing_fields() -> None:
    """A `/state` from an older daemon with fewer fields renders dashes, not a crash."""
    (row,) = rows({"upstreams": {"legacy": {"circuit": {"state": "closed"}}}})
    assert (row.name, row.state, row.requests_per_s, row.p99, row.ejected, row.cache) == (
        "legacy",
        "closed",
        "-",
        "-",
        "-",
        "off",
    )
    assert header_line({}) == "sidecar ? | generation ? | config ? | not ready"


def test_status_header_shows_draining() -> None:
    """A draining daemon says so in the header, whatever `ready` says."""
    draining = copy.deepcopy(SAMPLE) | {"ready": False, "draining": True}
    assert header_line(draining).endswith("| draining")


@pytest.mark.parametrize(
    ("admin", "url"),
    [
        ("http://127.0.0.1:15000", "http://127.0.0.1:15000/state"),
        ("http://127.0.0.1:15000/", "http://127.0.0.1:15000/state"),
        ("127.0.0.1:9901", "http://127.0.0.1:9901/state"),
        ("https://admin.local/sidecar", "https://admin.local/sidecar/state"),
    ],
    ids=["plain", "trailing-slash", "no-scheme", "prefix"],
)
def test_status_state_url_from_admin_flag(admin: str, url: str) -> None:
    """`--admin` may omit the scheme or end in a slash; `/state` is appended."""
    assert state_url(admin) == url


async def test_status_prints_plain_table_without_ansi(
    admin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a live admin API with stdout not a terminal, the output is plain text."""
    assert await run_cli("status", "--admin", admin) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert ANSI.search(captured.out) is None
    assert "payments" in captured.out
    assert "catalog" in captured.out


async def test_status_json_prints_the_state(admin: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints the `/state` document itself."""
    assert await run_cli("status", "--admin", admin, "--json") == 0
    assert json.loads(capsys.readouterr().out) == SAMPLE


async def test_status_reads_admin_url_from_environment(
    admin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without `--admin`, `$SIDECAR_ADMIN` names the admin API."""
    monkeypatch.setenv("SIDECAR_ADMIN", admin)
    assert await run_cli("status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["generation"] == 3


async def test_status_ignores_proxy_environment(
    admin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`HTTP_PROXY` (often this very sidecar) is not used to reach the admin API."""
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert await run_cli("status", "--admin", admin, "--json") == 0
    assert json.loads(capsys.readouterr().out) == SAMPLE


async def test_status_unreachable_admin_exits_1_naming_the_url(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nothing listening on the admin port: exit 1, and stderr names the URL it tried."""
    url = f"http://127.0.0.1:{closed_port()}"
    assert await run_cli("status", "--admin", url) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot reach the admin API at {url}/state" in captured.err


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("/broken", "answered 500 Internal Server Error, expected 200"),
        ("/html", "did not answer JSON"),
    ],
    ids=["non-200", "non-json"],
)
async def test_status_unusable_answer_exits_1(
    admin: str, prefix: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-200 or non-JSON answer exits 1 with a message naming the URL."""
    assert await run_cli("status", "--admin", admin + prefix) == 1
    err = capsys.readouterr().err
    assert f"{admin}{prefix}/state" in err
    assert message in err


async def test_status_on_terminal_uses_rich(admin: str) -> None:
    """When stdout is a terminal, the table is drawn with rich (box lines, colours)."""
    out, err = TtyStream(), io.StringIO()
    assert await asyncio.to_thread(run_status, admin, False, out, err) == 0
    assert "payments" in out.getvalue()
    assert "───" in out.getvalue()
    assert err.getvalue() == ""


async def test_status_port_that_does_not_speak_http_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A port answering something other than HTTP exits 1 and says so, naming the URL."""
    async with raw_response(b"garbage\r\n\r\n") as server:
        assert await run_cli("status", "--admin", server.url("")) == 1
    assert f"{server.url('/state')} did not answer HTTP" in capsys.readouterr().err


async def test_status_invalid_admin_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed `--admin` value exits 1 with a message, not a traceback."""
    assert await run_cli("status", "--admin", "http://127.0.0.1:port") == 1
    assert "http://127.0.0.1:port/state" in capsys.readouterr().err


def test_status_counts_unhealthy_endpoints_as_out_of_rotation() -> None:
    """An endpoint failing active health checks counts in the EJECTED column like an ejected one."""
    state = copy.deepcopy(SAMPLE)
    endpoints = state["upstreams"]["catalog"]["endpoints"]
    endpoints[0]["healthy"] = False
    (catalog,) = [row for row in rows(state) if row.name == "catalog"]
    assert catalog.ejected == "1/1"
