"""Tests for sidecar.server.admin over a real aiohttp test server."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from sidecar.events import RequestFinished
from sidecar.observe.metrics import SidecarMetrics
from sidecar.outcome import Outcome
from sidecar.server.admin import AdminState, build_admin_app
from sidecar.server.readiness import Readiness

CONFIG: dict[str, Any] = {
    "version": 1,
    "admin": {"bind": "127.0.0.1:15000", "token_file": "/run/secrets/admin-token"},
    "upstreams": {
        "payments": {
            "endpoints": ["http://svc:hunter2@payments:8080"],
            "fallback": {
                "static": {
                    "status": 503,
                    "headers": {"content-type": "application/json", "Authorization": "Bearer x"},
                }
            },
        }
    },
}


def make_state(config: dict[str, Any] | None = None) -> AdminState:
    return AdminState(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        config_view=lambda: CONFIG if config is None else config,
    )


async def test_admin_healthz_answers_ok(aiohttp_client: AiohttpClient) -> None:
    """/healthz is 200 with {"status": "ok"} whenever the loop runs."""
    client = await aiohttp_client(build_admin_app(make_state()))
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"status": "ok"}


async def test_admin_readyz_follows_readiness(aiohttp_client: AiohttpClient) -> None:
    """/readyz is 503 starting, 200 once ready, and 503 draining after the runtime flips it."""
    state = make_state()
    client = await aiohttp_client(build_admin_app(state))
    seen = []
    for flip in (None, state.readiness.mark_ready, state.readiness.mark_draining):
        if flip is not None:
            flip()
        response = await client.get("/readyz")
        seen.append((response.status, await response.json()))
    assert seen == [
        (503, {"status": "starting"}),
        (200, {"status": "ready"}),
        (503, {"status": "draining"}),
    ]


async def test_admin_metrics_serves_prometheus_text(aiohttp_client: AiohttpClient) -> None:
    """/metrics is the Prometheus text format with its content type and the recorded samples."""
    state = make_state()
    metrics = SidecarMetrics(state.registry, "1.2.3")
    metrics.notify(
        RequestFinished(
            wall_time=0.0,
            request_id="r",
            listener="egress",
            upstream="payments",
            route="default",
            method="GET",
            path="/",
            status=200,
            outcome=Outcome.SUCCESS,
            attempts=1,
            duration=0.01,
            bytes_in=0,
            bytes_out=0,
            circuit_state="closed",
            error="",
        )
    )
    client = await aiohttp_client(build_admin_app(state))
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await response.text()
    assert 'sidecar_build_info{version="1.2.3"} 1.0' in text
    assert (
        'sidecar_requests_total{code="200",method="GET",outcome="success",'
        'route="default",upstream="payments"} 1.0'
    ) in text


async def test_admin_config_is_redacted(aiohttp_client: AiohttpClient) -> None:
    """/config shows the effective config with passwords and credential headers redacted."""
    client = await aiohttp_client(build_admin_app(make_state()))
    response = await client.get("/config")
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    payments = body["upstreams"]["payments"]
    assert payments["endpoints"] == ["http://svc:<redacted>@payments:8080"]
    assert payments["fallback"]["static"]["headers"] == {
        "content-type": "application/json",
        "Authorization": "<redacted>",
    }
    assert body["admin"]["token_file"] == "/run/secrets/admin-token"
    assert "hunter2" not in await response.text()


async def test_admin_config_reads_view_per_request(aiohttp_client: AiohttpClient) -> None:
    """/config asks the view on every request, so a reloaded config shows at once."""
    current: dict[str, Any] = {"version": 1, "generation": 1}
    state = AdminState(CollectorRegistry(), Readiness(), lambda: current)
    client = await aiohttp_client(build_admin_app(state))
    assert (await (await client.get("/config")).json())["generation"] == 1
    current = {"version": 1, "generation": 2}
    assert (await (await client.get("/config")).json())["generation"] == 2


async def test_admin_unknown_path_is_json_404(aiohttp_client: AiohttpClient) -> None:
    """An unknown admin path answers a JSON 404 with error not_found."""
    client = await aiohttp_client(build_admin_app(make_state()))
    response = await client.get("/nope?secret=1")
    assert response.status == 404
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == "not_found"
    assert "secret" not in body["detail"]


async def test_admin_wrong_method_is_json_405(aiohttp_client: AiohttpClient) -> None:
    """A wrong method answers a JSON 405 that still names the allowed methods."""
    client = await aiohttp_client(build_admin_app(make_state()))
    response = await client.post("/healthz")
    assert response.status == 405
    assert response.content_type == "application/json"
    assert (await response.json())["error"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


async def test_admin_handler_failure_is_json_500(
    aiohttp_client: AiohttpClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing handler answers a JSON 500 without details and prints the traceback on stderr."""

    def broken_view() -> dict[str, Any]:
        raise RuntimeError("view exploded")

    state = AdminState(CollectorRegistry(), Readiness(), broken_view)
    client = await aiohttp_client(build_admin_app(state))
    response = await client.get("/config")
    assert response.status == 500
    body = await response.json()
    assert body["error"] == "internal_error"
    assert "exploded" not in body["detail"]
    assert "view exploded" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path",
    ["/healthz", "/readyz", "/metrics", "/config", "/missing"],
    ids=["healthz", "readyz", "metrics", "config", "not-found"],
)
async def test_admin_server_header_hides_library_versions(
    aiohttp_client: AiohttpClient, path: str
) -> None:
    """Every admin answer, errors included, says `Server: sidecar` and no library version."""
    client = await aiohttp_client(build_admin_app(make_state()))
    response = await client.get(path)
    assert response.headers["Server"] == "sidecar"
