"""What the demo shows: a live `rich` view on a terminal, one line per event otherwise.

Both views read the demo's `DemoTally` and `DemoReport`; neither decides anything about the
scenario. The live view redraws on the scenario's tick; the plain view prints a line per phase
change and per circuit transition (for pipes, CI logs and tests), and both end with the same
summary and the next commands to try.
"""

from __future__ import annotations

import statistics
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from sidecar.demo.scenario import REQUESTS_PER_SECOND, DemoReport, DemoUrls, Phase
from sidecar.demo.tally import DemoTally, Transition

# Outcomes in the order the user reads them, with what each means for the app.
OUTCOMES = (
    ("success", "answered by the upstream", "green"),
    ("fallback_cache", "stored answer (cache fallback)", "cyan"),
    ("fallback_static", "static fallback", "blue"),
    ("rejected", "refused by the sidecar", "magenta"),
    ("upstream_error", "upstream error passed through", "red"),
    ("timeout", "timed out", "red"),
    ("unreachable", "upstream unreachable", "red"),
    ("reset", "connection reset", "red"),
)
_STATE_STYLES = {"closed": "bold green", "open": "bold white on red", "half_open": "bold yellow"}

NEXT_STEPS = (
    ("sidecar check sidecar.yaml", "validate your config (the one above is a start)"),
    ("sidecar run -c sidecar.yaml", "run the daemon; point your app's base URL at it"),
    ("sidecar status", "circuits, rates and errors of a running daemon"),
    ("docs/resilience-policies.md", "timeouts, retries, breakers: every knob"),
    ("docs/fallbacks.md", "the stale-if-error cache, static answers, faults"),
)


def arrow(from_state: str, to_state: str) -> str:
    """`closed -> open`: ASCII, so that plain output survives any terminal encoding."""
    return f"{from_state} -> {to_state}"


# ---- the summary, shared by both views -------------------------------------------------------


def summary_facts(report: DemoReport) -> list[str]:
    """The sentences of the summary: what the breaker saved, what the app saw."""
    tally = report.tally
    outage = sum(n for name, n in report.received.items() if name in ("failing", "slow"))
    refused = len(tally.refused_durations)
    reopened = sum(
        1 for t in tally.transitions if t.from_state == "half_open" and t.to_state == "open"
    )
    facts = [
        f"{tally.requests} requests in {report.duration:.1f}s. The circuit opened "
        f"{_times(tally.opened - reopened)}, re-opened {_times(reopened)} after a failed "
        f"trial call, and closed {_times(tally.closed)}.",
    ]
    if refused:
        median_ms = statistics.median(tally.refused_durations) * 1000
        facts.append(
            f"The breaker saved the upstream {refused} requests: while it was open they were "
            f"answered without calling the upstream (median {median_ms:.1f} ms). During the "
            f"failing and slow phases the upstream received only {outage} requests."
        )
    fallbacks = tally.fallbacks
    if fallbacks:
        facts.append(
            f"Fallbacks served: {fallbacks['cache']} stored answers from the cache, "
            f"{fallbacks['static']} static answers for requests never seen before."
        )
    facts.append(
        f"Your app got an answer to {tally.answered} of "
        f"{tally.answered + tally.client_errors} requests; the slowest took "
        f"{tally.slowest_answer * 1000:.0f} ms."
    )
    if not report.recovered:
        facts.append("The breaker had not closed yet when the demo ended.")
    return facts


def _times(n: int) -> str:
    return {0: "0 times", 1: "once", 2: "twice"}.get(n, f"{n} times")


def plain_summary(report: DemoReport) -> str:
    tally = report.tally
    lines = ["", "Summary", "Outcomes:"]
    for key, label, _ in OUTCOMES:
        if tally.outcomes[key]:
            lines.append(f"  {key:<16} {tally.outcomes[key]:>6}  {label}")
    lines.append("Circuit transitions:")
    for t in tally.transitions:
        change = arrow(t.from_state, t.to_state)
        lines.append(f"  {f'+{t.at:.1f}s':>7}  {t.phase:<9}  {change:<20}  {t.reason}")
    lines.extend(summary_facts(report))
    lines.extend(["", "Next:"])
    lines.extend(f"  {command:<30} {what}" for command, what in NEXT_STEPS)
    return "\n".join(lines) + "\n"


def rich_summary(report: DemoReport) -> RenderableType:
    tally = report.tally
    outcomes = Table(title="Outcomes", title_justify="left", show_edge=False, expand=False)
    outcomes.add_column("outcome")
    outcomes.add_column("requests", justify="right")
    outcomes.add_column("meaning", style="dim")
    for key, label, style in OUTCOMES:
        if tally.outcomes[key]:
            outcomes.add_row(Text(key, style=style), str(tally.outcomes[key]), label)
    facts = Table.grid(padding=(0, 1))
    for fact in summary_facts(report):
        facts.add_row("•", fact)
    steps = Table.grid(padding=(0, 2))
    for command, what in NEXT_STEPS:
        steps.add_row(Text(command, style="bold cyan"), Text(what, style="dim"))
    return Group(
        Text("Summary", style="bold underline"),
        outcomes,
        Text(""),
        _transitions_table(tally.transitions),
        Text(""),
        facts,
        Text(""),
        Text("Next", style="bold underline"),
        steps,
    )


def _transitions_table(transitions: list[Transition]) -> Table:
    table = Table(title="Circuit transitions", title_justify="left", show_edge=False)
    table.add_column("at", justify="right")
    table.add_column("phase")
    table.add_column("change")
    table.add_column("reason", style="dim")
    for t in transitions:
        change = Text(t.from_state)
        change.append(" → ")
        change.append(t.to_state, style=_STATE_STYLES.get(t.to_state, ""))
        table.add_row(f"+{t.at:.1f}s", t.phase, change, t.reason)
    if not transitions:
        table.add_row("", "", Text("closed", style=_STATE_STYLES["closed"]), "no change yet")
    return table


# ---- the plain view -------------------------------------------------------------------------


class PlainView:
    """One line per phase change and per circuit transition, then the summary."""

    __slots__ = ("_out", "_tally")

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tally: DemoTally | None = None

    def begin(self, config_yaml: str, urls: DemoUrls, tally: DemoTally) -> None:
        self._tally = tally
        self._print(
            f"sidecar demo: app -> sidecar {urls.sidecar} -> flaky upstream {urls.upstream}, "
            f"{REQUESTS_PER_SECOND} requests/s; admin API {urls.admin}\nconfig:\n"
            + "".join(f"  {line}\n" for line in config_yaml.splitlines())
        )

    def phase_started(self, phase: Phase) -> None:
        self._print(f"[{self._at()}] phase {phase.name}: {phase.story}\n")

    def transition(self, transition: Transition) -> None:
        change = arrow(transition.from_state, transition.to_state)
        self._print(f"[{transition.at:5.1f}s] circuit {change}: {transition.reason}\n")

    def tick(self) -> None:
        pass

    def end(self, report: DemoReport) -> None:
        self._print(plain_summary(report))

    def close(self) -> None:
        pass

    def _at(self) -> str:
        return f"{self._tally.elapsed():5.1f}s" if self._tally is not None else "  0.0s"

    def _print(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def _port(url: str) -> str:
    return url.rpartition(":")[2]


# ---- the live view --------------------------------------------------------------------------


class LiveView:
    """The config, then a live panel redrawn on every tick, then the summary."""

    __slots__ = ("_admin", "_console", "_live", "_phase", "_phases", "_route", "_tally")

    def __init__(self, console: Console, phases: list[Phase]) -> None:
        self._console = console
        self._phases = phases
        self._phase: Phase | None = None
        self._tally: DemoTally | None = None
        self._live: Live | None = None
        self._route = ""
        self._admin = ""

    def begin(self, config_yaml: str, urls: DemoUrls, tally: DemoTally) -> None:
        self._tally = tally
        self._route = (
            f"app → sidecar :{_port(urls.sidecar)} → flaky upstream :{_port(urls.upstream)}"
        )
        self._admin = urls.admin
        self._console.print(
            Panel(
                Syntax(config_yaml, "yaml", theme="ansi_dark", background_color="default"),
                title="the sidecar config this demo runs",
                title_align="left",
                border_style="dim",
            )
        )
        self._live = Live(
            self._render(), console=self._console, auto_refresh=False, transient=False
        )
        self._live.start()

    def phase_started(self, phase: Phase) -> None:
        self._phase = phase
        self.tick()

    def transition(self, transition: Transition) -> None:
        pass  # drawn from the tally on the next tick

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def end(self, report: DemoReport) -> None:
        self.tick()
        self.close()
        self._console.print(rich_summary(report))

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self) -> RenderableType:
        # Kept under 20 lines so that it fits a 24-line terminal without being cut.
        tally = self._tally
        if tally is None:
            return Text("starting…")
        parts: list[RenderableType] = [self._timeline(tally)]
        if self._phase is not None:
            parts.append(Text(self._phase.story, style="italic"))
        parts.extend([Text(""), self._circuit(tally), Text(""), self._outcomes(tally)])
        saved = len(tally.refused_durations)
        parts.append(
            Text(
                f"answered without calling the upstream: {saved} · "
                f"app errors: {tally.client_errors}",
                style="dim",
            )
        )
        if tally.transitions:
            parts.extend([Text(""), _transitions_grid(tally.transitions[-4:])])
        return Panel(
            Group(*parts),
            title=f"sidecar demo · {self._route} · {REQUESTS_PER_SECOND} req/s",
            title_align="left",
            subtitle=f"meanwhile, in another terminal: sidecar status --admin {self._admin}",
            subtitle_align="left",
        )

    def _timeline(self, tally: DemoTally) -> Text:
        line = Text()
        for phase in self._phases:
            if self._phase is not None and phase.end <= self._phase.start:
                line.append(f"✔ {phase.name}", style="dim")
            elif phase == self._phase:
                line.append(f"▶ {phase.name}", style="bold reverse")
            else:
                line.append(f"· {phase.name}", style="dim")
            line.append("   ")
        total = self._phases[-1].end
        line.append(f"{min(tally.elapsed(), total):4.1f}s / {total:.0f}s", style="dim")
        return line

    def _circuit(self, tally: DemoTally) -> Text:
        text = Text("circuit breaker ")
        state = tally.circuit
        text.append(f" {state.replace('_', '-').upper()} ", style=_STATE_STYLES.get(state, ""))
        text.append(f" for {tally.elapsed() - tally.circuit_since:.1f}s")
        if tally.transitions:
            text.append(f"  {tally.transitions[-1].reason}", style="dim")
        return text

    def _outcomes(self, tally: DemoTally) -> Table:
        rates = tally.rates()
        table = Table(box=None, padding=(0, 1), pad_edge=False)
        table.add_column("outcome", style="bold")
        table.add_column("req/s", justify="right")
        table.add_column("total", justify="right")
        table.add_column("")
        for index, (key, label, style) in enumerate(OUTCOMES):
            if index >= 3 and not tally.outcomes[key]:
                continue  # the rarer outcomes only once they happened
            rate = rates[key]
            bar = Text("█" * rate, style=style)
            table.add_row(Text(label, style=style), str(rate), str(tally.outcomes[key]), bar)
        return table


def _transitions_grid(transitions: list[Transition]) -> Table:
    grid = Table.grid(padding=(0, 2))
    for t in transitions:
        change = Text(t.from_state)
        change.append(" → ")
        change.append(t.to_state, style=_STATE_STYLES.get(t.to_state, ""))
        grid.add_row(Text(f"+{t.at:.1f}s", style="dim"), t.phase, change, Text(t.reason, "dim"))
    return grid
