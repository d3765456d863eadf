"""The admin API (SPEC §5) as an aiohttp application: probes, metrics and the effective config.

It owns the admin routes, their JSON answers (errors included) and the `Server` header of
admin responses. It reads live state only through `AdminState` and never changes how requests
are proxied; binding, running and stopping the app is the runtime's job
(`web.AppRunner(app, access_log=None, handle_signals=False)` plus a `web.TCPSite`).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import hdrs, web, web_response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from sidecar.server.readiness import Readiness
from sidecar.server.redact import redact_config

SERVER_HEADER = "sidecar"  # never the aiohttp/Python versions aiohttp announces by default
JSON_CONTENT_TYPE = "application/json"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class AdminState:
    """What the admin API reads; the runtime owns every object here and keeps them current.

    `config_view` is called per request so `/config` always shows the config in force, also
    after a reload; it returns JSON-able data that is redacted here before it leaves.
    """

    registry: CollectorRegistry
    readiness: Readiness
    config_view: Callable[[], dict[str, Any]]


ADMIN_STATE = web.AppKey("admin_state", AdminState)


def build_admin_app(state: AdminState) -> web.Application:
    """The admin application, ready for a runner; builds no sockets and starts nothing."""
    # aiohttp answers malformed requests itself, before any handler; without this its
    # default `Server` header would announce the Python and aiohttp versions (SPEC §9).
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]
    app = web.Application(middlewares=[_json_errors])
    app[ADMIN_STATE] = state
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/config", _config)
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


@web.middleware
async def _json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Admin errors are JSON (SPEC §5), including aiohttp's own 404 and 405."""
    try:
        return await handler(request)
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
