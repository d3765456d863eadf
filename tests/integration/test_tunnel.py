"""CONNECT tunnels over real sockets (SPEC §1): bytes both ways untouched, connect failures as
generated errors, and CONNECT refused where it makes no sense."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sidecar.events import Event, RequestFinished
from tests.harness import RunningSidecar, running_sidecar
from tests.integration.configs import DEDICATED, FORWARD, dedicated, forward
from tests.integration.rawhttp import RawClient, raw_exchange
from tests.upstreams import HttpUpstream, RawConnection, RawUpstream, closed_port, pattern_bytes

pytestmark = pytest.mark.integration


RAW_BYTES = b"GET / HTTP/1.1\r\n\r\nnot parsed by the sidecar \x00\xff"


def tcp_echo() -> RawUpstream:
    """A TCP server that sends back every byte it receives and closes after the client's EOF."""

    async def behaviour(conn: RawConnection) -> None:
        while data := await conn.reader.read(65536):
            await conn.send(data)

    return RawUpstream(behaviour, "tcp_echo")


class FinishedRequests:
    """An observer added to a running sidecar: wakes a test when requests have finished (a
    tunnel's request finishes, and is logged, only when the tunnel closes)."""

    def __init__(self, sc: RunningSidecar) -> None:
        self.count = 0
        self._changed = asyncio.Event()
        assert sc.runtime.server is not None
        sc.runtime.server.observers.add(self)

    def notify(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self.count += 1
            self._changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(1.0):
            while self.count < count:
                self._changed.clear()
                await self._changed.wait()


def connect_request(authority: str, early: bytes = b"") -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode() + early


async def test_connect_tunnel_passes_bytes_both_ways() -> None:
    """After `200`, bytes written into the tunnel come back from the echo server unchanged,
    including bytes sent in the same packet as the CONNECT head."""
    async with tcp_echo() as echo, running_sidecar(forward()) as sc:
        finished = FinishedRequests(sc)
        async with RawClient(sc.port(FORWARD)) as client:
            await client.send(connect_request(echo.authority, early=b"early bytes|"))
            status, reason, _ = await client.read_head()
            async with asyncio.timeout(2):
                first = await client.reader.readexactly(len(b"early bytes|"))
                await client.send(RAW_BYTES)
                second = await client.reader.readexactly(len(RAW_BYTES))
        await finished.wait_for(1)
        lines = sc.access_lines()
    assert (status, reason) == (200, "Connection Established")
    assert first == b"early bytes|"
    assert second == RAW_BYTES
    assert lines[0]["method"] == "CONNECT"
    assert lines[0]["status"] == 200
    assert lines[0]["upstream"] == echo.authority


async def test_connect_tunnel_carries_a_large_stream_with_back_pressure() -> None:
    """Several MiB pushed through the tunnel while reading concurrently arrive intact."""
    size = 8 * 1024 * 1024
    payload = pattern_bytes(size)
    async with (
        tcp_echo() as echo,
        running_sidecar(forward()) as sc,
        RawClient(sc.port(FORWARD)) as client,
    ):
        await client.send(connect_request(echo.authority))
        assert (await client.read_head())[0] == 200

        async def push() -> None:
            for start in range(0, size, 256 * 1024):
                await client.send(payload[start : start + 256 * 1024])

        async with asyncio.timeout(5):
            _, echoed = await asyncio.gather(push(), client.reader.readexactly(size))
    assert echoed == payload


async def test_connect_tunnel_half_close_reaches_the_target() -> None:
    """The client's EOF reaches the target; once both sides closed, the tunnel is released."""
    async with tcp_echo() as echo, running_sidecar(forward()) as sc:
        finished = FinishedRequests(sc)
        async with RawClient(sc.port(FORWARD)) as client:
            await client.send(connect_request(echo.authority))
            assert (await client.read_head())[0] == 200
            await client.send(b"last words")
            client.writer.write_eof()
            # The sidecar, not the client, closes the client connection once both sides EOF'd.
            rest = await client.read_until_closed()
            await finished.wait_for(1)
        lines = sc.access_lines()
    assert rest == b"last words"
    assert lines[0]["bytes_in"] == lines[0]["bytes_out"] == len(b"last words")


async def test_connect_to_closed_port_gives_502() -> None:
    """A CONNECT whose target refuses gives 502 `upstream_unreachable` and no tunnel."""
    authority = f"127.0.0.1:{closed_port()}"
    async with running_sidecar(forward()) as sc, RawClient(sc.port(FORWARD)) as client:
        await client.send(connect_request(authority))
        response = await client.read_response()
        closed = await client.is_closed_within(1.0)
    assert response.status == 502
    assert response.json()["error"] == "upstream_unreachable"
    assert response.header("x-sidecar-error") == "upstream_unreachable"
    assert closed


async def test_connect_that_hangs_gives_502_after_connect_timeout(unaccepting_port: int) -> None:
    """A CONNECT whose TCP connect hangs gives 502 after the upstream's `connect` timeout."""
    authority = f"127.0.0.1:{unaccepting_port}"
    config = forward(defaults={"timeouts": {"connect": "50ms"}})
    async with running_sidecar(config) as sc:
        response = await raw_exchange(sc.port(FORWARD), connect_request(authority))
        lines = sc.access_lines()
    assert response.status == 502
    assert response.json()["error"] == "upstream_unreachable"
    assert lines[0]["duration_ms"] < 500


async def test_connect_on_dedicated_listener_gives_400(upstream: HttpUpstream) -> None:
    """CONNECT is refused with 400 `bad_request` on a dedicated listener, nothing forwarded."""
    async with (
        running_sidecar(dedicated(upstream.url())) as sc,
        RawClient(sc.port(DEDICATED)) as client,
    ):
        await client.send(connect_request(upstream.authority, early=b"tunnel bytes"))
        response = await client.read_response()
        with contextlib.suppress(TimeoutError):
            await client.read_until_closed(within=1.0)
    assert response.status == 400
    assert response.json()["error"] == "bad_request"
    assert upstream.total == 0


async def test_connect_to_the_sidecar_itself_gives_508() -> None:
    """A CONNECT to one of the sidecar's own listeners is refused as a loop."""
    async with running_sidecar(forward()) as sc:
        authority = f"127.0.0.1:{sc.port(FORWARD)}"
        response = await raw_exchange(sc.port(FORWARD), connect_request(authority))
    assert response.status == 508
    assert response.json()["error"] == "loop_detected"


async def test_connect_to_unknown_host_is_denied_with_403() -> None:
    """With `unknown_hosts: deny`, a CONNECT to an unconfigured host gets 403."""
    async with tcp_echo() as echo:
        async with running_sidecar(forward(forward={"unknown_hosts": "deny"})) as sc:
            response = await raw_exchange(sc.port(FORWARD), connect_request(echo.authority))
        assert echo.connections == 0
    assert response.status == 403
    assert response.json()["error"] == "unknown_upstream"


async def test_connect_failures_open_the_breaker_and_then_tunnels_are_refused() -> None:
    """Failed tunnel connects count for the host's breaker; once open, CONNECT gets 503 at once."""
    authority = f"127.0.0.1:{closed_port()}"
    config = forward(
        defaults={"circuit_breaker": {"consecutive_failures": 2, "open_duration": "10s"}}
    )
    statuses = []
    async with running_sidecar(config) as sc:
        for _ in range(3):
            async with RawClient(sc.port(FORWARD)) as client:
                await client.send(connect_request(authority))
                response = await client.read_response()
                statuses.append((response.status, response.json()["error"]))
        lines = sc.log_lines()
    assert statuses == [
        (502, "upstream_unreachable"),
        (502, "upstream_unreachable"),
        (503, "circuit_open"),
    ]
    opened = [line for line in lines if line.get("msg") == "circuit opened"]
    assert [line["upstream"] for line in opened] == [authority]
