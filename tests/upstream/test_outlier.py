"""Outlier detection: consecutive failures eject an endpoint, for longer each time."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, OutlierPolicy, load_config_text
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


def _eject(detector: OutlierDetector, endpoint: str) -> float:
    """Fail `endpoint` three times in a row and return the ejection's duration."""
    ejection = None
    for _ in range(3):
        ejection = detector.record(endpoint, failed=True)
    assert ejection is not None
    return ejection.duration


def test_outlier_ejection_is_capped_at_max_ejection(clock: FakeClock) -> None:
    """Ejections grow by base_ejection each time, then stay at max_ejection."""
    detector = _detector(clock, max_ejection="35s")
    durations = []
    for _ in range(6):
        durations.append(_eject(detector, "http://a:80"))
        clock.advance(durations[-1])
    assert durations == [10.0, 20.0, 30.0, 35.0, 35.0, 35.0]
    health = detector.health("http://a:80")
    assert health is not None
    assert health.ejections == 4  # the multiplier stops where the cap is reached


def test_outlier_default_max_ejection_is_five_minutes(clock: FakeClock) -> None:
    """With the defaults (30 s base, 300 s cap) the eleventh ejection in a row lasts 300 s."""
    policy = OutlierPolicy.model_validate({"consecutive_failures": 1})
    assert policy.max_ejection == 300.0
    detector = OutlierDetector(policy, clock, ENDPOINTS)
    durations = []
    for _ in range(12):
        ejection = detector.record("http://a:80", failed=True)
        assert ejection is not None
        durations.append(ejection.duration)
        clock.advance(ejection.duration)
    assert durations == [30.0 * n for n in range(1, 11)] + [300.0, 300.0]


def test_outlier_multiplier_decays_by_one_per_base_ejection_in_rotation(
    clock: FakeClock,
) -> None:
    """Each full base_ejection spent back in rotation takes one off the next ejection's multiplier."""
    detector = _detector(clock)
    for expected in (10.0, 20.0, 30.0, 40.0):
        assert _eject(detector, "http://a:80") == expected
        clock.advance(expected)
    # Back in rotation with multiplier 4. 25 s later two full periods have passed: 4 → 2.
    clock.advance(25.0)
    health = detector.health("http://a:80")
    assert health is not None
    assert health.ejections == 2
    assert _eject(detector, "http://a:80") == 30.0  # multiplier 3
    clock.advance(30.0)
    clock.advance(9.0)  # less than one period: no decay
    assert _eject(detector, "http://a:80") == 40.0  # multiplier 4


def test_outlier_decay_partial_period_carries_over(clock: FakeClock) -> None:
    """Time in rotation that does not fill a period counts towards the next one."""
    detector = _detector(clock)
    assert _eject(detector, "http://a:80") == 10.0
    clock.advance(10.0)
    assert _eject(detector, "http://a:80") == 20.0
    clock.advance(20.0 + 15.0)  # 1.5 periods in rotation: 2 → 1, 5 s carried
    health = detector.health("http://a:80")
    assert health is not None
    assert health.ejections == 1
    clock.advance(5.0)  # completes the second period: 1 → 0
    assert health.ejections == 1  # nothing changes until the record is looked at
    assert detector.health("http://a:80") is health
    assert health.ejections == 0
    assert _eject(detector, "http://a:80") == 10.0


def test_outlier_does_not_decay_while_ejected(clock: FakeClock) -> None:
    """Time spent ejected is not time in rotation: the multiplier stays until it ends."""
    detector = _detector(clock, max_ejection="1h")
    for expected in (10.0, 20.0, 30.0):
        assert _eject(detector, "http://a:80") == expected
        if expected < 30.0:
            clock.advance(expected)
    clock.advance(29.0)  # still ejected for 1 s
    health = detector.health("http://a:80")
    assert health is not None
    assert health.ejections == 3


def test_outlier_max_ejection_below_base_is_a_config_error() -> None:
    """`max_ejection` shorter than `base_ejection` is refused, naming both values."""
    text = (
        "version: 1\nupstreams:\n  payments:\n    endpoints: [http://payments:8080]\n"
        "    outlier_detection: {base_ejection: 1m, max_ejection: 30s}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="c.yaml")
    found = [f"{issue.path}: {issue.message}" for issue in info.value.issues]
    assert found == [
        "upstreams.payments.outlier_detection.max_ejection: max_ejection (30s) "
        "must be at least base_ejection (1m)"
    ]


def test_outlier_reconfigure_keeps_records_and_clamps_to_new_cap(clock: FakeClock) -> None:
    """A policy changed by a reload keeps ejections and runs, ending them by the new cap."""
    detector = _detector(clock, max_ejection="1h")
    for expected in (10.0, 20.0, 30.0):
        assert _eject(detector, "http://a:80") == expected
        if expected < 30.0:
            clock.advance(expected)
    detector.record("http://b:80", failed=True)
    clock.advance(5.0)
    policy = {"consecutive_failures": 2, "base_ejection": "10s", "max_ejection": "20s"}
    detector.reconfigure(OutlierPolicy.model_validate(policy))
    assert detector.is_ejected("http://a:80")
    a = detector.health("http://a:80")
    assert a is not None
    assert (a.ejected_until, a.ejections) == (clock.now() + 20.0, 2)  # 25 s left → 20 s
    ejection = detector.record("http://b:80", failed=True)  # the run of 1 went on: 2 of 2
    assert ejection is not None
    assert ejection.duration == 10.0
    clock.advance(20.0)
    assert not detector.is_ejected("http://a:80")
