"""The one table that turns the sidecar's errors into HTTP answers (SPEC §4.6, §9).

Generated answers carry a JSON body `{"error", "upstream", "detail", "retry_after_s"?}`, never
echo request headers, and name no library versions.
"""

from __future__ import annotations

import math

import orjson

from sidecar.errors import (
    ErrorCode,
    HeadersTooLargeError,
    ProxyError,
)
from sidecar.wire.framing import HTTP_DATE, reason

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.CIRCUIT_OPEN: 503,
    ErrorCode.BULKHEAD_FULL: 503,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UPSTREAM_TIMEOUT: 504,
    ErrorCode.UPSTREAM_UNREACHABLE: 502,
    ErrorCode.UPSTREAM_RESET: 502,
    ErrorCode.UPSTREAM_PROTOCOL_ERROR: 502,
    ErrorCode.UNKNOWN_UPSTREAM: 403,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.LOOP_DETECTED: 508,
    ErrorCode.INTERNAL: 500,
}


def status_for(error: ProxyError) -> int:
    """The HTTP status of a generated answer; headers over the limit are 431, not 413."""
    if isinstance(error, HeadersTooLargeError):
        return 431
    return STATUS_BY_CODE[error.code]


def render_error(
    error: ProxyError,
    *,
    upstream: str,
    attempts: int,
    request_id: str,
    sidecar_headers: bool,
    close: bool,
) -> tuple[int, bytes]:
    """The status and the complete bytes of a generated answer."""
    status = status_for(error)
    body: dict[str, object] = {
        "error": error.code.value,
        "upstream": upstream or None,
        "detail": error.detail,
    }
    retry_after = None
    if error.retry_after is not None:
        retry_after = max(1, math.ceil(error.retry_after))
        body["retry_after_s"] = retry_after
    payload = orjson.dumps(body)
    lines = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason(status)),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(payload),
        b"date: " + HTTP_DATE.value() + b"\r\nserver: sidecar\r\n",
        b"x-request-id: " + request_id.encode() + b"\r\n" if request_id else b"",
    ]
    if retry_after is not None:
        lines.append(b"retry-after: %d\r\n" % retry_after)
    if sidecar_headers:
        lines.append(b"x-sidecar-error: " + error.code.value.encode() + b"\r\n")
        if upstream:
            lines.append(b"x-sidecar-upstream: " + upstream.encode() + b"\r\n")
            lines.append(b"x-sidecar-attempts: %d\r\n" % attempts)
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(payload)
    return status, b"".join(lines)
