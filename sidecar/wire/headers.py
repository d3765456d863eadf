"""Which headers cross the proxy, in which direction, and how they are checked.

Framing headers (`Content-Length`, `Transfer-Encoding`) are never copied: the sidecar frames
bodies itself, which is what keeps a CL.TE desync from passing through it. Hop-by-hop headers
(RFC 9110 §7.6.1, plus any named in `Connection`) stay on their own hop.
"""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

# Lower-cased names that never cross the proxy in either direction.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # re-derived from the body the sidecar frames itself
        b"proxy-authorization",  # credentials for the proxy, never for the upstream
        b"proxy-authenticate",
    }
)

_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def connection_tokens(value: bytes) -> set[bytes]:
    """The header names a `Connection` header lists, lower-cased (they are hop-by-hop too)."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def is_valid_name(name: bytes) -> bool:
    """RFC 9110 token: what a field name may be."""
    return bool(name) and all(byte in _TOKEN_CHARS for byte in name)


# One C-level scan instead of a Python loop over every byte of every response header value.
_FORBIDDEN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def is_valid_value(value: bytes) -> bool:
    """RFC 9110 field-value: no control characters except HTAB (obs-text is allowed)."""
    return _FORBIDDEN_VALUE.search(value) is None
