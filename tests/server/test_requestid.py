"""Request ids are UUID-shaped and unique within a process."""

from __future__ import annotations

import re

from sidecar.server.requestid import RequestIds


def test_requestid_is_uuid_shaped_and_unique() -> None:
    """Ids look like UUIDs and never repeat."""
    ids = RequestIds()
    issued = [ids.next() for _ in range(1000)]
    assert len(set(issued)) == 1000
    assert all(
        re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", i)
        for i in issued
    )


def test_requestid_prefix_differs_between_generators() -> None:
    """Two processes (generators) do not issue the same ids."""
    assert RequestIds().next() != RequestIds().next()
