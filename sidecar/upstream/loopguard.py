"""Loop protection: the sidecar never forwards to its own listeners or admin port (SPEC §9).

Checked on the peer address of every new upstream connection, so a host name that happens to
resolve to the sidecar is caught as surely as `127.0.0.1:15001` written in a config.
"""

from __future__ import annotations

import ipaddress
from typing import Any


class LoopGuard:
    """The set of addresses the sidecar itself listens on, filled in as listeners bind."""

    __slots__ = ("_exact", "_ports_any_ip")

    def __init__(self) -> None:
        self._exact: set[tuple[str, int]] = set()
        self._ports_any_ip: set[int] = set()

    def add(self, host: str, port: int) -> None:
        """Record a bound address; wildcard and loopback binds cover every local address."""
        ip = _parse(host)
        if ip is None or ip.is_unspecified or ip.is_loopback:
            self._ports_any_ip.add(port)
        else:
            self._exact.add((str(ip), port))

    def discard(self, host: str, port: int) -> None:
        ip = _parse(host)
        if ip is None or ip.is_unspecified or ip.is_loopback:
            self._ports_any_ip.discard(port)
        else:
            self._exact.discard((str(ip), port))

    def is_own_address(self, peername: Any) -> bool:
        """True when a connected socket's peer is one of our own listening sockets."""
        if not isinstance(peername, tuple) or len(peername) < 2:
            return False
        host, port = str(peername[0]), int(peername[1])
        if (host, port) in self._exact:
            return True
        if port not in self._ports_any_ip:
            return False
        ip = _parse(host)
        return ip is not None and (ip.is_loopback or ip.is_unspecified or _is_local(ip))

    def is_own_authority(self, authority: str) -> bool:
        """Before connecting: `host:port` names one of our sockets by address or `localhost`."""
        host, _, port_text = authority.rpartition(":")
        if not port_text.isdigit():
            return False
        port = int(port_text)
        host = host.strip("[]")
        if host == "localhost":
            return port in self._ports_any_ip
        return self.is_own_address((host, port))

    def __repr__(self) -> str:
        return f"LoopGuard(ports={sorted(self._ports_any_ip)}, exact={sorted(self._exact)})"


def _parse(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A peer on a port we hold with a wildcard bind: only loopback is certainly us."""
    return ip.is_loopback
