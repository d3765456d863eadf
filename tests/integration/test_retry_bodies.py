"""Retries replay request bodies only when the whole body was kept (SPEC §4.1 step 3)."""

from __future__ import annotations

import hashlib

import aiohttp

from tests.harness import running_sidecar, sidecar_yaml
from tests.upstreams import HttpUpstream


def _config(upstream: HttpUpstream, buffer_limit: str) -> str:
    return sidecar_yaml(f"""
        listeners:
          - name: svc
            bind: 127.0.0.1:0
            upstream: svc
        upstreams:
          svc:
            endpoints: [{upstream.url().rstrip("/")}]
            retries: {{max_attempts: 3, buffer_limit: {buffer_limit}, backoff: {{initial: 1ms, max: 1ms}}}}
        """)


async def test_retry_replays_a_buffered_put_body_in_full(upstream: HttpUpstream) -> None:
    """A PUT answered 503 is retried, and the retry carries the whole body again."""
    body = bytes(range(256)) * 1000  # 256 KB, within buffer_limit
    upstream.fail_next(1, 503)
    async with running_sidecar(_config(upstream, "1MiB")) as sc, aiohttp.ClientSession() as session:
        response = await session.put(sc.url("svc", "/upload"), data=body)
        answer = await response.json()
        attempts = response.headers["x-sidecar-attempts"]
        response.release()
    assert (response.status, attempts) == (200, "2")
    assert answer == {"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert upstream.count("/upload") == 2


async def test_retry_never_resends_a_body_larger_than_buffer_limit(upstream: HttpUpstream) -> None:
    """A body over buffer_limit was streamed, so a 503 is answered as is, not retried."""
    body = b"x" * 200_000
    upstream.fail_next(1, 503)
    async with (
        running_sidecar(_config(upstream, "64KiB")) as sc,
        aiohttp.ClientSession() as session,
    ):
        response = await session.put(sc.url("svc", "/upload"), data=body)
        await response.read()
        attempts = response.headers["x-sidecar-attempts"]
        response.release()
    assert (response.status, attempts) == (503, "1")
    assert upstream.count("/upload") == 1
