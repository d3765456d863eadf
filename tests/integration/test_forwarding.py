"""Routing and forwarding over real sockets: dedicated and forward-proxy listeners, hosts,
implicit upstreams, routes, request ids and loop protection (SPEC §1, §4.1 step 1, §4.5, §9)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.harness import running_sidecar
from tests.integration.configs import DEDICATED, FORWARD, dedicated, forward
from tests.integration.rawhttp import raw_exchange, scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration


async def test_dedicated_listener_returns_upstream_status_and_body(upstream: HttpUpstream) -> None:
    """A dedicated listener relays the upstream's status and body and names the upstream."""
    async with running_sidecar(dedicated(upstream.url())) as sc, aiohttp.ClientSession() as session:
        async with session.get(sc.url(DEDICATED, "/ok")) as resp:
            assert resp.status == 200
            assert await resp.text() == "ok"
            assert resp.headers["x-sidecar-upstream"] == "svc"
            assert resp.headers["x-sidecar-attempts"] == "1"
            assert "x-sidecar-error" not in resp.headers
        async with session.get(sc.url(DEDICATED, "/status/418")) as resp:
            assert resp.status == 418
            assert await resp.json() == {"status": 418}
    assert upstream.count("/ok") == 1
    assert upstream.count("/status/418") == 1


async def test_dedicated_listener_sends_the_endpoint_authority_as_host(
    upstream: HttpUpstream,
) -> None:
    """Whatever Host the client sends, a dedicated listener sends the endpoint's authority."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        request = b"GET /echo HTTP/1.1\r\nHost: app.example:1234\r\n\r\n"
        response = await raw_exchange(sc.port(DEDICATED), request)
    assert response.status == 200
    assert response.json()["headers"]["host"] == upstream.authority
    assert upstream.last().header("host") == upstream.authority


async def test_request_id_is_generated_forwarded_and_logged(upstream: HttpUpstream) -> None:
    """A request without x-request-id reaches the upstream with a fresh one, also logged."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(sc.url(DEDICATED, "/ok")) as resp:
                    assert resp.status == 200
        lines = sc.access_lines()
    sent = [request.header("x-request-id") for request in upstream.requests]
    assert all(sent), sent
    assert len(set(sent)) == 2
    assert [line["request_id"] for line in lines] == sent


async def test_request_id_from_the_client_is_kept(upstream: HttpUpstream) -> None:
    """A client's x-request-id reaches the upstream unchanged, exactly once, and is logged."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        async with aiohttp.ClientSession() as session:
            headers = {"X-Request-Id": "client-chosen-42"}
            async with session.get(sc.url(DEDICATED, "/ok"), headers=headers) as resp:
                assert resp.status == 200
        lines = sc.access_lines()
    received = [v for k, v in upstream.last().headers if k.lower() == "x-request-id"]
    assert received == ["client-chosen-42"]
    assert lines[0]["request_id"] == "client-chosen-42"


@pytest.mark.parametrize(
    ("answer", "status"),
    [("relayed", 200), ("generated", 502)],
    ids=["relayed", "generated-error"],
)
async def test_response_headers_false_removes_sidecar_headers(
    upstream: HttpUpstream, answer: str, status: int
) -> None:
    """With `response_headers: false` neither relayed nor generated answers carry x-sidecar-*."""
    endpoint = upstream.url() if answer == "relayed" else f"http://127.0.0.1:{closed_port()}"
    text = dedicated(endpoint, retries={"max_attempts": 1}) + "response_headers: false\n"
    async with running_sidecar(text) as sc:
        response = await raw_exchange(sc.port(DEDICATED), b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == status
    assert [name for name, _ in response.headers if name.lower().startswith("x-sidecar")] == []


async def test_forward_listener_accepts_absolute_form_requests(upstream: HttpUpstream) -> None:
    """An absolute-form request (HTTP_PROXY style) reaches the upstream in origin form."""
    config = forward({"svc": {"endpoints": [upstream.url()]}})
    async with running_sidecar(config) as sc, aiohttp.ClientSession() as session:
        url = upstream.url("/echo/x?y=1")
        async with session.get(url, proxy=sc.url(FORWARD)) as resp:
            assert resp.status == 200
            assert resp.headers["x-sidecar-upstream"] == "svc"
            echoed = await resp.json()
    assert echoed["raw_path"] == "/echo/x?y=1"
    assert echoed["headers"]["host"] == upstream.authority


async def test_forward_listener_routes_origin_form_by_host_header(upstream: HttpUpstream) -> None:
    """An origin-form request on a forward listener is routed by its Host header."""
    config = forward({"svc": {"endpoints": [upstream.url()]}})
    async with running_sidecar(config) as sc:
        request = f"GET /echo HTTP/1.1\r\nHost: {upstream.authority}\r\n\r\n".encode()
        response = await raw_exchange(sc.port(FORWARD), request)
    assert response.status == 200
    assert response.header("x-sidecar-upstream") == "svc"
    assert response.json()["raw_path"] == "/echo"


@pytest.mark.parametrize(
    ("host", "routed"),
    [
        ("payments.internal", True),
        ("PAYMENTS.internal", True),
        ("payments.internal:9999", True),
        ("billing.internal:8080", True),
        ("billing.internal", False),
        ("billing.internal:8081", False),
        ("elsewhere.internal", False),
    ],
    ids=[
        "host-no-port",
        "host-case-insensitive",
        "host-entry-matches-any-port",
        "host-port-exact",
        "host-port-entry-needs-that-port",
        "host-port-entry-other-port",
        "unlisted-host",
    ],
)
async def test_forward_listener_matches_hosts_entries(
    upstream: HttpUpstream, host: str, routed: bool
) -> None:
    """`hosts:` entries without a port match the host on any port; with a port, only that one."""
    upstreams = {
        "svc": {
            "endpoints": [upstream.url()],
            "hosts": ["payments.internal", "billing.internal:8080"],
        }
    }
    async with running_sidecar(forward(upstreams, forward={"unknown_hosts": "deny"})) as sc:
        request = f"GET /ok HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        response = await raw_exchange(sc.port(FORWARD), request)
    if routed:
        assert (response.status, response.body) == (200, b"ok")
        assert response.header("x-sidecar-upstream") == "svc"
        assert upstream.count("/ok") == 1
    else:
        assert response.status == 403
        assert upstream.total == 0


async def test_forward_listener_denies_unknown_hosts_with_403(upstream: HttpUpstream) -> None:
    """With `unknown_hosts: deny` an unconfigured host gets 403 `unknown_upstream`, unforwarded."""
    async with running_sidecar(forward(forward={"unknown_hosts": "deny"})) as sc:
        async with (
            aiohttp.ClientSession() as session,
            session.get(upstream.url("/ok"), proxy=sc.url(FORWARD)) as resp,
        ):
            assert resp.status == 403
            assert resp.headers["content-type"] == "application/json"
            assert resp.headers["x-sidecar-error"] == "unknown_upstream"
            body = await resp.json()
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert body["error"] == "unknown_upstream"
    assert body["upstream"] is None
    assert isinstance(body["detail"], str)
    assert upstream.total == 0
    assert lines[0]["status"] == 403
    assert lines[0]["outcome"] == "rejected"
    assert samples.value("sidecar_requests_total", code="403", outcome="rejected") == 1


async def test_forward_listener_creates_implicit_upstream_per_host(upstream: HttpUpstream) -> None:
    """With `unknown_hosts: allow` an unconfigured host becomes the implicit upstream `host:port`."""
    async with running_sidecar(forward(forward={"unknown_hosts": "allow"})) as sc:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(upstream.url("/ok"), proxy=sc.url(FORWARD)) as resp:
                    assert resp.status == 200
                    assert resp.headers["x-sidecar-upstream"] == upstream.authority
        lines = sc.access_lines()
    assert upstream.count("/ok") == 2
    assert [line["upstream"] for line in lines] == [upstream.authority] * 2


async def test_forward_listener_sends_hosts_beyond_the_cap_to_other(upstream: HttpUpstream) -> None:
    """Past `max_implicit_upstreams` new hosts share the implicit upstream `other`, still forwarded."""
    config = forward(forward={"unknown_hosts": "allow", "max_implicit_upstreams": 1})
    async with HttpUpstream("second") as second, running_sidecar(config) as sc:
        async with aiohttp.ClientSession() as session:
            names = []
            for target in (upstream, second, upstream):
                async with session.get(target.url("/echo"), proxy=sc.url(FORWARD)) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["upstream"] == target.name
                    names.append(resp.headers["x-sidecar-upstream"])
        lines = sc.access_lines()
        assert second.count("/echo") == 1
    assert names == [upstream.authority, "other", upstream.authority]
    assert [line["upstream"] for line in lines] == names
    assert upstream.count("/echo") == 2


ROUTES = [
    {"name": "reports", "match": {"path_prefix": "/echo/reports", "methods": ["GET"]}},
    {"match": {"path": "/echo/charge", "methods": ["POST"]}},
    {"match": {"path_prefix": "/echo"}},
]


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/echo/reports/1", "reports"),
        ("POST", "/echo/reports/1", "/echo"),
        ("POST", "/echo/charge", "/echo/charge"),
        ("POST", "/echo/charge?x=1", "/echo/charge"),
        ("GET", "/echo/charge", "/echo"),
        ("POST", "/echo/charge/more", "/echo"),
        ("GET", "/ok", "default"),
    ],
    ids=[
        "prefix-and-method",
        "method-mismatch-falls-through",
        "exact-path",
        "exact-path-ignores-query",
        "exact-path-wrong-method",
        "exact-path-is-not-a-prefix",
        "no-match-default",
    ],
)
async def test_routes_first_match_wins_and_label_is_logged(
    upstream: HttpUpstream, method: str, path: str, route: str
) -> None:
    """The first route whose path/prefix and methods match takes the request; its label is logged."""
    async with running_sidecar(dedicated(upstream.url(), routes=ROUTES)) as sc:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, sc.url(DEDICATED, path)) as resp,
        ):
            assert resp.status == 200
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert [line["route"] for line in lines] == [route]
    assert samples.value("sidecar_requests_total", upstream="svc", route=route, method=method) == 1


async def test_route_timeouts_apply_only_to_that_route(upstream: HttpUpstream) -> None:
    """A route's own `per_try` times out its requests while the default route's does not."""
    routes = [{"match": {"path": "/slow-headers"}, "timeouts": {"per_try": "30ms"}}]
    async with (
        running_sidecar(dedicated(upstream.url(), routes=routes)) as sc,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(sc.url(DEDICATED, "/slow-headers?delay=0.2")) as resp:
            assert resp.status == 504
        async with session.get(sc.url(DEDICATED, "/echo/slow-headers?delay=0.2")) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    "target",
    ["listener", "listener-localhost", "admin"],
    ids=["own-listener", "own-listener-by-localhost", "admin-port"],
)
async def test_forward_listener_refuses_to_forward_to_the_sidecar_itself(target: str) -> None:
    """A proxy request for one of the sidecar's own sockets gets 508 `loop_detected`, unsent."""
    async with running_sidecar(forward(forward={"unknown_hosts": "allow"})) as sc:
        admin_port = int(sc.admin_url.rsplit(":", 1)[1])
        authority = {
            "listener": f"127.0.0.1:{sc.port(FORWARD)}",
            "listener-localhost": f"localhost:{sc.port(FORWARD)}",
            "admin": f"127.0.0.1:{admin_port}",
        }[target]
        request = f"GET http://{authority}/metrics HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()
        response = await raw_exchange(sc.port(FORWARD), request)
        lines = sc.access_lines()
        samples = await scrape(sc.admin_url)
    assert response.status == 508
    assert response.json()["error"] == "loop_detected"
    assert response.header("x-sidecar-error") == "loop_detected"
    assert b"sidecar_requests_total" not in response.body
    assert [line["attempts"] for line in lines] == [0]
    assert samples.value("sidecar_upstream_attempts_total") == 0
