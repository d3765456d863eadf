"""Flat memory under `sidecar run` (SPEC §4.1 step 5): 20 MiB bodies stream through, in both
directions, without the sidecar's peak resident size growing by more than a few MiB."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import fetch, free_port, running_daemon
from tests.upstreams import HttpUpstream, pattern_bytes

pytestmark = pytest.mark.e2e

MiB = 1 << 20
BODY = 20 * MiB
PIECE = 64 * 1024
MAX_GROWTH = 10 * MiB


def generated_body(total: int) -> Iterator[bytes]:
    """`total` bytes of the upstreams' pattern, produced piece by piece (never all in memory)."""
    for start in range(0, total, PIECE):
        yield pattern_bytes(min(PIECE, total - start), offset=start)


def upload(url: str, total: int) -> dict[str, object]:
    """POST a streamed body of `total` bytes (chunked: no length known up front)."""
    response = fetch("POST", url, data=generated_body(total), timeout=30.0)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert isinstance(payload, dict)
    return payload


def download(url: str) -> tuple[int, str]:
    """GET `url` reading the body in pieces; its length and sha256."""
    digest = hashlib.sha256()
    length = 0
    response = fetch("GET", url, stream=True, timeout=30.0)
    with response:
        assert response.status_code == 200
        for piece in response.iter_content(PIECE):
            digest.update(piece)
            length += len(piece)
    return length, digest.hexdigest()


def pattern_digest(total: int) -> str:
    digest = hashlib.sha256()
    for piece in generated_body(total):
        digest.update(piece)
    return digest.hexdigest()


async def test_large_bodies_stream_with_flat_memory(tmp_path: Path, upstream: HttpUpstream):
    """A 20 MiB upload and a 20 MiB download pass intact while the sidecar's VmHWM grows < 10 MiB."""
    admin, app = free_port(), free_port()
    config = f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
access_log:
  enabled: false
listeners:
  - name: app
    bind: 127.0.0.1:{app}
    upstream: svc
shutdown:
  drain_delay: 0s
upstreams:
  svc:
    endpoints: [{upstream.url("")}]
    timeouts: {{per_try: 20s, total: 30s}}
"""
    base = f"http://127.0.0.1:{app}"
    expected = pattern_digest(BODY)
    async with running_daemon(tmp_path, config, admin) as daemon:
        # Warm up every code path (and the retry buffer) with small bodies first.
        await asyncio.to_thread(upload, f"{base}/upload", 2 * MiB)
        await asyncio.to_thread(download, f"{base}/bytes/{2 * MiB}")
        await asyncio.to_thread(download, f"{base}/chunked/{2 * MiB}")
        baseline = daemon.vm_hwm()

        uploaded = await asyncio.to_thread(upload, f"{base}/upload", BODY)
        assert uploaded == {"length": BODY, "sha256": expected}
        assert await asyncio.to_thread(download, f"{base}/bytes/{BODY}") == (BODY, expected)
        assert await asyncio.to_thread(download, f"{base}/chunked/{BODY}") == (BODY, expected)

        growth = daemon.vm_hwm() - baseline
    assert growth < MAX_GROWTH, f"peak RSS grew by {growth / MiB:.1f} MiB"
