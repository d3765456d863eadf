"""Listening sockets with an accept loop the sidecar controls.

Owning `accept()` (instead of `loop.create_server`) is what makes `limits.max_connections`
real: at the limit the sidecar stops accepting and new connections wait in the kernel
backlog, and draining can stop accepting without closing established connections.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from functools import partial

from sidecar.config import BindAddress, ListenerConfig
from sidecar.errors import StartupError
from sidecar.server.proxy import ListenerState
from sidecar.upstream.loopguard import LoopGuard

# accept() calls per readiness wake-up, so one busy listener cannot starve the loop.
_ACCEPT_BATCH = 64
BACKLOG = 1024


class ConnectionLimiter:
    """A global cap on downstream connections, shared by every listener."""

    __slots__ = ("_paused", "count", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._paused: list[Listener] = []

    def has_room(self) -> bool:
        return self.count < self.limit

    def opened(self) -> None:
        self.count += 1

    def closed(self) -> None:
        self.count -= 1
        if self._paused and self.count < self.limit:
            paused, self._paused = self._paused, []
            for listener in paused:
                listener.resume()

    def wait_for_room(self, listener: Listener) -> None:
        if listener not in self._paused:
            self._paused.append(listener)

    def __repr__(self) -> str:
        return f"ConnectionLimiter({self.count}/{self.limit})"


class Listener:
    """One bound socket; `start()` begins accepting, `stop()` stops and closes it."""

    __slots__ = (
        "_accepting",
        "_factory",
        "_limiter",
        "_loop",
        "_serving",
        "_sock",
        "address",
        "name",
    )

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.Protocol],
        limiter: ConnectionLimiter,
    ) -> None:
        self.name = name
        self._loop = loop
        self._factory = factory
        self._limiter = limiter
        self._serving: set[asyncio.Task[None]] = set()  # accepted sockets being connected
        self._sock: socket.socket | None = None
        self._accepting = False
        self.address: tuple[str, int] = ("", 0)

    def bind(self, bind: BindAddress) -> None:
        """Bind now, so a port in use fails the start before anything is served."""
        family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind.host, bind.port))
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.address = (host, port)

    def start(self) -> None:
        assert self._sock is not None
        self._accepting = True
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def pause(self) -> None:
        if self._accepting and self._sock is not None:
            self._accepting = False
            self._loop.remove_reader(self._sock.fileno())

    def resume(self) -> None:
        if not self._accepting and self._sock is not None:
            self.start()

    def stop(self) -> None:
        """Stop accepting and close the listening socket; established connections stay."""
        self.pause()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _on_readable(self) -> None:
        sock = self._sock
        limiter = self._limiter
        for _ in range(_ACCEPT_BATCH):
            if sock is None:
                return
            if not limiter.has_room():
                self.pause()
                limiter.wait_for_room(self)
                return
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE, ECONNABORTED: try again on the next wake-up
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            limiter.opened()
            task = self._loop.create_task(self._serve(conn))
            # The loop keeps only a weak reference to a task: hold it until it is done.
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()
            self._limiter.closed()

    def __repr__(self) -> str:
        return f"Listener({self.name!r}, {self.address[0]}:{self.address[1]}, accepting={self._accepting})"


class _Slot:
    """A bound listener and the state its new connections get (swapped by a reload)."""

    __slots__ = ("listener", "state")

    listener: Listener

    def __init__(self, state: ListenerState) -> None:
        self.state = state


class ListenerSet:
    """The listeners of the running config, keyed by bind address.

    A reload keeps the socket of every address that stays (only its name and upstream change,
    for new connections), binds the new ones first and stops the removed ones last, so the
    others' connections are never touched and a failed bind changes nothing.
    """

    __slots__ = ("_factory", "_limiter", "_loop", "_loop_guard", "_slots", "_started")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limiter: ConnectionLimiter,
        loop_guard: LoopGuard,
        factory: Callable[[ListenerState], asyncio.Protocol],
    ) -> None:
        self._loop = loop
        self._limiter = limiter
        self._loop_guard = loop_guard
        self._factory = factory
        self._slots: dict[tuple[str, str, int], _Slot] = {}
        self._started = False

    def update(self, configs: Sequence[ListenerConfig]) -> None:
        """Make the bound listeners match `configs`; raises `StartupError` naming the address."""
        wanted = {_key(config): config for config in configs}
        fresh: list[tuple[tuple[str, str, int], ListenerConfig, _Slot]] = []
        for key, config in wanted.items():
            if key in self._slots:
                continue
            slot = _Slot(_state(config))
            slot.listener = Listener(
                config.name, self._loop, partial(self._new_protocol, slot), self._limiter
            )
            try:
                slot.listener.bind(config.bind)
            except OSError as exc:
                for _, _, bound in fresh:
                    bound.listener.stop()
                raise StartupError(
                    f"listener {config.name!r} cannot bind {config.bind}: {exc.strerror or exc}"
                ) from None
            fresh.append((key, config, slot))
        for key in [key for key in self._slots if key not in wanted]:
            slot = self._slots.pop(key)
            self._loop_guard.discard(*slot.listener.address)
            slot.listener.stop()
        for key, config in wanted.items():
            if key in self._slots:
                kept = self._slots[key]
                kept.state.name = config.name  # in place: its open connections see it too
                kept.state.upstream = config.upstream
                kept.listener.name = config.name
        for key, _, slot in fresh:
            self._slots[key] = slot
            self._loop_guard.add(*slot.listener.address)
            if self._started:
                slot.listener.start()

    def _new_protocol(self, slot: _Slot) -> asyncio.Protocol:
        return self._factory(slot.state)

    def start(self) -> None:
        self._started = True
        for slot in self._slots.values():
            slot.listener.start()

    def stop(self) -> None:
        for slot in self._slots.values():
            slot.listener.stop()

    @property
    def listeners(self) -> list[Listener]:
        return [slot.listener for slot in self._slots.values()]

    def __repr__(self) -> str:
        return f"ListenerSet({[slot.listener for slot in self._slots.values()]})"


def _key(config: ListenerConfig) -> tuple[str, str, int]:
    """Identity across reloads: the address, or the name for an ephemeral port (tests)."""
    bind = config.bind
    return (bind.host, "", bind.port) if bind.port else (bind.host, config.name, 0)


def _state(config: ListenerConfig) -> ListenerState:
    return ListenerState(config.name, config.upstream)
