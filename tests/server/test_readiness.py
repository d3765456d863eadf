"""Tests for sidecar.server.readiness: the starting → ready → draining flag."""

from __future__ import annotations

from sidecar.server.readiness import Readiness, ReadinessState


def test_readiness_starts_not_ready() -> None:
    """A new sidecar is starting and not ready, so probes fail until listeners are bound."""
    readiness = Readiness()
    assert readiness.state is ReadinessState.STARTING
    assert not readiness.ready


def test_readiness_mark_ready_then_draining() -> None:
    """mark_ready makes it ready and mark_draining takes readiness away again."""
    readiness = Readiness()
    readiness.mark_ready()
    assert readiness.ready
    readiness.mark_draining()
    assert readiness.state is ReadinessState.DRAINING
    assert not readiness.ready


def test_readiness_draining_is_final() -> None:
    """A late mark_ready after a SIGTERM cannot make a draining sidecar ready again."""
    readiness = Readiness()
    readiness.mark_draining()
    readiness.mark_ready()
    assert readiness.state is ReadinessState.DRAINING
    assert repr(readiness) == "Readiness(draining)"
