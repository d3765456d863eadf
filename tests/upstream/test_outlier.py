"""Outlier detection: consecutive failures eject an endpoint, for longer each time."""

from __future__ import annotations

import pytest

from sidecar.config import OutlierPolicy
from sidecar.upstream.outlier import OutlierDetector
from tests.fakes import FakeClock

ENDPOINTS = ["http://a:80", "http://b:80", "http://c:80", "http://d:80"]


def _detector(clock: FakeClock, **policy: object) -> OutlierDetector:
    settings: dict[str, object] = {
        "consecutive_failures": 3,
        "base_ejection": "10s",
        "max_ejected": 0.5,
    }
    settings.update(policy)
    return OutlierDetector(OutlierPolicy.model_validate(settings), clock, ENDPOINTS)


def test_outlier_ejects_after_consecutive_failures_until_time_is_up(clock: FakeClock) -> None:
    """The third failure in a row ejects for base_ejection; it returns by itself afterwards."""
    detector = _detector(clock)
    assert detector.record("http://a:80", failed=True) is None
    assert detector.record("http://a:80", failed=True) is None
    ejection = detector.record("http://a:80", failed=True)
    assert ejection is not None
    assert (ejection.endpoint, ejection.duration, ejection.failures) == ("http://a:80", 10.0, 3)
    assert detector.is_ejected("http://a:80")
    clock.advance(10.0)
    assert not detector.is_ejected("http://a:80")


def test_outlier_success_resets_the_streak(clock: FakeClock) -> None:
    """A success between failures means they were not consecutive."""
    detector = _detector(clock)
    for failed in (True, True, False, True, True):
        assert detector.record("http://b:80", failed=failed) is None
    assert not detector.is_ejected("http://b:80")


def test_outlier_repeat_offender_stays_out_longer(clock: FakeClock) -> None:
    """The n-th ejection lasts n × base_ejection."""
    detector = _detector(clock)
    durations = []
    for _ in range(3):
        for _ in range(3):
            ejection = detector.record("http://c:80", failed=True)
        assert ejection is not None
        durations.append(ejection.duration)
        clock.advance(ejection.duration)
    assert durations == [10.0, 20.0, 30.0]


@pytest.mark.parametrize(
    ("share", "endpoints_out"),
    [(0.5, 2), (0.25, 1), (0.0, 0), (1.0, 4)],
    ids=["half", "quarter", "none", "all"],
)
def test_outlier_never_ejects_more_than_max_ejected(
    clock: FakeClock, share: float, endpoints_out: int
) -> None:
    """Failing endpoints beyond the max_ejected share stay in rotation."""
    detector = _detector(clock, max_ejected=share)
    for endpoint in ENDPOINTS:
        for _ in range(3):
            detector.record(endpoint, failed=True)
    assert len(detector.ejected()) == endpoints_out


def test_outlier_single_endpoint_is_never_ejected(clock: FakeClock) -> None:
    """With one endpoint there is nowhere else to send, so it stays in rotation."""
    policy = OutlierPolicy.model_validate({"consecutive_failures": 1})
    detector = OutlierDetector(policy, clock, ["http://only:80"])
    assert detector.record("http://only:80", failed=True) is None
    assert detector.ejected() == []


def test_outlier_zero_threshold_turns_it_off(clock: FakeClock) -> None:
    """`consecutive_failures: 0` never ejects."""
    detector = _detector(clock, consecutive_failures=0)
    for _ in range(20):
        assert detector.record("http://a:80", failed=True) is None
