"""Tests for `sidecar.cli`: run's config resolution, check, schema and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.config import SidecarConfig

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "examples" / "dedicated-listener.yaml"

INVALID = """\
version: 1
defaults:
  timeouts:
    connect: 1 sec
  retries:
    max_attemps: 2
"""


class RuntimeCall:
    """What the fake `run_sidecar` was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[SidecarConfig, str, str, str]] = []

    def __call__(self, config: SidecarConfig, source: str, log_level: str, log_format: str) -> int:
        self.calls.append((config, source, log_level, log_format))
        return 0


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> RuntimeCall:
    """Replace `sidecar.server.runtime` so `run` never binds a port in these tests."""
    fake = RuntimeCall()
    module = types.ModuleType("sidecar.server.runtime")
    module.run_sidecar = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sidecar.server.runtime", module)
    monkeypatch.delenv("SIDECAR_CONFIG", raising=False)
    return fake


@pytest.fixture
def invalid_file(tmp_path: Path) -> Path:
    """A config file with two errors."""
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID)
    return path


def test_check_valid_file_prints_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`check` on a valid file exits 0 and lists listeners and upstreams."""
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert f"{EXAMPLE}: ok" in out
    assert "payments-local  127.0.0.1:15002  → payments" in out
    assert "endpoints: http://payments-0.payments:8080, http://payments-1.payments:8080" in out
    assert "routes: 1" in out


def test_check_forward_listener_is_marked_forward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listener without `upstream:` is shown as a forward listener."""
    path = tmp_path / "fwd.yaml"
    path.write_text("version: 1\n")
    assert main(["check", str(path)]) == 0
    assert "egress  127.0.0.1:15001  forward" in capsys.readouterr().out


def test_check_invalid_file_prints_every_error(
    invalid_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` on an invalid file exits 1 and prints all errors to stderr."""
    assert main(["check", str(invalid_file)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{invalid_file}:4:14: defaults.timeouts.connect: '1 sec' is not a duration "
        "(use e.g. 250ms, 2s, 1m)",
        f"{invalid_file}:6:5: defaults.retries: unknown key 'max_attemps' "
        "(did you mean 'max_attempts'?)",
        f"{invalid_file}: invalid config (2 errors)",
    ]


def test_check_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` on a file that does not exist is an invalid config, not a crash."""
    assert main(["check", str(tmp_path / "absent.yaml")]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`schema` prints the config's JSON Schema, indented by 2."""
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "upstreams" in schema["properties"]
    assert out.startswith('{\n  "$schema"')


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["check"], ["run", "--log-level", "loud"], ["schema", "extra"]],
    ids=["no-command", "unknown-command", "check-without-file", "bad-choice", "extra-arg"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Usage errors exit 2 with argparse's usage message."""
    assert main(argv) == 2
    assert "usage: sidecar" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` prints usage and exits 0."""
    assert main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_run_uses_embedded_default_without_file(runtime: RuntimeCall) -> None:
    """`run` with no -c and no $SIDECAR_CONFIG runs the embedded default."""
    assert main(["run"]) == 0
    ((config, source, level, fmt),) = runtime.calls
    assert source == "<embedded default>"
    assert str(config.listeners[0].bind) == "127.0.0.1:15001"
    assert (level, fmt) == ("info", "json")


def test_run_uses_sidecar_config_env(runtime: RuntimeCall, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` without -c loads the file named by $SIDECAR_CONFIG."""
    monkeypatch.setenv("SIDECAR_CONFIG", str(EXAMPLE))
    assert main(["run", "--log-level", "debug", "--log-format", "text"]) == 0
    ((config, source, level, fmt),) = runtime.calls
    assert (source, level, fmt) == (str(EXAMPLE), "debug", "text")
    assert "payments" in config.upstreams


def test_run_prefers_flag_over_env(
    runtime: RuntimeCall, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`-c FILE` wins over $SIDECAR_CONFIG."""
    monkeypatch.setenv("SIDECAR_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["run", "-c", str(EXAMPLE)]) == 0
    assert runtime.calls[0][1] == str(EXAMPLE)


def test_run_invalid_config_exits_1_without_starting(
    runtime: RuntimeCall, invalid_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` with an invalid file prints every error, returns 1 and never starts the runtime."""
    assert main(["run", "-c", str(invalid_file)]) == 1
    assert runtime.calls == []
    err = capsys.readouterr().err
    assert "'1 sec' is not a duration" in err
    assert "did you mean 'max_attempts'?" in err


def test_run_returns_runtime_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` returns whatever exit code the runtime returns (e.g. 1 for a port in use)."""
    module = types.ModuleType("sidecar.server.runtime")
    module.run_sidecar = lambda config, source, level, fmt: 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sidecar.server.runtime", module)
    monkeypatch.delenv("SIDECAR_CONFIG", raising=False)
    assert main(["run"]) == 1


def test_python_m_sidecar_check_runs_as_subprocess(invalid_file: Path) -> None:
    """`python -m sidecar check` works as a real process: 0 for a valid file, 1 otherwise."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    ok = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", str(EXAMPLE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
        env=env,
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "→ payments" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", str(invalid_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
        env=env,
    )
    assert bad.returncode == 1
    assert "invalid config (2 errors)" in bad.stderr
