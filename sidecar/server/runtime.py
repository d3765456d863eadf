"""The daemon's lifecycle as one readable sequence: build → bind → serve → drain → exit.

Signals are wired here and nowhere else. Binding happens before anything is served, so a
port in use fails the start with exit code 1 and the port named. Shutdown follows SPEC §6:
readiness off at once, keep serving for `drain_delay`, stop accepting, let in-flight
requests finish within `drain_timeout`, exit 0; a second signal cuts the drain short.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sidecar import __version__
from sidecar.clock import LoopClock
from sidecar.config import SidecarConfig
from sidecar.errors import StartupError
from sidecar.events import (
    ListenersClosed,
    Observers,
    ServerStarted,
    ShutdownFinished,
    ShutdownStarted,
)
from sidecar.observe.logs import AccessLog, EventLog
from sidecar.observe.metrics import SidecarMetrics
from sidecar.observe.stats import RequestStats
from sidecar.observe.writer import LineWriter
from sidecar.pipeline.route import Router
from sidecar.pipeline.stages import build_stages
from sidecar.server.admin import AdminState, build_admin_app, read_admin_token
from sidecar.server.control import Control
from sidecar.server.downstream import DownstreamProtocol
from sidecar.server.listener import ConnectionLimiter, Listener, ListenerSet
from sidecar.server.proxy import ProxyServer
from sidecar.server.readiness import Readiness
from sidecar.server.reload import Reloader, ReloadOutcome
from sidecar.server.watch import ConfigWatcher
from sidecar.upstream.loopguard import LoopGuard
from sidecar.upstream.transport import HttpTransport


@dataclass
class Runtime:
    """One running sidecar: its listeners, admin API, observers and shutdown sequence."""

    config: SidecarConfig
    source: str
    log_level: str = "info"
    log_format: str = "json"
    stream: Any = field(default_factory=lambda: sys.stdout.buffer)
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    readiness: Readiness = field(default_factory=Readiness)
    admin_address: tuple[str, int] = ("", 0)
    server: ProxyServer | None = None
    reloader: Reloader | None = None
    _listeners: ListenerSet | None = None
    _watcher: ConfigWatcher | None = None
    _access_log: AccessLog | None = None
    _admin_runner: web.AppRunner | None = None
    _writer: LineWriter | None = None
    _event_log: EventLog | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _signals: int = 0
    _stop_signal: str = "SIGTERM"
    _forced: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything, bind every socket, then start serving; raises `StartupError`."""
        loop = asyncio.get_running_loop()
        config = self.config
        token = read_admin_token(config.admin.token_file)  # a bad token file fails the start
        clock = LoopClock(loop)
        self._writer = LineWriter(self.stream)
        self._writer.start_periodic_flush(loop)
        metrics = SidecarMetrics(self.registry, __version__)
        self._event_log = EventLog(self._writer, self.log_level, self.log_format)
        observers = Observers([metrics, self._event_log])
        stats = RequestStats(clock)
        observers.add(stats)
        self._access_log = AccessLog(self._writer, config.access_log.include_query, self.log_format)
        if config.access_log.enabled:
            observers.add(self._access_log)
        loop_guard = LoopGuard()
        transport = HttpTransport(loop)
        rng = random.Random()

        def stages(upstream: Any, route: Any) -> Any:
            return build_stages(upstream, route, transport, clock, observers, rng)

        router = Router(config, loop, loop_guard, stages, rng, clock, observers)
        server = ProxyServer(config, router, loop, clock, observers, loop_guard)
        self.server = server
        metrics.set_inflight_source(
            lambda: {u.name: u.inflight for u in server.router.all_upstreams()}
        )
        metrics.set_breaker_source(
            lambda: [state for u in server.router.all_upstreams() for state in u.breakers()]
        )
        metrics.set_cache_source(
            lambda: {
                u.name: usage
                for u in server.router.all_upstreams()
                if (usage := u.cache_usage()) is not None
            }
        )
        metrics.set_health_source(
            lambda: [
                (u.name, pool.label, u.health.is_healthy(pool.label))
                for u in server.router.all_upstreams()
                if u.health is not None
                for pool in u.pools
            ]
        )
        metrics.set_ejection_source(
            lambda: [
                (u.name, pool.label, u.outliers.is_ejected(pool.label))
                for u in server.router.all_upstreams()
                for pool in u.pools
            ]
        )
        limiter = ConnectionLimiter(config.limits.max_connections)
        server.limiter = limiter

        def compile_router(new: SidecarConfig, previous: Router) -> Router:
            return Router(new, loop, loop_guard, stages, rng, clock, observers, previous)

        # Bind first: nothing is served until every address is ours.
        self._listeners = ListenerSet(
            loop, limiter, loop_guard, partial(DownstreamProtocol, server)
        )
        self._listeners.update(config.listeners)
        self.reloader = Reloader(
            config.source_path, server, self._listeners, compile_router, observers, self._applied
        )
        control = Control(
            lambda: server.router,
            stats,
            clock,
            observers,
            self.readiness,
            self._info,
            reload=self.reload,
        )
        await self._start_admin(loop_guard, control, token)

        self._listeners.start()
        router.start_health_checks()  # probes run only while the sidecar serves
        if config.source_path is not None:
            self._watcher = ConfigWatcher(config.source_path, self.reloader.reload)
            self._watcher.start()
        self.readiness.mark_ready()
        observers.emit(
            ServerStarted(
                listeners=tuple(
                    (listener.name, _format_address(listener.address))
                    for listener in self.listeners
                ),
                admin=_format_address(self.admin_address),
                config_source=self.source,
                version=__version__,
            )
        )

    def _info(self) -> dict[str, Any]:
        generation = self.reloader.generation if self.reloader is not None else 1
        return {"generation": generation, "config_source": self.source}

    async def _start_admin(
        self, loop_guard: LoopGuard, control: Control, token: str | None
    ) -> None:
        config = self.config
        state = AdminState(
            registry=self.registry,
            readiness=self.readiness,
            config_view=lambda: self.config.model_dump(mode="json", exclude_none=False),
            control=control,
            token=token,
        )
        runner = web.AppRunner(build_admin_app(state), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(
            runner, config.admin.bind.host, config.admin.bind.port, reuse_address=True
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._close_listeners()
            raise StartupError(
                f"admin API cannot bind {config.admin.bind}: {exc.strerror or exc}"
            ) from None
        self._admin_runner = runner
        server = site._server  # the bound port matters when the config asks for port 0
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.admin_address = sockets[0].getsockname()[:2]
            loop_guard.add(*self.admin_address)

    def _applied(self, config: SidecarConfig) -> None:
        """A reload took effect: the pieces that read the config outside the request path."""
        observers = self.server.observers if self.server is not None else None
        access_log = self._access_log
        if observers is not None and access_log is not None:
            observers.remove(access_log)
            access_log.include_query = config.access_log.include_query
            if config.access_log.enabled:
                observers.add(access_log)
        if config.admin != self.config.admin and self._event_log is not None:
            self._event_log.log_event(
                "warning", "admin settings changed: they take effect at the next restart"
            )
        self.config = config

    async def reload(self) -> ReloadOutcome:
        """SIGHUP, `POST /reload` and file changes all come here."""
        assert self.reloader is not None
        return await self.reloader.reload()

    # ---- serve and shut down --------------------------------------------------------------------

    def request_shutdown(self, signame: str = "SIGTERM") -> None:
        """First call starts the drain; a second one cuts it short."""
        self._signals += 1
        if self._signals == 1:
            self._stop_signal = signame
            self._stop.set()
        else:
            self._forced.set()

    async def wait_and_drain(self) -> int:
        """Serve until asked to stop, then drain exactly as SPEC §6 says; returns the exit code."""
        await self._stop.wait()
        server = self.server
        assert server is not None
        shutdown = self.config.shutdown
        self.readiness.mark_draining()
        server.observers.emit(
            ShutdownStarted(self._stop_signal, shutdown.drain_delay, shutdown.drain_timeout)
        )
        # 1. Keep serving new requests: the application may still be making calls.
        await self._unless_forced(asyncio.sleep(shutdown.drain_delay))
        # 2. Stop accepting; idle keep-alive connections close, busy ones after their answer.
        server.draining = True
        self._close_listeners()
        server.close_idle_connections()
        server.observers.emit(ListenersClosed(server.connection_count))
        # 3. Let in-flight requests finish, up to drain_timeout.
        if not self._forced.is_set():
            try:
                async with asyncio.timeout(shutdown.drain_timeout):
                    await self._unless_forced(server.wait_connections_closed())
            except TimeoutError:
                pass
        abandoned = server.connection_count
        server.abort_all()
        # 4. Stop the health checks, then close the pools they and the requests used.
        await server.router.stop_health_checks()
        server.router.close()
        server.observers.emit(ShutdownFinished(abandoned=abandoned, forced=self._forced.is_set()))
        await self.close()
        return 0

    async def _unless_forced(self, awaitable: Any) -> None:
        """Wait for `awaitable` unless a second signal arrives first."""
        work = asyncio.ensure_future(awaitable)
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            await asyncio.wait({work, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, forced):
                if not task.done():
                    task.cancel()

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        if self.server is not None:
            await self.server.router.stop_health_checks()  # a no-op after wait_and_drain
        self._close_listeners()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self._writer is not None:
            self._writer.close()

    def _close_listeners(self) -> None:
        if self._listeners is not None:
            self._listeners.stop()

    @property
    def listeners(self) -> list[Listener]:
        return self._listeners.listeners if self._listeners is not None else []

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Bound address per listener name (useful when the config asked for port 0)."""
        return {listener.name: listener.address for listener in self.listeners}


def _format_address(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve(runtime: Runtime) -> int:
    loop = asyncio.get_running_loop()
    try:
        await runtime.start()
    except StartupError as exc:
        sys.stderr.write(f"sidecar: {exc}\n")
        await runtime.close()
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.request_shutdown, signal.Signals(signum).name)
    reloads: set[asyncio.Task[ReloadOutcome]] = set()

    def on_sighup() -> None:
        task = loop.create_task(runtime.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    try:
        return await runtime.wait_and_drain()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


def run_sidecar(
    config: SidecarConfig, source: str, log_level: str = "info", log_format: str = "json"
) -> int:
    """Run the daemon until it is told to stop; the exit code of SPEC §2."""
    runtime = Runtime(config=config, source=source, log_level=log_level, log_format=log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(_serve(runtime))
    return uvloop.run(_serve(runtime))
