"""Active health checks (SPEC §3.2 `health_check`): a GET to every endpoint each `interval`.

`HealthChecker` is the pure state machine, with Envoy's semantics: an endpoint starts healthy;
`unhealthy` failed checks in a row mark it unhealthy, `healthy` passed checks in a row mark it
healthy again. A check passes on a 2xx answer within `timeout`; anything else (another status,
a refused or reset connection, no answer in time) fails it. It does no I/O and returns the
changes; the caller emits the events.

`HealthProbe` sends the checks of one upstream: one task per endpoint, its first check at a
random point of the first interval (so many upstreams do not fire together), then `interval`
after each check ends, so at most one check per endpoint is ever in flight and a slow
endpoint never makes checks pile up. Each check is a fresh connection from a pool of its own
(never the traffic's connections), with `Connection: close`. It must not pick endpoints:
`Upstream.pick` reads the checker.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.clock import Clock
from sidecar.config import HealthCheckPolicy
from sidecar.errors import ProxyError
from sidecar.events import EndpointHealthChanged, Observers
from sidecar.upstream.pool import EndpointPool

USER_AGENT = b"sidecar-health-check"
# How long stopping waits for cancelled checks to unwind (they only await sockets and sleeps).
STOP_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class HealthChange:
    """An endpoint's health flipped; `reason` says which checks decided it."""

    endpoint: str
    healthy: bool
    reason: str


class EndpointStatus:
    """One endpoint's record: its health, its current streaks and the last check's result."""

    __slots__ = ("failures", "healthy", "last", "passes", "since")

    def __init__(self, since: float) -> None:
        self.healthy = True
        self.passes = 0  # passed checks in a row while unhealthy
        self.failures = 0  # failed checks in a row while healthy
        self.since = since  # clock time of the last change (or of the start)
        self.last = ""  # what the last check saw, e.g. "status 503"

    def __repr__(self) -> str:
        return (
            f"EndpointStatus(healthy={self.healthy}, passes={self.passes}, "
            f"failures={self.failures}, last={self.last!r})"
        )


class HealthChecker:
    """Health decisions for the endpoints of one upstream."""

    __slots__ = ("_clock", "_policy", "_status", "_unhealthy")

    def __init__(self, policy: HealthCheckPolicy, clock: Clock, endpoints: Sequence[str]) -> None:
        self._policy = policy
        self._clock = clock
        now = clock.now()
        self._status = {endpoint: EndpointStatus(now) for endpoint in endpoints}
        self._unhealthy = 0

    def is_healthy(self, endpoint: str) -> bool:
        """Whether the checks keep `endpoint` in rotation (an unknown endpoint is healthy)."""
        status = self._status.get(endpoint)
        return status is None or status.healthy

    def unhealthy(self) -> list[str]:
        """Endpoints the checks have taken out of rotation."""
        return [endpoint for endpoint, status in self._status.items() if not status.healthy]

    @property
    def all_unhealthy(self) -> bool:
        """Every endpoint failed its checks: `pick` then ignores health (panic mode)."""
        return self._unhealthy > 0 and self._unhealthy == len(self._status)

    def status(self, endpoint: str) -> EndpointStatus | None:
        return self._status.get(endpoint)

    def record(self, endpoint: str, passed: bool, detail: str = "") -> HealthChange | None:
        """One check's result for `endpoint`; returns the change it causes, if any."""
        status = self._status.get(endpoint)
        if status is None:
            return None
        status.last = detail
        seen = f" (last: {detail})" if detail else ""
        if passed:
            status.failures = 0
            if status.healthy:
                return None
            status.passes += 1
            if status.passes < self._policy.healthy:
                return None
            status.healthy, status.passes = True, 0
            self._unhealthy -= 1
            status.since = self._clock.now()
            return HealthChange(endpoint, True, f"{self._policy.healthy} checks passed{seen}")
        status.passes = 0
        if not status.healthy:
            return None
        status.failures += 1
        if status.failures < self._policy.unhealthy:
            return None
        status.healthy, status.failures = False, 0
        self._unhealthy += 1
        status.since = self._clock.now()
        return HealthChange(endpoint, False, f"{self._policy.unhealthy} checks failed{seen}")

    def __repr__(self) -> str:
        return f"HealthChecker(endpoints={len(self._status)}, unhealthy={self.unhealthy()})"


class HealthProbe:
    """Sends one upstream's checks while the sidecar runs and feeds them to its checker.

    `start()` once, when the sidecar serves; `cancel()` (sync) or `stop()` (awaits the tasks,
    bounded by `STOP_TIMEOUT`) ends it for good. A reload that keeps the upstream's endpoints
    and `health_check` hands the running probe to the new upstream instead.
    """

    __slots__ = (
        "_checker",
        "_clock",
        "_heads",
        "_observers",
        "_policy",
        "_pools",
        "_rng",
        "_stopped",
        "_tasks",
        "_upstream",
    )

    def __init__(
        self,
        upstream: str,
        policy: HealthCheckPolicy,
        checker: HealthChecker,
        pools: Sequence[EndpointPool],
        clock: Clock,
        rng: random.Random,
        observers: Observers,
    ) -> None:
        self._upstream = upstream
        self._policy = policy
        self._checker = checker
        self._pools = tuple(pools)  # the probe's own pools, not the traffic's
        self._clock = clock
        self._rng = rng
        self._observers = observers
        self._heads = {pool.label: _request_head(policy.path, pool) for pool in self._pools}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    @property
    def pools(self) -> tuple[EndpointPool, ...]:
        """The probe's own pools (a reload that keeps the probe sets their idle timeout)."""
        return self._pools

    @property
    def running(self) -> bool:
        """Checks are being sent: started and not stopped."""
        return bool(self._tasks) and not self._stopped

    @property
    def stopped(self) -> bool:
        """`cancel()` or `stop()` was called: this probe never checks again."""
        return self._stopped

    def start(self) -> None:
        """Start checking every endpoint; needs a running loop. Idempotent; not after a stop."""
        if self._tasks or self._stopped:
            return
        loop = asyncio.get_running_loop()
        for pool in self._pools:
            task = loop.create_task(
                self._watch(pool), name=f"health-check {self._upstream} {pool.label}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Stop checking; the tasks end at their next await, their connections are closed."""
        self._stopped = True
        for task in self._tasks:
            task.cancel()

    async def stop(self) -> None:
        """`cancel()`, then wait (at most `STOP_TIMEOUT`) until no check task is left."""
        self.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT)

    async def _watch(self, pool: EndpointPool) -> None:
        interval = self._policy.interval
        # Spread the first checks over one interval: a start or reload with many upstreams
        # must not send all of their checks in the same instant.
        await self._clock.sleep(self._rng.uniform(0.0, interval))
        while True:
            passed, detail = await self.check(pool)
            change = self._checker.record(pool.label, passed, detail)
            if change is not None:
                self._observers.emit(
                    EndpointHealthChanged(self._upstream, pool.label, change.healthy, change.reason)
                )
            # From the end of a check, as in Envoy: never more than one check per endpoint.
            await self._clock.sleep(interval)

    async def check(self, pool: EndpointPool) -> tuple[bool, str]:
        """One `GET path` on a fresh connection: (passed, what was seen)."""
        timeout = self._policy.timeout
        conn = None
        answered = False
        try:
            async with asyncio.timeout(timeout):
                conn, _ = await pool.acquire(timeout)
                head = conn.start(
                    self._heads[pool.label], head_only=False, chunked=False, idle_timeout=0.0
                )
                conn.end_body()
                await head
            answered = True
        except ProxyError as exc:  # refused, TLS failure, loop, reset, malformed answer
            return False, exc.detail
        except TimeoutError:
            return False, f"no answer within {timeout:g}s"
        except OSError as exc:  # a socket error after connecting; the probe must go on
            return False, exc.strerror or type(exc).__name__
        finally:
            # The body is not needed: the connection was for this one check either way.
            if conn is not None and answered:
                conn.close()
            elif conn is not None:
                conn.abort()
        assert conn is not None
        status = conn.status
        return 200 <= status < 300, f"status {status}"

    def __repr__(self) -> str:
        return (
            f"HealthProbe({self._upstream!r}, endpoints={len(self._pools)}, running={self.running})"
        )


def _request_head(path: str, pool: EndpointPool) -> bytes:
    return b"".join(
        (
            b"GET ",
            path.encode(),
            b" HTTP/1.1\r\nhost: ",
            pool.host_header,
            b"\r\nuser-agent: ",
            USER_AGENT,
            b"\r\nconnection: close\r\n\r\n",
        )
    )
