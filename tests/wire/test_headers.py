"""Header rules shared by both directions of the proxy."""

from __future__ import annotations

import pytest

from sidecar.wire.headers import (
    HOP_BY_HOP,
    connection_tokens,
    is_valid_name,
    is_valid_value,
)


@pytest.mark.parametrize(
    "name",
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ],
    ids=lambda n: n.decode(),
)
def test_headers_rfc9110_hop_by_hop_names_never_cross(name: bytes) -> None:
    """Every RFC 9110 §7.6.1 connection-specific field is in the hop-by-hop set."""
    assert name in HOP_BY_HOP


def test_headers_framing_and_proxy_credentials_are_never_copied() -> None:
    """Content-Length is re-derived and Proxy-Authorization is for the proxy only."""
    assert {b"content-length", b"proxy-authorization"} <= HOP_BY_HOP


def test_headers_connection_tokens_are_lowercased_and_trimmed() -> None:
    """Names listed in Connection become hop-by-hop, case-insensitively."""
    assert connection_tokens(b" Keep-Alive, X-Secret ,,close") == {
        b"keep-alive",
        b"x-secret",
        b"close",
    }


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        (b"X-Ok", True),
        (b"x_ok!#", True),
        (b"", False),
        (b"bad name", False),
        (b"bad:name", False),
        (b"\xff", False),
    ],
    ids=["plain", "token-symbols", "empty", "space", "colon", "non-ascii"],
)
def test_headers_name_validation_follows_the_token_grammar(name: bytes, valid: bool) -> None:
    """Field names are RFC 9110 tokens."""
    assert is_valid_name(name) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"plain", True),
        (b"tab\there", True),
        (b"caf\xc3\xa9", True),
        (b"a\r\nb", False),
        (b"nul\x00", False),
        (b"\x7f", False),
    ],
    ids=["plain", "htab", "obs-text", "crlf", "nul", "del"],
)
def test_headers_value_validation_refuses_control_characters(value: bytes, valid: bool) -> None:
    """Values may hold HTAB and obs-text but no other control characters."""
    assert is_valid_value(value) is valid
