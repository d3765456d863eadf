"""Request ids: UUID-shaped, unique per process start, and cheap enough for every request."""

from __future__ import annotations

import secrets


class RequestIds:
    """A random per-process prefix plus a counter, formatted like a UUID (8-4-4-4-12 hex)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        random_hex = secrets.token_hex(10)
        self._prefix = (
            f"{random_hex[:8]}-{random_hex[8:12]}-4{random_hex[12:15]}-{random_hex[15:19]}-"
        )
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter & 0xFFFFFFFFFFFF:012x}"

    def __repr__(self) -> str:
        return f"RequestIds(issued={self._counter})"
