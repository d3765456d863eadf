"""TLS origination: the app speaks plain HTTP to the sidecar, the sidecar speaks TLS upstream."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web

from sidecar.errors import StartupError
from tests.harness import running_sidecar, sidecar_yaml


@pytest.fixture
def ca() -> trustme.CA:
    """A throwaway certificate authority."""
    return trustme.CA()


@pytest.fixture
async def tls_upstream(ca: trustme.CA) -> AsyncIterator[int]:
    """An HTTPS upstream on 127.0.0.1 with a certificate for `localhost` and `api.internal`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "api.internal").configure_cert(context)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"secure host={request.host}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def _config(port: int, tls: str) -> str:
    return sidecar_yaml(f"""
        listeners:
          - name: api
            bind: 127.0.0.1:0
            upstream: api
        upstreams:
          api:
            endpoints: [https://localhost:{port}]
            tls: {tls}
        """)


async def _get(url: str) -> tuple[int, str, str | None]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text(), response.headers.get("x-sidecar-error")


async def test_tls_origination_verifies_with_ca_file(
    ca: trustme.CA, tls_upstream: int, tmp_path: Path
) -> None:
    """A plain-HTTP request is forwarded over TLS verified against the configured CA file."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with running_sidecar(_config(tls_upstream, f"{{ca_file: {ca_file}}}")) as sc:
        status, body, error = await _get(sc.url("api", "/hello"))
    assert (status, error) == (200, None)
    assert body == f"secure host=localhost:{tls_upstream}"


async def test_tls_origination_refuses_unknown_ca(tls_upstream: int) -> None:
    """Without the CA, verification fails and the client gets 502 upstream_unreachable."""
    async with running_sidecar(_config(tls_upstream, "{verify: true}")) as sc:
        status, body, error = await _get(sc.url("api", "/hello"))
    assert (status, error) == (502, "upstream_unreachable")
    assert "TLS handshake" in body


async def test_tls_origination_without_verify_connects(tls_upstream: int) -> None:
    """`verify: false` accepts the upstream's certificate as is."""
    async with running_sidecar(_config(tls_upstream, "{verify: false}")) as sc:
        status, _, error = await _get(sc.url("api", "/hello"))
    assert (status, error) == (200, None)


async def test_tls_origination_uses_server_name_for_sni_and_verification(
    ca: trustme.CA, tls_upstream: int, tmp_path: Path
) -> None:
    """`server_name` is the name verified in the certificate (and sent as SNI)."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    good = f"{{ca_file: {ca_file}, server_name: api.internal}}"
    wrong = f"{{ca_file: {ca_file}, server_name: other.internal}}"
    async with running_sidecar(_config(tls_upstream, good)) as sc:
        assert (await _get(sc.url("api", "/hello")))[0] == 200
    async with running_sidecar(_config(tls_upstream, wrong)) as sc:
        status, _, error = await _get(sc.url("api", "/hello"))
    assert (status, error) == (502, "upstream_unreachable")


async def test_tls_missing_ca_file_fails_the_start_naming_it(tmp_path: Path) -> None:
    """A `ca_file` that cannot be read stops the start with the key and the file named."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(
        StartupError, match=r"upstreams\.api\.tls\.ca_file: cannot load .*nope\.pem"
    ):
        async with running_sidecar(_config(443, f"{{ca_file: {missing}}}")):
            pass
