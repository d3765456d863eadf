"""What may be stored, and for how long it may be served stale (SPEC §4.4, RFC 9111, RFC 5861).

Reads response (and request) headers only: `Cache-Control` directives, `Set-Cookie`, `Vary`
and `Age`. Decides storability before a single body byte is kept, the stale limit of an entry,
and which headers an entry keeps. Pure functions: no clock, no state, no I/O.

Not stored in this version: non-2xx answers (3xx and 404 included: the config has no key to
list them yet) and 206 (a partial body must never answer a whole-resource request).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sidecar.wire.headers import HOP_BY_HOP, connection_tokens

__all__ = [
    "Refusal",
    "cache_directives",
    "header_bytes",
    "initial_age",
    "refusal",
    "stale_limit",
    "stored_headers",
    "vary_names",
]

HeaderSeq = Sequence[tuple[bytes, bytes]]

# RFC 9111 §4.2.4: a cache must not serve a response stale when one of these forbids it
# (`s-maxage` implies `proxy-revalidate`, §5.2.2.10). A store that serves only stale answers
# has no use for such a response, so it is not stored at all.
_NO_STALE = (b"must-revalidate", b"proxy-revalidate", b"no-cache", b"s-maxage")
# RFC 9111 §1.2.2: delta-seconds too large to represent count as 2^31.
_MAX_DELTA = 2**31


class Refusal(StrEnum):
    """Why a response is not stored."""

    STATUS = "status"  # not 2xx, or 206 Partial Content
    NO_STORE = "no-store"  # `no-store` on the response or on the request
    PRIVATE = "private"  # meant for one user only
    NO_STALE = "no-stale"  # must-revalidate, proxy-revalidate, no-cache or s-maxage
    SET_COOKIE = "set-cookie"  # it would hand one client's cookie to others
    VARY_ALL = "vary-all"  # `Vary: *`: no two requests are known to match
    TOO_LARGE = "too-large"  # the announced body exceeds max_body


def cache_directives(headers: HeaderSeq) -> dict[bytes, bytes | None]:
    """`Cache-Control` directives, lowercased, arguments unquoted; the first of duplicates wins."""
    found: dict[bytes, bytes | None] = {}
    for name, value in headers:
        if name != b"cache-control":
            continue
        for member in _list_members(value):
            directive, sep, argument = member.partition(b"=")
            directive = directive.strip().lower()
            if directive:
                found.setdefault(directive, _unquote(argument.strip()) if sep else None)
    return found


def refusal(
    request_headers: HeaderSeq,
    status: int,
    response_headers: HeaderSeq,
    body_length: int | None,
    max_body: int,
) -> Refusal | None:
    """Why this answer may not be stored, or None when it may (size permitting as it streams).

    `body_length` is the announced length (None: unknown until the body ends).
    """
    if not 200 <= status < 300 or status == 206:
        return Refusal.STATUS
    directives = cache_directives(response_headers)
    if b"no-store" in directives or b"no-store" in cache_directives(request_headers):
        return Refusal.NO_STORE
    if b"private" in directives:
        return Refusal.PRIVATE
    if any(directive in directives for directive in _NO_STALE):
        return Refusal.NO_STALE
    if any(name == b"set-cookie" for name, _ in response_headers):
        return Refusal.SET_COOKIE
    if vary_names(response_headers) is None:
        return Refusal.VARY_ALL
    if body_length is not None and body_length > max_body:
        return Refusal.TOO_LARGE
    return None


def stale_limit(response_headers: HeaderSeq, max_stale: float) -> float:
    """Seconds the entry may be served: its own `stale-if-error=N` (RFC 5861), else max_stale."""
    seconds = _delta_seconds(cache_directives(response_headers).get(b"stale-if-error"))
    return max_stale if seconds is None else float(seconds)


def initial_age(response_headers: HeaderSeq) -> int:
    """The upstream's `Age` in seconds (RFC 9111 §5.1: first member; invalid → ignored, 0)."""
    for name, value in response_headers:
        if name == b"age":
            seconds = _delta_seconds(value.split(b",", 1)[0].strip())
            return 0 if seconds is None else seconds
    return 0


def vary_names(response_headers: HeaderSeq) -> tuple[bytes, ...] | None:
    """The request headers the response varies on, lowercased and sorted; None for `Vary: *`."""
    names: set[bytes] = set()
    for name, value in response_headers:
        if name != b"vary":
            continue
        for member in value.split(b","):
            field = member.strip().lower()
            if field == b"*":
                return None
            if field:
                names.add(field)
    return tuple(sorted(names))


def stored_headers(response_headers: HeaderSeq) -> tuple[tuple[bytes, bytes], ...]:
    """The headers an entry keeps: end-to-end ones, without `Age` (recomputed when served)."""
    dropped = set(HOP_BY_HOP) | {b"age"}
    for name, value in response_headers:
        if name == b"connection":
            dropped |= connection_tokens(value)
    return tuple((name, value) for name, value in response_headers if name not in dropped)


def header_bytes(headers: Sequence[tuple[bytes, bytes]]) -> int:
    """Approximate memory of a header list: its size on the wire (`name: value\\r\\n`)."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def _delta_seconds(value: bytes | None) -> int | None:
    """RFC 9111 §1.2.2 delta-seconds (digits only), capped at 2^31; None when invalid."""
    if value is None or not value.isdigit():
        return None
    return min(int(value), _MAX_DELTA)


def _list_members(value: bytes) -> list[bytes]:
    """Comma-separated members of a field value; commas inside quoted strings do not split."""
    if b'"' not in value:
        return value.split(b",")
    members: list[bytes] = []
    start = 0
    quoted = escaped = False
    for index, byte in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and byte == 0x5C:  # backslash: the next byte is literal
            escaped = True
        elif byte == 0x22:  # double quote
            quoted = not quoted
        elif byte == 0x2C and not quoted:  # comma
            members.append(value[start:index])
            start = index + 1
    members.append(value[start:])
    return members


def _unquote(argument: bytes) -> bytes:
    """A directive argument without its quotes and backslash escapes (RFC 9110 §5.6.4)."""
    if len(argument) < 2 or not (argument.startswith(b'"') and argument.endswith(b'"')):
        return argument
    inner = argument[1:-1]
    if b"\\" not in inner:
        return inner
    out = bytearray()
    escaped = False
    for byte in inner:
        if not escaped and byte == 0x5C:
            escaped = True
            continue
        out.append(byte)
        escaped = False
    return bytes(out)
