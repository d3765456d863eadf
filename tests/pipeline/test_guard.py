"""The breaker guard: the events a breaker's calls cause, emitted in one place for the attempt
loop and CONNECT tunnels alike."""

from __future__ import annotations

from sidecar.config import BreakerPolicy
from sidecar.events import CircuitTransitioned, Observers, RequestRejected
from sidecar.pipeline.guard import BreakerGuard
from sidecar.resilience.breaker import CircuitBreaker, CircuitState
from tests.fakes import FakeClock, RecordingObserver


def guarded(clock: FakeClock, observer: RecordingObserver) -> BreakerGuard:
    policy = BreakerPolicy.model_validate(
        {"consecutive_failures": 1, "open_duration": "2s", "half_open_calls": 1}
    )
    return BreakerGuard(CircuitBreaker(policy, clock), "svc", "orders", Observers([observer]))


def test_guard_emits_the_transition_a_recorded_call_causes() -> None:
    """A failure that trips the breaker becomes one CircuitTransitioned with the route label."""
    clock, observer = FakeClock(), RecordingObserver()
    guard = guarded(clock, observer)
    permit = guard.try_acquire()
    assert permit is not None
    guard.record(permit, True, 0.1)
    assert observer.events == [
        CircuitTransitioned("svc", "orders", "closed", "open", "1 consecutive failures")
    ]


def test_guard_refusal_is_counted_and_carries_the_time_left_open() -> None:
    """A refused call emits the circuit_open rejection; its error says when to come back."""
    clock, observer = FakeClock(), RecordingObserver()
    guard = guarded(clock, observer)
    permit = guard.try_acquire()
    assert permit is not None
    guard.record(permit, True, 0.1)
    clock.advance(0.5)
    observer.clear()
    assert guard.try_acquire() is None
    error = guard.refused()
    assert observer.events == [RequestRejected("svc", "circuit_open")]
    assert error.retry_after == 1.5


def test_guard_emits_the_lazy_half_open_change_and_release_frees_the_trial() -> None:
    """The open → half-open change seen on acquire is emitted; a released trial frees its slot."""
    clock, observer = FakeClock(), RecordingObserver()
    guard = guarded(clock, observer)
    permit = guard.try_acquire()
    assert permit is not None
    guard.record(permit, True, 0.1)
    clock.advance(2.0)
    observer.clear()
    trial = guard.try_acquire()
    assert trial is not None
    assert trial.trial
    assert observer.of_type(CircuitTransitioned)[0].to_state == "half_open"
    assert guard.try_acquire() is None  # the only trial slot is out
    guard.release(trial)
    assert guard.try_acquire() is not None
    assert guard.breaker.state is CircuitState.HALF_OPEN
