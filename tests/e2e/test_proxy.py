"""`sidecar run` as a user runs it: real clients (requests, curl) through both listener kinds,
the access log on stdout, and the metrics on the admin port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon import Daemon, child_env, fetch, free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e


@dataclass(frozen=True, slots=True)
class Ports:
    admin: int
    egress: int  # forward-proxy listener
    app: int  # dedicated listener for upstream `svc`

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.egress}"

    def app_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.app}{path}"

    def admin_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin}{path}"


def proxy_config(ports: Ports, upstream: HttpUpstream) -> str:
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:{ports.admin}
listeners:
  - name: egress
    bind: 127.0.0.1:{ports.egress}
  - name: app
    bind: 127.0.0.1:{ports.app}
    upstream: svc
forward:
  unknown_hosts: deny
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
upstreams:
  svc:
    endpoints: [{upstream.url("")}]
"""


@pytest.fixture
async def daemon(tmp_path: Path, upstream: HttpUpstream) -> AsyncIterator[tuple[Daemon, Ports]]:
    """A ready `sidecar run` with a forward listener and a dedicated one, both for `upstream`."""
    ports = Ports(admin=free_port(), egress=free_port(), app=free_port())
    async with running_daemon(tmp_path, proxy_config(ports, upstream), ports.admin) as process:
        yield process, ports


async def test_requests_through_forward_proxy_reaches_upstream(daemon, upstream):
    """`requests` with `proxies={"http": sidecar}` reaches the upstream and gets the sidecar's headers."""
    _, ports = daemon
    response = await asyncio.to_thread(
        fetch, "GET", upstream.url("/echo?x=1"), proxy=ports.proxy_url
    )
    assert response.status_code == 200
    assert response.headers["x-sidecar-upstream"] == "svc"
    assert response.headers["x-sidecar-attempts"] == "1"
    assert response.json()["raw_path"] == "/echo?x=1"  # origin form towards the upstream
    assert upstream.total == 1
    assert upstream.last().has_header("x-request-id")  # added by the sidecar on the way


async def test_curl_through_forward_proxy_reaches_upstream(daemon, upstream):
    """`curl -x http://127.0.0.1:PORT http://127.0.0.1:UP/ok` gets the upstream's 200 through the sidecar."""
    _, ports = daemon
    curl = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--include",
        "--max-time",
        "5",
        "-x",
        ports.proxy_url,
        upstream.url("/ok"),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await curl.communicate()
    assert curl.returncode == 0, err
    head, _, body = out.replace(b"\r\n", b"\n").partition(b"\n\n")
    assert head.startswith(b"HTTP/1.1 200"), out
    assert b"\nx-sidecar-upstream: svc" in head.lower()
    assert body == b"ok"
    assert upstream.count("/ok") == 1


async def test_unknown_host_through_forward_proxy_is_refused(daemon, upstream):
    """With `unknown_hosts: deny` a host no upstream claims gets 403 `unknown_upstream`, so routing is by authority."""
    _, ports = daemon
    response = await asyncio.to_thread(
        fetch, "GET", f"http://127.0.0.1:{free_port()}/ok", proxy=ports.proxy_url
    )
    assert response.status_code == 403
    assert response.json()["error"] == "unknown_upstream"
    assert upstream.total == 0


async def test_requests_to_dedicated_listener_reaches_upstream(daemon, upstream):
    """A plain `requests.get` on the dedicated listener is forwarded to its upstream, whatever the Host."""
    _, ports = daemon
    response = await asyncio.to_thread(
        fetch, "GET", ports.app_url("/echo/a"), headers={"Host": "elsewhere.example"}
    )
    assert response.status_code == 200
    assert response.headers["x-sidecar-upstream"] == "svc"
    assert response.json()["raw_path"] == "/echo/a"
    assert upstream.count("/echo/a") == 1


async def wait_for_access_lines(process: Daemon, count: int) -> list[dict[str, object]]:
    """The access lines on stdout once there are `count` of them (bounded)."""
    async with asyncio.timeout(3.0):
        while True:
            lines = [line for line in process.log_lines() if line.get("msg") == "request"]
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.05)


async def test_access_log_line_is_json_without_query(daemon, upstream):
    """Each request writes one JSON access line on stdout with its fields and without the query string."""
    process, ports = daemon
    response = await asyncio.to_thread(
        fetch, "GET", ports.app_url("/echo/logged?token=QUERY-SECRET"), data=b"12345"
    )
    assert response.status_code == 200
    (line,) = await wait_for_access_lines(process, 1)
    assert line["listener"] == "app"
    assert line["upstream"] == "svc"
    assert line["method"] == "GET"
    assert line["path"] == "/echo/logged"
    assert line["status"] == 200
    assert line["outcome"] == "success"
    assert line["attempts"] == 1
    assert line["request_id"] == upstream.last().header("x-request-id")
    assert isinstance(line["duration_ms"], int | float)
    assert line["bytes_in"] == 5
    assert line["bytes_out"] == len(response.content)
    assert isinstance(line["time"], str)
    assert "QUERY-SECRET" not in process.stdout_text()


async def test_metrics_after_traffic_count_requests(daemon, upstream):
    """After traffic `/metrics` on the admin port exposes `sidecar_requests_total` and `sidecar_build_info`."""
    _, ports = daemon
    for path in ("/ok", "/status/503"):
        await asyncio.to_thread(fetch, "GET", ports.app_url(path))
    response = await asyncio.to_thread(fetch, "GET", ports.admin_url("/metrics"))
    assert response.status_code == 200
    samples = [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]
    requests_total = {
        (s.labels["upstream"], s.labels["code"]): s.value
        for s in samples
        if s.name == "sidecar_requests_total"
    }
    assert requests_total[("svc", "200")] == 1
    assert requests_total[("svc", "503")] >= 1
    (build,) = [s for s in samples if s.name == "sidecar_build_info"]
    assert build.value == 1
    assert build.labels["version"]


async def test_admin_api_is_not_reachable_through_forward_proxy(daemon, upstream):
    """A forward-proxy request for the sidecar's own admin address is refused, never served (loop protection)."""
    _, ports = daemon
    response = await asyncio.to_thread(
        fetch, "GET", ports.admin_url("/metrics"), proxy=ports.proxy_url
    )
    assert response.status_code in (403, 508)
    assert response.json()["error"] in ("loop_detected", "unknown_upstream")
    assert "sidecar_build_info" not in response.text
    assert upstream.total == 0
