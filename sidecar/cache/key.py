"""Cache keys: which stored responses a request may be answered with (SPEC §4.4, cache safety).

Owns the primary key (method, full URL, the `key_headers` values) and the Vary secondary key,
and the rule that credentials reach neither as raw bytes: the values of secret headers are
replaced by an HMAC-SHA256 under the process's random secret, so entries are partitioned by
credential without a token ever sitting in a dict key. Pure: no clock, no I/O; what may be
stored is `sidecar.cache.rules`' call, and entries live in `sidecar.cache.store`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "GUARDED_HEADERS",
    "SECRET_HEADERS",
    "KeyBuilder",
    "RequestKey",
    "Variant",
    "field_value",
]

# Headers whose values are credentials: they enter a key (primary or Vary) only as an HMAC.
SECRET_HEADERS: frozenset[bytes] = frozenset(
    {b"authorization", b"cookie", b"proxy-authorization", b"x-api-key"}
)
# A request carrying one of these is neither stored nor served unless the header is keyed:
# without it in the key, one user's answer could be served to another.
GUARDED_HEADERS: frozenset[bytes] = frozenset({b"authorization", b"cookie"})

# Shortest secret accepted: an HMAC under an empty or tiny key is little better than a hash.
_MIN_SECRET = 16

Variant = tuple[bytes | None, ...]
"""A request's values of a stored response's Vary names (None: absent), secrets sealed."""


@dataclass(frozen=True, slots=True)
class RequestKey:
    """The primary cache key: method, exact URL bytes, and each key header's (sealed) value.

    `headers` follows `key_headers` order; a value is None when the request lacks the header
    (absent is not empty), and `hmac-sha256:<hex>` in place of a secret header's value.
    """

    method: bytes
    url: bytes
    headers: tuple[tuple[bytes, bytes | None], ...] = ()

    def __bytes__(self) -> bytes:
        """A readable canonical form (`GET url`, then one `name: value`/`name absent` line each)."""
        lines = [self.method + b" " + self.url]
        for name, value in self.headers:
            lines.append(name + b" absent" if value is None else name + b": " + value)
        return b"\n".join(lines)


def field_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of `name`, repeated lines joined with `, ` (RFC 9110 §5.3); None if absent."""
    values = [value for field, value in headers if field == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


class KeyBuilder:
    """Builds the keys of one store: which methods are cached, which headers partition."""

    __slots__ = ("_key_headers", "_keyed", "_methods", "_secret")

    def __init__(self, methods: Iterable[str], key_headers: Iterable[str], secret: bytes) -> None:
        if len(secret) < _MIN_SECRET:
            raise ValueError(
                f"KeyBuilder: secret must be at least {_MIN_SECRET} random bytes, got {len(secret)}"
            )
        self._methods = frozenset(method.encode("ascii") for method in methods)
        self._key_headers = tuple(
            dict.fromkeys(name.lower().encode("ascii") for name in key_headers)
        )
        self._keyed = frozenset(self._key_headers)
        self._secret = secret

    def request_key(
        self, method: bytes, url: bytes, request_headers: Sequence[tuple[bytes, bytes]]
    ) -> RequestKey | None:
        """The request's primary key; None when it may be neither stored nor served."""
        if method not in self._methods:
            return None
        for name, _ in request_headers:
            if name in GUARDED_HEADERS and name not in self._keyed:
                return None
        values = tuple(
            (name, self._seal(name, field_value(request_headers, name)))
            for name in self._key_headers
        )
        return RequestKey(method, url, values)

    def admits(self, key: RequestKey) -> bool:
        """Whether `key` could have come from this builder: a cached method, the same key
        headers in the same order (a reload may have changed either)."""
        return (
            key.method in self._methods
            and tuple(name for name, _ in key.headers) == self._key_headers
        )

    def variant(
        self, names: Sequence[bytes], request_headers: Sequence[tuple[bytes, bytes]]
    ) -> Variant:
        """The request's values of the Vary `names`: the secondary key within one primary key."""
        return tuple(self._seal(name, field_value(request_headers, name)) for name in names)

    def _seal(self, name: bytes, value: bytes | None) -> bytes | None:
        if value is None or name not in SECRET_HEADERS:
            return value
        digest = hmac.new(self._secret, value, hashlib.sha256).hexdigest()
        return b"hmac-sha256:" + digest.encode("ascii")

    def __repr__(self) -> str:
        methods = ",".join(sorted(method.decode() for method in self._methods))
        names = ",".join(name.decode() for name in self._key_headers)
        return f"KeyBuilder(methods={methods}, key_headers=[{names}])"
