"""Reload when the config file changes on disk, including a ConfigMap's symlink swap.

Kubernetes updates a mounted ConfigMap by writing a new `..<timestamp>` folder and
atomically re-pointing the `..data` symlink; the file itself (a symlink into `..data`) never
changes inode, so watching the file would miss it. The folder is watched instead (with
watchfiles, not recursively), and only changes to the config file's own name or to the
ConfigMap's `..`-prefixed entries ask for a reload, so other files written in the same folder
(a log, an editor's swap file) never trigger one; the reload itself ignores a file whose
content did not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import watchfiles


class ConfigWatcher:
    """Runs `reload` after changes in the config file's folder settle (debounced)."""

    __slots__ = ("_folder", "_name", "_reload", "_stop", "_task")

    def __init__(self, path: Path, reload: Callable[[], Awaitable[object]]) -> None:
        self._folder = path.parent
        self._name = path.name
        self._reload = reload
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # A change made between the start's load and the watches being set up would go unseen
        # until the next one. awatch sets its watches up in its first step, before it first
        # waits, so a reload scheduled now runs once they exist (an unchanged file is a no-op).
        catch_up = asyncio.ensure_future(self._reload())
        async for _ in watchfiles.awatch(
            self._folder,
            stop_event=self._stop,
            debounce=200,
            step=50,
            recursive=False,
            watch_filter=self._concerns_config,
        ):
            await self._reload()
        await catch_up

    def _concerns_config(self, change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        return name == self._name or name.startswith("..")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(2.0):
                    await self._task
            except TimeoutError:
                self._task.cancel()
            self._task = None

    def __repr__(self) -> str:
        return f"ConfigWatcher({self._folder})"
