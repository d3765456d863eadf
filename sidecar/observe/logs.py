"""The access log and the event log: events in, encoded lines out (SPEC §8).

`AccessLog` writes one line per finished request; `EventLog` writes lifecycle events and the
lines other components ask for through `log_event`, filtered by level. Both encode either JSON
(orjson, one object per line) or a human `text` form, and hand the bytes to a `LineWriter`.

They must never log header values, bodies or query strings: an event carries none of the first
two, and the query is cut from the path here as well, unless the operator asked for it
(`access_log.include_query`). They do no I/O themselves and never read a clock on the request
path (an access line's time is the event's own `wall_time`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum

import orjson

from sidecar.clock import wall_time
from sidecar.events import (
    AttemptFinished,
    CircuitTransitioned,
    ConfigReloaded,
    ConfigReloadFailed,
    EndpointEjected,
    EndpointHealthChanged,
    Event,
    ListenersClosed,
    ProxyFault,
    RequestFinished,
    RetryBudgetExhausted,
    ServerStarted,
    ShutdownFinished,
    ShutdownStarted,
)
from sidecar.observe.writer import LineWriter


class LogLevel(StrEnum):
    """Severity of an event line; `--log-level` hides the lines below it."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """`--log-format`: JSON for machines (the default), text for a terminal."""

    JSON = "json"
    TEXT = "text"


_SEVERITY = {LogLevel.DEBUG: 10, LogLevel.INFO: 20, LogLevel.WARNING: 30, LogLevel.ERROR: 40}
_HEAD_KEYS = frozenset({"time", "level", "msg"})
# A text value is written bare only when it is visible ASCII without quote, `=` or backslash;
# anything else is JSON-quoted, so a crafted path cannot forge a line or a field.
_NEEDS_QUOTES = re.compile(r'[^\x21-\x7e]|["=\\]')
_TEXT_ACCESS_KEYS = (
    "method",
    "path",
    "status",
    "outcome",
    "duration_ms",
    "attempts",
    "upstream",
    "route",
    "listener",
    "bytes_in",
    "bytes_out",
    "circuit_state",
    "request_id",
    "error",
)


class TimeFormatter:
    """RFC 3339 UTC with milliseconds; the date part is formatted once per second, not per line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, when: float) -> str:
        # Whole milliseconds first: `when - int(when)` of an epoch float is off by ~1e-7, which
        # would turn .123 into .122 if truncated.
        second, millis = divmod(round(when * 1000), 1000)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{millis:03d}Z"


def _text_value(value: object) -> str:
    if isinstance(value, str):
        return value if value and _NEEDS_QUOTES.search(value) is None else _json_str(value)
    return _json_str(value)  # numbers, booleans, null, and lists/objects as compact JSON


def _json_str(value: object) -> str:
    return orjson.dumps(value).decode()


def encode_line(entry: Mapping[str, object], fmt: LogFormat, keys: tuple[str, ...] = ()) -> bytes:
    """One log line with its newline; `entry` starts with time, level and msg.

    Text lines read `TIME LEVEL msg key=value ...`, the keys in `keys` order when given.
    """
    if fmt is LogFormat.JSON:
        return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
    head = f"{entry['time']} {str(entry['level']).upper()} {entry['msg']}"
    names = keys or tuple(key for key in entry if key not in _HEAD_KEYS)
    fields = " ".join(f"{key}={_text_value(entry[key])}" for key in names if key in entry)
    return f"{head} {fields}\n".encode() if fields else f"{head}\n".encode()


class AccessLog:
    """One line per `RequestFinished` (SPEC §8); independent of `--log-level`."""

    __slots__ = ("_format", "_time", "_writer", "include_query")

    def __init__(self, writer: LineWriter, include_query: bool, fmt: str) -> None:
        self._writer = writer
        self.include_query = include_query
        self._format = LogFormat(fmt)
        self._time = TimeFormatter()

    def notify(self, event: Event) -> None:
        if not isinstance(event, RequestFinished):
            return
        path = event.path
        if not self.include_query and "?" in path:
            path = path.partition("?")[0]  # the producer strips it; this keeps the promise anyway
        entry: dict[str, object] = {
            "time": self._time.format(event.wall_time),
            "level": "info",
            "msg": "request",
            "request_id": event.request_id,
            "listener": event.listener,
            "upstream": event.upstream,
            "route": event.route,
            "method": event.method,
            "path": path,
            "status": event.status,
            "outcome": event.outcome,
            "attempts": event.attempts,
            "duration_ms": round(event.duration * 1000.0, 3),
            "bytes_in": event.bytes_in,
            "bytes_out": event.bytes_out,
            "circuit_state": event.circuit_state,
        }
        if event.error:
            entry["error"] = event.error
        self._writer.write_line(encode_line(entry, self._format, _TEXT_ACCESS_KEYS))

    def __repr__(self) -> str:
        return f"AccessLog(format={self._format}, include_query={self.include_query})"


class EventLog:
    """Lifecycle and component event lines at or above `level`; written out at once.

    Event lines are rare and matter most when something is going wrong, so each one flushes
    the writer (with any access lines queued before it, keeping their order).
    """

    __slots__ = ("_format", "_level", "_threshold", "_time", "_wall_clock", "_writer")

    def __init__(
        self,
        writer: LineWriter,
        level: str,
        fmt: str,
        *,
        wall_clock: Callable[[], float] = wall_time,
    ) -> None:
        self._writer = writer
        self._level = LogLevel(level)
        self._threshold = _SEVERITY[self._level]
        self._format = LogFormat(fmt)
        self._wall_clock = wall_clock
        self._time = TimeFormatter()

    def enabled(self, level: str) -> bool:
        """Whether a line at `level` would be written; lets callers skip building fields."""
        return _SEVERITY[LogLevel(level)] >= self._threshold

    def log_event(self, level: str, msg: str, /, **fields: object) -> None:
        """Write one event line; `time`, `level` and `msg` cannot be overridden by fields."""
        severity = LogLevel(level)
        if _SEVERITY[severity] < self._threshold:
            return
        entry: dict[str, object] = {
            "time": self._time.format(self._wall_clock()),
            "level": severity.value,
            "msg": msg,
        }
        entry.update((key, value) for key, value in fields.items() if key not in _HEAD_KEYS)
        self._writer.write_line(encode_line(entry, self._format))
        self._writer.flush()

    def notify(self, event: Event) -> None:
        match event:
            case RequestFinished() | AttemptFinished():
                return  # the hot path: the access log and metrics own these
            case ServerStarted():
                self.log_event(
                    "info",
                    "server started",
                    version=event.version,
                    config_source=event.config_source,
                    admin=event.admin,
                    listeners=dict(event.listeners),
                )
            case ShutdownStarted():
                self.log_event(
                    "info",
                    "shutdown started",
                    signal=event.signal,
                    drain_delay_s=event.drain_delay,
                    drain_timeout_s=event.drain_timeout,
                )
            case ListenersClosed():
                self.log_event("info", "listeners closed", inflight=event.inflight)
            case ShutdownFinished():
                level = "warning" if event.abandoned > 0 else "info"
                self.log_event(
                    level, "shutdown finished", abandoned=event.abandoned, forced=event.forced
                )
            case CircuitTransitioned():
                # Opening is what an operator must notice; closing and trials are news.
                level = "warning" if event.to_state == "open" else "info"
                self.log_event(
                    level,
                    "circuit "
                    + ("opened" if event.to_state == "open" else event.to_state.replace("_", "-")),
                    upstream=event.upstream,
                    route=event.route,
                    from_state=event.from_state,
                    to_state=event.to_state,
                    reason=event.reason,
                )
            case EndpointEjected():
                self.log_event(
                    "warning",
                    "endpoint ejected",
                    upstream=event.upstream,
                    endpoint=event.endpoint,
                    duration_s=event.duration,
                    consecutive_failures=event.failures,
                )
            case EndpointHealthChanged():
                # Leaving rotation is what an operator must notice; returning is news.
                self.log_event(
                    "info" if event.healthy else "warning",
                    "endpoint healthy" if event.healthy else "endpoint unhealthy",
                    upstream=event.upstream,
                    endpoint=event.endpoint,
                    reason=event.reason,
                )
            case RetryBudgetExhausted():
                self.log_event("debug", "retry budget exhausted", upstream=event.upstream)
            case ConfigReloaded():
                self.log_event(
                    "info",
                    "config reloaded",
                    generation=event.generation,
                    config_source=event.source,
                    upstreams_kept=list(event.upstreams_kept),
                    upstreams_rebuilt=list(event.upstreams_rebuilt),
                )
            case ConfigReloadFailed():
                self.log_event(
                    "error",
                    "config reload failed; the running config is unchanged",
                    config_source=event.source,
                    errors=list(event.errors),
                )
            case ProxyFault():
                self.log_event(
                    "error", "proxy fault", request_id=event.request_id, detail=event.detail
                )

    def __repr__(self) -> str:
        return f"EventLog(level={self._level}, format={self._format})"
