"""The circuit breaker state machine of SPEC §4.2: closed → open → half-open → closed.

`CircuitBreaker` decides whether a call may go out (`try_acquire`) and learns from each call's
result (`record`). It returns what changed as a `Transition` and never emits events, logs or
metrics itself: the caller turns transitions into `CircuitTransitioned` events. It does not
classify responses either; `sidecar.outcome` decides what `failed` means.

Permits carry the generation (state episode) that issued them. Every transition starts a new
generation, so the result of a call admitted before a transition (a slow closed-state call
finishing while half-open, a trial outliving its episode) is ignored instead of judging a
state it was never part of.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from sidecar.clock import Clock
from sidecar.config import BreakerPolicy, format_duration, format_ratio
from sidecar.events import CircuitTransitioned
from sidecar.resilience.window import CallWindow, CountWindow, TimeWindow, carry_results


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; hand it back to `record()` or `release()` exactly once."""

    trial: bool  # a half-open trial: the request gets exactly one attempt (SPEC §4.1)
    generation: int  # the state episode that issued it; results from older ones are ignored


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for the caller to emit; `reason` names what caused it, with figures."""

    from_state: CircuitState
    to_state: CircuitState
    reason: str
    at: float  # clock time of the change

    def event(self, upstream: str, route: str) -> CircuitTransitioned:
        """The event the caller emits for this change (the breaker itself emits nothing)."""
        return CircuitTransitioned(
            upstream, route, self.from_state.value, self.to_state.value, self.reason
        )


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.4g}%"


def _window(policy: BreakerPolicy, clock: Clock) -> tuple[CallWindow, str]:
    """The empty window `policy` asks for, and how reasons name its span."""
    if isinstance(policy.window, float):
        return TimeWindow(clock, policy.window), f" in {format_duration(policy.window)}"
    return CountWindow(policy.window.calls), ""  # "over the last N calls" says it all


class CircuitBreaker:
    """One breaker: a window of call results, the state, and the open-period schedule."""

    __slots__ = (
        "_clock",
        "_consecutive",
        "_forced",
        "_forced_at",
        "_generation",
        "_open_for",
        "_open_until",
        "_opened_at",
        "_pending",
        "_permit",
        "_policy",
        "_state",
        "_trial",
        "_trial_slow",
        "_trial_successes",
        "_trials_out",
        "_window",
        "_window_text",
    )

    def __init__(self, policy: BreakerPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._window, self._window_text = _window(policy, clock)
        self._state = CircuitState.CLOSED
        self._forced: CircuitState | None = None
        self._forced_at = 0.0
        self._consecutive = 0
        self._open_for = policy.open_duration
        self._opened_at = 0.0
        self._open_until = 0.0
        self._trials_out = 0
        self._trial_successes = 0
        self._trial_slow = 0
        self._pending: Transition | None = None
        self._generation = 0
        # Permits are immutable and identical within a generation: reuse them, allocate
        # two per transition instead of one per request.
        self._permit = Permit(trial=False, generation=0)
        self._trial = Permit(trial=True, generation=0)

    # -- the per-request calls -----------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit to call, or None while open or when every half-open trial slot is taken."""
        forced = self._forced
        if forced is not None:
            return self._permit if forced is CircuitState.CLOSED else None
        state = self._state
        if state is CircuitState.CLOSED:
            return self._permit
        if state is CircuitState.OPEN:
            if self._clock.now() < self._open_until:
                return None
            self._to_half_open()
        if self._trials_out + self._trial_successes >= self._policy.half_open_calls:
            return None
        self._trials_out += 1
        return self._trial

    def record(self, permit: Permit, failed: bool, duration: float) -> Transition | None:
        """Learn the result of the call `permit` admitted; return the transition it caused."""
        if permit.generation != self._generation or self._forced is not None:
            return None
        policy = self._policy
        if not policy.enabled:
            return None
        slow = duration >= policy.slow_call_duration
        if permit.trial:
            return self._record_trial(failed, slow)
        self._window.record(failed, slow)
        self._consecutive = self._consecutive + 1 if failed else 0
        reason = self._trip_reason()
        if reason is None:
            return None
        return self._open(CircuitState.CLOSED, reason, policy.open_duration)

    def release(self, permit: Permit) -> None:
        """Hand back a permit whose call never happened, freeing its half-open trial slot."""
        if permit.trial and permit.generation == self._generation and self._trials_out > 0:
            self._trials_out -= 1

    def take_transition(self) -> Transition | None:
        """The open → half-open change that happened lazily (on a clock read), once.

        Time alone moves an open breaker to half-open, so no call returns that transition;
        the caller collects it here after `try_acquire()` and emits it like any other.
        """
        pending, self._pending = self._pending, None
        return pending

    # -- operator overrides ------------------------------------------------------------

    def force(self, state: CircuitState | None) -> Transition | None:
        """Force open or closed until `force(None)` returns to automatic control.

        Forced open rejects every call; forced closed admits every call and learns nothing
        from them. Returning to automatic control starts closed with a fresh window and the
        base open duration. Results of calls admitted before any of these are ignored.
        Returns the transition when the visible state changes.
        """
        if state is CircuitState.HALF_OPEN:
            raise ValueError("CircuitBreaker.force: use open, closed or None (auto), not half_open")
        if state is self._forced:
            return None
        # Judge the change against the last state the caller was told about: a lazy
        # open → half-open not yet taken is superseded, never reported after this one.
        pending = self._pending
        before = pending.from_state if pending is not None else (self._forced or self._state)
        now = self._clock.now()
        self._pending = None
        self._forced = state
        self._forced_at = now
        self._reset(CircuitState.CLOSED, self._policy.open_duration)
        if state is None:
            reason = "released to automatic control"
        else:
            reason = f"forced {state.value} by operator"
        after = self.state
        return None if after is before else Transition(before, after, reason, now)

    # -- a reload --------------------------------------------------------------------------

    def reconfigure(self, policy: BreakerPolicy) -> Transition | None:
        """Apply a policy changed by a reload, keeping the state it has reached (SPEC §6).

        Nothing starts over: the state, the generation (so permits already handed out are
        recorded as usual), the forced state, the run of consecutive failures, and the
        window's results as far as `carry_results` can move them into the new window
        (same kind: kept; count ↔ time: dropped). An open circuit stays open until its
        `open_until`, but no longer than the new `max_open_duration` from when it opened,
        and its next open period is kept between the new `open_duration` and
        `max_open_duration`. Half-open keeps its trials, but at least one trial is judged
        under the new policy. New thresholds judge from the next recorded call on. A
        policy with `enabled: false` closes the circuit (the transition is returned).
        """
        if policy == self._policy:
            return None
        before = self.state  # brings a lapsed open period to half-open first
        old = self._policy
        self._policy = policy
        if policy.window != old.window:
            window, self._window_text = _window(policy, self._clock)
            carry_results(self._window, window)
            self._window = window
        state = self._state
        if state is CircuitState.CLOSED:
            self._open_for = policy.open_duration
        else:
            self._open_for = min(
                max(self._open_for, policy.open_duration), policy.max_open_duration
            )
        if state is CircuitState.OPEN:
            self._open_until = min(self._open_until, self._opened_at + policy.max_open_duration)
        elif state is CircuitState.HALF_OPEN:
            self._trial_successes = min(self._trial_successes, policy.half_open_calls - 1)
            self._trial_slow = min(self._trial_slow, self._trial_successes)
        if policy.enabled or state is CircuitState.CLOSED:
            return None
        now = self._clock.now()
        self._pending = None
        self._reset(CircuitState.CLOSED, policy.open_duration)
        after = self.state
        if after is before:  # forced: the operator's word still stands
            return None
        return Transition(before, after, "circuit_breaker disabled by a reload", now)

    # -- what the admin API and error pages read ---------------------------------------

    @property
    def state(self) -> CircuitState:
        if self._forced is not None:
            return self._forced
        if self._state is CircuitState.OPEN and self._clock.now() >= self._open_until:
            self._to_half_open()
        return self._state

    @property
    def forced(self) -> CircuitState | None:
        return self._forced

    def retry_after(self) -> float:
        """Seconds until calls may be admitted again: the time left open, else 0.

        Forced open has no known end; it answers the base `open_duration` as a hint.
        """
        state = self.state
        if state is not CircuitState.OPEN:
            return 0.0
        if self._forced is not None:
            return self._policy.open_duration
        return self._open_until - self._clock.now()

    @property
    def opened_at(self) -> float | None:
        """When the current open period began; None unless open."""
        if self.state is not CircuitState.OPEN:
            return None
        return self._forced_at if self._forced is not None else self._opened_at

    @property
    def open_until(self) -> float | None:
        """When the current open period ends; None unless open automatically."""
        if self.state is not CircuitState.OPEN or self._forced is not None:
            return None
        return self._open_until

    @property
    def calls(self) -> int:
        return self._window.calls

    @property
    def failures(self) -> int:
        return self._window.failures

    @property
    def slow(self) -> int:
        return self._window.slow

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    # -- transitions -------------------------------------------------------------------

    def _trip_reason(self) -> str | None:
        """Which threshold the closed window has reached, with its figures, if any."""
        policy = self._policy
        window = self._window
        calls = window.calls
        if calls >= policy.minimum_calls:
            failures = window.failures
            if failures and failures / calls >= policy.failure_rate:
                rate = _percent(failures / calls)
                threshold = format_ratio(policy.failure_rate)
                return f"failure rate {rate} ≥ {threshold} {self._span(calls)}"
            slow = window.slow
            if slow and slow / calls >= policy.slow_call_rate:
                rate = _percent(slow / calls)
                return (
                    f"slow-call rate {rate} ≥ {format_ratio(policy.slow_call_rate)} "
                    f"{self._span(calls)} "
                    f"(slow: ≥ {format_duration(policy.slow_call_duration)})"
                )
        limit = policy.consecutive_failures
        if limit and self._consecutive >= limit:
            return f"{self._consecutive} consecutive failures"
        return None

    def _span(self, calls: int) -> str:
        if self._window_text:
            return f"over {calls} calls{self._window_text}"
        return f"over the last {calls} calls"

    def _record_trial(self, failed: bool, slow: bool) -> Transition | None:
        policy = self._policy
        if self._trials_out > 0:  # never below zero, even if a permit is recorded twice
            self._trials_out -= 1
        longer = min(self._open_for * 2, policy.max_open_duration)
        if failed:
            return self._open(CircuitState.HALF_OPEN, "half-open trial failed", longer)
        self._trial_successes += 1
        self._trial_slow += slow
        trials = policy.half_open_calls
        if self._trial_successes < trials:
            return None
        slow_trials = self._trial_slow
        if slow_trials and slow_trials / trials >= policy.slow_call_rate:
            reason = (
                f"half-open trials slow: {slow_trials} of {trials} "
                f"({_percent(slow_trials / trials)} ≥ {format_ratio(policy.slow_call_rate)}) "
                f"took ≥ {format_duration(policy.slow_call_duration)}"
            )
            return self._open(CircuitState.HALF_OPEN, reason, longer)
        now = self._clock.now()
        self._reset(CircuitState.CLOSED, policy.open_duration)
        reason = f"{trials} half-open trial{'s' if trials > 1 else ''} succeeded"
        return Transition(CircuitState.HALF_OPEN, CircuitState.CLOSED, reason, now)

    def _open(self, before: CircuitState, reason: str, duration: float) -> Transition:
        now = self._clock.now()
        self._reset(CircuitState.OPEN, duration)
        self._opened_at = now
        self._open_until = now + duration
        return Transition(before, CircuitState.OPEN, reason, now)

    def _to_half_open(self) -> None:
        at = self._open_until
        # The period that ended (a reload may have cut it short of `_open_for`), to the
        # millisecond durations are configured in, without the float noise of a subtraction.
        lasted = round(at - self._opened_at, 3)
        self._reset(CircuitState.HALF_OPEN, self._open_for)
        reason = f"open duration {format_duration(lasted)} elapsed"
        self._pending = Transition(CircuitState.OPEN, CircuitState.HALF_OPEN, reason, at)

    def _reset(self, state: CircuitState, open_for: float) -> None:
        """Enter `state` with a fresh window and a new generation of permits."""
        self._state = state
        self._open_for = open_for
        self._window.reset()
        self._consecutive = 0
        self._trials_out = self._trial_successes = self._trial_slow = 0
        self._generation += 1
        self._permit = Permit(trial=False, generation=self._generation)
        self._trial = Permit(trial=True, generation=self._generation)

    def __repr__(self) -> str:
        forced = f", forced={self._forced.value}" if self._forced is not None else ""
        match self._state:
            case CircuitState.CLOSED:
                detail = (
                    f"calls={self._window.calls}, failures={self._window.failures}, "
                    f"slow={self._window.slow}, consecutive={self._consecutive}"
                )
            case CircuitState.OPEN:
                detail = f"open_until={self._open_until:.3f}, open_for={self._open_for}"
            case CircuitState.HALF_OPEN:
                detail = (
                    f"trials_out={self._trials_out}, trial_successes={self._trial_successes}"
                    f"/{self._policy.half_open_calls}"
                )
            case _:
                assert_never(self._state)
        return f"CircuitBreaker(state={self._state.value}{forced}, {detail})"
