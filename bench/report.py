"""Summarise bench/run.sh's results.tsv as a Markdown table (standard library only).

    python bench/report.py results.tsv [--meta meta.txt]

One row per target, path and connection count; with several repetitions each figure is the
median. "req/CPU-s" is requests divided by the sidecar's own CPU-seconds (utime + stime from
/proc/PID/stat) during the run; the ratios compare with "direct" at the same path and
connection count. "cpu0 other" is CPU 0 time used by processes that are not the sidecar
(its worst repetition): above a few percent, someone else disturbed the run. It says nothing
about "direct", which does not use CPU 0.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict


def median(rows: list[dict[str, str]], key: str) -> float:
    return statistics.median(float(row[key]) for row in rows)


def summarise(rows: list[dict[str, str]]) -> dict[str, float]:
    rps = [float(r["requests"]) / float(r["duration_s"]) for r in rows]
    per_cpu = [float(r["requests"]) / float(r["cpu_s"]) for r in rows if float(r["cpu_s"]) > 0]
    return {
        "rps": statistics.median(rps),
        "p50": median(rows, "p50_us") / 1000,
        "p99": median(rows, "p99_us") / 1000,
        "cpu_s": median(rows, "cpu_s"),
        "per_cpu": statistics.median(per_cpu) if per_cpu else 0.0,
        "other": max(float(r["cpu0_other_pct"]) for r in rows),
        "errors": sum(int(r["errors"]) for r in rows),
        "rss_idle": median(rows, "rss_idle_kb") / 1024,
        "rss_load": max(float(r["rss_load_kb"]) for r in rows) / 1024,
        "runs": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--meta")
    args = parser.parse_args()

    with open(args.results, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    groups: dict[tuple[str, str, int], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["target"], row["path"], int(row["conns"]))].append(row)
    stats = {key: summarise(group) for key, group in groups.items()}
    targets = list(dict.fromkeys(row["target"] for row in rows))
    scenarios = sorted({(path, conns) for _, path, conns in groups})

    if args.meta:
        with open(args.meta) as handle:
            print("".join(f"    {line}" for line in handle))
    print(
        "| path | conns | target | req/s | p50 ms | p99 ms | sidecar CPU s | req/CPU-s "
        "| idle RSS MiB | loaded RSS MiB | req/s vs direct | p50 vs direct | cpu0 other % | errors |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path, conns in scenarios:
        direct = stats.get(("direct", path, conns))
        for target in targets:
            s = stats.get((target, path, conns))
            if s is None:
                continue
            # the sidecar-only columns are empty for "direct" (no proxy process to measure)
            proxy = "-" if target == "direct" else None
            rps_ratio = f"{s['rps'] / direct['rps']:.2f}" if direct and direct["rps"] else "-"
            p50_ratio = f"{s['p50'] / direct['p50']:.2f}" if direct and direct["p50"] else "-"
            cells = [
                path,
                str(conns),
                target,
                f"{s['rps']:,.0f}",
                f"{s['p50']:.3f}",
                f"{s['p99']:.3f}",
                proxy or f"{s['cpu_s']:.2f}",
                proxy or f"{s['per_cpu']:,.0f}",
                proxy or f"{s['rss_idle']:.1f}",
                proxy or f"{s['rss_load']:.1f}",
                rps_ratio,
                p50_ratio,
                proxy or f"{s['other']:.1f}",
                str(s["errors"]),
            ]
            print("| " + " | ".join(cells) + " |")
    noisy = [key for key, s in stats.items() if key[0] != "direct" and s["other"] > 10]
    if noisy:
        print(
            "\nWARNING: other processes used more than 10% of CPU 0 during "
            + ", ".join(f"{t} {p} c{c}" for t, p, c in noisy)
            + "; re-run those when the machine is quiet."
        )


if __name__ == "__main__":
    main()
