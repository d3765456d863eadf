"""Reload (SPEC §6): validate the file first, then swap the running config atomically.

An invalid file changes nothing: the errors are logged and counted and the old config keeps
running. A valid one takes effect for new requests; in-flight requests finish under the
objects they already hold. Upstreams whose endpoints did not change keep their breaker,
fallback store, endpoint health (and running health checks) and connection pools: the router
is compiled against the previous one's state bank, which the reload commits once the new
config is in force, or drops when it is refused. Listeners are added and removed without
touching the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.config import ConfigError, SidecarConfig, load_config
from sidecar.errors import StartupError
from sidecar.events import ConfigReloaded, ConfigReloadFailed, Observers
from sidecar.pipeline.route import Router
from sidecar.server.listener import ListenerSet
from sidecar.server.proxy import ProxyServer


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What a reload did: applied or not, the generation now live, and any errors."""

    applied: bool
    generation: int
    errors: list[str] = field(default_factory=list)
    message: str = ""


class Reloader:
    """Owns the config generation; one reload at a time."""

    __slots__ = (
        "_bodies",
        "_compile",
        "_listeners",
        "_lock",
        "_observers",
        "_on_applied",
        "_server",
        "generation",
        "path",
    )

    def __init__(
        self,
        path: Path | None,
        server: ProxyServer,
        listeners: ListenerSet,
        compile_router: Callable[[SidecarConfig, Router], Router],
        observers: Observers,
        on_applied: Callable[[SidecarConfig], None],
    ) -> None:
        self.path = path
        self._server = server
        self._listeners = listeners
        self._compile = compile_router
        self._observers = observers
        self._on_applied = on_applied
        self._lock = asyncio.Lock()
        self.generation = 1
        self._bodies = body_files(server.config)

    async def reload(self) -> ReloadOutcome:
        """Re-read the config file and apply it if it is valid and different."""
        path = self.path
        if path is None:
            return ReloadOutcome(
                False, self.generation, [], "running on the embedded default: no file to reload"
            )
        async with self._lock:
            source = str(path)
            try:
                config = load_config(path)
            except ConfigError as exc:
                errors = [str(issue) for issue in exc.issues]
                self._observers.emit(ConfigReloadFailed(source, tuple(errors)))
                return ReloadOutcome(
                    False,
                    self.generation,
                    errors,
                    "the file is invalid; the running config is unchanged",
                )
            except OSError as exc:
                errors = [f"{source}: cannot read: {exc.strerror or exc}"]
                self._observers.emit(ConfigReloadFailed(source, tuple(errors)))
                return ReloadOutcome(
                    False,
                    self.generation,
                    errors,
                    "the file cannot be read; the running config is unchanged",
                )
            server = self._server
            if config == server.config and body_files(config) == self._bodies:
                return ReloadOutcome(True, self.generation, [], "unchanged")
            return self._apply(config, source)

    def _apply(self, config: SidecarConfig, source: str) -> ReloadOutcome:
        server = self._server
        old = server.router
        router: Router | None = None
        try:
            router = self._compile(config, old)
            self._listeners.update(config.listeners)
        except StartupError as exc:
            if router is not None:
                router.discard()  # kept state stays under its old policy
            self._observers.emit(ConfigReloadFailed(source, (str(exc),)))
            return ReloadOutcome(
                False, self.generation, [str(exc)], "the new config cannot be applied"
            )
        server.apply(config, router)
        old.retire(router)
        self._bodies = body_files(config)
        if not server.draining:
            router.start_health_checks()  # new or changed ones; kept probes run on
        self._on_applied(config)
        self.generation += 1
        kept = tuple(sorted(u.name for u in router.upstreams.values() if u.carried))
        rebuilt = tuple(sorted(name for name in router.upstreams if name not in kept))
        self._observers.emit(ConfigReloaded(self.generation, source, kept, rebuilt))
        return ReloadOutcome(True, self.generation, [], "applied")

    def __repr__(self) -> str:
        return f"Reloader(path={self.path}, generation={self.generation})"


def body_files(config: SidecarConfig) -> dict[Path, tuple[int, int]]:
    """(mtime, size) of every static `body_file`: an edit to one is a change worth a reload,
    even when the config file itself is unchanged (the body is read when a config applies)."""
    policies = [config.defaults.fallback.static]
    for upstream in config.upstreams.values():
        policies.append(upstream.fallback.static)
        policies.extend(route.fallback.static for route in upstream.routes)
    marks: dict[Path, tuple[int, int]] = {}
    for static in policies:
        if static is not None and static.body_file is not None:
            try:
                stat = static.body_file.stat()
            except OSError:
                marks[static.body_file] = (-1, -1)  # gone: the reload will say so
            else:
                marks[static.body_file] = (stat.st_mtime_ns, stat.st_size)
    return marks
