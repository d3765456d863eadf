"""Secret redaction for the effective config that `GET /config` shows (SPEC §3.3, §5).

It owns the rules for what counts as a secret in config-shaped data: credentials in URLs,
values of credential-bearing headers, and values under keys named like a token, secret or
password. It works on plain JSON-able data (dicts, lists, scalars) and never mutates its input;
it knows nothing about the config models, so a new config field is covered by its key name.
Paths to secret files (`token_file`, `ca_file`) are not secrets and are shown.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"

# Header names whose values are credentials, wherever they appear as mapping keys (the static
# fallback's `headers`, and any header map added later).
SECRET_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)

# Key names that hold a secret value, matched anywhere in the lower-cased key, so
# `token`, `api_token`, `clientSecret` and `db_password` are all caught. Redacting a harmless
# value by mistake costs a line of debugging; showing a secret cannot be undone.
_SECRET_KEY = re.compile(r"token|secret|passw|pwd|api[-_]?key|private[-_]?key|credential")
# ... except a key that names where a secret lives rather than the secret itself.
_REFERENCE_KEY = re.compile(r"[-_](file|path|env)$")

# scheme://user:password@ or scheme://user@ (a bare user is often a token, as in
# https://TOKEN@host). The password runs to the last `@` of the authority, so an unescaped
# `@` inside it is still hidden.
_URL_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^/?#@:\s]*)(?P<password>:[^/?#\s]*)?@"
)


def redact_config(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of `data` with every secret replaced by `"<redacted>"`."""
    return {key: _redact_item(str(key), value) for key, value in data.items()}


def is_secret_key(key: str) -> bool:
    """Whether a mapping key's value is a secret by its name alone."""
    lowered = key.lower()
    if lowered in SECRET_HEADERS:
        return True
    return _SECRET_KEY.search(lowered) is not None and _REFERENCE_KEY.search(lowered) is None


def redact_url_credentials(text: str) -> str:
    """`http://user:pw@host` → `http://user:<redacted>@host`; `http://tok@host` → `http://<redacted>@host`."""
    if "@" not in text or "://" not in text:
        return text
    return _URL_USERINFO.sub(_replace_userinfo, text)


def _replace_userinfo(match: re.Match[str]) -> str:
    scheme, user = match["scheme"], match["user"]
    if match["password"] is None:
        return f"{scheme}{REDACTED}@"
    return f"{scheme}{user}:{REDACTED}@"


def _redact_item(key: str, value: Any) -> Any:
    # None stays None: "<redacted>" would claim a secret is set when none is.
    if value is not None and is_secret_key(key):
        return REDACTED
    return _redact_value(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_item(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(item) for item in value]
    if isinstance(value, str):
        return redact_url_credentials(value)
    return value
