"""The status page marks endpoints that are out of rotation, and why."""

from __future__ import annotations

import re
from typing import Any

from sidecar.server.statuspage import render_status_page


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
        )
    )
    assert re.search(r"<td>1/2<ul class=\"ejected\"><li>http://a:80 \(unhealthy\)</li></ul>", page)
    assert "http://b:80" not in page
