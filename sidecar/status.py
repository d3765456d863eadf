"""`sidecar status`: ask a running daemon's admin API for `GET /state` and print a table.

This module owns fetching `/state` (blocking urllib, a short timeout, never through a proxy)
and turning its JSON into a `rich` table for a terminal or aligned plain text for pipes and
logs. It must not import the runtime or the server: it is a client of the admin API, the
same one an operator's script would be, and reads every field defensively because a daemon
of another version may answer with fewer of them.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

ADMIN_ENV = "SIDECAR_ADMIN"
DEFAULT_ADMIN = "http://127.0.0.1:15000"
FETCH_TIMEOUT = 3.0  # seconds; the admin API answers from memory, so this is generous

_STATE_STYLES = {"closed": "green", "open": "bold red", "half_open": "yellow"}
_HEADERS = ("UPSTREAM", "CIRCUIT", "REQ/S", "ERRORS", "P99", "INFLIGHT", "EJECTED", "CACHE")


class StatusError(Exception):
    """The admin API could not be reached or did not answer `/state` as expected."""


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One line of the table: an upstream, or one of its routes that has its own breaker."""

    name: str  # the upstream's name, or the route's label
    state: str  # closed, open, half_open, or "-" when unknown
    forced: bool
    requests_per_s: str
    error_rate: str
    p99: str
    inflight: str
    ejected: str
    cache: str
    is_route: bool = False


def state_url(admin: str) -> str:
    """`http://host:port/state` from `--admin` (a scheme is added when missing)."""
    base = admin.strip().rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}/state"


def fetch_state(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """GET `url` and return its JSON object; raises `StatusError` naming the URL."""
    # No ProxyHandler settings: an application's HTTP_PROXY usually points at this very
    # sidecar, and the admin API is never reachable through a proxy listener.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
    except ValueError:
        raise StatusError(f"{url} is not a valid admin URL (use e.g. {DEFAULT_ADMIN})") from None
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise StatusError(
            f"the admin API at {url} answered {exc.code} {exc.reason}, expected 200"
        ) from None
    except http.client.HTTPException:
        raise StatusError(f"{url} did not answer HTTP; is that the admin API's port?") from None
    except (urllib.error.URLError, OSError) as exc:
        # URLError wraps connect failures; a read timeout or a reset arrive unwrapped.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise StatusError(
            f"cannot reach the admin API at {url}: {_describe(reason)} "
            f"(is `sidecar run` running? set --admin or ${ADMIN_ENV})"
        ) from None
    try:
        state = json.loads(body)
    except ValueError:
        raise StatusError(f"the admin API at {url} did not answer JSON") from None
    if not isinstance(state, dict) or not isinstance(state.get("upstreams", {}), dict):
        raise StatusError(f"the admin API at {url} answered JSON without an `upstreams` object")
    return state


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


# ---- from JSON to rows ----------------------------------------------------------------------


def header_line(state: Mapping[str, Any]) -> str:
    """`sidecar 0.1.0 · generation 3 · config /etc/sidecar.yaml · ready`."""
    if state.get("draining"):
        readiness = "draining"
    elif state.get("ready"):
        readiness = "ready"
    else:
        readiness = "not ready"
    parts = [
        f"sidecar {state.get('version', '?')}",
        f"generation {state.get('generation', '?')}",
        f"config {state.get('config_source', '?')}",
        readiness,
    ]
    return " | ".join(parts)


def rows(state: Mapping[str, Any]) -> list[StatusRow]:
    """The table's rows, upstreams in name order, each followed by its routes' own breakers."""
    result: list[StatusRow] = []
    upstreams = state.get("upstreams") or {}
    for name in sorted(upstreams):
        upstream = upstreams[name] or {}
        circuit = upstream.get("circuit") or {}
        result.append(
            StatusRow(
                name=name,
                state=str(circuit.get("state", "-")),
                forced=bool(circuit.get("forced")),
                requests_per_s=_number(upstream.get("requests_per_s"), "{:.1f}"),
                error_rate=_percent(upstream.get("error_rate")),
                p99=_number(upstream.get("p99_ms"), "{:.0f}ms"),
                inflight=_inflight(upstream),
                ejected=_ejected(upstream.get("endpoints")),
                cache=_cache(upstream.get("cache")),
            )
        )
        for label, route_circuit in sorted((upstream.get("routes") or {}).items()):
            route_circuit = route_circuit or {}
            result.append(
                StatusRow(
                    name=label,
                    state=str(route_circuit.get("state", "-")),
                    forced=bool(route_circuit.get("forced")),
                    requests_per_s="",
                    error_rate="",
                    p99="",
                    inflight="",
                    ejected="",
                    cache="",
                    is_route=True,
                )
            )
    return result


def circuit_notes(state: Mapping[str, Any]) -> list[str]:
    """One line per circuit that is not closed: why it changed last and when it may retry."""
    notes: list[str] = []
    upstreams = state.get("upstreams") or {}
    for name in sorted(upstreams):
        upstream = upstreams[name] or {}
        circuits = [("default", upstream.get("circuit") or {})]
        circuits += sorted((upstream.get("routes") or {}).items())
        for route, circuit in circuits:
            current = (circuit or {}).get("state")
            if current in (None, "closed") and not (circuit or {}).get("forced"):
                continue
            who = name if route == "default" else f"{name} route {route}"
            note = f"{who}: {_state_label(str(current), circuit.get('forced'))}"
            since = circuit.get("since")
            if isinstance(since, int | float):
                note += f" since {datetime.fromtimestamp(since).strftime('%H:%M:%S')}"
            reason = _last_reason(upstream.get("recent_transitions"), route)
            if reason:
                note += f" ({reason})"
            retry = circuit.get("retry_after_s")
            if circuit.get("forced"):
                note += ", until released with state auto"  # a forced state never times out
            elif current == "open" and isinstance(retry, int | float) and retry > 0:
                note += f", trial calls in {retry:.1f}s"
            notes.append(note)
    return notes


def _last_reason(transitions: object, route: str) -> str:
    if not isinstance(transitions, list):
        return ""
    for transition in reversed(transitions):
        if isinstance(transition, dict) and transition.get("route", "default") == route:
            return str(transition.get("reason", ""))
    return ""


def _state_label(current: str, forced: object) -> str:
    label = current.replace("_", "-")
    return f"{label} (forced)" if forced else label


def _number(value: object, template: str) -> str:
    return template.format(value) if isinstance(value, int | float) else "-"


def _percent(value: object) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, int | float) else "-"


def _inflight(upstream: Mapping[str, Any]) -> str:
    inflight = upstream.get("inflight")
    if not isinstance(inflight, int):
        return "-"
    queued = upstream.get("queued")
    return f"{inflight} +{queued}q" if isinstance(queued, int) and queued else str(inflight)


def _ejected(endpoints: object) -> str:
    """Endpoints out of rotation: ejected by outlier detection or failing health checks."""
    if not isinstance(endpoints, list):
        return "-"
    out = sum(
        1
        for e in endpoints
        if isinstance(e, dict) and (e.get("ejected") or e.get("healthy") is False)
    )
    return f"{out}/{len(endpoints)}"


def _cache(cache: object) -> str:
    if not isinstance(cache, dict):
        return "off"
    return str(cache.get("entries", "-"))


# ---- rendering ------------------------------------------------------------------------------


def render_plain(state: Mapping[str, Any]) -> str:
    """Aligned columns without colours or box drawing, for pipes, logs and `grep`."""
    lines = [header_line(state)]
    table_rows = [_HEADERS] + [_cells(row) for row in rows(state)]
    widths = [max(len(cells[i]) for cells in table_rows) for i in range(len(_HEADERS))]
    lines.extend(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        for cells in table_rows
    )
    if len(table_rows) == 1:
        lines.append("(no upstreams yet)")
    lines.extend(circuit_notes(state))
    return "\n".join(lines) + "\n"


def _cells(row: StatusRow) -> tuple[str, ...]:
    name = f"  route {row.name}" if row.is_route else row.name
    return (
        name,
        _state_label(row.state, row.forced),
        row.requests_per_s,
        row.error_rate,
        row.p99,
        row.inflight,
        row.ejected,
        row.cache,
    )


def render_rich(state: Mapping[str, Any], console: Console) -> None:
    """The same table for a terminal: coloured circuit states, forced ones marked."""
    console.print(Text(header_line(state), style="bold"))
    table = Table(
        box=box.SIMPLE_HEAD,
        header_style="bold",
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for heading in _HEADERS:
        left = heading in ("UPSTREAM", "CIRCUIT")
        table.add_column(heading, justify="left" if left else "right", no_wrap=True)
    for row in rows(state):
        label = Text(_state_label(row.state, row.forced), style=_STATE_STYLES.get(row.state, ""))
        if row.forced:
            label.stylize("reverse")
        name = Text(f"  └ {row.name}", style="dim") if row.is_route else Text(row.name)
        table.add_row(name, label, *_cells(row)[2:])
    console.print(table)
    for note in circuit_notes(state):
        console.print(Text(note, style="yellow"))


def run_status(admin: str | None, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    """The `sidecar status` command; returns its exit code (0 ok, 1 admin API unusable)."""
    url = state_url(admin or os.environ.get(ADMIN_ENV) or DEFAULT_ADMIN)
    try:
        state = fetch_state(url)
    except StatusError as exc:
        stderr.write(f"sidecar status: {exc}\n")
        stderr.flush()
        return 1
    if as_json:
        stdout.write(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    elif stdout.isatty():
        render_rich(state, Console(file=stdout, highlight=False))
    else:
        stdout.write(render_plain(state))
    stdout.flush()
    return 0
