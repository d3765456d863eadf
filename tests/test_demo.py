"""Tests for `sidecar demo`: its timeline and config, its tally, and a whole run without a TTY."""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.config import load_config_text
from sidecar.demo.scenario import (
    LISTENER,
    UPSTREAM,
    DemoReport,
    DemoUrls,
    demo_config,
    open_duration,
    timeline,
)
from sidecar.demo.tally import DemoTally
from sidecar.demo.upstream import UpstreamMode
from sidecar.demo.view import PlainView, plain_summary
from sidecar.events import CircuitTransitioned, FallbackServed, RequestFinished
from sidecar.outcome import Outcome
from tests.fakes import FakeClock

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")
DURATIONS = pytest.mark.parametrize("duration", [4.0, 6.0, 20.0, 600.0], ids=str)


def finished(outcome: Outcome, attempts: int = 1, upstream: str = UPSTREAM) -> RequestFinished:
    return RequestFinished(
        wall_time=1_795_461_302.0,
        request_id="r-1",
        listener=LISTENER,
        upstream=upstream,
        route="default",
        method="GET",
        path="/products/1",
        status=200,
        outcome=outcome,
        attempts=attempts,
        duration=0.002,
        bytes_in=0,
        bytes_out=64,
        circuit_state="closed",
        error="",
    )


def opened(reason: str = "5 consecutive failures") -> CircuitTransitioned:
    return CircuitTransitioned(UPSTREAM, "default", "closed", "open", reason)


@DURATIONS
def test_demo_timeline_runs_the_phases_back_to_back(duration: float) -> None:
    """Healthy, failing, slow, recovered: contiguous, from 0 to exactly `duration`."""
    phases = timeline(duration)
    assert [p.mode for p in phases] == [
        UpstreamMode.HEALTHY,
        UpstreamMode.FAILING,
        UpstreamMode.SLOW,
        UpstreamMode.HEALTHY,
    ]
    assert phases[0].start == 0.0
    assert phases[-1].end == pytest.approx(duration)
    assert all(a.end == b.start for a, b in itertools.pairwise(phases))


@DURATIONS
def test_demo_longest_open_period_ends_within_the_recovered_phase(duration: float) -> None:
    """Even a doubled open period leaves the recovered phase time for trials to close it."""
    recovered = timeline(duration)[-1]
    assert 2 * open_duration(duration) < recovered.end - recovered.start


@DURATIONS
def test_demo_config_is_a_valid_sidecar_config(duration: float) -> None:
    """The printed config loads, binds only ephemeral loopback ports and logs no access lines."""
    config = load_config_text(demo_config("http://127.0.0.1:8080", duration), source="<demo>")
    assert str(config.admin.bind) == "127.0.0.1:0"
    assert [(str(x.bind), x.upstream) for x in config.listeners] == [("127.0.0.1:0", UPSTREAM)]
    assert config.access_log.enabled is False
    upstream = config.upstreams[UPSTREAM]
    assert upstream.circuit_breaker.open_duration == pytest.approx(open_duration(duration))
    assert upstream.fallback.cache is not None
    assert upstream.fallback.static is not None


def test_demo_tally_counts_outcomes_rates_and_refusals() -> None:
    """Outcomes are counted in total and per second; answers without an attempt are refusals."""
    clock = FakeClock()
    tally = DemoTally(clock, UPSTREAM)
    tally.notify(finished(Outcome.SUCCESS))
    tally.notify(finished(Outcome.UPSTREAM_ERROR, upstream="other"))
    clock.advance(0.9)
    tally.notify(finished(Outcome.FALLBACK_CACHE, attempts=0))
    tally.notify(FallbackServed(UPSTREAM, "cache"))
    assert tally.rates() == {"success": 1, "fallback_cache": 1}
    clock.advance(0.5)
    assert tally.rates() == {"fallback_cache": 1}
    assert tally.outcomes == {"success": 1, "fallback_cache": 1}
    assert tally.fallbacks == {"cache": 1}
    assert tally.refused_durations == [0.002]


def test_demo_tally_tells_listeners_about_transitions() -> None:
    """A circuit change updates the state, is stamped with time and phase, and reaches listeners."""
    clock = FakeClock()
    tally = DemoTally(clock, UPSTREAM)
    heard: list[str] = []
    tally.on_transition(lambda t: heard.append(f"{t.from_state}->{t.to_state}"))
    tally.phase = "failing"
    clock.advance(2.5)
    tally.notify(opened())
    (transition,) = tally.transitions
    assert (transition.at, transition.phase, transition.reason) == (
        2.5,
        "failing",
        "5 consecutive failures",
    )
    assert (tally.circuit, tally.opened, tally.closed, heard) == ("open", 1, 0, ["closed->open"])


def test_demo_plain_view_prints_one_line_per_event_and_a_summary() -> None:
    """Without a TTY: phase and transition lines, then the summary, with no ANSI escapes."""
    clock = FakeClock()
    tally = DemoTally(clock, UPSTREAM)
    out = io.StringIO()
    view = PlainView(out)
    tally.on_transition(view.transition)
    phases = timeline(6.0)
    view.begin("version: 1\n", DemoUrls("http://u", "http://s", "http://a"), tally)
    view.phase_started(phases[1])
    tally.phase = phases[1].name
    tally.notify(finished(Outcome.FALLBACK_STATIC, attempts=0))
    tally.notify(opened())
    tally.record_answer(0.25)
    report = DemoReport(6.0, tally, {"failing": 3}, recovered=False)
    view.end(report)
    text = out.getvalue()
    assert "phase failing: The upstream answers 503" in text
    assert "circuit closed -> open: 5 consecutive failures" in text
    assert "fallback_static       1" in text
    assert "the upstream received only 3 requests" in text
    assert "The breaker had not closed yet" in text
    assert ANSI.search(text) is None
    assert text.endswith(plain_summary(report))


@pytest.mark.parametrize("value", ["1", "601", "soon"], ids=["too-short", "too-long", "nan"])
def test_demo_duration_out_of_range_is_a_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--duration` outside 4–600 seconds, or not a number, exits 2 before starting anything."""
    assert main(["demo", "--duration", value]) == 2
    assert "--duration" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_demo_runs_without_a_tty_and_shows_the_breaker_open_and_close() -> None:
    """`sidecar demo --duration 6` exits 0 within 15 s and reports an open and a close."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "all_proxy")}
    env["PYTHONIOENCODING"] = "utf-8"
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--duration", "6"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=15,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    out = done.stdout
    assert re.search(r"^\[ *[\d.]+s\] circuit closed -> open: ", out, re.MULTILINE), out
    assert re.search(r"^\[ *[\d.]+s\] circuit half_open -> closed: ", out, re.MULTILINE), out
    for phase in ("healthy", "failing", "slow", "recovered"):
        assert f"] phase {phase}: " in out
    assert "Summary" in out
    assert "sidecar status" in out
    assert ANSI.search(out) is None
