"""Tests for sidecar.observe.metrics: events in, samples on a private registry out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sidecar.events import (
    AttemptFinished,
    ConfigReloaded,
    ConfigReloadFailed,
    RequestFinished,
    ServerStarted,
    ShutdownFinished,
)
from sidecar.observe.metrics import SidecarMetrics
from sidecar.outcome import AttemptResult, Outcome

REQUEST = RequestFinished(
    wall_time=1_795_461_302.123,
    request_id="r-1",
    listener="egress",
    upstream="payments",
    route="default",
    method="GET",
    path="/v1/charges",
    status=200,
    outcome=Outcome.SUCCESS,
    attempts=1,
    duration=0.012,
    bytes_in=0,
    bytes_out=512,
    circuit_state="closed",
    error="",
)
ATTEMPT = AttemptFinished(
    upstream="payments",
    endpoint="http://payments:8080",
    result=AttemptResult.SUCCESS,
    duration=0.01,
)


def request(**changes: Any) -> RequestFinished:
    return dataclasses.replace(REQUEST, **changes)


def request_labels(**changes: str) -> dict[str, str]:
    labels = {
        "upstream": "payments",
        "route": "default",
        "method": "GET",
        "code": "200",
        "outcome": "success",
    }
    labels.update(changes)
    return labels


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> SidecarMetrics:
    return SidecarMetrics(registry, "1.2.3")


def test_requests_total_counts_request_with_its_labels(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """A finished request increments requests_total under its upstream/route/method/code/outcome."""
    metrics.notify(REQUEST)
    metrics.notify(REQUEST)
    assert registry.get_sample_value("sidecar_requests_total", request_labels()) == 2.0


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("GET", "GET"),
        ("PATCH", "PATCH"),
        ("CONNECT", "CONNECT"),
        ("PROPFIND", "OTHER"),
        ("get", "OTHER"),
    ],
    ids=["get", "patch", "connect", "webdav-method", "lowercase-is-not-standard"],
)
def test_requests_total_normalises_method_label(
    metrics: SidecarMetrics, registry: CollectorRegistry, method: str, label: str
) -> None:
    """Only the standard methods become label values; anything else is counted as OTHER."""
    metrics.notify(request(method=method))
    assert registry.get_sample_value("sidecar_requests_total", request_labels(method=label)) == 1.0


@pytest.mark.parametrize(
    ("status", "outcome", "code"),
    [
        (0, Outcome.RESET, "0"),
        (503, Outcome.REJECTED, "503"),
        (502, Outcome.UPSTREAM_ERROR, "502"),
    ],
    ids=["no-response", "generated-503", "upstream-502"],
)
def test_requests_total_labels_code_and_outcome_as_strings(
    metrics: SidecarMetrics, registry: CollectorRegistry, status: int, outcome: Outcome, code: str
) -> None:
    """The code label is the status as a string ("0" without a response) and outcome its value."""
    metrics.notify(request(status=status, outcome=outcome))
    labels = request_labels(code=code, outcome=outcome.value)
    assert registry.get_sample_value("sidecar_requests_total", labels) == 1.0


def test_request_duration_observes_seconds_by_upstream_and_outcome(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """The duration histogram puts 12 ms into the 25 ms bucket and not the 10 ms one."""
    metrics.notify(request(duration=0.012))
    labels = {"upstream": "payments", "outcome": "success"}
    name = "sidecar_request_duration_seconds"
    assert registry.get_sample_value(f"{name}_count", labels) == 1.0
    assert registry.get_sample_value(f"{name}_sum", labels) == pytest.approx(0.012)
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "0.01"}) == 0.0
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "0.025"}) == 1.0
    assert registry.get_sample_value(f"{name}_bucket", {**labels, "le": "60.0"}) == 1.0


@pytest.mark.parametrize(
    "result", list(AttemptResult), ids=[result.value for result in AttemptResult]
)
def test_upstream_attempts_total_counts_by_endpoint_and_result(
    metrics: SidecarMetrics, registry: CollectorRegistry, result: AttemptResult
) -> None:
    """Each classified attempt increments upstream_attempts_total under its result's value."""
    metrics.notify(dataclasses.replace(ATTEMPT, result=result))
    labels = {"upstream": "payments", "endpoint": "http://payments:8080", "result": result.value}
    assert registry.get_sample_value("sidecar_upstream_attempts_total", labels) == 1.0


def test_build_info_is_one_with_version_label(registry: CollectorRegistry) -> None:
    """build_info carries the version passed in as a label with the value 1."""
    SidecarMetrics(registry, "9.8.7")
    assert registry.get_sample_value("sidecar_build_info", {"version": "9.8.7"}) == 1.0


def test_inflight_is_empty_before_a_source_is_set(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """Without a source the in-flight gauge is declared but has no samples."""
    assert registry.get_sample_value("sidecar_inflight_requests", {"upstream": "payments"}) is None
    assert b"# TYPE sidecar_inflight_requests gauge" in generate_latest(registry)


def test_inflight_reads_source_at_scrape_time(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """The in-flight gauge calls the source on every scrape, so it shows the current counts."""
    counts = {"payments": 3, "ledger": 0}
    metrics.set_inflight_source(lambda: counts)
    assert registry.get_sample_value("sidecar_inflight_requests", {"upstream": "payments"}) == 3.0
    counts["payments"] = 7
    assert registry.get_sample_value("sidecar_inflight_requests", {"upstream": "payments"}) == 7.0
    assert registry.get_sample_value("sidecar_inflight_requests", {"upstream": "ledger"}) == 0.0


def test_endpoint_healthy_reads_source_at_scrape_time(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """`sidecar_endpoint_healthy` is 1 or 0 per checked endpoint, as the source says now."""
    health = {"http://a:80": True, "http://b:80": False}
    metrics.set_health_source(lambda: [("svc", url, ok) for url, ok in health.items()])
    labels = {"upstream": "svc", "endpoint": "http://b:80"}
    assert registry.get_sample_value("sidecar_endpoint_healthy", labels) == 0.0
    health["http://b:80"] = True
    assert registry.get_sample_value("sidecar_endpoint_healthy", labels) == 1.0
    assert b"# TYPE sidecar_endpoint_healthy gauge" in generate_latest(registry)


def test_registering_does_not_call_inflight_source(registry: CollectorRegistry) -> None:
    """Setting the source does not call it; only a scrape does."""
    calls: list[int] = []

    def source() -> dict[str, int]:
        calls.append(1)
        return {}

    SidecarMetrics(registry, "1").set_inflight_source(source)
    assert calls == []
    generate_latest(registry)
    assert calls == [1]


def test_identical_events_add_to_one_series_and_histogram_buckets(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """Repeated events accumulate in one series; the histogram's buckets are cumulative."""
    for _ in range(3):
        metrics.notify(REQUEST)
        metrics.notify(ATTEMPT)
    metrics.notify(request(status=404))
    assert registry.get_sample_value("sidecar_requests_total", request_labels()) == 3.0
    assert registry.get_sample_value("sidecar_requests_total", request_labels(code="404")) == 1.0
    labels = {"upstream": REQUEST.upstream, "outcome": REQUEST.outcome.value}
    count = registry.get_sample_value("sidecar_request_duration_seconds_count", labels)
    inf = registry.get_sample_value(
        "sidecar_request_duration_seconds_bucket", {**labels, "le": "+Inf"}
    )
    smallest = registry.get_sample_value(
        "sidecar_request_duration_seconds_bucket", {**labels, "le": "0.001"}
    )
    assert count == inf
    assert smallest is not None
    assert inf is not None
    assert smallest <= inf


def test_lifecycle_events_add_no_samples(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """Events without a metric pass through notify without creating series."""
    before = generate_latest(registry)
    metrics.notify(ServerStarted((("egress", "127.0.0.1:15001"),), "127.0.0.1:15000", "x", "1"))
    metrics.notify(ShutdownFinished(abandoned=0, forced=False))
    assert generate_latest(registry) == before


def test_config_reloads_count_results_and_track_the_generation(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """Applied reloads set the generation (1 at start); failed ones only count as errors."""

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("sidecar_config_generation") == 1.0
    assert sample("sidecar_config_reloads_total", result="success") == 0.0
    assert sample("sidecar_config_reloads_total", result="error") == 0.0
    metrics.notify(ConfigReloaded(2, "sidecar.yaml", ("a",), ()))
    metrics.notify(ConfigReloadFailed("sidecar.yaml", ("bad",)))
    metrics.notify(ConfigReloadFailed("sidecar.yaml", ("bad",)))
    assert sample("sidecar_config_generation") == 2.0
    assert sample("sidecar_config_reloads_total", result="success") == 1.0
    assert sample("sidecar_config_reloads_total", result="error") == 2.0


def test_metrics_live_only_on_the_registry_passed_in() -> None:
    """Two instances on two registries coexist, so there are no global metric objects."""
    first, second = CollectorRegistry(), CollectorRegistry()
    SidecarMetrics(first, "1").notify(REQUEST)
    SidecarMetrics(second, "1")
    assert first.get_sample_value("sidecar_requests_total", request_labels()) == 1.0
    assert second.get_sample_value("sidecar_requests_total", request_labels()) is None


def test_exposition_declares_every_metric(
    metrics: SidecarMetrics, registry: CollectorRegistry
) -> None:
    """The text exposition names all five metrics with their types."""
    text = generate_latest(registry).decode()
    for line in (
        "# TYPE sidecar_requests_total counter",
        "# TYPE sidecar_request_duration_seconds histogram",
        "# TYPE sidecar_upstream_attempts_total counter",
        "# TYPE sidecar_inflight_requests gauge",
        "# TYPE sidecar_build_info gauge",
    ):
        assert line in text
