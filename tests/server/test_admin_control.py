"""The operator endpoints of the admin API (SPEC §5) against a running sidecar.

The admin app is built here from the running sidecar's own pieces (its router, observers,
readiness, registry and reloader), exactly as the runtime wires it, so each test can choose
the token and the reload it needs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sidecar.observe.stats import RequestStats
from sidecar.server.admin import AdminState, build_admin_app, read_admin_token
from sidecar.server.control import Control, Reload, ReloadOutcome
from sidecar.server.runtime import Runtime
from tests.harness import RunningSidecar, running_sidecar, running_sidecar_file
from tests.integration.configs import DEDICATED, FORWARD, config, dedicated
from tests.integration.rawhttp import scrape
from tests.upstreams import HttpUpstream, closed_port

pytestmark = pytest.mark.integration

TOKEN = "s3cr3t-admin-token"
ONE_ATTEMPT: dict[str, Any] = {"retries": {"max_attempts": 1}}
NO_BREAKER: dict[str, Any] = {"circuit_breaker": {"enabled": False}, **ONE_ATTEMPT}
ABORT_ALL = {"abort": {"percent": "100%", "status": 503}}
UPSTREAM_KEYS = {
    "circuit",
    "routes",
    "inflight",
    "queued",
    "requests_per_s",
    "error_rate",
    "p99_ms",
    "endpoints",
    "cache",
    "faults",
    "recent_transitions",
}
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def admin_state(
    runtime: Runtime,
    *,
    token: str | None = None,
    reload: Reload | None = None,
    info: Callable[[], dict[str, Any]] | None = None,
) -> AdminState:
    """The `AdminState` the runtime builds, from a started runtime's pieces."""
    server = runtime.server
    assert server is not None
    stats = RequestStats(server.clock)
    server.observers.add(stats)
    reloader = runtime.reloader

    def default_info() -> dict[str, Any]:
        generation = reloader.generation if reloader is not None else 1
        return {"generation": generation, "config_source": runtime.source}

    control = Control(
        lambda: server.router,
        stats,
        server.clock,
        server.observers,
        runtime.readiness,
        info or default_info,
        reload=reload if reload is not None else runtime.reload,
    )
    return AdminState(
        registry=runtime.registry,
        readiness=runtime.readiness,
        config_view=lambda: runtime.config.model_dump(mode="json"),
        control=control,
        token=token,
    )


@pytest.fixture
def make_admin(aiohttp_client: AiohttpClient) -> Callable[..., Awaitable[TestClient[Any, Any]]]:
    """`await make_admin(sc, token=..., reload=...)`: a test client on that sidecar's admin app."""

    async def make(sc: RunningSidecar, **options: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(build_admin_app(admin_state(sc.runtime, **options)))

    return make


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.read()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- circuits -----------------------------------------------------------------------------


async def test_admin_forced_open_circuit_sends_nothing_upstream_until_auto(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """Forced open, every request is refused without contacting the upstream; `auto` releases."""
    async with running_sidecar(dedicated(upstream.url(), **ONE_ATTEMPT)) as sc:
        admin = await make_admin(sc)
        forced = await admin.post("/upstreams/svc/circuit", json={"state": "open"})
        refused = [await get(sc.url(DEDICATED, "/ok")) for _ in range(3)]
        state = await (await admin.get("/state")).json()
        released = await admin.post("/upstreams/svc/circuit", json={"state": "auto"})
        served = await get(sc.url(DEDICATED, "/ok"))
    assert forced.status == 200
    body = await forced.json()
    assert (body["upstream"], body["circuit"]["state"], body["circuit"]["forced"]) == (
        "svc",
        "open",
        "open",
    )
    assert [status for status, _ in refused] == [503] * 3
    assert upstream.count("/ok") == 1  # only the request after `auto`
    circuit = state["upstreams"]["svc"]["circuit"]
    assert (circuit["state"], circuit["forced"]) == ("open", "open")
    assert state["upstreams"]["svc"]["recent_transitions"][-1]["reason"] == (
        "forced open by operator"
    )
    assert state["upstreams"]["svc"]["error_rate"] == 1.0
    assert released.status == 200
    release = (await released.json())["circuit"]
    assert (release["state"], release["forced"]) == ("closed", None)
    assert served == (200, b"ok")


async def test_admin_forced_transitions_reach_logs_and_metrics(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """A forced circuit is logged and counted like any other transition."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc)
        await admin.post("/upstreams/svc/circuit", json={"state": "open"})
        samples = await scrape(sc.admin_url)
        lines = [line for line in sc.log_lines() if line.get("msg") == "circuit opened"]
    assert samples.value("sidecar_circuit_state", upstream="svc", state="open") == 1
    assert samples.value("sidecar_circuit_transitions_total", upstream="svc", to="open") == 1
    assert [line["reason"] for line in lines] == ["forced open by operator"]


# ---- faults -------------------------------------------------------------------------------


async def test_admin_faults_abort_everything_until_deleted(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """PUT faults aborting 100% answers 503 with zero upstream requests; DELETE restores."""
    async with running_sidecar(dedicated(upstream.url(), **NO_BREAKER)) as sc:
        admin = await make_admin(sc)
        put = await admin.put("/upstreams/svc/faults", json=ABORT_ALL)
        aborted = [await get(sc.url(DEDICATED, "/ok")) for _ in range(3)]
        during = await (await admin.get("/state")).json()
        deleted = await admin.delete("/upstreams/svc/faults")
        served = await get(sc.url(DEDICATED, "/ok"))
        after = await (await admin.get("/state")).json()
    assert put.status == 200
    assert await put.json() == {
        "upstream": "svc",
        "faults": {"abort": {"percent": "100%", "status": 503, "reset": False}},
    }
    assert [status for status, _ in aborted] == [503] * 3
    assert b"fault_injected" in aborted[0][1]
    assert during["upstreams"]["svc"]["faults"] == (await put.json())["faults"]
    assert (deleted.status, await deleted.json()) == (200, {"upstream": "svc", "faults": None})
    assert served == (200, b"ok")
    assert upstream.total == 1
    assert after["upstreams"]["svc"]["faults"] is None


# ---- authorization ------------------------------------------------------------------------

MUTATIONS = [
    ("POST", "/upstreams/svc/circuit", {"state": "auto"}),
    ("PUT", "/upstreams/svc/faults", ABORT_ALL),
    ("DELETE", "/upstreams/svc/faults", None),
    ("POST", "/reload", None),
]
MUTATION_IDS = ["circuit", "put-faults", "delete-faults", "reload"]


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=MUTATION_IDS)
@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["none", "wrong-token", "basic-scheme", "no-scheme"],
)
async def test_admin_token_is_required_on_mutating_endpoints(
    upstream: HttpUpstream,
    make_admin: MakeClient,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    """With a token set, a mutating request without the right bearer token is a JSON 401."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc, token=TOKEN)
        response = await admin.request(method, path, json=body, headers=headers)
        state = await (await admin.get("/state")).json()
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["error"] == "unauthorized"
    assert TOKEN not in await response.text()
    assert state["upstreams"]["svc"]["faults"] is None  # nothing changed


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS, ids=MUTATION_IDS)
async def test_admin_token_lets_mutating_endpoints_through(
    upstream: HttpUpstream, make_admin: MakeClient, method: str, path: str, body: Any
) -> None:
    """With the right bearer token every mutating endpoint answers as without a token."""

    async def reload() -> ReloadOutcome:
        return ReloadOutcome(True, 2, [], "applied")

    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc, token=TOKEN, reload=reload)
        response = await admin.request(method, path, json=body, headers=bearer())
    assert response.status == 200


@pytest.mark.parametrize("path", ["/state", "/", "/healthz", "/metrics", "/config"])
async def test_admin_token_leaves_reads_open(
    upstream: HttpUpstream, make_admin: MakeClient, path: str
) -> None:
    """GET endpoints need no token even when one is configured."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc, token=TOKEN)
        response = await admin.get(path)
    assert response.status == 200


def test_admin_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    """The token file's content without surrounding whitespace is the token; none without a file."""
    file = tmp_path / "token"
    file.write_text(f"  {TOKEN}\n")
    assert read_admin_token(file) == TOKEN
    assert read_admin_token(None) is None


@pytest.mark.parametrize(
    ("content", "message"), [("\n", "is empty"), (None, "cannot read")], ids=["empty", "missing"]
)
def test_admin_token_file_problems_stop_the_start(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """An empty or unreadable token file is a start error, never an unprotected admin API."""
    from sidecar.errors import StartupError

    file = tmp_path / "token"
    if content is not None:
        file.write_text(content)
    with pytest.raises(StartupError, match=message):
        read_admin_token(file)


# ---- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/upstreams/nope/circuit", {"state": "open"}),
        ("PUT", "/upstreams/nope/faults", ABORT_ALL),
        ("DELETE", "/upstreams/nope/faults", None),
    ],
    ids=["circuit", "put-faults", "delete-faults"],
)
async def test_admin_unknown_upstream_is_json_404(
    upstream: HttpUpstream, make_admin: MakeClient, method: str, path: str, body: Any
) -> None:
    """An upstream that is not running answers 404 naming the ones that are."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc)
        response = await admin.request(method, path, json=body)
    assert response.status == 404
    payload = await response.json()
    assert payload["error"] == "unknown_upstream"
    assert "'nope'" in payload["detail"]
    assert "svc" in payload["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/upstreams/svc/circuit", b"{not json", "not JSON"),
        ("POST", "/upstreams/svc/circuit", b'{"state": "half_open"}', "half_open"),
        ("POST", "/upstreams/svc/circuit", b'{"state": "open", "for": "10s"}', "expected"),
        ("POST", "/upstreams/svc/circuit", b"[]", "expected"),
        ("PUT", "/upstreams/svc/faults", b"nope", "not JSON"),
        (
            "PUT",
            "/upstreams/svc/faults",
            b'{"abort": {"percent": "100%", "status": 700}}',
            "upstreams.svc.faults.abort.status: must be at most 599, got 700",
        ),
        (
            "PUT",
            "/upstreams/svc/faults",
            b'{"abort": {"percent": "100%"}}',
            "upstreams.svc.faults.abort: set exactly one of status (e.g. 503) or reset: true",
        ),
        (
            "PUT",
            "/upstreams/svc/faults",
            b'{"delay": {"duration": "2s"}, "abrot": {}}',
            "upstreams.svc.faults: unknown key 'abrot' (did you mean 'abort'?)",
        ),
        (
            "PUT",
            "/upstreams/svc/faults",
            b"null",
            "upstreams.svc.faults: expected a mapping with keys delay, abort",
        ),
    ],
    ids=[
        "circuit-not-json",
        "circuit-half-open",
        "circuit-extra-key",
        "circuit-not-object",
        "faults-not-json",
        "faults-bad-status",
        "faults-abort-without-kind",
        "faults-unknown-key",
        "faults-null",
    ],
)
async def test_admin_invalid_body_is_json_400(
    upstream: HttpUpstream,
    make_admin: MakeClient,
    method: str,
    path: str,
    body: bytes,
    expected: str,
) -> None:
    """An invalid body answers 400 with what is wrong, and changes nothing."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc)
        response = await admin.request(method, path, data=body)
        state = await (await admin.get("/state")).json()
    assert response.status == 400
    payload = await response.json()
    assert payload["error"] == "invalid_body"
    assert expected in payload["detail"] or any(expected in e for e in payload.get("errors", []))
    svc = state["upstreams"]["svc"]
    assert (svc["faults"], svc["circuit"]["forced"]) == (None, None)


# ---- state and status page ----------------------------------------------------------------


async def test_admin_state_lists_every_upstream_with_every_key(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """/state has each configured upstream and the implicit ones a forward listener created."""
    text = config(
        listeners=[
            {"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": "svc"},
            {"name": FORWARD, "bind": "127.0.0.1:0"},
        ],
        upstreams={
            "svc": {"endpoints": [upstream.url("")]},
            "billing": {"endpoints": [f"http://127.0.0.1:{closed_port()}"], **ONE_ATTEMPT},
        },
    )
    async with running_sidecar(text) as sc:
        admin = await make_admin(sc)
        for _ in range(4):
            await get(sc.url(DEDICATED, "/ok"))
        # `svc` claims 127.0.0.1:PORT; the same server as `localhost` is an unknown host.
        implicit = f"localhost:{upstream.port}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{implicit}/ok", proxy=sc.url(FORWARD, "")) as response,
        ):
            assert response.status == 200
        state = await (await admin.get("/state")).json()
    assert set(state["upstreams"]) == {"svc", "billing", implicit}
    for name, entry in state["upstreams"].items():
        assert set(entry) == UPSTREAM_KEYS, name
    assert state["upstreams"]["svc"]["requests_per_s"] > 0
    assert state["upstreams"]["svc"]["p99_ms"] is not None
    assert state["upstreams"][implicit]["endpoints"][0]["url"] == f"http://{implicit}"
    assert (state["generation"], state["config_source"]) == (1, "<test>")
    assert (state["ready"], state["draining"]) == (True, False)


async def test_admin_status_page_shows_every_upstream_without_external_assets(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """GET / is one self-contained HTML page naming every upstream, values HTML-escaped."""
    text = config(
        listeners=[{"name": DEDICATED, "bind": "127.0.0.1:0", "upstream": "svc"}],
        upstreams={
            "svc": {"endpoints": [upstream.url("")]},
            "billing": {"endpoints": [f"http://localhost:{upstream.port}"]},
        },
    )

    def info() -> dict[str, Any]:
        return {"generation": 7, "config_source": '<img src="http://evil.example/x">'}

    async with running_sidecar(text) as sc:
        admin = await make_admin(sc, info=info)
        await admin.post("/upstreams/billing/circuit", json={"state": "open"})
        response = await admin.get("/")
        page = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    for name in ("svc", "billing"):
        assert f'<td class="name">{name}</td>' in page
    assert 'class="state open"' in page  # billing, forced
    assert "forced open by operator" in page
    assert 'src="http' not in page
    assert 'href="http' not in page
    assert "&lt;img src=&quot;http://evil.example/x&quot;&gt;" in page
    assert re.search(r"<script src|<link ", page) is None


# ---- reload -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "status", "expected"),
    [
        (ReloadOutcome(True, 2, [], "applied"), 200, {"applied": True, "generation": 2}),
        (
            ReloadOutcome(False, 1, ["sidecar.yaml:3:5: version: must be 1"], "invalid"),
            422,
            {"error": "invalid_config", "errors": ["sidecar.yaml:3:5: version: must be 1"]},
        ),
        (ReloadOutcome(False, 1, [], "no file"), 409, {"error": "no_config_file"}),
    ],
    ids=["applied", "invalid", "no-file"],
)
async def test_admin_reload_maps_the_outcome(
    upstream: HttpUpstream,
    make_admin: MakeClient,
    outcome: ReloadOutcome,
    status: int,
    expected: dict[str, Any],
) -> None:
    """POST /reload answers 200, 422 with the errors, or 409, as the reload turned out."""

    async def reload() -> ReloadOutcome:
        return outcome

    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc, reload=reload)
        response = await admin.post("/reload")
        body = await response.json()
    assert response.status == status
    assert expected.items() <= body.items()


async def test_admin_reload_without_a_file_is_409(
    upstream: HttpUpstream, make_admin: MakeClient
) -> None:
    """A sidecar whose config did not come from a file has nothing to reload."""
    async with running_sidecar(dedicated(upstream.url())) as sc:
        admin = await make_admin(sc)
        response = await admin.post("/reload")
    assert response.status == 409
    assert (await response.json())["error"] == "no_config_file"


async def test_admin_reload_applies_a_valid_file_and_refuses_an_invalid_one(
    upstream: HttpUpstream, make_admin: MakeClient, tmp_path: Path
) -> None:
    """A valid edit is applied (generation 2); an invalid one is 422 and the config stays."""
    path = tmp_path / "sidecar.yaml"
    path.write_text(dedicated(upstream.url()))
    async with running_sidecar_file(path, watch=False) as sc:
        admin = await make_admin(sc)
        path.write_text(dedicated(upstream.url(), upstream="orders"))
        applied = await admin.post("/reload")
        path.write_text(dedicated(upstream.url(), upstream="orders") + "bogus: 1\n")
        refused = await admin.post("/reload")
        state = await (await admin.get("/state")).json()
        samples = await scrape(sc.admin_url)
    assert (applied.status, (await applied.json())["generation"]) == (200, 2)
    assert refused.status == 422
    body = await refused.json()
    assert body["error"] == "invalid_config"
    assert any("bogus" in error for error in body["errors"])
    assert set(state["upstreams"]) == {"orders"}
    assert state["generation"] == 2
    assert samples.value("sidecar_config_generation") == 2
    assert samples.value("sidecar_config_reloads_total", result="success") == 1
    assert samples.value("sidecar_config_reloads_total", result="error") == 1
