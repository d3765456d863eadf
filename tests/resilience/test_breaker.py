"""The circuit breaker state machine of SPEC §4.2."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config import BreakerPolicy, CountWindow
from sidecar.resilience.breaker import CircuitBreaker, CircuitState, Permit, Transition
from tests.fakes import FakeClock

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def make(clock: FakeClock, **overrides: Any) -> CircuitBreaker:
    """A breaker with the SPEC defaults except for `overrides` (YAML spellings)."""
    return CircuitBreaker(BreakerPolicy(**overrides), clock)


def call(
    breaker: CircuitBreaker, failed: bool = False, duration: float = 0.01
) -> Transition | None:
    """Acquire a permit (which must be granted) and record one call's result with it."""
    permit = breaker.try_acquire()
    assert permit is not None, f"refused by {breaker!r}"
    return breaker.record(permit, failed, duration)


def trip(breaker: CircuitBreaker, failures: int = 5) -> Transition:
    """Record failures until the breaker opens; return the opening transition."""
    for _ in range(failures):
        transition = call(breaker, failed=True)
        if transition is not None:
            return transition
    raise AssertionError(f"still closed after {failures} failures: {breaker!r}")


# -- closed -----------------------------------------------------------------------------


def test_breaker_closed_admits_plain_permits(clock: FakeClock) -> None:
    """A closed breaker admits every call with a permit that is not a trial."""
    breaker = make(clock)
    permits = [breaker.try_acquire() for _ in range(50)]
    assert all(p is not None and not p.trial for p in permits)
    assert breaker.state is CLOSED
    assert breaker.retry_after() == 0.0
    assert breaker.opened_at is None
    assert breaker.open_until is None


@pytest.mark.parametrize(
    ("failures", "opens"),
    [(4, False), (5, True), (6, True)],
    ids=["40pct-stays-closed", "50pct-opens", "60pct-opens"],
)
def test_breaker_opens_when_failure_rate_reaches_threshold(
    clock: FakeClock, failures: int, opens: bool
) -> None:
    """Over 10 calls, a failure rate at or above 50% opens the breaker; below it does not."""
    breaker = make(clock, minimum_calls=10, consecutive_failures=0)
    transitions = [call(breaker, failed=i < failures) for i in range(10)]
    assert transitions[:-1] == [None] * 9
    assert (transitions[-1] is not None) is opens
    assert breaker.state is (OPEN if opens else CLOSED)


def test_breaker_rates_are_not_judged_below_minimum_calls(clock: FakeClock) -> None:
    """Nine failures out of nine calls do not open a breaker that needs ten calls."""
    breaker = make(clock, minimum_calls=10, consecutive_failures=0)
    assert [call(breaker, failed=True) for _ in range(9)] == [None] * 9
    assert breaker.state is CLOSED
    assert call(breaker, failed=True) is not None


def test_breaker_zero_failure_rate_opens_on_the_first_failure_only(clock: FakeClock) -> None:
    """A 0% threshold opens on any failure once judged, but never on successes alone."""
    breaker = make(clock, minimum_calls=2, failure_rate="0%", consecutive_failures=0)
    assert [call(breaker) for _ in range(5)] == [None] * 5
    transition = call(breaker, failed=True)
    assert transition is not None
    assert transition.reason == "failure rate 16.67% ≥ 0% over 6 calls in 30s"


def test_breaker_opens_on_slow_call_rate(clock: FakeClock) -> None:
    """Successful calls at or over `slow_call_duration` count toward the slow-call rate."""
    breaker = make(
        clock, minimum_calls=4, slow_call_rate="50%", slow_call_duration="1s", window="10s"
    )
    assert call(breaker, duration=0.999) is None
    assert call(breaker, duration=0.5) is None
    assert call(breaker, duration=1.0) is None
    transition = call(breaker, duration=3.0)
    assert transition is not None
    assert transition.to_state is OPEN
    assert transition.reason == "slow-call rate 50% ≥ 50% over 4 calls in 10s (slow: ≥ 1s)"


def test_breaker_default_slow_call_rate_needs_every_call_slow(clock: FakeClock) -> None:
    """With the default 100% slow-call rate, one fast call among slow ones keeps it closed."""
    breaker = make(clock, minimum_calls=4)
    assert call(breaker, duration=0.1) is None
    assert [call(breaker, duration=6.0) for _ in range(3)] == [None] * 3
    assert breaker.state is CLOSED
    assert (breaker.calls, breaker.slow) == (4, 3)


def test_breaker_opens_on_consecutive_failures(clock: FakeClock) -> None:
    """`consecutive_failures` failures in a row open it before `minimum_calls` is reached."""
    breaker = make(clock, minimum_calls=100, consecutive_failures=3)
    assert call(breaker, failed=True) is None
    assert call(breaker, failed=True) is None
    assert breaker.consecutive_failures == 2
    transition = call(breaker, failed=True)
    assert transition == Transition(CLOSED, OPEN, "3 consecutive failures", clock.now())


def test_breaker_success_resets_the_failure_streak(clock: FakeClock) -> None:
    """A success in between means the failures are no longer consecutive."""
    breaker = make(clock, minimum_calls=100, consecutive_failures=3)
    for failed in (True, True, False, True, True, False):
        assert call(breaker, failed=failed) is None
    assert breaker.consecutive_failures == 0
    assert breaker.state is CLOSED


def test_breaker_zero_consecutive_failures_is_off(clock: FakeClock) -> None:
    """`consecutive_failures: 0` never opens the breaker by a streak."""
    breaker = make(clock, minimum_calls=1000, consecutive_failures=0)
    assert all(call(breaker, failed=True) is None for _ in range(500))
    assert breaker.state is CLOSED


def test_breaker_count_window_judges_only_the_last_calls(clock: FakeClock) -> None:
    """With `{calls: N}`, failures older than the last N calls no longer count."""
    breaker = make(clock, window=CountWindow(calls=4), minimum_calls=4, consecutive_failures=0)
    assert call(breaker, failed=True) is None
    for _ in range(4):
        assert call(breaker) is None
    assert (breaker.calls, breaker.failures) == (4, 0)
    assert call(breaker, failed=True) is None
    transition = call(breaker, failed=True)
    assert transition is not None
    assert transition.reason == "failure rate 50% ≥ 50% over the last 4 calls"


def test_breaker_time_window_forgets_old_failures(clock: FakeClock) -> None:
    """With a time window, failures older than the window no longer count."""
    breaker = make(clock, window="10s", minimum_calls=4, consecutive_failures=0)
    for _ in range(3):
        assert call(breaker, failed=True) is None
    clock.advance(11.0)
    assert breaker.failures == 0
    assert call(breaker, failed=True) is None
    assert breaker.state is CLOSED


def test_breaker_disabled_never_opens(clock: FakeClock) -> None:
    """`enabled: false` admits every call and ignores every failure."""
    breaker = make(clock, enabled=False, minimum_calls=1, consecutive_failures=1)
    assert all(call(breaker, failed=True, duration=60.0) is None for _ in range(100))
    assert breaker.state is CLOSED


# -- open -------------------------------------------------------------------------------


def test_breaker_open_rejects_and_tells_time_left(clock: FakeClock) -> None:
    """While open, nothing is admitted and `retry_after()` is the time left open."""
    breaker = make(clock, open_duration="5s")
    transition = trip(breaker)
    assert transition.at == clock.now()
    assert breaker.opened_at == clock.now()
    assert breaker.open_until == clock.now() + 5.0
    clock.advance(2.0)
    assert breaker.try_acquire() is None
    assert breaker.retry_after() == pytest.approx(3.0)
    assert breaker.state is OPEN


def test_breaker_opening_starts_a_fresh_window(clock: FakeClock) -> None:
    """The counts that opened the breaker are not carried into later states."""
    breaker = make(clock)
    trip(breaker)
    assert (breaker.calls, breaker.failures, breaker.consecutive_failures) == (0, 0, 0)


def test_breaker_becomes_half_open_exactly_at_open_until(clock: FakeClock) -> None:
    """Once the clock reaches `open_until`, reading the state finds it half-open."""
    breaker = make(clock, open_duration="5s")
    trip(breaker)
    opened = clock.now()
    clock.advance(4.999)
    assert breaker.state is OPEN
    assert breaker.take_transition() is None
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_after() == 0.0
    assert breaker.opened_at is None
    assert breaker.open_until is None
    lazy = breaker.take_transition()
    assert lazy == Transition(OPEN, HALF_OPEN, "open duration 5s elapsed", opened + 5.0)
    assert breaker.take_transition() is None


def test_breaker_acquire_moves_open_to_half_open(clock: FakeClock) -> None:
    """`try_acquire()` itself notices the open period is over and grants a trial."""
    breaker = make(clock, open_duration="1s")
    trip(breaker)
    clock.advance(1.0)
    permit = breaker.try_acquire()
    assert permit is not None
    assert permit.trial
    transition = breaker.take_transition()
    assert transition is not None
    assert transition.to_state is HALF_OPEN


# -- half-open --------------------------------------------------------------------------


def half_open(clock: FakeClock, **overrides: Any) -> CircuitBreaker:
    """A breaker that has just become half-open."""
    breaker = make(clock, **overrides)
    trip(breaker)
    clock.advance(breaker.retry_after())
    assert breaker.state is HALF_OPEN
    breaker.take_transition()
    return breaker


@pytest.mark.parametrize("trials", [1, 3, 7], ids=["one", "three", "seven"])
def test_breaker_admits_only_half_open_calls_trials(clock: FakeClock, trials: int) -> None:
    """Half-open grants exactly `half_open_calls` concurrent trial permits, then refuses."""
    breaker = half_open(clock, half_open_calls=trials)
    permits = [breaker.try_acquire() for _ in range(trials)]
    assert all(p is not None and p.trial for p in permits)
    assert breaker.try_acquire() is None
    assert breaker.retry_after() == 0.0


def test_breaker_release_frees_a_trial_slot(clock: FakeClock) -> None:
    """A trial permit handed back unused lets another trial in; no slot is lost."""
    breaker = half_open(clock, half_open_calls=2)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None
    assert second is not None
    assert breaker.try_acquire() is None
    breaker.release(first)
    third = breaker.try_acquire()
    assert third is not None
    assert third.trial
    assert breaker.try_acquire() is None


def test_breaker_release_of_a_plain_permit_changes_nothing(clock: FakeClock) -> None:
    """Releasing a closed-state permit neither counts a call nor frees anything."""
    breaker = make(clock)
    permit = breaker.try_acquire()
    assert permit is not None
    breaker.release(permit)
    assert breaker.calls == 0


def test_breaker_closes_when_every_trial_succeeds(clock: FakeClock) -> None:
    """All `half_open_calls` trials succeeding closes the breaker with a fresh window."""
    breaker = half_open(clock, half_open_calls=3)
    permits = [breaker.try_acquire() for _ in range(3)]
    results = [breaker.record(p, failed=False, duration=0.1) for p in permits if p]
    assert results[:2] == [None, None]
    assert results[2] == Transition(HALF_OPEN, CLOSED, "3 half-open trials succeeded", clock.now())
    assert breaker.state is CLOSED
    assert (breaker.calls, breaker.failures) == (0, 0)
    after = breaker.try_acquire()
    assert after is not None
    assert not after.trial


def test_breaker_single_trial_reason_is_singular(clock: FakeClock) -> None:
    """With one trial, the closing reason reads naturally."""
    breaker = half_open(clock, half_open_calls=1)
    transition = call(breaker)
    assert transition is not None
    assert transition.reason == "1 half-open trial succeeded"


def test_breaker_reopens_when_any_trial_fails(clock: FakeClock) -> None:
    """One failed trial sends the breaker back to open at once, other trials still out."""
    breaker = half_open(clock, half_open_calls=3, open_duration="5s")
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None
    assert second is not None
    assert breaker.record(first, failed=False, duration=0.1) is None
    transition = breaker.record(second, failed=True, duration=0.1)
    assert transition == Transition(HALF_OPEN, OPEN, "half-open trial failed", clock.now())
    assert breaker.try_acquire() is None
    assert breaker.retry_after() == 10.0


def test_breaker_reopens_when_trials_are_slow(clock: FakeClock) -> None:
    """Trials that succeed but reach the slow-call rate reopen it rather than close it."""
    breaker = half_open(
        clock, half_open_calls=2, slow_call_rate="50%", slow_call_duration="1s", minimum_calls=4
    )
    assert call(breaker, duration=2.0) is None
    transition = call(breaker, duration=0.1)
    assert transition is not None
    assert transition.to_state is OPEN
    assert transition.reason == "half-open trials slow: 1 of 2 (50% ≥ 50%) took ≥ 1s"


def test_breaker_open_duration_doubles_up_to_max(clock: FakeClock) -> None:
    """Each failed recovery doubles the open period, never past `max_open_duration`."""
    breaker = make(clock, open_duration="5s", max_open_duration="30s")
    trip(breaker)
    periods = [breaker.retry_after()]
    for _ in range(5):
        clock.advance(breaker.retry_after())
        assert call(breaker, failed=True) is not None
        periods.append(breaker.retry_after())
    assert periods == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


def test_breaker_open_duration_resets_after_a_clean_close(clock: FakeClock) -> None:
    """After the breaker closes, the next opening lasts `open_duration` again."""
    breaker = make(clock, open_duration="5s", half_open_calls=1)
    trip(breaker)
    clock.advance(5.0)
    call(breaker, failed=True)
    assert breaker.retry_after() == 10.0
    clock.advance(10.0)
    assert call(breaker) is not None
    assert breaker.state is CLOSED
    trip(breaker)
    assert breaker.retry_after() == 5.0


# -- stale permits ----------------------------------------------------------------------


def test_breaker_ignores_calls_admitted_before_it_opened(clock: FakeClock) -> None:
    """A closed-state call finishing after the breaker opened judges nothing."""
    breaker = make(clock, open_duration="1s", half_open_calls=1)
    late = breaker.try_acquire()
    assert late is not None
    trip(breaker)
    assert breaker.record(late, failed=True, duration=0.1) is None
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN
    assert breaker.record(late, failed=True, duration=0.1) is None
    assert breaker.state is HALF_OPEN
    assert call(breaker) is not None
    assert breaker.state is CLOSED


def test_breaker_ignores_trials_from_an_earlier_half_open(clock: FakeClock) -> None:
    """A trial outliving its half-open episode neither closes nor frees a later slot."""
    breaker = half_open(clock, half_open_calls=2, open_duration="1s")
    old, failing = breaker.try_acquire(), breaker.try_acquire()
    assert old is not None
    assert failing is not None
    assert breaker.record(failing, failed=True, duration=0.1) is not None
    clock.advance(breaker.retry_after())
    fresh = [breaker.try_acquire(), breaker.try_acquire()]
    assert all(fresh)
    breaker.release(old)
    assert breaker.try_acquire() is None
    assert breaker.record(old, failed=False, duration=0.1) is None
    assert breaker.state is HALF_OPEN


# -- forced states ----------------------------------------------------------------------


def test_breaker_forced_open_rejects_everything(clock: FakeClock) -> None:
    """Forced open refuses calls for as long as it is forced, whatever the clock does."""
    breaker = make(clock, open_duration="5s")
    transition = breaker.force(OPEN)
    assert transition == Transition(CLOSED, OPEN, "forced open by operator", clock.now())
    clock.advance(3600.0)
    assert breaker.try_acquire() is None
    assert breaker.state is OPEN
    assert breaker.forced is OPEN
    assert breaker.retry_after() == 5.0
    assert breaker.opened_at == clock.now() - 3600.0
    assert breaker.open_until is None


def test_breaker_forced_closed_admits_and_learns_nothing(clock: FakeClock) -> None:
    """Forced closed admits calls even after failures that would open it."""
    breaker = make(clock)
    trip(breaker)
    transition = breaker.force(CLOSED)
    assert transition == Transition(OPEN, CLOSED, "forced closed by operator", clock.now())
    assert all(call(breaker, failed=True) is None for _ in range(100))
    assert breaker.state is CLOSED
    assert breaker.calls == 0


def test_breaker_release_to_auto_starts_closed_and_fresh(clock: FakeClock) -> None:
    """`force(None)` returns to automatic control: closed, empty window, base open period."""
    breaker = make(clock, open_duration="5s", consecutive_failures=2)
    breaker.force(OPEN)
    transition = breaker.force(None)
    assert transition == Transition(OPEN, CLOSED, "released to automatic control", clock.now())
    assert breaker.forced is None
    assert call(breaker, failed=True) is None
    assert call(breaker, failed=True) is not None
    assert breaker.retry_after() == 5.0


def test_breaker_force_ignores_calls_admitted_before_it(clock: FakeClock) -> None:
    """A call admitted in automatic mode cannot change a forced or released breaker."""
    breaker = make(clock, consecutive_failures=1)
    before = breaker.try_acquire()
    assert before is not None
    breaker.force(CLOSED)
    breaker.force(None)
    assert breaker.record(before, failed=True, duration=0.1) is None
    assert breaker.state is CLOSED


@pytest.mark.parametrize(
    ("first", "second"),
    [(OPEN, OPEN), (CLOSED, CLOSED), (None, None)],
    ids=["open-twice", "closed-twice", "auto-twice"],
)
def test_breaker_force_to_the_same_mode_reports_nothing(
    clock: FakeClock, first: CircuitState | None, second: CircuitState | None
) -> None:
    """Forcing the mode it is already in is not a transition."""
    breaker = make(clock)
    breaker.force(first)
    assert breaker.force(second) is None


def test_breaker_force_closed_while_closed_is_not_a_transition(clock: FakeClock) -> None:
    """Forcing closed a closed breaker changes no visible state, so nothing is returned."""
    breaker = make(clock)
    assert breaker.force(CLOSED) is None
    assert breaker.forced is CLOSED


def test_breaker_force_supersedes_an_untaken_half_open(clock: FakeClock) -> None:
    """A lazy open → half-open not yet taken is dropped, and the forced change starts from open."""
    breaker = make(clock, open_duration="1s")
    trip(breaker)
    clock.advance(2.0)
    assert breaker.state is HALF_OPEN
    transition = breaker.force(OPEN)
    assert transition is None
    assert breaker.take_transition() is None


def test_breaker_cannot_be_forced_half_open(clock: FakeClock) -> None:
    """Half-open is reached only by time; forcing it is a programming error."""
    with pytest.raises(ValueError, match="half_open"):
        make(clock).force(HALF_OPEN)


# -- reasons and repr -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "results", "reason"),
    [
        (
            {"minimum_calls": 10, "consecutive_failures": 0},
            [True] * 6 + [False] * 3 + [True],
            "failure rate 70% ≥ 50% over 10 calls in 30s",
        ),
        (
            {"minimum_calls": 3, "failure_rate": "60%", "window": CountWindow(calls=3)},
            [False, True, True],
            "failure rate 66.67% ≥ 60% over the last 3 calls",
        ),
        (
            {"minimum_calls": 50, "consecutive_failures": 5},
            [True] * 5,
            "5 consecutive failures",
        ),
    ],
    ids=["failure-rate-time", "failure-rate-count", "consecutive"],
)
def test_breaker_opening_reason_names_threshold_and_figures(
    clock: FakeClock, overrides: dict[str, Any], results: list[bool], reason: str
) -> None:
    """The opening transition says which threshold tripped, with the numbers that did it."""
    breaker = make(clock, **overrides)
    transitions = [call(breaker, failed=failed) for failed in results]
    assert transitions[-1] is not None
    assert transitions[-1].reason == reason
    assert all(t is None for t in transitions[:-1])


@pytest.mark.parametrize(
    ("setup", "shown"),
    [
        (lambda breaker: None, "state=closed, calls=0"),
        (trip, "state=open, open_until="),
        (lambda breaker: breaker.force(CLOSED), "forced=closed"),
    ],
    ids=["closed", "open", "forced"],
)
def test_breaker_repr_shows_live_state(clock: FakeClock, setup: Any, shown: str) -> None:
    """`repr()` shows the state and what drives it."""
    breaker = make(clock)
    setup(breaker)
    assert shown in repr(breaker)


def test_breaker_repr_shows_half_open_trials(clock: FakeClock) -> None:
    """A half-open breaker's `repr()` shows trials out and successes so far."""
    breaker = half_open(clock)
    breaker.try_acquire()
    assert "state=half_open, trials_out=1, trial_successes=0/3" in repr(breaker)


# -- properties -------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0), st.just(False), st.just(0.0)),
        st.tuples(
            st.just("record"), st.integers(0, 15), st.booleans(), st.sampled_from([0.0, 2.0])
        ),
        st.tuples(st.just("release"), st.integers(0, 15), st.just(False), st.just(0.0)),
        st.tuples(
            st.just("advance"), st.just(0), st.just(False), st.sampled_from([0.1, 0.5, 1.0, 4.0])
        ),
    ),
    max_size=150,
)


def run(breaker: CircuitBreaker, clock: FakeClock, ops: list[tuple[str, int, bool, float]]):
    """Apply `ops`, yielding after each the permits still held and any transition returned."""
    held: list[Permit] = []
    for op, index, failed, amount in ops:
        transition: Transition | None = None
        if op == "acquire":
            permit = breaker.try_acquire()
            if permit is not None:
                held.append(permit)
        elif op == "advance":
            clock.advance(amount)
        elif held:
            permit = held.pop(index % len(held))
            if op == "record":
                transition = breaker.record(permit, failed, amount)
            else:
                breaker.release(permit)
        yield held, transition


@given(
    ops=_OPS,
    trials=st.integers(1, 4),
    window=st.sampled_from(["5s", CountWindow(calls=4)]),
)
def test_breaker_never_admits_more_than_half_open_calls_trials(
    ops: list[tuple[str, int, bool, float]], trials: int, window: Any
) -> None:
    """Under any interleaving, no half-open episode has more than `half_open_calls` trials out."""
    clock = FakeClock()
    breaker = make(
        clock,
        window=window,
        minimum_calls=2,
        consecutive_failures=2,
        slow_call_duration="1s",
        slow_call_rate="50%",
        open_duration="1s",
        max_open_duration="4s",
        half_open_calls=trials,
    )
    for held, _ in run(breaker, clock, ops):
        per_episode: dict[int, int] = {}
        for permit in held:
            if permit.trial:
                per_episode[permit.generation] = per_episode.get(permit.generation, 0) + 1
        assert all(count <= trials for count in per_episode.values()), per_episode


@given(ops=_OPS, max_open=st.sampled_from([("1s", 1.0), ("3s", 3.0), ("10s", 10.0)]))
def test_breaker_is_never_open_longer_than_max_open_duration(
    ops: list[tuple[str, int, bool, float]], max_open: tuple[str, float]
) -> None:
    """Once `max_open_duration` has passed since it last opened, the breaker is not open."""
    clock = FakeClock()
    breaker = make(
        clock,
        minimum_calls=2,
        consecutive_failures=1,
        open_duration="1s",
        max_open_duration=max_open[0],
        half_open_calls=2,
    )
    limit = max_open[1]
    last_opened: float | None = None
    for _, transition in run(breaker, clock, ops):
        if transition is not None and transition.to_state is OPEN:
            last_opened = transition.at
        if breaker.state is OPEN:
            assert last_opened is not None
            assert breaker.opened_at == last_opened
            assert clock.now() - last_opened < limit


# -- reconfigure (a reload that changes the policy) ---------------------------------------


def reconfigure(breaker: CircuitBreaker, **overrides: Any) -> Transition | None:
    """Give `breaker` the SPEC defaults except for `overrides`, as a reload does."""
    return breaker.reconfigure(BreakerPolicy(**overrides))


def test_breaker_reconfigure_keeps_open_until_open_until(clock: FakeClock) -> None:
    """An open breaker stays open through a new failure_rate until its open period ends."""
    breaker = make(clock, open_duration="10s")
    trip(breaker)
    clock.advance(4.0)
    assert reconfigure(breaker, open_duration="10s", failure_rate="30%") is None
    assert breaker.state is OPEN
    assert breaker.try_acquire() is None
    assert breaker.retry_after() == 6.0
    clock.advance(6.0)
    assert breaker.state is HALF_OPEN
    transition = breaker.take_transition()
    assert transition is not None
    assert transition.reason == "open duration 10s elapsed"


def test_breaker_reconfigure_clamps_the_open_period_to_max_open_duration(
    clock: FakeClock,
) -> None:
    """An open period longer than the new max_open_duration ends that long after it began."""
    breaker = make(clock, open_duration="40s", max_open_duration="60s")
    trip(breaker)
    opened = clock.now()
    clock.advance(5.0)
    reconfigure(breaker, open_duration="5s", max_open_duration="20s")
    assert breaker.open_until == opened + 20.0
    clock.advance(15.0)
    assert breaker.state is HALF_OPEN
    transition = breaker.take_transition()
    assert transition is not None
    assert transition.reason == "open duration 20s elapsed"
    call(breaker, failed=True)  # a failed trial: the next period doubles, capped at 20 s
    assert breaker.retry_after() == 20.0


def test_breaker_reconfigure_next_open_period_respects_new_open_duration(
    clock: FakeClock,
) -> None:
    """After a reload raises open_duration, a failed trial re-opens for at least twice it."""
    breaker = half_open(clock, open_duration="5s")
    reconfigure(breaker, open_duration="30s", max_open_duration="2m")
    call(breaker, failed=True)
    assert breaker.retry_after() == 60.0


def test_breaker_reconfigure_keeps_count_window_results(clock: FakeClock) -> None:
    """A count window carries its last results, in order, into a smaller count window."""
    breaker = make(clock, window=CountWindow(calls=10), minimum_calls=10, consecutive_failures=0)
    for failed in (True, True, False, False, True, False):
        call(breaker, failed=failed)
    reconfigure(breaker, window=CountWindow(calls=4), minimum_calls=4, consecutive_failures=0)
    assert (breaker.calls, breaker.failures) == (4, 1)  # the last four: ok, ok, failed, ok
    transition = call(breaker, failed=True)  # ok, failed, ok, failed: 50%
    assert transition is not None
    assert transition.reason == "failure rate 50% ≥ 50% over the last 4 calls"


def test_breaker_reconfigure_moves_time_window_slices(clock: FakeClock) -> None:
    """A time window's results land in a longer or shorter window by when they were recorded."""
    breaker = make(clock, window="10s", minimum_calls=100, consecutive_failures=0)
    call(breaker, failed=True)
    clock.advance(5.0)
    call(breaker, failed=True)
    call(breaker)
    clock.advance(2.0)
    reconfigure(breaker, window="20s", minimum_calls=100, consecutive_failures=0)
    assert (breaker.calls, breaker.failures) == (3, 2)
    clock.advance(10.0)  # the first failure is now 17 s old: still inside 20 s
    assert (breaker.calls, breaker.failures) == (3, 2)
    reconfigure(breaker, window="4s", minimum_calls=100, consecutive_failures=0)
    assert (breaker.calls, breaker.failures) == (0, 0)  # everything is older than 4 s


def test_breaker_reconfigure_between_window_kinds_starts_empty(clock: FakeClock) -> None:
    """Results do not move between a time and a count window; the failure run does."""
    breaker = make(clock, window="10s", minimum_calls=100, consecutive_failures=3)
    call(breaker, failed=True)
    call(breaker, failed=True)
    reconfigure(breaker, window=CountWindow(calls=50), minimum_calls=50, consecutive_failures=3)
    assert (breaker.calls, breaker.failures, breaker.consecutive_failures) == (0, 0, 2)
    transition = call(breaker, failed=True)
    assert transition is not None
    assert transition.reason == "3 consecutive failures"


def test_breaker_reconfigure_half_open_keeps_trials_and_permits(clock: FakeClock) -> None:
    """Half-open keeps its trial results and outstanding permits; one trial is left to judge."""
    breaker = half_open(clock, half_open_calls=3)
    call(breaker)
    call(breaker)
    outstanding = breaker.try_acquire()
    assert outstanding is not None
    assert outstanding.trial
    reconfigure(breaker, half_open_calls=2)  # two successes already: one is judged anew
    assert breaker.state is HALF_OPEN
    assert breaker.try_acquire() is None  # the outstanding trial fills the one slot left
    transition = breaker.record(outstanding, failed=False, duration=0.01)
    assert transition is not None
    assert (transition.to_state, transition.reason) == (CLOSED, "2 half-open trials succeeded")


def test_breaker_reconfigure_keeps_plain_permits_valid(clock: FakeClock) -> None:
    """A call admitted before the reload is recorded after it, under the new thresholds."""
    breaker = make(clock, consecutive_failures=5)
    permits = [breaker.try_acquire() for _ in range(2)]
    reconfigure(breaker, consecutive_failures=2)
    first, second = permits
    assert first is not None
    assert second is not None
    assert breaker.record(first, failed=True, duration=0.01) is None
    transition = breaker.record(second, failed=True, duration=0.01)
    assert transition is not None
    assert transition.reason == "2 consecutive failures"


def test_breaker_reconfigure_keeps_a_forced_state(clock: FakeClock) -> None:
    """An operator's forced-open state stands through a policy change, even `enabled: false`."""
    breaker = make(clock)
    breaker.force(OPEN)
    assert reconfigure(breaker, enabled=False) is None
    assert (breaker.state, breaker.forced) == (OPEN, OPEN)
    assert breaker.try_acquire() is None


def test_breaker_reconfigure_disabled_closes_an_open_circuit(clock: FakeClock) -> None:
    """A reload that disables the breaker closes an open circuit and says so."""
    breaker = make(clock)
    trip(breaker)
    transition = reconfigure(breaker, enabled=False)
    assert transition is not None
    assert (transition.from_state, transition.to_state) == (OPEN, CLOSED)
    assert transition.reason == "circuit_breaker disabled by a reload"
    assert breaker.try_acquire() is not None


def test_breaker_reconfigure_to_the_same_policy_changes_nothing(clock: FakeClock) -> None:
    """An equal policy is a no-op: state, window and schedule untouched."""
    breaker = make(clock, open_duration="7s")
    trip(breaker)
    before = repr(breaker)
    assert reconfigure(breaker, open_duration="7s") is None
    assert repr(breaker) == before
