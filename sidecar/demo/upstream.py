"""The demo's deliberately flaky upstream: a tiny catalog API whose behaviour follows a mode.

An aiohttp application on 127.0.0.1 and an ephemeral port. The scenario calls `switch`; the
upstream only obeys the mode and counts what it received under each label, so the demo can
say how many requests the breaker kept away from it. It knows nothing about the sidecar.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import StrEnum

from aiohttp import web

HOST = "127.0.0.1"


class UpstreamMode(StrEnum):
    """How the upstream answers right now."""

    HEALTHY = "healthy"  # 200 at once
    FAILING = "failing"  # 503 at once, as an overloaded service does
    SLOW = "slow"  # 200, but only after `slow_delay` seconds


class FlakyUpstream:
    """`/products/{id}` and `/search?q=` answered according to `mode`; counts every request."""

    __slots__ = ("_label", "_port", "_runner", "mode", "received", "slow_delay")

    def __init__(self, slow_delay: float) -> None:
        self.mode = UpstreamMode.HEALTHY
        self.slow_delay = slow_delay
        self.received: Counter[str] = Counter()  # requests received, by the label of `switch`
        self._label = ""
        self._runner: web.AppRunner | None = None
        self._port = 0

    def switch(self, mode: UpstreamMode, label: str) -> None:
        """Answer according to `mode` from now on; count requests under `label`."""
        self.mode = mode
        self._label = label

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._port}"

    async def start(self) -> None:
        # A short shutdown_timeout: handlers still sleeping in slow mode are cancelled at
        # the end instead of holding the demo's exit.
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _app(self) -> web.Application:
        @web.middleware
        async def follow_mode(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            mode = self.mode
            self.received[self._label] += 1
            if mode is UpstreamMode.FAILING:
                return web.json_response({"error": "overloaded"}, status=503)
            if mode is UpstreamMode.SLOW:
                await asyncio.sleep(self.slow_delay)
            return await handler(request)

        app = web.Application(middlewares=[follow_mode])
        app.router.add_get("/products/{id:\\d+}", _product)
        app.router.add_get("/search", _search)
        return app

    def __repr__(self) -> str:
        return (
            f"FlakyUpstream({self.url}, mode={self.mode}, received={sum(self.received.values())})"
        )


async def _product(request: web.Request) -> web.StreamResponse:
    product = int(request.match_info["id"])
    return web.json_response({"id": product, "name": f"product {product}", "price": 10 + product})


async def _search(request: web.Request) -> web.StreamResponse:
    query = request.query.get("q", "")
    return web.json_response({"query": query, "results": [1, 2, 3]})
