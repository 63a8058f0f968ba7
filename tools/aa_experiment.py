"""A/A experiment for the regression gate: how often does it cry wolf?

Runs ``scalelab regress A B`` repeatedly where A and B hold identical code (B
only adds a comment to README.md), keeps every run's rows (ratio, p-value),
and tabulates the false-positive rate at several factors, separately for raw
``time_`` benchmarks and for the machine-normalized ``track_*_vs_reference``
benchmarks of asv_benchmarks/normalized.py. The factor does not change what
asv measures, only the verdict, so one set of runs gives the whole table.

Usage::

    .venv/bin/python tools/aa_experiment.py --runs 10 --bench 'normalized\\.ProbeSoftmax' \\
        --out aa-runs/
    .venv/bin/python tools/aa_experiment.py --analyze aa-runs/   # table again from saved runs
    .venv/bin/python tools/aa_experiment.py --analyze runs-a/ runs-b/  # several experiments pooled

The experiment works in a temporary clone of this repository's committed HEAD
(with the work tree's benchmark files, which asv reads from the work tree)
and never commits in the repository itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTORS = (1.05, 1.1, 1.2, 1.3, 1.5)
BENCH_FILES = ("asv_benchmarks/normalized.py", "asv_benchmarks/gate_probe.py")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def prepare_clone(workdir: Path) -> tuple[Path, str, str]:
    """Clone HEAD, add the work tree's benchmark files, commit a README-only change."""
    clone = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    _git(clone, "config", "user.name", "scalelab aa experiment")
    _git(clone, "config", "user.email", "aa@scalelab.invalid")
    for rel in BENCH_FILES:
        if (REPO / rel).is_file():
            shutil.copy(REPO / rel, clone / rel)
    base = _git(clone, "rev-parse", "HEAD")
    _git(clone, "checkout", "-q", "-b", "aa-identical")
    with open(clone / "README.md", "a") as fh:
        fh.write("\n<!-- A/A experiment: identical code, comment only -->\n")
    _git(clone, "commit", "-q", "-am", "README comment only (A/A experiment)")
    head = _git(clone, "rev-parse", "HEAD")
    _git(clone, "checkout", "-q", base)
    return clone, base, head


def run_experiment(runs: int, bench: str, out: Path, workdir: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-aa-", dir=workdir))
    try:
        clone, base, head = prepare_clone(tmp)
        meta = {"base": base, "head": head, "bench": bench, "runs": [], "nproc": os.cpu_count()}
        for i in range(runs):
            before = _loadavg()
            t0 = time.time()
            proc = subprocess.run(
                [sys.executable, "-m", "scalelab.cli.cli", "regress", base, head, "--bench", bench,
                 "--repo", str(clone), "--json", str(out / f"run{i:02d}.json"), "--quiet",
                 "--log", str(out / f"run{i:02d}.log")],
                cwd=REPO, capture_output=True, text=True,
            )
            run = {"index": i, "exit_code": proc.returncode, "seconds": round(time.time() - t0, 1),
                   "loadavg_before": before, "loadavg_after": _loadavg(),
                   "started_utc": time.strftime("%H:%M:%S", time.gmtime(t0))}
            meta["runs"].append(run)
            print(json.dumps(run), flush=True)
            (out / "meta.json").write_text(json.dumps(meta, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def kind_of(benchmark: str) -> str:
    return "normalized" if benchmark.split(".")[-1].startswith("track_") else "raw"


def _load_experiment(out: Path) -> tuple[dict, list]:
    """``meta.json`` of one experiment folder and each run's rows (None for a failed run)."""
    meta = json.loads((out / "meta.json").read_text())
    rows_by_run = []
    for run in meta["runs"]:
        path = out / f"run{run['index']:02d}.json"
        rec = json.loads(path.read_text()) if path.is_file() else None
        rows_by_run.append(rec["rows"] if rec else None)
    return meta, rows_by_run


def analyze(*outs: Path) -> str:
    """Markdown tables of false-positive rates from the saved runs in one or more folders.

    Several folders (experiments on different base commits, each A/A between
    identical code) are pooled run by run; their ``--bench`` patterns must be
    the same, or the per-benchmark counts would mix different sets.
    """
    if not outs:
        raise ValueError("analyze: expected at least one experiment folder")
    experiments = [_load_experiment(out) for out in outs]
    benches = {meta["bench"] for meta, _ in experiments}
    if len(benches) > 1:
        raise ValueError(f"analyze: the folders ran different --bench patterns: {sorted(benches)}")
    all_runs = [run for meta, _ in experiments for run in meta["runs"]]
    ok_runs = [rows for _, rows_by_run in experiments for rows in rows_by_run if rows]
    meta = {"bench": benches.pop(), "runs": all_runs, "nproc": experiments[0][0].get("nproc")}
    pairs = ", ".join(
        f"base {m['base'][:10]} / head {m['head'][:10]} "
        f"({len(m['runs'])} run{'' if len(m['runs']) == 1 else 's'})" for m, _ in experiments)
    n = len(ok_runs)
    kinds = ("raw", "normalized")

    lines = [
        f"A/A runs: {n} completed of {len(meta['runs'])} (identical code; {pairs}; "
        f"`--bench {meta['bench']}`).",
        "",
        "*slower*: comparisons the gate would flag (head slower than base by more than the factor, "
        "p < 0.002). *either way*: significant shifts beyond the factor in either direction; with "
        "identical code the direction is chance, so this is the conservative count. *runs*: gate runs "
        "with at least one flagged benchmark of that kind.",
        "",
        "| factor | " + " | ".join(f"{k}: slower | {k}: either way | {k}: runs" for k in kinds) + " |",
        "|---:|" + "---:|" * (3 * len(kinds)),
    ]

    def frac(a, b):
        return f"{a}/{b}" + (f" ({100 * a / b:.0f}%)" if b else "")

    for f in FACTORS:
        cells = []
        for k in kinds:
            slower = either = total = bad_runs = 0
            for rows in ok_runs:
                mine = [r for r in rows if kind_of(r["benchmark"]) == k and r["slowdown"] is not None]
                sig = [r for r in mine if r["significant"]]
                hits = [r for r in sig if r["slowdown"] > f]
                slower += len(hits)
                either += sum(max(r["slowdown"], 1 / r["slowdown"]) > f for r in sig)
                total += len(mine)
                bad_runs += bool(hits)
            cells += [frac(slower, total), frac(either, total), frac(bad_runs, n)]
        lines.append(f"| {f:g} | " + " | ".join(cells) + " |")

    # Spread of the A/A ratio itself: what a factor has to cover.
    lines += ["", "| signal | benchmark | A/A ratios head/base (min / median / max) | significant at p<0.002 |"
              " largest significant shift |",
              "|---|---|---|---:|---:|"]
    names = sorted({r["benchmark"] for rows in ok_runs for r in rows})
    for name in names:
        vals = [r for rows in ok_runs for r in rows if r["benchmark"] == name and r["ratio"] is not None]
        if not vals:
            continue
        ratios = sorted(r["ratio"] for r in vals)
        med = ratios[len(ratios) // 2] if len(ratios) % 2 else 0.5 * (
            ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
        sig = [r for r in vals if r["significant"]]
        worst = max((max(r["ratio"], 1 / r["ratio"]) for r in sig), default=None)
        lines.append(f"| {kind_of(name)} | `{name}` | {ratios[0]:.3f} / {med:.3f} / {ratios[-1]:.3f} | "
                     f"{len(sig)}/{len(vals)} | " + (f"{worst:.3f}x" if worst else "-") + " |")

    loads = [r["loadavg_before"] + r["loadavg_after"] for r in meta["runs"]]
    if loads:
        one_min = [x for l in loads for x in (l[0], l[3])]
        lines += ["", f"1-minute load average over the runs (sampled before and after each, "
                      f"{meta.get('nproc')} cores): min {min(one_min):.1f}, "
                      f"median {sorted(one_min)[len(one_min) // 2]:.1f}, max {max(one_min):.1f}. "
                      f"Run time per gate run: "
                      f"{min(r['seconds'] for r in meta['runs']):.0f}-"
                      f"{max(r['seconds'] for r in meta['runs']):.0f} s; exit codes: "
                      f"{[r['exit_code'] for r in meta['runs']]}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--bench", default=r"normalized\.")
    ap.add_argument("--out", type=Path, default=Path("aa-runs"))
    ap.add_argument("--workdir", type=Path, default=None, help="where the temporary clone goes")
    ap.add_argument("--analyze", type=Path, nargs="+", default=None, metavar="DIR",
                    help="only print the tables from finished experiments (several folders are pooled)")
    args = ap.parse_args(argv)
    if args.analyze:
        try:
            print(analyze(*args.analyze), end="")
        except (OSError, ValueError, KeyError) as exc:
            print(f"aa_experiment: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    run_experiment(args.runs, args.bench, args.out, args.workdir)
    print(analyze(args.out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
