"""The nightly history check: is tonight's number outside the band of the last N nights on this machine?

The pull-request gate compares two revisions measured side by side in one job;
it cannot see a slow drift, a regression that slipped under its factor a few
percent per pull request, or a change nobody benchmarked (a docs-only
selection that turned out not to be). The nightly job runs the whole suite on
``main`` and keeps every night's results (docs/regression-gate.md), so each
benchmark has a history on one machine. This module flags a benchmark whose
newest value leaves the band its previous ``nights`` values span:

    center = median(last N)
    half   = max(K_MAD * 1.4826 * MAD(last N), MIN_HALF_WIDTH * center)
    band   = [center - half, center + half]

The MAD (median absolute deviation; 1.4826 makes it estimate a normal
standard deviation) keeps one odd night from widening the band; the floor of
:data:`MIN_HALF_WIDTH` keeps a run of near-identical nights from making a 3%
wobble "out of band". It is a second signal beside the gate, reported and
never a merge blocker: a flag says "look at the history plot", not "revert".
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

from scalelab.bench import asv_results
from scalelab.bench.regress import higher_is_better

__all__ = ["BandCheck", "DEFAULT_NIGHTS", "K_MAD", "MIN_HALF_WIDTH", "MIN_NIGHTS", "band_check", "check_history",
           "format_history"]

#: Nights in the band (two weeks: long enough for a robust median, short enough to follow a new runner image).
DEFAULT_NIGHTS = 14
#: Fewer earlier nights than this: no verdict ("too few nights").
MIN_NIGHTS = 5
#: Band half-width in robust standard deviations (3 sigma: ~0.3% of normal nights outside per side).
K_MAD = 3.0
#: Smallest band half-width, as a fraction of the center: the A/A spread of raw times between processes
#: on one machine reached 1.3-1.5x (docs/regression-gate.md); 0.25 flags only what clearly moved.
MIN_HALF_WIDTH = 0.25


@dataclasses.dataclass(frozen=True)
class BandCheck:
    """One benchmark x parameter combination against its history."""

    benchmark: str
    params: str
    unit: str
    tonight: float
    nights: int  # earlier values the band was built from
    low: float | None
    high: float | None
    verdict: str  # "slower", "faster", "inside", "too few nights"


def band_check(history, tonight: float, *, unit: str = "seconds", benchmark: str = "", params: str = "",
               nights: int = DEFAULT_NIGHTS, k_mad: float = K_MAD,
               min_half_width: float = MIN_HALF_WIDTH) -> BandCheck:
    """Judge ``tonight`` against the band of the last ``nights`` values of ``history`` (oldest first).

    Non-finite and missing history values (failed or skipped nights) are
    dropped before the last ``nights`` are taken. "slower" means worse in the
    unit's direction (a rate below the band, a time above it).
    """
    if int(nights) < 1:
        raise ValueError(f"nights must be >= 1, got {nights!r}")
    if not (isinstance(tonight, (int, float)) and math.isfinite(tonight)):
        raise ValueError(f"tonight must be a finite number, got {tonight!r}")
    past = [float(v) for v in history if isinstance(v, (int, float)) and math.isfinite(v)][-int(nights):]
    if len(past) < MIN_NIGHTS:
        return BandCheck(benchmark, params, unit, float(tonight), len(past), None, None, "too few nights")
    center = statistics.median(past)
    mad = statistics.median(abs(v - center) for v in past)
    half = max(k_mad * 1.4826 * mad, min_half_width * abs(center))
    low, high = center - half, center + half
    if low <= tonight <= high:
        verdict = "inside"
    else:
        above = tonight > high
        verdict = "faster" if above == higher_is_better(unit) else "slower"
    return BandCheck(benchmark, params, unit, float(tonight), len(past), low, high, verdict)


def check_history(results_dir: Path | str, machine: str, *, nights: int = DEFAULT_NIGHTS) -> list[BandCheck]:
    """Band-check the newest result file of ``machine`` against the files before it.

    Files are ordered by the time their benchmarks started (asv's ``started_at``),
    so "tonight" is the last run, whatever commit it measured.
    """
    results_dir = Path(results_dir)
    runs = []
    for path in asv_results.result_files(results_dir, machine):
        res = asv_results.read_result_file(path)
        started = max((e.started_at or 0 for e in res.entries), default=0)
        runs.append((started, res))
    if not runs:
        return []
    runs.sort(key=lambda r: r[0])
    units = {name: d.get("unit", "") for name, d in asv_results.load_benchmark_descriptions(results_dir).items()}
    series: dict[tuple[str, str], list] = {}
    for _, res in runs[:-1]:
        for e in res.entries:
            series.setdefault((e.benchmark, ", ".join(e.params)), []).append(e.value)
    out = []
    for e in runs[-1][1].entries:
        if not (isinstance(e.value, (int, float)) and math.isfinite(e.value)):
            continue
        key = (e.benchmark, ", ".join(e.params))
        out.append(band_check(series.get(key, []), e.value, unit=units.get(e.benchmark, ""), benchmark=key[0],
                              params=key[1], nights=nights))
    return out


def format_history(checks: list[BandCheck]) -> str:
    """Markdown table of the out-of-band rows (worst first) and a one-line count of the rest."""
    flagged = sorted((c for c in checks if c.verdict in ("slower", "faster")),
                     key=lambda c: (c.verdict != "slower", -abs(c.tonight - (c.low + c.high) / 2)
                                    / max(abs(c.high - c.low), 1e-300)))
    counts = {v: sum(c.verdict == v for c in checks) for v in ("slower", "faster", "inside", "too few nights")}
    lines = ["History check, tonight against the band of the previous nights: "
             + ", ".join(f"{n} {v}" for v, n in counts.items()), ""]
    if flagged:
        lines += ["| benchmark | parameters | tonight | band | nights | verdict |", "|---|---|---:|---|---:|---|"]
        lines += [f"| `{c.benchmark}` | {c.params or '-'} | {c.tonight:.4g} {c.unit} | "
                  f"{c.low:.4g} - {c.high:.4g} | {c.nights} | {c.verdict} |" for c in flagged]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """``python -m scalelab.bench.history RESULTS_DIR MACHINE [--nights N] [--output FILE]``: print the check.

    Exit 0 whatever the verdicts (a second signal, not a gate); 2 on bad arguments.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m scalelab.bench.history", description=main.__doc__)
    parser.add_argument("results_dir")
    parser.add_argument("machine")
    parser.add_argument("--nights", type=int, default=DEFAULT_NIGHTS)
    parser.add_argument("--output", default=None, help="also append the table to this file")
    args = parser.parse_args(argv)
    if args.nights < 1:
        parser.error(f"--nights must be >= 1, got {args.nights}")
    text = format_history(check_history(args.results_dir, args.machine, nights=args.nights))
    sys.stdout.write(text)
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from scalelab._closed_pipe import run_tool

    raise SystemExit(run_tool(main))
