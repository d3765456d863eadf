"""Whether the sidecar should receive traffic: the one flag behind `GET /readyz` (SPEC §5, §6).

The runtime flips it (ready once the config is loaded and every listener is bound, draining at
the first SIGTERM); the admin API only reads it. It holds no I/O and no timers.
"""

from __future__ import annotations

from enum import StrEnum


class ReadinessState(StrEnum):
    """The phases `/readyz` reports; draining is final for the life of the process."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"


class Readiness:
    """Starting → ready → draining; a probe sees 200 only while ready."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = ReadinessState.STARTING

    @property
    def state(self) -> ReadinessState:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is ReadinessState.READY

    def mark_ready(self) -> None:
        """Listeners are bound; ignored once draining, so a late call cannot undo a SIGTERM."""
        if self._state is ReadinessState.STARTING:
            self._state = ReadinessState.READY

    def mark_draining(self) -> None:
        """Shutdown began: probes fail at once so the orchestrator stops sending new traffic."""
        self._state = ReadinessState.DRAINING

    def __repr__(self) -> str:
        return f"Readiness({self._state})"
