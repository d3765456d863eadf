"""The status page: endpoints out of rotation and why; a page read once, at start."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.errors import StartupError
from sidecar.server import statuspage
from sidecar.server.statuspage import TEMPLATE_FILE, load_status_template, render_status_page
from tests.harness import running_sidecar
from tests.integration.configs import dedicated
from tests.upstreams import closed_port


def _state(endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    circuit = {
        "state": "closed", "forced": None, "since": None, "until": None, "retry_after_s": 0.0,
        "calls": 0, "failures": 0, "slow": 0, "failure_rate": 0.0, "slow_call_rate": 0.0,
        "consecutive_failures": 0,
    }  # fmt: skip
    upstream = {
        "circuit": circuit, "routes": {}, "inflight": 0, "queued": 0, "requests_per_s": 0.0,
        "error_rate": 0.0, "p99_ms": None, "endpoints": endpoints, "cache": None,
        "faults": None, "recent_transitions": [],
    }  # fmt: skip
    return {
        "version": "0.1.0", "generation": 1, "config_source": "x.yaml", "ready": True,
        "draining": False, "upstreams": {"svc": upstream},
    }  # fmt: skip


def test_statuspage_lists_unhealthy_endpoints_as_out_of_rotation() -> None:
    """A failing health check puts the endpoint in the out-of-rotation list, marked unhealthy."""
    endpoint = {"ejected_until": None, "consecutive_failures": 0, "inflight": 0}
    page = render_status_page(
        _state(
            [
                {**endpoint, "url": "http://a:80", "ejected": False, "healthy": False},
                {**endpoint, "url": "http://b:80", "ejected": False, "healthy": True},
            ]
        ),
        load_status_template(),
    )
    assert re.search(r"<td>1/2<ul class=\"ejected\"><li>http://a:80 \(unhealthy\)</li></ul>", page)
    assert "http://b:80" not in page


MARK = "<!-- the copy read at start -->"


def _template_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the template loader at a marked copy of the installed page in `tmp_path`."""
    installed = files("sidecar.server").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    copy = tmp_path / TEMPLATE_FILE
    copy.write_text(installed.replace("</body>", f"{MARK}</body>"), encoding="utf-8")
    monkeypatch.setattr(statuspage, "files", lambda package: tmp_path)
    return copy


@pytest.mark.integration
async def test_statuspage_still_served_when_the_installed_file_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET / answers 200 with the page read at start after the package's file is removed."""
    copy = _template_copy(tmp_path, monkeypatch)
    async with running_sidecar(dedicated(f"http://127.0.0.1:{closed_port()}")) as sc:
        copy.unlink()  # what `pip install` does to the old files under a running daemon
        address = sc.runtime.admin_address
        assert address is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{address[0]}:{address[1]}/") as response,
        ):
            status, page = response.status, await response.text()
    assert status == 200
    assert MARK in page
    assert '<td class="name">svc</td>' in page


def test_statuspage_unreadable_template_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A template that cannot be read fails loudly at start, naming the file."""
    _template_copy(tmp_path, monkeypatch).unlink()
    with pytest.raises(StartupError, match=r"cannot read the status page .*status_page\.html"):
        load_status_template()
