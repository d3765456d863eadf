"""Errors the request path raises, each carrying the SPEC §4.6 code it becomes.

The proxy handler owns the one table that turns these into HTTP answers
(`sidecar.server.errorpage`); stages raise, they never write error responses themselves.
Foreign exceptions (OSError, ssl errors, httptools errors) are translated once, in the
upstream transport, into these.
"""

from __future__ import annotations

from enum import StrEnum

from sidecar.outcome import AttemptResult, Outcome


class ErrorCode(StrEnum):
    """The machine-readable `error` field of a generated response (SPEC §4.6)."""

    CIRCUIT_OPEN = "circuit_open"
    BULKHEAD_FULL = "bulkhead_full"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_RESET = "upstream_reset"
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    UNKNOWN_UPSTREAM = "unknown_upstream"
    BAD_REQUEST = "bad_request"
    REQUEST_TOO_LARGE = "request_too_large"
    REQUEST_TIMEOUT = "request_timeout"
    LOOP_DETECTED = "loop_detected"
    INTERNAL = "internal_error"


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose."""


class StartupError(SidecarError):
    """The sidecar cannot start (a port in use, an unreadable file); exit code 1, nothing served."""


class ProxyError(SidecarError):
    """A request could not be served; `code` decides the status via the handler's table."""

    code: ErrorCode = ErrorCode.INTERNAL
    outcome: Outcome = Outcome.REJECTED

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class BadRequestError(ProxyError):
    """The client's request is malformed or ambiguous; it is never forwarded."""

    code = ErrorCode.BAD_REQUEST


class RequestTooLargeError(ProxyError):
    """A request body over the configured limits."""

    code = ErrorCode.REQUEST_TOO_LARGE


class HeadersTooLargeError(RequestTooLargeError):
    """Request line plus headers over `limits.max_header_bytes` (answered 431, SPEC §9)."""


class RequestTimeoutError(ProxyError):
    """The client did not finish its request line and headers within `limits.header_timeout`."""

    code = ErrorCode.REQUEST_TIMEOUT


class UnknownUpstreamError(ProxyError):
    """A forward listener got a host no upstream claims, and `unknown_hosts` is `deny`."""

    code = ErrorCode.UNKNOWN_UPSTREAM


class LoopDetectedError(ProxyError):
    """The request would be forwarded to one of the sidecar's own listeners or its admin port."""

    code = ErrorCode.LOOP_DETECTED


class CircuitOpenError(ProxyError):
    """The breaker is open (or half-open with every trial slot taken); nothing was sent."""

    code = ErrorCode.CIRCUIT_OPEN


class BulkheadFullError(ProxyError):
    """No concurrency slot within `queue_timeout`, or the wait queue is full."""

    code = ErrorCode.BULKHEAD_FULL


class RateLimitedError(ProxyError):
    """The upstream's token bucket is empty."""

    code = ErrorCode.RATE_LIMITED


class AttemptError(ProxyError):
    """One attempt to an endpoint failed before a usable response; `result` classifies it.

    `upstream_fault` is False when the failure says nothing about the upstream's health (a
    pooled keep-alive connection the server had closed while idle, reset before any response
    byte): the client still gets the error, but the breaker and outlier detection ignore it.
    """

    result: AttemptResult = AttemptResult.RESET

    def __init__(
        self, detail: str, *, retry_after: float | None = None, upstream_fault: bool = True
    ) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.upstream_fault = upstream_fault


class UpstreamConnectError(AttemptError, ConnectionError):
    """No connection to the endpoint (refused, DNS failure, TLS handshake failure, timeout)."""

    code = ErrorCode.UPSTREAM_UNREACHABLE
    outcome = Outcome.UNREACHABLE
    result = AttemptResult.CONNECT_FAILURE


class UpstreamResetError(AttemptError, ConnectionResetError):
    """The upstream closed or reset the connection before the response headers."""

    code = ErrorCode.UPSTREAM_RESET
    outcome = Outcome.RESET
    result = AttemptResult.RESET


class UpstreamTimeoutError(AttemptError, TimeoutError):
    """No response headers within `per_try` (one attempt) or `total` (the whole request)."""

    code = ErrorCode.UPSTREAM_TIMEOUT
    outcome = Outcome.TIMEOUT
    result = AttemptResult.TIMEOUT


class UpstreamProtocolError(AttemptError):
    """The upstream answered with bytes that are not valid HTTP/1.1 (framing or header syntax)."""

    code = ErrorCode.UPSTREAM_PROTOCOL_ERROR
    outcome = Outcome.UPSTREAM_ERROR
    result = AttemptResult.PROTOCOL_ERROR


class BodyStreamError(SidecarError):
    """A body failed after the response head was sent: the client connection must be closed."""

    def __init__(self, detail: str, result: AttemptResult, *, upstream_fault: bool = True) -> None:
        super().__init__(detail)
        self.result = result
        # False when the sidecar or the client broke the body off (a client too slow to
        # read): outlier detection must not blame the endpoint for it.
        self.upstream_fault = upstream_fault
