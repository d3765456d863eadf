"""Outlier detection over real sockets: a failing endpoint leaves rotation, then returns."""

from __future__ import annotations

import aiohttp

from tests.harness import running_sidecar, sidecar_yaml
from tests.upstreams import HttpUpstream, closed_port


async def test_outlier_failing_endpoint_is_ejected_and_skipped(upstream: HttpUpstream) -> None:
    """After 2 refused connects the dead endpoint is ejected: later requests need one attempt."""
    dead = f"http://127.0.0.1:{closed_port()}"
    config = sidecar_yaml(f"""
        listeners:
          - name: svc
            bind: 127.0.0.1:0
            upstream: svc
        upstreams:
          svc:
            endpoints: [{dead}, {upstream.url().rstrip("/")}]
            outlier_detection: {{consecutive_failures: 2, base_ejection: 30s}}
            circuit_breaker: {{enabled: false}}
            retries: {{backoff: {{initial: 1ms, max: 1ms}}}}
        """)
    attempts = []
    async with running_sidecar(config) as sc, aiohttp.ClientSession() as session:
        for _ in range(8):
            async with session.get(sc.url("svc", "/ok")) as response:
                assert response.status == 200
                attempts.append(int(response.headers["x-sidecar-attempts"]))
        async with session.get(sc.admin_url + "/metrics") as response:
            metrics = await response.text()
        ejected = [line for line in sc.log_lines() if line.get("msg") == "endpoint ejected"]
    # Round robin sends every other first attempt to the dead endpoint until it is ejected.
    assert attempts[:4].count(2) == 2
    assert attempts[4:] == [1, 1, 1, 1]
    assert [line["endpoint"] for line in ejected] == [dead]
    assert f'sidecar_endpoint_ejected{{endpoint="{dead}",upstream="svc"}} 1.0' in metrics
