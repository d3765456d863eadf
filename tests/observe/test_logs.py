"""Tests for sidecar.observe.logs: access and event lines, their fields, formats and filtering."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sidecar.events import (
    AttemptFinished,
    ConfigReloaded,
    ConfigReloadFailed,
    EndpointHealthChanged,
    Event,
    ListenersClosed,
    ProxyFault,
    RequestFinished,
    ServerStarted,
    ShutdownFinished,
    ShutdownStarted,
)
from sidecar.observe.logs import AccessLog, EventLog, TimeFormatter
from sidecar.observe.writer import LineWriter
from sidecar.outcome import AttemptResult, Outcome

WALL_TIME = datetime(2026, 11, 23, 19, 15, 2, 123000, tzinfo=UTC).timestamp()
ACCESS_FIELDS = {
    "time",
    "level",
    "msg",
    "request_id",
    "listener",
    "upstream",
    "route",
    "method",
    "path",
    "status",
    "outcome",
    "attempts",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "circuit_state",
}
REQUEST = RequestFinished(
    wall_time=WALL_TIME,
    request_id="r-1",
    listener="egress",
    upstream="payments",
    route="default",
    method="GET",
    path="/x",
    status=200,
    outcome=Outcome.SUCCESS,
    attempts=1,
    duration=0.0123456,
    bytes_in=10,
    bytes_out=512,
    circuit_state="closed",
    error="",
)
STARTED = ServerStarted(
    listeners=(("egress", "127.0.0.1:15001"), ("payments-local", "127.0.0.1:15002")),
    admin="127.0.0.1:15000",
    config_source="sidecar.yaml",
    version="1.2.3",
)


def request(**changes: Any) -> RequestFinished:
    return dataclasses.replace(REQUEST, **changes)


def access_lines(event: RequestFinished, *, include_query: bool = False, fmt: str = "json") -> str:
    """Feeds one event to an AccessLog and returns what reached the stream."""
    stream = io.BytesIO()
    writer = LineWriter(stream)
    AccessLog(writer, include_query=include_query, fmt=fmt).notify(event)
    writer.flush()
    return stream.getvalue().decode()


def event_log(level: str = "info", fmt: str = "json") -> tuple[EventLog, io.BytesIO]:
    stream = io.BytesIO()
    return EventLog(LineWriter(stream), level, fmt, wall_clock=lambda: WALL_TIME), stream


def json_lines(stream: io.BytesIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_access_log_writes_one_json_line_with_exactly_the_fields() -> None:
    """A request becomes one valid JSON line carrying the SPEC §8 fields and no others."""
    text = access_lines(REQUEST)
    assert text.count("\n") == 1
    line = orjson.loads(text)
    assert set(line) == ACCESS_FIELDS
    assert line == {
        "time": "2026-11-23T19:15:02.123Z",
        "level": "info",
        "msg": "request",
        "request_id": "r-1",
        "listener": "egress",
        "upstream": "payments",
        "route": "default",
        "method": "GET",
        "path": "/x",
        "status": 200,
        "outcome": "success",
        "attempts": 1,
        "duration_ms": 12.346,
        "bytes_in": 10,
        "bytes_out": 512,
        "circuit_state": "closed",
    }


def test_access_log_adds_error_only_when_set() -> None:
    """A generated answer's error code is logged; an empty one is omitted."""
    line = orjson.loads(access_lines(request(status=503, error="circuit_open")))
    assert set(line) == ACCESS_FIELDS | {"error"}
    assert line["error"] == "circuit_open"


@pytest.mark.parametrize(
    ("include_query", "expected_path"),
    [(False, "/pay"), (True, "/pay?token=s3cr3t")],
    ids=["query-cut", "query-included"],
)
@pytest.mark.parametrize("fmt", ["json", "text"], ids=["json", "text"])
def test_access_log_writes_query_only_when_included(
    include_query: bool, expected_path: str, fmt: str
) -> None:
    """A query string that reaches the access log is written only with include_query."""
    text = access_lines(request(path="/pay?token=s3cr3t"), include_query=include_query, fmt=fmt)
    assert ("s3cr3t" in text) is include_query
    if fmt == "json":
        assert orjson.loads(text)["path"] == expected_path


def test_access_log_carries_no_header_or_body_fields() -> None:
    """Nothing but the listed fields is written, so no header value or body can leak."""
    line = orjson.loads(access_lines(request(error="bad_request")))
    assert not any(
        "header" in key or "body" in key or "authorization" in key.lower() for key in line
    )


def test_access_log_text_format_reads_like_the_spec() -> None:
    """The text form is `TIME LEVEL msg key=value ...` without colors, on one line."""
    text = access_lines(request(error="circuit_open", status=503), fmt="text")
    assert text == (
        "2026-11-23T19:15:02.123Z INFO request method=GET path=/x status=503 outcome=success"
        " duration_ms=12.346 attempts=1 upstream=payments route=default listener=egress"
        " bytes_in=10 bytes_out=512 circuit_state=closed request_id=r-1 error=circuit_open\n"
    )
    assert "\x1b[" not in text


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("/a b", 'path="/a b"'),
        ("/x\nfake=1", 'path="/x\\nfake=1"'),
        ("/k=v", 'path="/k=v"'),
        ("", 'path=""'),
    ],
    ids=["space", "newline", "equals-sign", "empty"],
)
def test_access_log_text_quotes_values_that_could_forge_fields(path: str, rendered: str) -> None:
    """Text values with spaces, `=`, control characters or nothing at all are JSON-quoted."""
    text = access_lines(request(path=path), fmt="text")
    assert text.count("\n") == 1
    assert f" {rendered} " in text


def test_access_log_buffers_until_the_writer_flushes() -> None:
    """Access lines wait in the writer, so the request path makes no write() call per request."""
    stream = io.BytesIO()
    writer = LineWriter(stream)
    AccessLog(writer, include_query=False, fmt="json").notify(REQUEST)
    assert stream.getvalue() == b""
    assert writer.pending > 0


@pytest.mark.parametrize(
    "event",
    [STARTED, AttemptFinished("payments", "http://p:80", AttemptResult.RESET, 0.1)],
    ids=["server-started", "attempt-finished"],
)
def test_access_log_ignores_other_events(event: Event) -> None:
    """Only RequestFinished produces an access line."""
    stream = io.BytesIO()
    writer = LineWriter(stream)
    AccessLog(writer, include_query=False, fmt="json").notify(event)
    assert writer.pending == 0


@pytest.mark.parametrize(
    ("event", "level", "msg", "fields"),
    [
        (
            STARTED,
            "info",
            "server started",
            {
                "version": "1.2.3",
                "config_source": "sidecar.yaml",
                "admin": "127.0.0.1:15000",
                "listeners": {"egress": "127.0.0.1:15001", "payments-local": "127.0.0.1:15002"},
            },
        ),
        (
            ShutdownStarted("SIGTERM", 5.0, 15.0),
            "info",
            "shutdown started",
            {"signal": "SIGTERM", "drain_delay_s": 5.0, "drain_timeout_s": 15.0},
        ),
        (ListenersClosed(inflight=4), "info", "listeners closed", {"inflight": 4}),
        (
            ShutdownFinished(abandoned=0, forced=False),
            "info",
            "shutdown finished",
            {"abandoned": 0, "forced": False},
        ),
        (
            ShutdownFinished(abandoned=2, forced=True),
            "warning",
            "shutdown finished",
            {"abandoned": 2, "forced": True},
        ),
        (
            ProxyFault("r-9", "KeyError: 'x'"),
            "error",
            "proxy fault",
            {"request_id": "r-9", "detail": "KeyError: 'x'"},
        ),
        (
            ConfigReloaded(2, "sidecar.yaml", ("payments",), ("orders",)),
            "info",
            "config reloaded",
            {
                "generation": 2,
                "config_source": "sidecar.yaml",
                "upstreams_kept": ["payments"],
                "upstreams_rebuilt": ["orders"],
            },
        ),
        (
            ConfigReloadFailed("sidecar.yaml", ("sidecar.yaml:3:5: version: must be 1",)),
            "error",
            "config reload failed; the running config is unchanged",
            {
                "config_source": "sidecar.yaml",
                "errors": ["sidecar.yaml:3:5: version: must be 1"],
            },
        ),
        (
            EndpointHealthChanged(
                "svc", "http://b:80", False, "3 checks failed (last: status 503)"
            ),
            "warning",
            "endpoint unhealthy",
            {
                "upstream": "svc",
                "endpoint": "http://b:80",
                "reason": "3 checks failed (last: status 503)",
            },
        ),
        (
            EndpointHealthChanged("svc", "http://b:80", True, "2 checks passed"),
            "info",
            "endpoint healthy",
            {"upstream": "svc", "endpoint": "http://b:80", "reason": "2 checks passed"},
        ),
    ],
    ids=[
        "server-started",
        "shutdown-started",
        "listeners-closed",
        "shutdown-clean",
        "shutdown-abandoned",
        "proxy-fault",
        "config-reloaded",
        "config-reload-failed",
        "endpoint-unhealthy",
        "endpoint-healthy",
    ],
)
def test_event_log_writes_lifecycle_events(
    event: Event, level: str, msg: str, fields: dict[str, Any]
) -> None:
    """Each lifecycle event is one JSON line with its level, message and fields."""
    log, stream = event_log("debug")
    log.notify(event)
    expected = {"time": "2026-11-23T19:15:02.123Z", "level": level, "msg": msg, **fields}
    assert json_lines(stream) == [expected]


@pytest.mark.parametrize(
    ("threshold", "written"),
    [
        ("debug", ["server started", "shutdown finished", "proxy fault"]),
        ("info", ["server started", "shutdown finished", "proxy fault"]),
        ("warning", ["shutdown finished", "proxy fault"]),
        ("error", ["proxy fault"]),
    ],
    ids=["debug", "info", "warning", "error"],
)
def test_event_log_filters_by_level(threshold: str, written: list[str]) -> None:
    """Lines below the configured level are not written."""
    log, stream = event_log(threshold)
    log.notify(STARTED)
    log.notify(ShutdownFinished(abandoned=1, forced=False))
    log.notify(ProxyFault("r-1", "boom"))
    assert [line["msg"] for line in json_lines(stream)] == written


def test_event_log_ignores_request_path_events() -> None:
    """Requests and attempts belong to the access log and metrics, not the event log."""
    log, stream = event_log("debug")
    log.notify(REQUEST)
    log.notify(AttemptFinished("payments", "http://p:80", AttemptResult.SUCCESS, 0.1))
    assert stream.getvalue() == b""


def test_event_log_log_event_keeps_reserved_keys() -> None:
    """log_event adds caller fields but cannot overwrite time, level or msg."""
    log, stream = event_log("info")
    log.log_event("error", "config reload failed", errors=["a.yaml:1:1: bad"], level="debug")
    assert json_lines(stream) == [
        {
            "time": "2026-11-23T19:15:02.123Z",
            "level": "error",
            "msg": "config reload failed",
            "errors": ["a.yaml:1:1: bad"],
        }
    ]


def test_event_log_flushes_each_line_at_once() -> None:
    """An event line reaches the stream without waiting for the periodic flush."""
    log, stream = event_log("info")
    log.log_event("info", "reloaded", generation=2)
    assert stream.getvalue().endswith(b"\n")


def test_event_log_text_format() -> None:
    """Text event lines put the message after the level and containers as compact JSON."""
    log, stream = event_log("info", fmt="text")
    log.notify(STARTED)
    log.notify(ShutdownFinished(abandoned=3, forced=False))
    assert stream.getvalue().decode().splitlines() == [
        "2026-11-23T19:15:02.123Z INFO server started version=1.2.3 config_source=sidecar.yaml"
        ' admin=127.0.0.1:15000 listeners={"egress":"127.0.0.1:15001",'
        '"payments-local":"127.0.0.1:15002"}',
        "2026-11-23T19:15:02.123Z WARNING shutdown finished abandoned=3 forced=false",
    ]


def test_event_log_enabled_reports_threshold() -> None:
    """enabled() tells a caller whether building a line is worth it."""
    log, _ = event_log("warning")
    assert not log.enabled("info")
    assert log.enabled("error")


@pytest.mark.parametrize(
    ("level", "fmt"),
    [("verbose", "json"), ("info", "yaml")],
    ids=["bad-level", "bad-format"],
)
def test_event_log_rejects_unknown_level_or_format(level: str, fmt: str) -> None:
    """An unknown level or format is refused at construction, not silently defaulted."""
    with pytest.raises(ValueError, match="is not a valid"):
        EventLog(LineWriter(io.BytesIO()), level, fmt)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (WALL_TIME, "2026-11-23T19:15:02.123Z"),
        (WALL_TIME + 0.8769, "2026-11-23T19:15:03.000Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
    ],
    ids=["milliseconds-exact", "rounds-into-next-second", "epoch"],
)
def test_time_formatter_writes_rfc3339_utc_milliseconds(when: float, expected: str) -> None:
    """Timestamps are RFC 3339 in UTC with three fractional digits and a Z."""
    assert TimeFormatter().format(when) == expected
