"""Tests for sidecar.server.redact: what counts as a secret in the effective config."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sidecar.server.redact import REDACTED, redact_config, redact_url_credentials


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pw@host:8080/x", "http://user:<redacted>@host:8080/x"),
        ("https://TOKEN@host", "https://<redacted>@host"),
        ("http://u:p@ss@host/", "http://u:<redacted>@host/"),
        ("http://host:8080/a@b", "http://host:8080/a@b"),
        ("http://host/?q=a@b", "http://host/?q=a@b"),
        ("http://payments:8080", "http://payments:8080"),
        (
            "see http://a:b@c and http://d:e@f",
            "see http://a:<redacted>@c and http://d:<redacted>@f",
        ),
        ("not a url", "not a url"),
    ],
    ids=[
        "user-password",
        "bare-user-token",
        "unescaped-at-in-password",
        "at-in-path",
        "at-in-query",
        "no-userinfo",
        "two-urls-in-text",
        "plain-text",
    ],
)
def test_redact_url_credentials(url: str, expected: str) -> None:
    """URL userinfo is hidden, keeping the user name when a password follows it."""
    assert redact_url_credentials(url) == expected


@pytest.mark.parametrize(
    "header",
    ["authorization", "Authorization", "cookie", "Proxy-Authorization", "x-api-key", "Set-Cookie"],
    ids=["authorization", "authorization-cased", "cookie", "proxy-auth", "api-key", "set-cookie"],
)
def test_redact_static_fallback_credential_headers(header: str) -> None:
    """Credential-bearing static fallback headers are redacted whatever their case."""
    data = {"static": {"headers": {header: "secret-value", "content-type": "text/plain"}}}
    assert redact_config(data) == {
        "static": {"headers": {header: REDACTED, "content-type": "text/plain"}}
    }


@pytest.mark.parametrize(
    ("key", "redacted"),
    [
        ("token", True),
        ("api_token", True),
        ("clientSecret", True),
        ("db_password", True),
        ("api-key", True),
        ("private_key", True),
        ("token_file", False),
        ("ca_file", False),
        ("key_headers", False),
        ("max_attempts", False),
    ],
    ids=[
        "token",
        "api-token",
        "camel-secret",
        "password",
        "api-key",
        "private-key",
        "token-file-path",
        "ca-file",
        "key-headers",
        "ordinary",
    ],
)
def test_redact_keys_named_like_secrets(key: str, redacted: bool) -> None:
    """Values under token/secret/password-like keys are redacted; file paths to them are not."""
    value = redact_config({"section": {key: "value"}})["section"][key]
    assert (value == REDACTED) is redacted


def test_redact_keeps_unset_secret_as_null() -> None:
    """An unset secret stays null rather than claiming a value exists."""
    assert redact_config({"admin": {"token": None}}) == {"admin": {"token": None}}


def test_redact_keeps_header_names_in_lists() -> None:
    """A list of header names such as key_headers names no secret and is kept."""
    data = {"cache": {"key_headers": ["Authorization", "Accept"]}}
    assert redact_config(data) == data


def test_redact_does_not_mutate_input() -> None:
    """Redaction returns a copy; the running config it was given is untouched."""
    data: dict[str, Any] = {
        "upstreams": {"a": {"endpoints": ["http://u:p@h"], "headers": {"cookie": "c"}}}
    }
    original = copy.deepcopy(data)
    redacted = redact_config(data)
    assert data == original
    assert redacted["upstreams"]["a"]["endpoints"] == ["http://u:<redacted>@h"]
