"""The demo's script: the phases, the sidecar config, the traffic, and the order of it all.

One process, one event loop: the flaky upstream, the sidecar (`Runtime`, started in-process
on ephemeral loopback ports with its log lines kept in memory) and a client sending steady
traffic through it. This module decides what happens when and starts and stops everything
it starts; what the user sees is `sidecar.demo.view`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from sidecar.clock import Clock, LoopClock
from sidecar.config import format_duration, load_config_text
from sidecar.demo.tally import DemoTally, Transition
from sidecar.demo.upstream import FlakyUpstream, UpstreamMode
from sidecar.server.runtime import Runtime

UPSTREAM = "catalog"
LISTENER = "app"
REQUESTS_PER_SECOND = 20
PER_TRY = 0.3  # seconds; the slow phase answers after SLOW_DELAY, so every attempt times out
SLOW_DELAY = 1.2
TICK = 0.125  # seconds between two renders of the live view
CLIENT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the demo during which the upstream behaves one way."""

    name: str
    mode: UpstreamMode
    start: float  # seconds since the demo started
    end: float
    story: str  # one sentence for the user: what the upstream does, what to expect


# (name, mode, share of the duration, story)
_SCRIPT = (
    (
        "healthy",
        UpstreamMode.HEALTHY,
        0.25,
        "The upstream answers at once; the sidecar keeps a copy of each answer as a fallback.",
    ),
    (
        "failing",
        UpstreamMode.FAILING,
        0.30,
        "The upstream answers 503 to everything: retries fail, the breaker opens, "
        "and the app gets the stored answers instead.",
    ),
    (
        "slow",
        UpstreamMode.SLOW,
        0.20,
        f"The upstream takes {SLOW_DELAY:g}s per answer, longer than per_try "
        f"({format_duration(PER_TRY)}): the breaker's trial calls time out and it stays open.",
    ),
    (
        "recovered",
        UpstreamMode.HEALTHY,
        0.25,
        "The upstream is healthy again: after the open period the trial calls succeed "
        "and the breaker closes.",
    ),
)


def timeline(duration: float) -> list[Phase]:
    """The phases of a demo lasting `duration` seconds, back to back."""
    phases: list[Phase] = []
    start = 0.0
    for name, mode, share, story in _SCRIPT:
        end = start + share * duration
        phases.append(Phase(name, mode, start, end, story))
        start = end
    return phases


def open_duration(duration: float) -> float:
    """The breaker's first open period: a tenth of the demo, in whole tens of milliseconds.

    Re-opens double it once (`max_open_duration` is twice this), so the longest open period
    is a fifth of the demo, shorter than the recovered phase: the breaker closes in time.
    """
    return min(max(math.floor(duration * 10) / 100, 0.4), 5.0)


def demo_config(upstream_url: str, duration: float) -> str:
    """The sidecar config the demo runs, as the YAML a user would write."""
    opened = open_duration(duration)
    return f"""\
version: 1
admin:
  bind: 127.0.0.1:0              # any free port
listeners:
  - name: {LISTENER}
    bind: 127.0.0.1:0            # the app's base URL points here
    upstream: {UPSTREAM}
access_log:
  enabled: false                 # the live view shows the requests instead
shutdown:
  drain_delay: 0s
  drain_timeout: 1s
upstreams:
  {UPSTREAM}:
    endpoints: [{upstream_url}]
    timeouts: {{connect: 250ms, per_try: {format_duration(PER_TRY)}, total: 1s}}
    retries:
      max_attempts: 2            # one retry for 502/503/504, resets and timeouts
      backoff: {{initial: 25ms, max: 100ms}}
    circuit_breaker:
      window: 10s
      minimum_calls: 10
      failure_rate: 50%
      consecutive_failures: 5
      open_duration: {format_duration(opened)}
      max_open_duration: {format_duration(2 * opened)}
      half_open_calls: 3
    fallback:
      cache:
        max_stale: 5m            # serve the last good answer up to 5 minutes old
      static:                    # for requests never seen before (no stored answer)
        status: 200
        headers: {{content-type: application/json}}
        body: '{{"results": [], "degraded": true}}'
"""


@dataclass(frozen=True, slots=True)
class DemoUrls:
    """Where the demo's servers listen (all on 127.0.0.1, ports chosen by the kernel)."""

    upstream: str
    sidecar: str  # the dedicated listener the demo's client sends to
    admin: str


class DemoView(Protocol):
    """What the scenario tells the user; `sidecar.demo.view` has a live and a plain one."""

    def begin(self, config_yaml: str, urls: DemoUrls, tally: DemoTally) -> None: ...

    def phase_started(self, phase: Phase) -> None: ...

    def transition(self, transition: Transition) -> None: ...

    def tick(self) -> None: ...

    def end(self, report: DemoReport) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What the summary shows once traffic has stopped."""

    duration: float  # seconds the traffic ran
    tally: DemoTally
    received: dict[str, int]  # requests the upstream received, by phase name
    recovered: bool  # the breaker was closed when the demo ended


class Traffic:
    """A steady client: one GET every 1/rate seconds, whatever the answers take (open loop)."""

    __slots__ = ("_clock", "_rate", "_sent", "_tally", "_tasks", "_url")

    def __init__(self, url: str, tally: DemoTally, clock: Clock, rate: int) -> None:
        self._url = url
        self._tally = tally
        self._clock = clock
        self._rate = rate
        self._sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def path(self, index: int) -> str:
        """Product pages repeat (the cache learns them); every fifth request is a new search."""
        if index % 5 == 4:
            return f"/search?q=term-{index}"
        return f"/products/{index % 8 + 1}"

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Send until cancelled; in-flight requests are left for `finish`."""
        interval = 1 / self._rate
        next_at = self._clock.now()
        while True:
            task = asyncio.create_task(self._one(session, self.path(self._sent)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._sent += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - self._clock.now()))

    async def finish(self, within: float) -> None:
        """Let requests still in flight end, then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=within)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _one(self, session: aiohttp.ClientSession, path: str) -> None:
        started = self._clock.now()
        try:
            async with session.get(self._url + path) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self._tally.record_client_error()
            return
        self._tally.record_answer(self._clock.now() - started)


async def run_scenario(duration: float, view: DemoView) -> DemoReport:
    """Run the whole demo; everything started here is stopped before it returns."""
    clock = LoopClock()
    phases = timeline(duration)
    tally = DemoTally(clock, UPSTREAM)
    tally.on_transition(view.transition)
    upstream = FlakyUpstream(SLOW_DELAY)
    await upstream.start()
    try:
        # 1. The sidecar, in-process, on ephemeral ports; its log lines stay in memory.
        config_yaml = demo_config(upstream.url, duration)
        config = load_config_text(config_yaml, source="<sidecar demo>")
        runtime = Runtime(
            config=config, source="<sidecar demo>", stream=io.BytesIO(), log_level="warning"
        )
        try:
            await runtime.start()
        except BaseException:
            await runtime.close()
            raise
        try:
            assert runtime.server is not None
            runtime.server.observers.add(tally)
            urls = DemoUrls(
                upstream=upstream.url,
                sidecar=_url(runtime.addresses[LISTENER]),
                admin=_url(runtime.admin_address),
            )
            view.begin(config_yaml, urls, tally)
            # 2. Traffic and the phases, side by side.
            ran = await _drive(phases, upstream, tally, view, clock, urls.sidecar, duration)
        finally:
            # 3. Stop the sidecar: no drain delay, in-flight requests already finished.
            runtime.request_shutdown()
            await runtime.wait_and_drain()
    finally:
        await upstream.close()
    return DemoReport(
        duration=ran,
        tally=tally,
        received=dict(upstream.received),
        recovered=tally.circuit == "closed",
    )


def _url(address: tuple[str, int]) -> str:
    return f"http://{address[0]}:{address[1]}"


async def _drive(
    phases: list[Phase],
    upstream: FlakyUpstream,
    tally: DemoTally,
    view: DemoView,
    clock: Clock,
    sidecar_url: str,
    duration: float,
) -> float:
    """Send traffic through the phases; returns how long the traffic ran."""
    traffic = Traffic(sidecar_url, tally, clock, REQUESTS_PER_SECOND)
    closed = asyncio.Event()  # set while the breaker is closed, from the first transition on
    tally.on_transition(lambda t: closed.set() if t.to_state == "closed" else closed.clear())
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False
    ) as session:
        sender = asyncio.create_task(traffic.run(session))
        ticker = asyncio.create_task(_tick(view))
        started = clock.now()
        tally.restart()
        try:
            for phase in phases:
                upstream.switch(phase.mode, phase.name)
                tally.phase = phase.name
                view.phase_started(phase)
                await asyncio.sleep(max(0.0, started + phase.end - clock.now()))
            # The last open period may still be running when the script ends: keep the
            # traffic going until the breaker has closed, but never longer than two of them.
            if tally.circuit != "closed":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2 * 2 * open_duration(duration)):
                        await closed.wait()
        finally:
            sender.cancel()
            ticker.cancel()
            await asyncio.gather(sender, ticker, return_exceptions=True)
            await traffic.finish(within=2.0)
    return clock.now() - started


async def _tick(view: DemoView) -> None:
    while True:
        view.tick()
        await asyncio.sleep(TICK)
