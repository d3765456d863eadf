"""Summarise a py-spy `--format raw` profile: top functions by self and by total samples.

    python bench/profile_summary.py profile.txt [--top 25]

Each line of the raw (collapsed-stack) format is `frame;frame;...;frame COUNT`, a frame being
`function (file:line)`. "Self" counts samples whose innermost frame is the function (the
line numbers are folded away); "total" counts samples with the function anywhere on the stack.
Time spent inside C code (uvloop's loop, socket calls, httptools, orjson) has no Python frame
of its own and is charged to the Python function that called it; samples whose innermost
frame is the event loop's `run` are uvloop waiting for or dispatching I/O.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    """`Forwarder.__call__ (sidecar/pipeline/forward.py:71)` -> `Forwarder.__call__ (forward.py)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    short = "/".join(path.split("/")[-2:]) if "/" in path else path
    return f"{match['func']} ({short})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with open(args.profile) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            functions = [function_of(frame) for frame in stack.split(";") if frame]
            if not functions:
                continue
            samples += count
            own[functions[-1]] += count
            for function in set(functions):
                total[function] += count

    if samples == 0:
        print("no samples")
        return
    print(f"{samples} samples\n")
    print(f"top {args.top} by self time (innermost Python frame)")
    print("| self % | total % | function |\n|---:|---:|---|")
    for function, count in own.most_common(args.top):
        print(
            f"| {100 * count / samples:5.1f} | {100 * total[function] / samples:5.1f} | {function} |"
        )
    print(f"\ntop {args.top} by total time (anywhere on the stack)")
    print("| total % | self % | function |\n|---:|---:|---|")
    for function, count in total.most_common(args.top):
        print(
            f"| {100 * count / samples:5.1f} | {100 * own[function] / samples:5.1f} | {function} |"
        )


if __name__ == "__main__":
    main()
