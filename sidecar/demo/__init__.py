"""`sidecar demo`: a flaky upstream, the sidecar and steady traffic in one process.

The first thing to run after installing: it shows, live, a circuit opening when the upstream
fails, fallbacks being served, and the circuit closing once the upstream recovers. The
package owns only the demo; `upstream` is the flaky service, `scenario` the script and the
lifecycle, `tally` the counters, `view` the terminal output.
"""

from __future__ import annotations

import asyncio
from typing import TextIO

from rich.console import Console

from sidecar.demo.scenario import run_scenario, timeline
from sidecar.demo.view import LiveView, PlainView
from sidecar.errors import StartupError

__all__ = ["run_demo"]


def run_demo(duration: float, out: TextIO, err: TextIO) -> int:
    """Run the demo for about `duration` seconds; 0 when it ran, 1 if the sidecar could not start."""
    view: LiveView | PlainView
    if out.isatty():
        view = LiveView(Console(file=out, highlight=False), timeline(duration))
    else:
        view = PlainView(out)
    try:
        report = asyncio.run(run_scenario(duration, view))
    except KeyboardInterrupt:  # asyncio.run cancelled the scenario, which stopped everything
        view.close()  # before writing, so the message is not drawn over by the live view
        err.write("\nsidecar demo: interrupted; everything it started has been stopped.\n")
        return 130
    except StartupError as exc:
        view.close()
        err.write(f"sidecar demo: {exc}\n")
        return 1
    finally:
        view.close()  # idempotent; also on an unexpected error, to give the cursor back
    view.end(report)
    return 0
