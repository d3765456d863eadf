"""The admin API (SPEC §5) as an aiohttp application: probes, metrics, state and control.

It owns the admin routes, their JSON answers (errors included), the bearer-token check of
mutating endpoints and the `Server` header of admin responses. It reads and changes live
state only through `AdminState` (and its `Control`); what a forced circuit or an injected
fault does is decided elsewhere. Binding, running and stopping the app is the runtime's job
(`web.AppRunner(app, access_log=None, handle_signals=False)` plus a `web.TCPSite`).
"""

from __future__ import annotations

import hmac
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from aiohttp import hdrs, web, web_response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from sidecar.config import ConfigError, FaultPolicy, load_section
from sidecar.errors import StartupError
from sidecar.server.control import FORCE_STATES, Control
from sidecar.server.readiness import Readiness
from sidecar.server.redact import redact_config
from sidecar.server.statuspage import load_status_template, render_status_page

SERVER_HEADER = "sidecar"  # never the aiohttp/Python versions aiohttp announces by default
JSON_CONTENT_TYPE = "application/json"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class AdminState:
    """What the admin API reads; the runtime owns every object here and keeps them current.

    `config_view` is called per request so `/config` always shows the config in force, also
    after a reload; it returns JSON-able data that is redacted here before it leaves.
    `control` serves `/state`, `/`, the circuit and fault endpoints and `/reload` (503 while
    None). With `token` set, every request other than GET/HEAD needs `Bearer <token>`.
    """

    registry: CollectorRegistry
    readiness: Readiness
    config_view: Callable[[], dict[str, Any]]
    control: Control | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show the token
        token = "set" if self.token else "none"
        return f"AdminState(readiness={self.readiness!r}, control={self.control!r}, token={token})"


ADMIN_STATE = web.AppKey("admin_state", AdminState)
# The status page template, read when the app is built: nothing is read from the package
# while serving, so replacing the installed files under a running daemon breaks no page.
STATUS_TEMPLATE = web.AppKey("status_template", str)
# Requests that only read; everything else changes state and needs the token when one is set.
SAFE_METHODS = frozenset({"GET", "HEAD"})


def read_admin_token(path: Path | None) -> str | None:
    """The token in `admin.token_file` (surrounding whitespace dropped); None without a file.

    Read once at start, as a mounted secret; raises `StartupError` when the file cannot be
    read or holds no token, so the sidecar never runs unprotected by mistake.
    """
    if path is None:
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(f"admin.token_file: cannot read {path}: {reason}") from None
    if not token:
        raise StartupError(f"admin.token_file: {path} is empty; it must hold the bearer token")
    return token


def build_admin_app(state: AdminState) -> web.Application:
    """The admin application, ready for a runner; builds no sockets and starts nothing.

    Everything it serves is read here, once: the status page template comes from the
    package now, not at the first `GET /` (raises `StartupError` when it cannot be read).
    """
    # aiohttp answers malformed requests itself, before any handler; without this its
    # default `Server` header would announce the Python and aiohttp versions (SPEC §9).
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]
    app = web.Application(middlewares=[_json_errors, _bearer_token])
    app[ADMIN_STATE] = state
    app[STATUS_TEMPLATE] = load_status_template()
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/config", _config)
    app.router.add_get("/state", _state)
    app.router.add_get("/", _status_page)
    app.router.add_post("/upstreams/{name}/circuit", _force_circuit)
    app.router.add_put("/upstreams/{name}/faults", _set_faults)
    app.router.add_delete("/upstreams/{name}/faults", _clear_faults)
    app.router.add_post("/reload", _reload)
    app.on_response_prepare.append(_set_server_header)
    return app


def json_response(
    data: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded with orjson; every admin answer except `/metrics` is one."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type=JSON_CONTENT_TYPE
    )


async def _healthz(request: web.Request) -> web.Response:
    """Answering at all proves the process and its event loop are alive."""
    return json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[ADMIN_STATE].readiness
    status = 200 if readiness.ready else 503
    return json_response({"status": readiness.state.value}, status=status)


async def _metrics(request: web.Request) -> web.Response:
    """The Prometheus text format (0.0.4), which every Prometheus version scrapes."""
    body = generate_latest(request.app[ADMIN_STATE].registry)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})


async def _config(request: web.Request) -> web.Response:
    """The effective config, secrets redacted, indented because people read it with curl."""
    data = redact_config(request.app[ADMIN_STATE].config_view())
    body = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    return web.Response(body=body, content_type=JSON_CONTENT_TYPE)


async def _state(request: web.Request) -> web.Response:
    return json_response(_control(request).snapshot())


async def _status_page(request: web.Request) -> web.Response:
    page = render_status_page(_control(request).snapshot(), request.app[STATUS_TEMPLATE])
    return web.Response(
        text=page,
        content_type="text/html",
        charset="utf-8",
        headers={
            # Inline style and script only; `state` is fetched from this same origin.
            "Content-Security-Policy": (
                "default-src 'none'; style-src 'unsafe-inline'; "
                "script-src 'unsafe-inline'; connect-src 'self'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


async def _force_circuit(request: web.Request) -> web.Response:
    """`{"state": "open" | "closed" | "auto"}` forces or releases every breaker of the upstream."""
    control = _control(request)
    name = _upstream_name(request, control)
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {"state"}:
        raise _bad_body('expected {"state": "open" | "closed" | "auto"}')
    state = body["state"]
    if not isinstance(state, str) or state not in FORCE_STATES:
        raise _bad_body(
            f"state must be one of open, closed, auto; got {orjson.dumps(state).decode()}"
        )
    circuit = control.force_circuit(name, state)
    if circuit is None:  # removed by a reload between the two lookups
        raise _unknown_upstream(name, control)
    return json_response(circuit)


async def _set_faults(request: web.Request) -> web.Response:
    """A body like the `faults:` section; it replaces the configured faults until DELETE."""
    control = _control(request)
    name = _upstream_name(request, control)
    body = await _json_body(request)
    try:
        faults = load_section(FaultPolicy, body, ("upstreams", name, "faults"))
    except ConfigError as exc:
        errors = [
            f"{issue.path}: {issue.message}" if issue.path else issue.message
            for issue in exc.issues
        ]
        raise _bad_body("the faults are invalid", errors) from None
    if not control.set_faults(name, faults):
        raise _unknown_upstream(name, control)
    return json_response(
        {"upstream": name, "faults": faults.model_dump(mode="json", exclude_none=True)}
    )


async def _clear_faults(request: web.Request) -> web.Response:
    control = _control(request)
    name = _upstream_name(request, control)
    if not control.clear_faults(name):
        raise _unknown_upstream(name, control)
    return json_response({"upstream": name, "faults": None})


async def _reload(request: web.Request) -> web.Response:
    """Reload the config file now: 200 applied, 422 invalid (nothing changed), 409 no file."""
    control = _control(request)
    if control.reload is None:
        raise _AdminError(501, "reload_unavailable", "this sidecar cannot reload its config")
    outcome = await control.reload()
    if outcome.applied:
        return json_response(
            {"applied": True, "generation": outcome.generation, "message": outcome.message}
        )
    if outcome.errors:
        return json_response(
            {
                "error": "invalid_config",
                "detail": outcome.message,
                "errors": outcome.errors,
                "generation": outcome.generation,
            },
            status=422,
        )
    return json_response(
        {"error": "no_config_file", "detail": outcome.message, "generation": outcome.generation},
        status=409,
    )


class _AdminError(Exception):
    """An admin answer other than 2xx with a JSON body, raised from a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        errors: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def response(self) -> web.Response:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(body, status=self.status, headers=self.headers)


def _control(request: web.Request) -> Control:
    control = request.app[ADMIN_STATE].control
    if control is None:
        raise _AdminError(503, "unavailable", "the proxy is not running yet")
    return control


def _upstream_name(request: web.Request, control: Control) -> str:
    name = request.match_info["name"]
    if control.upstream(name) is None:
        raise _unknown_upstream(name, control)
    return name


def _unknown_upstream(name: str, control: Control) -> _AdminError:
    known = ", ".join(control.upstream_names()) or "none"
    return _AdminError(404, "unknown_upstream", f"no upstream named {name!r} (running: {known})")


def _bad_body(detail: str, errors: list[str] | None = None) -> _AdminError:
    return _AdminError(400, "invalid_body", detail, errors)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad_body(f"the body is not JSON: {exc}") from None


@web.middleware
async def _bearer_token(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """With a token configured, only GET and HEAD are open (SPEC §5)."""
    token = request.app[ADMIN_STATE].token
    if token is not None and request.method not in SAFE_METHODS:
        scheme, _, offered = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        expected = token.encode("utf-8")
        given = offered.strip().encode("utf-8", "surrogateescape")
        # Compare even when the scheme is wrong, so timing says nothing about the token.
        matches = hmac.compare_digest(given, expected)
        if scheme.lower() != "bearer" or not matches:
            raise _AdminError(
                401,
                "unauthorized",
                "this endpoint needs Authorization: Bearer <admin token>",
                headers={hdrs.WWW_AUTHENTICATE: 'Bearer realm="sidecar-admin"'},
            )
    return await handler(request)


@web.middleware
async def _json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Admin errors are JSON (SPEC §5), including aiohttp's own 404 and 405."""
    try:
        return await handler(request)
    except _AdminError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_from_http_exception(request, exc)
    except Exception:  # noqa: BLE001 - the admin's last resort: a JSON 500, traceback on stderr
        sys.stderr.write(f"admin: {request.method} {request.path} failed:\n")
        traceback.print_exc(file=sys.stderr)
        return json_response(
            {"error": "internal_error", "detail": "the admin API failed; see the sidecar's stderr"},
            status=500,
        )


def _error_from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        code = "not_found"
        detail = f"no admin endpoint at {request.path}"
    elif exc.status == 405:
        code = "method_not_allowed"
        detail = f"{request.method} is not allowed on {request.path}"
    else:
        code = HTTPStatus(exc.status).phrase.lower().replace(" ", "_").replace("-", "_")
        detail = exc.reason
    # Keep what a client needs (Allow on a 405); drop the framing of the exception's text body.
    headers = {
        name: value
        for name, value in exc.headers.items()
        if name.lower() not in ("content-type", "content-length")
    }
    return json_response({"error": code, "detail": detail}, status=exc.status, headers=headers)


async def _set_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_HEADER
