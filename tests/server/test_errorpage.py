"""The one table mapping the sidecar's errors to HTTP answers."""

from __future__ import annotations

import orjson
import pytest

from sidecar.errors import (
    BadRequestError,
    ErrorCode,
    HeadersTooLargeError,
    LoopDetectedError,
    ProxyError,
    RequestTimeoutError,
    UnknownUpstreamError,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from sidecar.server.errorpage import STATUS_BY_CODE, render_error


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UpstreamTimeoutError("t"), 504, "upstream_timeout"),
        (UpstreamConnectError("c"), 502, "upstream_unreachable"),
        (UpstreamResetError("r"), 502, "upstream_reset"),
        (UpstreamProtocolError("p"), 502, "upstream_protocol_error"),
        (UnknownUpstreamError("u"), 403, "unknown_upstream"),
        (BadRequestError("b"), 400, "bad_request"),
        (HeadersTooLargeError("h"), 431, "request_too_large"),
        (RequestTimeoutError("s"), 408, "request_timeout"),
        (LoopDetectedError("l"), 508, "loop_detected"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_errorpage_maps_each_error_to_its_status_and_code(
    error: ProxyError, status: int, code: str
) -> None:
    """Each error becomes the SPEC §4.6 status, JSON body and x-sidecar-error header."""
    got_status, payload = render_error(
        error, upstream="payments", attempts=2, request_id="rid", sidecar_headers=True, close=False
    )
    head, _, body = payload.partition(b"\r\n\r\n")
    assert got_status == status
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert orjson.loads(body) == {"error": code, "upstream": "payments", "detail": str(error)}
    assert b"\r\nx-sidecar-error: " + code.encode() in head
    assert b"\r\nx-sidecar-attempts: 2" in head
    assert b"\r\nserver: sidecar\r\n" in head
    assert b"\r\ncontent-length: %d\r\n" % len(body) in head


def test_errorpage_every_code_has_a_status() -> None:
    """No error code can reach the handler without an answer."""
    assert set(STATUS_BY_CODE) == set(ErrorCode)


def test_errorpage_retry_after_is_whole_seconds_rounded_up() -> None:
    """Retry-After and retry_after_s are ceil'd whole seconds."""
    _, payload = render_error(
        ProxyError("x", retry_after=1.2),
        upstream="",
        attempts=0,
        request_id="",
        sidecar_headers=False,
        close=True,
    )
    head, _, body = payload.partition(b"\r\n\r\n")
    assert b"\r\nretry-after: 2\r\n" in head
    assert orjson.loads(body)["retry_after_s"] == 2
    assert b"x-sidecar" not in head
    assert head.endswith(b"\r\nconnection: close")
