"""Network addresses in the config: where the sidecar listens and where upstreams live.

This module owns `BindAddress` (`127.0.0.1:15001`, `[::1]:15001`) and `Endpoint`
(`http://host:port`, `https://host`), parsed from the strings users write and written back
the same way in JSON dumps. They are frozen slotted dataclasses that pydantic validates
through a plain validator, so the JSON schema shows a string, not an object. This module
must not resolve names or open sockets: validation is purely syntactic.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_BIND_HINT = "(use e.g. 127.0.0.1:15001 or [::1]:15001)"
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def normalize_host(host: str) -> str:
    """Lowercase a hostname or IP literal (IPv6 without brackets); raise if it is neither."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f"[{host}] is not an IPv6 address") from None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    lowered = host.lower()
    if ":" in lowered or not _HOSTNAME.fullmatch(lowered):
        raise ValueError(f"{host!r} is not a hostname or IP address")
    return lowered


def host_for_authority(host: str) -> str:
    """Bracket an IPv6 literal, as it must be written in front of `:port`."""
    return f"[{host}]" if ":" in host else host


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1: addresses other machines cannot reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(text: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` or `host` → (normalized host, port or None).

    Raises ValueError with the reason only; callers say what kind of value was wrong.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host_part, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("expected [IPv6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError("write IPv6 addresses in brackets, e.g. [::1]:15001")
    else:
        host_part, colon, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if colon else None
    if port_text is None:
        return normalize_host(host_part), None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return normalize_host(host_part), int(port_text)


@dataclass(frozen=True, slots=True)
class BindAddress:
    """An address to listen on. Port 0 asks the kernel for a free port (tests use it)."""

    host: str
    port: int

    @classmethod
    def parse(cls, value: object) -> BindAddress:
        """Accept `127.0.0.1:15001`, `[::1]:15001`, `0.0.0.0:15001` or `localhost:15001`."""
        if isinstance(value, BindAddress):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not an address {_BIND_HINT}")
        try:
            host, port = split_host_port(value.strip())
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an address: {exc}") from None
        if port is None:
            raise ValueError(f"{value!r} has no port {_BIND_HINT}")
        return cls(host, port)

    @property
    def is_loopback(self) -> bool:
        """Only this machine can connect: no token or open-proxy risk from the network."""
        return is_loopback_host(self.host)

    @property
    def is_wildcard(self) -> bool:
        """Bound to every interface of its family (`0.0.0.0` or `::`)."""
        return self.host in _WILDCARDS

    def overlaps(self, other: BindAddress) -> bool:
        """Two binds that the kernel would refuse to hold at once (port 0 never overlaps)."""
        if self.port == 0 or other.port == 0 or self.port != other.port:
            return False
        return self.host == other.host or self.is_wildcard or other.is_wildcard

    def __str__(self) -> str:
        return f"{host_for_authority(self.host)}:{self.port}"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.to_string_ser_schema()
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "examples": ["127.0.0.1:15001", "[::1]:15001"]}


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream server; `https` means the sidecar originates TLS to it.

    `url` is the canonical spelling (lowercase, no trailing slash, default port omitted);
    `authority` always carries the port, so it can be compared with request authorities
    after the router adds the scheme's default port to them.
    """

    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int

    @classmethod
    def parse(cls, value: object) -> Endpoint:
        """Accept `http://host:port` or `https://host`; a path, query or userinfo is refused."""
        if isinstance(value, Endpoint):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not an endpoint URL (use e.g. http://payments:8080)")
        text = value.strip()
        scheme, sep, _ = text.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in _DEFAULT_PORTS:
            raise ValueError(
                f"{value!r} is not an endpoint URL: it must start with http:// or https://"
            )
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid endpoint: {exc}") from None
        if "@" in parts.netloc:
            raise ValueError(f"{value!r}: credentials in endpoint URLs are not supported")
        if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith("?"):
            raise ValueError(
                f"{value!r}: an endpoint is scheme://host[:port] only, without a path or query"
            )
        if not parts.netloc:
            raise ValueError(f"{value!r} has no host (use e.g. http://payments:8080)")
        try:
            host, port = split_host_port(parts.netloc)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid endpoint: {exc}") from None
        if port == 0:
            raise ValueError(f"{value!r}: port 0 is not a valid endpoint port")
        default_port = _DEFAULT_PORTS[scheme]
        port = default_port if port is None else port
        shown = host_for_authority(host)
        url = f"{scheme}://{shown}" if port == default_port else f"{scheme}://{shown}:{port}"
        return cls(url, "https" if scheme == "https" else "http", host, port)

    @property
    def authority(self) -> str:
        """`host:port`, always with the port (IPv6 in brackets)."""
        return f"{host_for_authority(self.host)}:{self.port}"

    @property
    def tls(self) -> bool:
        """The sidecar speaks TLS to this endpoint."""
        return self.scheme == "https"

    def __str__(self) -> str:
        return self.url

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.to_string_ser_schema()
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "examples": ["http://payments.default.svc:8080", "https://api.example.com"],
        }


def parse_host_entry(value: str) -> str:
    """Normalize one `hosts:` entry: `host` or `host:port`, lowercased, IPv6 bracketed."""
    try:
        host, port = split_host_port(value.strip())
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a host or host:port: {exc}") from None
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot appear in a request authority")
    shown = host_for_authority(host)
    return shown if port is None else f"{shown}:{port}"
