"""The `sidecar` command line as a user meets it (SPEC §2, §3.4): config errors with
file:line:col, `check`, `schema`, usage errors, `$SIDECAR_CONFIG`, and a port in use."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.e2e.daemon import (
    child_env,
    free_port,
    listening_socket,
    run_cli,
    running_daemon,
    start_daemon,
    write_config,
)

pytestmark = pytest.mark.e2e

# Line 10 holds the bad duration (column 16 is its value), line 12 the misspelt key.
BAD_CONFIG = """\
version: 1
listeners:
  - name: app
    bind: 127.0.0.1:{port}
    upstream: svc
upstreams:
  svc:
    endpoints: [http://127.0.0.1:9]
    timeouts:
      connect: 1 sec
    retries:
      max_atempts: 3
"""
ERROR_LINE = re.compile(
    r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<path>[\w.\[\]-]+): (?P<msg>.+)$"
)


def good_config(admin: int, app: int) -> str:
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: app
    bind: 127.0.0.1:{app}
    upstream: payments
shutdown:
  drain_delay: 0s
upstreams:
  payments:
    endpoints: [http://127.0.0.1:9]
"""


def error_lines(stderr: str, path: Path) -> list[re.Match[str]]:
    matches = [ERROR_LINE.match(line) for line in stderr.splitlines()]
    return [m for m in matches if m is not None and m["file"] == str(path)]


def assert_both_errors_reported(stderr: str, path: Path) -> None:
    errors = {(m["line"], m["path"]): m for m in error_lines(stderr, path)}
    duration = errors[("10", "upstreams.svc.timeouts.connect")]
    assert duration["col"] == "16"
    assert "'1 sec' is not a duration" in duration["msg"]
    typo = errors[("12", "upstreams.svc.retries")]
    assert "max_atempts" in typo["msg"]
    assert "did you mean 'max_attempts'?" in typo["msg"]


def test_run_with_invalid_config_exits_1_with_located_errors(tmp_path):
    """`sidecar run -c bad.yaml` exits 1 with every error as `file:line:col: path: message` and binds no port."""
    port = free_port()
    path = write_config(tmp_path, BAD_CONFIG.format(port=port), "bad.yaml")
    code, stdout, stderr = run_cli("run", "-c", str(path))
    assert code == 1
    assert_both_errors_reported(stderr, path)
    assert "server started" not in stdout


def test_check_invalid_config_lists_every_error(tmp_path):
    """`sidecar check bad.yaml` exits 1 and lists all errors, not only the first."""
    path = write_config(tmp_path, BAD_CONFIG.format(port=free_port()), "bad.yaml")
    code, _, stderr = run_cli("check", str(path))
    assert code == 1
    assert_both_errors_reported(stderr, path)
    assert len(error_lines(stderr, path)) == 2
    assert "2 errors" in stderr


def test_check_valid_config_prints_summary(tmp_path):
    """`sidecar check good.yaml` exits 0 and summarises listeners and upstreams."""
    admin, app = free_port(), free_port()
    path = write_config(tmp_path, good_config(admin, app))
    code, stdout, stderr = run_cli("check", str(path))
    assert code == 0, stderr
    assert f"{path}: ok" in stdout
    assert f"127.0.0.1:{app}" in stdout
    assert "app" in stdout
    assert "payments" in stdout
    assert "http://127.0.0.1:9" in stdout


def test_check_missing_file_exits_1(tmp_path):
    """`sidecar check` on a file that does not exist exits 1 and names the file."""
    path = tmp_path / "missing.yaml"
    code, _, stderr = run_cli("check", str(path))
    assert code == 1
    assert str(path) in stderr


def test_schema_prints_json_schema():
    """`sidecar schema` exits 0 and prints a JSON Schema describing the config's sections."""
    code, stdout, stderr = run_cli("schema")
    assert code == 0, stderr
    schema = json.loads(stdout)
    assert schema["type"] == "object"
    assert {"version", "listeners", "upstreams", "admin"} <= set(schema["properties"])


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-arguments"),
        pytest.param(["--bogus"], id="unknown-flag"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["run", "--bogus"], id="run-unknown-flag"),
        pytest.param(["run", "--log-level", "loud"], id="run-bad-log-level"),
        pytest.param(["check"], id="check-without-file"),
    ],
)
def test_usage_error_exits_2(argv):
    """A usage error exits 2 with a usage message on stderr and nothing on stdout."""
    code, stdout, stderr = run_cli(*argv)
    assert code == 2
    assert "usage:" in stderr
    assert stdout == ""


async def test_run_uses_sidecar_config_variable(tmp_path):
    """Without `-c`, `sidecar run` loads the file named by `$SIDECAR_CONFIG`."""
    admin, app = free_port(), free_port()
    path = write_config(tmp_path, good_config(admin, app))
    daemon = await start_daemon(tmp_path, ["run"], child_env(SIDECAR_CONFIG=str(path)))
    try:
        await daemon.wait_ready(admin)
        (started,) = [line for line in daemon.log_lines() if line["msg"] == "server started"]
        assert started["config_source"] == str(path)
        assert started["listeners"] == {"app": f"127.0.0.1:{app}"}
    finally:
        await daemon.kill()


async def test_run_flag_wins_over_sidecar_config_variable(tmp_path):
    """`-c FILE` is used even when `$SIDECAR_CONFIG` names another (invalid) file."""
    admin, app = free_port(), free_port()
    bad = write_config(tmp_path, BAD_CONFIG.format(port=free_port()), "bad.yaml")
    env = child_env(SIDECAR_CONFIG=str(bad))
    async with running_daemon(tmp_path, good_config(admin, app), admin, env=env) as daemon:
        (started,) = [line for line in daemon.log_lines() if line["msg"] == "server started"]
        assert started["config_source"] == str(tmp_path / "sidecar.yaml")


async def test_run_with_invalid_sidecar_config_variable_exits_1(tmp_path):
    """`sidecar run` with `$SIDECAR_CONFIG` naming an invalid file exits 1 with that file's errors."""
    bad = write_config(tmp_path, BAD_CONFIG.format(port=free_port()), "bad.yaml")
    daemon = await start_daemon(tmp_path, ["run"], child_env(SIDECAR_CONFIG=str(bad)))
    try:
        code = await daemon.wait_exit(10.0)
    finally:
        await daemon.kill()
    assert code == 1
    assert_both_errors_reported(daemon.stderr_text(), bad)


@pytest.mark.parametrize("busy", ["listener", "admin"], ids=["listener-port", "admin-port"])
async def test_run_with_port_in_use_exits_1_naming_it(tmp_path, busy):
    """A port already in use makes `sidecar run` exit 1, name the port on stderr and serve nothing."""
    admin, app, other = free_port(), free_port(), free_port()
    config = f"""\
version: 1
admin:
  bind: 127.0.0.1:{admin}
listeners:
  - name: first
    bind: 127.0.0.1:{other}
    upstream: payments
  - name: app
    bind: 127.0.0.1:{app}
    upstream: payments
upstreams:
  payments:
    endpoints: [http://127.0.0.1:9]
"""
    taken = app if busy == "listener" else admin
    path = write_config(tmp_path, config)
    with listening_socket(taken):
        daemon = await start_daemon(tmp_path, ["run", "-c", str(path)])
        try:
            code = await daemon.wait_exit(10.0)
        finally:
            await daemon.kill()
        stderr = daemon.stderr_text()
    assert code == 1
    assert f":{taken}" in stderr
    assert "Traceback" not in stderr
    assert "server started" not in daemon.stdout_text()
    # Nothing stays bound: every other port of the config is free again.
    for port in {admin, app, other} - {taken}:
        with listening_socket(port):
            pass
