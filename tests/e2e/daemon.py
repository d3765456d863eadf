"""`sidecar run` started as a subprocess, exactly as a user starts it, for end-to-end tests.

The daemon gets a config file written to the test's tmp_path, with ports picked free first
(bind port 0, read it, close). Its stdout and stderr go to files next to the config, so no
pipe can fill up or be left open, and tests read the access log from the stdout file.
Readiness is `GET /readyz` on the admin port, polled with a bound. Only the process this
module started is signalled or killed, by its pid, and it is always waited for.

Blocking clients (`requests`, `curl`) run off the event loop (`asyncio.to_thread`, asyncio
subprocesses): the test's `HttpUpstream` lives on that loop and must keep answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import requests

__all__ = [
    "READY_TIMEOUT",
    "REPO",
    "Daemon",
    "child_env",
    "eventually",
    "fetch",
    "free_port",
    "listening_socket",
    "run_cli",
    "running_daemon",
    "start_daemon",
    "write_config",
]

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_TIMEOUT = 10.0
CLI_TIMEOUT = 20.0
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def app_config(admin: int, app: int, upstreams: str) -> str:
    """Admin on `admin`, listener `app` on `app` for upstream `svc`, no drain delay, then the
    given `upstreams:` section body (YAML indented by two spaces)."""
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: app
    bind: 127.0.0.1:{app}
    upstream: svc
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
upstreams:
{upstreams}"""


def free_port() -> int:
    """A loopback port that was free a moment ago (bound on port 0, read, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without proxy variables (they would reroute the clients and
    the daemon), with the repository importable, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in _PROXY_VARIABLES and key != "SIDECAR_CONFIG"
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Await `check()` every 10 ms until it is true; fail the test after `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {within}s: {what}")


def write_config(directory: Path, text: str, name: str = "sidecar.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def fetch(
    method: str, url: str, *, proxy: str | None = None, timeout: float = 5.0, **kwargs: Any
) -> requests.Response:
    """One request with a fresh `requests` session that ignores proxy environment variables;
    blocking, so async tests call it through `asyncio.to_thread`."""
    with requests.Session() as session:
        session.trust_env = False
        proxies = {"http": proxy} if proxy else None
        return session.request(method, url, proxies=proxies, timeout=timeout, **kwargs)


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m sidecar ARGS` to completion: exit code, stdout, stderr (blocking)."""
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        cwd=REPO,
        env=dict(env) if env is not None else child_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


class Daemon:
    """One `sidecar run` process and the files its output goes to."""

    def __init__(self, process: asyncio.subprocess.Process, out: Path, err: Path) -> None:
        self.process = process
        self.stdout_path = out
        self.stderr_path = err

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send `signum` to this process (by its pid, nothing else)."""
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait_exit(self, within: float) -> int:
        """The exit code; fails the test if the process is still running after `within` s."""
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            pytest.fail(f"sidecar (pid {self.pid}) still running after {within}s")

    async def kill(self) -> None:
        """Last resort for teardown: SIGKILL by pid, then reap."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every stdout line, each parsed as JSON (a line that is not JSON fails the test)."""
        lines = []
        for line in self.stdout_text().splitlines():
            if line.strip():
                parsed = orjson.loads(line)
                assert isinstance(parsed, dict), line
                lines.append(parsed)
        return lines

    def vm_hwm(self) -> int:
        """Peak resident set size of the process so far, in bytes (Linux /proc)."""
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
        raise AssertionError(f"no VmHWM in /proc/{self.pid}/status")

    async def wait_ready(self, admin_port: int, within: float = READY_TIMEOUT) -> None:
        """Poll `GET /readyz` until 200; fail early, with its stderr, if the process exits."""
        url = f"http://{HOST}:{admin_port}/readyz"
        try:
            async with asyncio.timeout(within), aiohttp.ClientSession(trust_env=False) as session:
                while self.process.returncode is None:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(url) as response:
                            if response.status == 200:
                                return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"sidecar not ready within {within}s; stderr: {self.stderr_text()}")
        pytest.fail(f"sidecar exited with {self.returncode}; stderr: {self.stderr_text()}")

    def __repr__(self) -> str:
        return f"Daemon(pid={self.pid}, returncode={self.returncode})"


async def start_daemon(
    directory: Path, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> Daemon:
    """Start `python -m sidecar ARGV` with its output going to files in `directory`."""
    out = directory / "sidecar.stdout"
    err = directory / "sidecar.stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sidecar",
            *argv,
            cwd=REPO,
            env=dict(env) if env is not None else child_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    return Daemon(process, out, err)


@contextlib.asynccontextmanager
async def running_daemon(
    directory: Path,
    config_text: str,
    admin_port: int,
    *,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Daemon]:
    """`sidecar run -c FILE` for `config_text`, ready; killed (by pid) and reaped at the end."""
    path = write_config(directory, config_text)
    daemon = await start_daemon(directory, ["run", "-c", str(path)], env)
    try:
        await daemon.wait_ready(admin_port)
        yield daemon
    finally:
        await daemon.kill()


@contextlib.contextmanager
def listening_socket(port: int) -> Iterator[socket.socket]:
    """Hold `port` on 127.0.0.1 in LISTEN state, so nothing else can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))
        sock.listen(1)
        yield sock
