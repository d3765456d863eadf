"""A real sidecar started in-process on 127.0.0.1 ephemeral ports, for integration tests.

Every listener and the admin API bind port 0; the harness reports the bound addresses and
captures the log lines the sidecar writes, so tests can assert on access and event logs.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sidecar.config import SidecarConfig, load_config, load_config_text
from sidecar.server.runtime import Runtime


@dataclass
class RunningSidecar:
    """A started `Runtime` and its captured output."""

    runtime: Runtime
    output: io.BytesIO

    def port(self, listener: str) -> int:
        return self.runtime.addresses[listener][1]

    def url(self, listener: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port(listener)}{path}"

    @property
    def admin_url(self) -> str:
        host, port = self.runtime.admin_address
        return f"http://{host}:{port}"

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line written so far (flushes the buffered writer first)."""
        writer = self.runtime._writer
        if writer is not None:
            writer.flush()
        return [orjson.loads(line) for line in self.output.getvalue().splitlines() if line.strip()]

    def access_lines(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("msg") == "request"]

    @property
    def generation(self) -> int:
        """The generation of the config in force: 1 at start, +1 per applied reload."""
        reloader = self.runtime.reloader
        assert reloader is not None, "the runtime is not started"
        return reloader.generation


def sidecar_yaml(body: str, *, admin: str = "127.0.0.1:0", drain_delay: str = "0s") -> str:
    """A config with the admin API on an ephemeral port and no drain delay, plus `body`."""
    head = f"version: 1\nadmin:\n  bind: {admin}\nshutdown:\n  drain_delay: {drain_delay}\n  drain_timeout: 2s\n"
    return head + textwrap.dedent(body)


@asynccontextmanager
async def running_sidecar(yaml_text: str) -> AsyncIterator[RunningSidecar]:
    """Start a sidecar from YAML text; drain and stop it when the block ends."""
    config = load_config_text(yaml_text, source="<test>")
    async with _running(config, "<test>", watch=True) as sidecar:
        yield sidecar


@asynccontextmanager
async def running_sidecar_file(path: Path, *, watch: bool = True) -> AsyncIterator[RunningSidecar]:
    """Start a sidecar from the config file at `path`, so it can reload it (SIGHUP's path is
    `sc.runtime.reload()`); `watch=False` stops the file watcher at once, for tests that
    trigger every reload themselves and count them exactly."""
    async with _running(load_config(path), str(path), watch=watch) as sidecar:
        yield sidecar


@asynccontextmanager
async def _running(
    config: SidecarConfig, source: str, *, watch: bool
) -> AsyncIterator[RunningSidecar]:
    output = io.BytesIO()
    runtime = Runtime(config=config, source=source, stream=output, log_level="debug")
    await runtime.start()
    try:
        if not watch and runtime._watcher is not None:
            await runtime._watcher.stop()
            runtime._watcher = None
        yield RunningSidecar(runtime, output)
    finally:
        runtime.request_shutdown()
        await runtime.wait_and_drain()
