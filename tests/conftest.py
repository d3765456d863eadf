"""Fixtures shared by every test tier. Keep this small: fakes live in `tests.fakes` and
`tests.upstreams`; fixtures that only one folder needs go in that folder's conftest.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, settings

from tests.fakes import FakeClock, RecordingObserver
from tests.upstreams import HttpUpstream

# CI machines are small and shared: no per-example deadline, no example database on disk.
settings.register_profile(
    "ci",
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at t=1000 s that moves only when told to."""
    return FakeClock()


@pytest.fixture
def observer() -> RecordingObserver:
    """An observer that records every emitted event."""
    return RecordingObserver()


@pytest.fixture
async def upstream() -> AsyncIterator[HttpUpstream]:
    """A started `HttpUpstream` on 127.0.0.1, closed after the test."""
    async with HttpUpstream("upstream") as server:
        yield server
