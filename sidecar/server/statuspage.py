"""The human status page `GET /` (SPEC §5): the `/state` document as one HTML table.

The page is `status_page.html`, a self-contained template (inline CSS, a few lines of inline
JS that fetch `state` every 2 s and re-render with `textContent`). This module renders the
same rows server-side once, so the page is complete without JS. Every value is HTML-escaped
here; the page loads nothing from anywhere else.

The template is read once, when the admin app is built (`load_status_template`), never while
serving: a `pip install` that replaces or removes the package's files under a running daemon
must not turn `GET /` into a 500.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from sidecar.clock import wall_time
from sidecar.errors import StartupError

TRANSITIONS_SHOWN = 5  # newest first; `/state` has the last 10
_MARKER = re.compile(r"\{\{(meta|rows)\}\}")
DASH = "\u2013"


TEMPLATE_FILE = "status_page.html"


def load_status_template() -> str:
    """The page template from the installed package; read it at start and keep it.

    Raises `StartupError` when it cannot be read, so a broken install stops the start
    instead of failing the first `GET /` hours later.
    """
    resource = files("sidecar.server").joinpath(TEMPLATE_FILE)
    try:
        return resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StartupError(f"cannot read the status page {resource}: {reason}") from None


def render_status_page(state: dict[str, Any], template: str) -> str:
    """The page for one `/state` snapshot, in `template` (from `load_status_template`)."""
    values = {"meta": _meta(state), "rows": "".join(_row(n, u) for n, u in _upstreams(state))}
    # One pass: text substituted in is never scanned for markers again.
    return _MARKER.sub(lambda match: values[match.group(1)], template)


def _upstreams(state: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(state["upstreams"].items())


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def _meta(state: dict[str, Any]) -> str:
    status = "draining" if state["draining"] else ("ready" if state["ready"] else "starting")
    return (
        f"version {_e(state['version'])} · generation {_e(state['generation'])} · "
        f"config {_e(state['config_source'])} · {_e(status)} · "
        f"updated {_e(_clock(wall_time()))} UTC"
    )


def _badge(circuit: dict[str, Any]) -> str:
    state = str(circuit["state"])
    forced = '<span class="forced">forced</span>' if circuit["forced"] else ""
    label = state.replace("_", "-")
    return f'<span><span class="state {_e(state)}">{_e(label)}</span>{forced}</span>'


def _ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _row(name: str, up: dict[str, Any]) -> str:
    circuit = _badge(up["circuit"])
    if up["routes"]:
        items = "".join(
            f"<li>{_e(label)} {_badge(route)}</li>" for label, route in up["routes"].items()
        )
        circuit += f'<ul class="routes">{items}</ul>'
    inflight = str(up["inflight"])
    if up["queued"]:
        inflight += f" (+{up['queued']} queued)"
    endpoints = up["endpoints"]
    # Out of rotation: ejected by outlier detection, or failing active health checks.
    ejected = [e for e in endpoints if e["ejected"] or e.get("healthy") is False]
    ejected_cell = f"{len(ejected)}/{len(endpoints)}"
    if ejected:
        items = "".join(
            f"<li>{_e(e['url'])}{' (unhealthy)' if e.get('healthy') is False else ''}</li>"
            for e in ejected
        )
        ejected_cell += f'<ul class="ejected">{items}</ul>'
    cache_cell = str(up["cache"]["entries"]) if up["cache"] is not None else DASH
    shown = list(reversed(up["recent_transitions"][-TRANSITIONS_SHOWN:]))
    if shown:
        items = "".join(
            f"<li>{_e(_clock(t['at']))} {_e(t['route'])} {_e(t['from'])} → {_e(t['to'])} "
            f'<span class="reason">{_e(t["reason"])}</span></li>'
            for t in shown
        )
        recent = f'<ul class="transitions">{items}</ul>'
    else:
        recent = '<span class="muted">none</span>'
    rate = f"{up['requests_per_s']:.1f}"
    errors = f"{up['error_rate'] * 100:.1f}%"
    cells = (
        f'<td class="name">{_e(name)}</td>',
        f"<td>{circuit}</td>",  # built from escaped parts above
        f'<td class="num">{_e(rate)}</td>',
        f'<td class="num">{_e(errors)}</td>',
        f'<td class="num">{_e(_ms(up["p99_ms"]))}</td>',
        f'<td class="num">{_e(inflight)}</td>',
        f"<td>{ejected_cell}</td>",  # a count of ints, then escaped URLs
        f'<td class="num">{_e(cache_cell)}</td>',
        f"<td>{recent}</td>",
    )
    return "<tr>" + "".join(cells) + "</tr>"
