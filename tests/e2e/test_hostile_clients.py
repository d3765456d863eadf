"""`sidecar run` against clients that misbehave on raw sockets: a half-close after the
request, and a slow second head on a keep-alive connection. Each must end in an answer and a
closed socket, never in a connection left open against `max_connections`."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.daemon import free_port, running_daemon
from tests.upstreams import HttpUpstream

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 0.3


def hostile_config(admin: int, app: int, upstream: HttpUpstream) -> str:
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: app
    bind: 127.0.0.1:{app}
    upstream: svc
limits:
  header_timeout: {int(HEADER_TIMEOUT * 1000)}ms
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
upstreams:
  svc:
    endpoints: [{upstream.url("")}]
"""


@pytest.fixture
async def app_port(tmp_path: Path, upstream: HttpUpstream) -> AsyncIterator[int]:
    """A ready `sidecar run` with a dedicated listener for `upstream`; yields its port."""
    admin, app = free_port(), free_port()
    async with running_daemon(tmp_path, hostile_config(admin, app, upstream), admin):
        yield app


def read_until_eof(sock: socket.socket, within: float) -> bytes:
    """Everything the sidecar sends until it closes; fails if it has not closed `within`."""
    sock.settimeout(within)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def half_close_after_request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)  # FIN: the client will send nothing more
        return read_until_eof(sock, within=5.0)


def slow_second_head(port: int) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: app\r\n\r\n")
        sock.settimeout(5.0)
        first = sock.recv(65536)
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: app\r\n")  # ... and the head never ends
        return first, read_until_eof(sock, within=5.0)


async def test_e2e_half_closed_client_gets_its_answer_then_eof(app_port, upstream):
    """A client that sends FIN after its request gets the answer, then the sidecar closes."""
    answer = await asyncio.to_thread(half_close_after_request, app_port)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"ok")
    assert upstream.count("/ok") == 1


async def test_e2e_slow_second_head_on_keep_alive_gets_408(app_port, upstream):
    """After one good request, a head that never completes is answered 408 within header_timeout."""
    first, rest = await asyncio.to_thread(slow_second_head, app_port)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in rest
    assert upstream.count("/ok") == 1  # the unfinished request was never forwarded
