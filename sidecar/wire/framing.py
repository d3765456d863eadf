"""Body framing the sidecar writes: chunked encoding and the small fixed byte strings.

Kept free of I/O so both the downstream writer and the upstream request writer use the same
encoding, and so it can be tested on bytes alone.
"""

from __future__ import annotations

from email.utils import formatdate
from http import HTTPStatus

from sidecar.clock import wall_time

LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"


def chunk(data: bytes) -> list[bytes]:
    """One chunk of chunked transfer coding, as pieces for `writelines` (no copy of `data`)."""
    return [b"%x\r\n" % len(data), data, CRLF]


class HttpDate:
    """The `Date` header value, recomputed at most once a second (it is on every answer)."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = int(wall_time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value


HTTP_DATE = HttpDate()

REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    508: b"Loop Detected",
}


def reason(status: int) -> bytes:
    """The reason phrase the sidecar writes for answers it generates or serves from store."""
    phrase = REASONS.get(status)
    if phrase is None:
        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b"Unknown"
        REASONS[status] = phrase
    return phrase
