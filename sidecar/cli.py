"""The `sidecar` command line: argv → config → runtime, and the exit codes of SPEC §2.

This module owns argument parsing, choosing the config (`-c`, else `$SIDECAR_CONFIG`,
else the embedded default), printing config errors, and the `check` and `schema`
subcommands. It is the only place that writes to stdout/stderr for those commands and
turns results into exit codes: 0 ok, 1 invalid config or failure at start, 2 usage.
The runtime is imported only when `run` needs it, so `check` and `schema` stay light;
`status` and `demo` live in their own modules (`sidecar.status`, `sidecar.demo`), imported
only when chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TextIO

from sidecar import __version__
from sidecar.config import (
    DEFAULT_SOURCE,
    ConfigError,
    SidecarConfig,
    config_json_schema,
    default_config,
    load_config,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CONFIG_ENV = "SIDECAR_CONFIG"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="HTTP/1.1 resilience sidecar: timeouts, retries, circuit breakers, "
        "fallbacks and metrics for an application's outbound calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the daemon")
    run.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"config file (default: ${CONFIG_ENV}, else the embedded default)",
    )
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    run.add_argument("--log-format", choices=("json", "text"), default="json")

    check = commands.add_parser("check", help="validate a config file and summarize it")
    check.add_argument("file", metavar="FILE")

    commands.add_parser("schema", help="print the JSON Schema of the config file")

    status = commands.add_parser("status", help="show a running daemon's upstreams and circuits")
    status.add_argument(
        "--admin",
        metavar="URL",
        help="admin API address (default: $SIDECAR_ADMIN, else http://127.0.0.1:15000)",
    )
    status.add_argument("--json", action="store_true", help="print the raw /state JSON")

    demo = commands.add_parser(
        "demo", help="watch a breaker open and close against a flaky local upstream"
    )
    demo.add_argument(
        "--duration",
        metavar="S",
        type=_duration_seconds,
        default=20.0,
        help="seconds the scripted phases take (default: 20; 4 to 600)",
    )
    return parser


def _duration_seconds(text: str) -> float:
    """`--duration`: plain seconds between 4 and 600 (shorter leaves no room for recovery)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 4 <= value <= 600:
        raise argparse.ArgumentTypeError(f"must be between 4 and 600 seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of `sidecar` and `python -m sidecar`; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "run":
        return _run(args.config, args.log_level, args.log_format)
    if args.command == "check":
        return _check(args.file)
    if args.command == "status":
        from sidecar.status import run_status

        return run_status(args.admin, args.json, sys.stdout, sys.stderr)
    if args.command == "demo":
        from sidecar.demo import run_demo

        return run_demo(args.duration, sys.stdout, sys.stderr)
    return _schema()


def _run(path: str | None, log_level: str, log_format: str) -> int:
    """Resolve the config; on errors print all of them and bind nothing."""
    path = path or os.environ.get(CONFIG_ENV) or None
    try:
        config = default_config() if path is None else load_config(path)
    except ConfigError as exc:
        _print_errors(exc, path or DEFAULT_SOURCE, sys.stderr)
        return EXIT_FAILURE
    from sidecar.server.runtime import run_sidecar  # lazily: `check` must not need it

    return run_sidecar(config, path or DEFAULT_SOURCE, log_level, log_format)


def _check(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_errors(exc, path, sys.stderr)
        return EXIT_FAILURE
    _write(sys.stdout, summary(config, path))
    return EXIT_OK


def _schema() -> int:
    _write(sys.stdout, json.dumps(config_json_schema(), indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _print_errors(error: ConfigError, source: str, stream: TextIO) -> None:
    count = len(error.issues)
    lines = [str(issue) for issue in error.issues]
    lines.append(f"{source}: invalid config ({count} error{'s' if count != 1 else ''})")
    _write(stream, "\n".join(lines) + "\n")


def summary(config: SidecarConfig, source: str) -> str:
    """The short text `sidecar check` prints for a valid config."""
    lines = [f"{source}: ok", f"admin: {config.admin.bind}", "listeners:"]
    width = max(len(listener.name) for listener in config.listeners)
    for listener in config.listeners:
        mode = "forward" if listener.upstream is None else f"→ {listener.upstream}"
        lines.append(f"  {listener.name:<{width}}  {listener.bind}  {mode}")
    if not config.upstreams:
        lines.append(f"upstreams: none (unknown hosts: {config.forward.unknown_hosts})")
        return "\n".join(lines) + "\n"
    lines.append("upstreams:")
    for name, upstream in config.upstreams.items():
        endpoints = ", ".join(endpoint.url for endpoint in upstream.endpoints)
        routes = len(upstream.routes)
        lines.append(f"  {name}")
        lines.append(f"    endpoints: {endpoints}")
        lines.append(f"    hosts: {', '.join(upstream.hosts)}")
        lines.append(f"    routes: {routes}")
    lines.append(f"unknown hosts: {config.forward.unknown_hosts}")
    return "\n".join(lines) + "\n"


def _write(stream: TextIO, text: str) -> None:
    """Write even where the terminal's encoding lacks `→` (replaced, never a crash)."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, errors="replace").decode(encoding))
    stream.flush()
