"""The per-request metrics, counted in plain dicts and exported at scrape time.

`requests_total`, `request_duration_seconds` and `upstream_attempts_total` change on every
request; prometheus_client's metric objects take a lock per increment (several per request).
Here an event costs a dict lookup and a few integer additions on the event loop's thread, and
a scrape turns the tallies into the same metric families with the same names and labels.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from sidecar.outcome import AttemptResult, Outcome

REQUESTS = "sidecar_requests_total"
DURATION = "sidecar_request_duration_seconds"
ATTEMPTS = "sidecar_upstream_attempts_total"

_RequestKey = tuple[str, str, str, int, Outcome]
_DurationKey = tuple[str, Outcome]
_AttemptKey = tuple[str, str, AttemptResult]


class _Histogram:
    """Bucket counts (not cumulative; the last is +Inf), their sum and their total."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0


class HotMetrics:
    """A collector for the three per-request metrics; `record_*` run on the request path."""

    __slots__ = ("_attempts", "_bounds", "_durations", "_requests")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._bounds = buckets
        self._requests: dict[_RequestKey, list[int]] = {}
        self._durations: dict[_DurationKey, _Histogram] = {}
        self._attempts: dict[_AttemptKey, list[int]] = {}

    def record_request(
        self, upstream: str, route: str, method: str, status: int, outcome: Outcome, duration: float
    ) -> None:
        key = (upstream, route, method, status, outcome)
        cell = self._requests.get(key)
        if cell is None:
            cell = self._requests[key] = [0]
        cell[0] += 1
        histogram = self._durations.get((upstream, outcome))
        if histogram is None:
            histogram = self._durations[(upstream, outcome)] = _Histogram(len(self._bounds) + 1)
        histogram.counts[bisect_left(self._bounds, duration)] += 1
        histogram.sum += duration

    def record_attempt(self, upstream: str, endpoint: str, result: AttemptResult) -> None:
        key = (upstream, endpoint, result)
        cell = self._attempts.get(key)
        if cell is None:
            cell = self._attempts[key] = [0]
        cell[0] += 1

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        requests, durations, attempts = self._families()
        for (upstream, route, method, status, outcome), cell in list(self._requests.items()):
            requests.add_metric((upstream, route, method, str(status), outcome.value), cell[0])
        for (upstream, outcome), histogram in list(self._durations.items()):
            cumulative = 0
            buckets = []
            for bound, count in zip((*self._bounds, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            durations.add_metric((upstream, outcome.value), buckets, histogram.sum)
        for (upstream, endpoint, result), cell in list(self._attempts.items()):
            attempts.add_metric((upstream, endpoint, result.value), cell[0])
        yield requests
        yield durations
        yield attempts

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                REQUESTS,
                "Downstream requests by upstream, route, method, status code and outcome.",
                labels=("upstream", "route", "method", "code", "outcome"),
            ),
            HistogramMetricFamily(
                DURATION,
                "Time from request received to response finished, by upstream and outcome.",
                labels=("upstream", "outcome"),
            ),
            CounterMetricFamily(
                ATTEMPTS,
                "Attempts sent to each endpoint, by classified result.",
                labels=("upstream", "endpoint", "result"),
            ),
        )

    def __repr__(self) -> str:
        return f"HotMetrics(request_series={len(self._requests)}, attempt_series={len(self._attempts)})"
