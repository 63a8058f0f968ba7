"""Performance-regression gate: ``asv continuous`` for two revisions, judged here.

The gate runs ``asv continuous BASE HEAD`` on this machine with interleaved
rounds (base and head alternate, so a burst of background load lands on both
sides rather than on one), then reads the result files asv wrote for the two
commits and decides itself:

* **exit 1** -- some benchmark is slower on HEAD by more than ``factor`` *and*
  the difference is significant (two-sided Mann-Whitney U on the recorded
  samples, ``p < ALPHA``);
* **exit 0** -- no benchmark is;
* **exit 2** -- something broke: a bad revision, a build that failed, a
  benchmark that raised (asv stores ``None`` for it), asv itself failing, or
  nothing matching ``--bench``.

asv's own exit code is not enough on its own: ``asv continuous`` returns 1
both for "performance decreased" and for user errors, and 2 when any
benchmark failed, in which case it prints no comparison at all. So the gate
uses the code only as one more failure signal and takes its verdict from the
stored samples.

Noise control (see ``docs/regression-gate.md``):

* BLAS/OpenMP pools are pinned to one thread in the asv subprocess
  (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``);
  ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are passed through untouched.
* Each revision gets its own fresh ``NUMBA_CACHE_DIR``: the gate makes a
  temporary root and a ``sitecustomize`` module (handed to asv's benchmark
  processes through ``ASV_PYTHONPATH``) that sets
  ``NUMBA_CACHE_DIR=<root>/<ASV_COMMIT>`` at interpreter start-up, before
  anything imports Numba. asv exports ``ASV_COMMIT`` for the revision whose
  wheel is installed, so base and head never load each other's machine code,
  and nothing from an earlier run (or from ``~/.cache``) is reused.
* Benchmarks warm every Numba kernel in ``setup()`` (project rule), so
  compilation never lands in a timed sample.

Public API: :func:`run_gate`, :func:`compare_results`, :func:`format_table`,
:data:`DEFAULT_FACTOR`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable

#: Default slowdown factor, from the A/A experiment in docs/regression-gate.md
#: (identical revisions, 12 gate runs on this 2-core machine under load ~10):
#: the smallest tested factor with no significant A/A shift in either
#: direction on raw times (a raw A/A run showed a significant 1.34x shift; the
#: machine-normalized track_ ratios never exceeded 1.08x).
DEFAULT_FACTOR = 1.5

#: Significance threshold of the two-sided Mann-Whitney U test; the same value
#: ``asv compare`` uses, so the gate and asv's own table agree on "significant".
ALPHA = 0.002

#: Machine name the gate registers and runs under, so results land in a known
#: folder (``.asv/results/<MACHINE_NAME>/``).
MACHINE_NAME = "scalelab-gate"

#: Interleaved rounds per revision and timing samples per round. Each round is
#: a fresh process (plus a reinstall of that revision's wheel, the dominant
#: cost of a run). Four rounds, because on this machine a process's speed is
#: bimodal: the same kernel on the same data measured ~1.5-1.9x slower in
#: roughly half of freshly started processes (e.g. top_k 208-213 us or 370-401
#: us; stable within a process; not the core, the hash seed, page faults or
#: scratch placement; a plain arithmetic loop did not show it). With two rounds
#: per side, both head processes landing slow and both base ones fast (~6% of
#: runs) reads as a 1.5x+ "regression" of unchanged code, which happened in the
#: proof test. See :func:`_center` for how the rounds are combined.
DEFAULT_ROUNDS = 4
DEFAULT_REPEAT = 20

#: Single-threaded BLAS/OpenMP for every process asv starts.
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Runs first in every Python process asv starts (it is on ASV_PYTHONPATH) and
# points Numba's on-disk cache at a directory owned by the installed revision.
_SITECUSTOMIZE = '''\
import os as _os
_root = _os.environ.get("SCALELAB_NUMBA_CACHE_ROOT")
_commit = _os.environ.get("ASV_COMMIT")
if _root and _commit:
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(_root, _commit)
del _os, _root, _commit
'''


@dataclasses.dataclass(frozen=True)
class Row:
    """One benchmark x parameter combination compared between the revisions."""

    benchmark: str
    params: str
    unit: str
    base: float | None  # None: failed; NaN: skipped
    head: float | None
    ratio: float | None  # head / base
    slowdown: float | None  # > 1 means HEAD is worse, whatever the unit's direction
    p_value: float | None
    significant: bool | None  # None: no samples or stats to decide
    verdict: str  # "regression", "unconfirmed", "improvement", "same", "failed", "new", "skipped", "n/a"
    rerun_slowdown: float | None = None  # slowdown in the confirmation run, when there was one


@dataclasses.dataclass
class GateResult:
    """What :func:`run_gate` found; ``exit_code`` is what the CLI returns."""

    exit_code: int
    rows: list[Row]
    table: str
    problems: list[str]
    base: str
    head: str
    asv_returncode: int | None = None
    numba_cache_files: dict[str, int] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    )


def repo_root(start: Path | str = ".") -> Path:
    """Top of the git work tree containing ``start`` (which must hold asv.conf.json)."""
    proc = _git(Path(start), "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        raise ValueError(f"repo: {Path(start).resolve()} is not inside a git work tree")
    root = Path(proc.stdout.strip())
    if not (root / "asv.conf.json").is_file():
        raise ValueError(f"repo: no asv.conf.json at {root}")
    return root


def resolve_revision(repo: Path, rev: str, name: str) -> str:
    """Full commit hash of ``rev``; ValueError naming the argument when it is not a commit."""
    if not rev or rev.startswith("-"):
        raise ValueError(f"{name}: bad revision {rev!r}")
    proc = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ValueError(f"{name}: bad revision {rev!r} (not a commit in {repo})")
    return proc.stdout.strip()


def default_base(repo: Path, head: str) -> str:
    """Merge base of ``head`` with ``main`` (or ``origin/main`` in a CI checkout)."""
    for branch in ("main", "origin/main"):
        proc = _git(repo, "merge-base", branch, head)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    raise ValueError("BASE: no merge base with main or origin/main; pass BASE explicitly")


# --------------------------------------------------------------------------- asv


def _asv_cmd() -> list[str]:
    return [sys.executable, "-m", "asv"]


def ensure_machine(repo: Path, machine: str, env: dict[str, str]) -> bool:
    """Register ``machine`` in ``~/.asv-machine.json`` unless it is there; True if it ran."""
    path = Path(os.path.expanduser("~/.asv-machine.json"))
    if path.is_file():
        try:
            if machine in json.loads(path.read_text()):
                return False
        except (ValueError, OSError):
            pass  # unreadable: let asv rewrite it
    proc = subprocess.run(
        [*_asv_cmd(), "machine", "--yes", "--machine", machine],
        cwd=repo, env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"asv machine --yes failed: {tail[0]}")
    return True


def gate_environment(numba_cache_root: Path, sitecustomize_dir: Path) -> dict[str, str]:
    """Environment for the asv subprocess: single-threaded BLAS, per-revision Numba cache."""
    env = dict(os.environ)
    env.update(SINGLE_THREAD_ENV)
    env["SCALELAB_NUMBA_CACHE_ROOT"] = str(numba_cache_root)
    # asv drops PYTHONPATH in its environments but honours ASV_PYTHONPATH.
    env["ASV_PYTHONPATH"] = str(sitecustomize_dir)
    env.pop("NUMBA_CACHE_DIR", None)  # a shared cache would defeat the per-revision one
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def asv_continuous_command(
    base: str,
    head: str,
    *,
    factor: float,
    bench: str | None,
    machine: str,
    rounds: int,
    repeat: int,
) -> list[str]:
    """The ``asv continuous`` command line the gate runs."""
    cmd = [
        *_asv_cmd(), "continuous", base, head,
        "--interleave-rounds",
        "--attribute", f"rounds={rounds}",
        "--attribute", f"repeat={repeat}",
        "--factor", repr(float(factor)),
        "--machine", machine,
        "--launch-method", "spawn",  # a fresh interpreter per sample set; no shared imports
        "--show-stderr",
    ]
    if bench:
        cmd += ["--bench", bench]
    return cmd


def _run_streaming(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path | None,
                   echo) -> tuple[int, str]:
    """Run ``cmd``; copy each output line to ``echo`` and to ``log_path``; return (rc, text)."""
    lines: list[str] = []
    log = open(log_path, "w") if log_path else None
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if log:  # elapsed time on each line shows where a slow run spends it
                log.write(f"[{time.monotonic() - t0:7.1f}s] {line}")
            if echo:
                echo(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        if log:
            log.close()
    return rc, "".join(lines)


# ----------------------------------------------------------------------- results


def _load_conf(repo: Path) -> dict:
    try:
        return json.loads((repo / "asv.conf.json").read_text())
    except ValueError as exc:
        raise ValueError(f"asv.conf.json: not valid JSON ({exc})") from None


def _benchmark_units(results_dir: Path) -> dict[str, str]:
    path = results_dir / "benchmarks.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: v.get("unit", "") for k, v in data.items() if isinstance(v, dict)}


def load_commit_results(results_dir: Path, machine: str, commit: str, since_ms: float | None,
                        bench: str | None) -> dict[tuple[str, str], tuple]:
    """Results of ``commit`` on ``machine`` as {(benchmark, params): (value, stats, samples)}.

    Only entries started at or after ``since_ms`` (a JavaScript timestamp) are
    kept, so results left in ``.asv/results`` by an earlier run are never
    mistaken for this one's. ``bench`` filters names like asv's ``--bench``.
    """
    from asv.results import Results  # asv is a dev dependency; import only when used

    out: dict[tuple[str, str], tuple] = {}
    pattern = re.compile(bench) if bench else None
    for path in sorted((results_dir / machine).glob(f"{commit[:8]}-*.json")):
        res = Results.load(str(path), machine)
        if res.commit_hash != commit:
            continue
        started = res.started_at
        for key in res.get_all_result_keys():
            if since_ms is not None and started.get(key, 0) < since_ms:
                continue
            params = res.get_result_params(key)
            values = res.get_result_value(key, params)
            stats = res.get_result_stats(key, params)
            samples = res.get_result_samples(key, params)
            combos = list(itertools.product(*params)) if params else [()]
            whole = pattern is None or pattern.search(key)
            for i, combo in enumerate(combos):
                label = ", ".join(combo)
                # asv's --bench selects a whole benchmark by name, or single
                # parameter combinations by "name(p1, p2)"; mirror that.
                if whole or pattern.search(f"{key}({label})"):
                    out[(key, label)] = (values[i], stats[i], samples[i])
    return out


def higher_is_better(unit: str) -> bool:
    """Rates (``GFLOP/s``, ``GB/s``) improve upward; times, bytes and ratios downward."""
    return unit.strip().endswith("/s")


def _isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _significance(a, b) -> tuple[float | None, bool | None]:
    """(p, significant) for base entry ``a`` and head entry ``b`` = (value, stats, samples)."""
    (_, stats_a, samples_a), (_, stats_b, samples_b) = a, b
    if samples_a and samples_b:
        xa = [x for x in samples_a if x is not None and not math.isnan(x)]
        xb = [x for x in samples_b if x is not None and not math.isnan(x)]
        if len(xa) >= 2 and len(xb) >= 2:
            from scipy.stats import mannwhitneyu

            if len(set(xa) | set(xb)) == 1:  # all equal: no evidence of a difference
                return 1.0, False
            p = float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
            return p, p < ALPHA
    if stats_a and stats_b and "ci_99_a" in stats_a and "ci_99_a" in stats_b:
        # No samples: asv's fallback, disjoint 99% confidence intervals of the median.
        lo_a, hi_a = stats_a["ci_99_a"], stats_a["ci_99_b"]
        lo_b, hi_b = stats_b["ci_99_a"], stats_b["ci_99_b"]
        return None, bool(hi_a < lo_b or hi_b < lo_a)
    return None, None


def _center(value, samples, rounds: int):
    """The figure a revision's ratio is formed from: mean of per-round medians.

    asv appends each round's samples in round order, so with ``rounds`` > 1
    and a sample count divisible by it the samples split back into the
    processes that produced them. Pooling them and taking one median (asv's
    own value) flips between modes when per-process speed is bimodal and the
    slow and fast processes are about evenly split; the mean of the per-round
    medians moves by 1/rounds of the gap per process instead. With one round,
    or samples that do not split evenly, asv's stored value is used.
    """
    if rounds > 1 and samples and len(samples) % rounds == 0 and all(
            x is not None and not math.isnan(x) for x in samples):
        per = len(samples) // rounds
        meds = [statistics.median(samples[i * per:(i + 1) * per]) for i in range(rounds)]
        return sum(meds) / rounds
    return value


def compare_results(base: dict, head: dict, units: dict[str, str], factor: float,
                    rounds: int = 1) -> list[Row]:
    """Compare the two revisions' results; rows sorted worst slowdown first.

    ``rounds``: interleaved rounds the samples came from (see :func:`_center`).
    """
    if not factor > 1.0 or not math.isfinite(factor):
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
    rows = []
    for key in sorted(set(base) | set(head)):
        name, params = key
        unit = units.get(name, "")
        a = base.get(key, (None, None, None))
        b = head.get(key, (None, None, None))
        va, vb = a[0], b[0]
        if va is not None and vb is not None and not (_isnan(va) or _isnan(vb)):
            va, vb = _center(va, a[2], rounds), _center(vb, b[2], rounds)
        ratio = slowdown = p = None
        significant = None
        if vb is None:
            verdict = "failed"  # broken in HEAD (whatever base did)
        elif va is None:
            verdict = "new"  # fails or is missing only on base, e.g. a benchmark for a new kernel
        elif _isnan(va) or _isnan(vb):
            verdict = "skipped"
        elif va == 0 or vb == 0:
            verdict = "n/a"
        else:
            ratio = vb / va
            slowdown = 1.0 / ratio if higher_is_better(unit) else ratio
            p, significant = _significance(a, b)
            if significant is None:
                verdict = "n/a"  # no samples or stats: cannot decide, never gates
            elif significant and slowdown > factor:
                verdict = "regression"
            elif significant and slowdown < 1.0 / factor:
                verdict = "improvement"
            else:
                verdict = "same"
        rows.append(Row(name, params, unit, va, vb, ratio, slowdown, p, significant, verdict))
    order = {"failed": 0, "regression": 1}
    rows.sort(key=lambda r: (order.get(r.verdict, 2), -(r.slowdown or 0.0), r.benchmark, r.params))
    return rows


def _fmt_value(x, unit: str) -> str:
    if x is None:
        return "failed"
    if _isnan(x):
        return "skipped"
    if unit == "seconds":
        for scale, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "μs"), (1e-9, "ns")):
            if abs(x) >= scale or suffix == "ns":
                return f"{x / scale:.3g} {suffix}"
    return f"{x:.4g} {unit}".strip()


def format_table(rows: Iterable[Row], base: str, head: str, factor: float) -> str:
    """Markdown table for a pull-request comment."""
    lines = [
        f"Benchmarks, base `{base[:10]}` vs head `{head[:10]}` "
        f"(regression = slower by more than {factor:g}x with p < {ALPHA:g}):",
        "",
        f"| benchmark | parameters | base | head | ratio | significant | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3f}"
        if r.significant is None:
            sig = "n/a"
        else:
            sig = ("yes" if r.significant else "no") + (
                f" (p={r.p_value:.1e})" if r.p_value is not None else " (CI)"
            )
        verdict = {"regression": "**regression**", "failed": "**failed**"}.get(r.verdict, r.verdict)
        if r.rerun_slowdown is not None:
            verdict += f" (rerun {r.rerun_slowdown:.2f}x)"
        params = r.params.replace("|", "\\|") or "-"
        lines.append(
            f"| `{r.benchmark}` | {params} | {_fmt_value(r.base, r.unit)} | "
            f"{_fmt_value(r.head, r.unit)} | {ratio} | {sig} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------- gate


def run_gate(
    base: str | None = None,
    head: str | None = "HEAD",
    *,
    factor: float = DEFAULT_FACTOR,
    bench: str | None = None,
    output: str | Path | None = None,
    json_output: str | Path | None = None,
    repo: str | Path = ".",
    machine: str = MACHINE_NAME,
    rounds: int = DEFAULT_ROUNDS,
    repeat: int = DEFAULT_REPEAT,
    log_path: str | Path | None = None,
    echo=None,
    confirm: bool = True,
) -> GateResult:
    """Run ``asv continuous`` for ``base`` vs ``head`` and judge the stored results.

    Parameters
    ----------
    base, head
        Revisions (anything ``git rev-parse`` accepts). ``base=None`` means the
        merge base of ``head`` with ``main``.
    factor
        A benchmark is a regression when HEAD is slower by more than this
        factor and the difference is significant.
    bench
        Regular expression selecting benchmarks (asv's ``--bench``).
    output, json_output
        Where to write the Markdown table / a JSON record of every row.
    repo
        Any directory inside the project's git work tree.
    rounds, repeat
        Interleaved rounds per revision and samples per round.
    log_path
        Where to keep asv's full output.
    echo
        Callable receiving each line of asv's output (e.g. print to stderr).
    confirm
        Re-measure flagged benchmarks in a second ``asv continuous`` run; a
        regression gates only if the rerun flags it too (otherwise its verdict
        is "unconfirmed"). Costs nothing when nothing is flagged.

    Returns
    -------
    GateResult
        ``exit_code`` 0 (no regression), 1 (regression) or 2 (something broke).

    Raises
    ------
    ValueError
        Bad revision, bad factor, rounds or repeat, or no asv.conf.json.
    """
    if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1.0:
        raise ValueError(f"--factor must be a finite number > 1, got {factor!r}")
    if int(rounds) < 1 or int(repeat) < 2:
        raise ValueError(f"rounds must be >= 1 and repeat >= 2, got {rounds} and {repeat}")
    if bench:
        try:
            re.compile(bench)
        except re.error as exc:
            raise ValueError(f"--bench: not a regular expression ({exc})") from None
    root = repo_root(repo)
    head_sha = resolve_revision(root, head or "HEAD", "HEAD")
    base_sha = resolve_revision(root, base, "BASE") if base else default_base(root, head_sha)
    if base_sha == head_sha:
        raise ValueError(f"BASE and HEAD are the same commit ({head_sha[:10]}); nothing to compare")

    conf = _load_conf(root)
    results_dir = root / conf.get("results_dir", "results")

    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-regress-"))
    try:
        cache_root = tmp / "numba-cache"
        cache_root.mkdir()
        site_dir = tmp / "site"
        site_dir.mkdir()
        (site_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        env = gate_environment(cache_root, site_dir)
        try:
            ensure_machine(root, machine, env)
        except RuntimeError as exc:
            problems.append(str(exc))
            return _finish(2, [], problems, base_sha, head_sha, factor, output, json_output, None, {})

        units: dict[str, str] = {}

        def measure(bench_regex):
            since_ms = math.floor(time.time()) * 1000.0  # asv stores whole seconds
            cmd = asv_continuous_command(
                base_sha, head_sha, factor=factor, bench=bench_regex, machine=machine,
                rounds=int(rounds), repeat=int(repeat),
            )
            rc, text = _run_streaming(cmd, root, env, Path(log_path) if log_path else None, echo)
            units.update(_benchmark_units(results_dir))
            base_res = load_commit_results(results_dir, machine, base_sha, since_ms, bench_regex)
            head_res = load_commit_results(results_dir, machine, head_sha, since_ms, bench_regex)
            return rc, text, base_res, head_res

        rc, text, base_res, head_res = measure(bench)
        rows = compare_results(base_res, head_res, units, factor, rounds=int(rounds))
        _check_run(rows, base_res, head_res, base_sha, head_sha, text, rc, bench, problems)
        flagged = [r for r in rows if r.verdict == "regression"]
        if confirm and flagged and not problems:
            # A second, independent run of just the flagged benchmarks: a false
            # alarm from per-process speed (see DEFAULT_ROUNDS) rarely repeats,
            # a real slowdown does.
            names = sorted({r.benchmark for r in flagged})
            regex = "^(" + "|".join(re.escape(n) for n in names) + ")$"
            if log_path:
                log_path = Path(str(log_path) + ".confirm")
            rc2, text2, base2, head2 = measure(regex)
            rows2 = {(r.benchmark, r.params): r
                     for r in compare_results(base2, head2, units, factor, rounds=int(rounds))}
            _check_run(list(rows2.values()), base2, head2, base_sha, head_sha, text2, rc2, regex, problems)
            rows = [_confirmed(r, rows2.get((r.benchmark, r.params))) if r.verdict == "regression" else r
                    for r in rows]
        cache_files = {
            sha: sum(1 for _ in (cache_root / sha).rglob("*.nbi")) if (cache_root / sha).is_dir() else 0
            for sha in (base_sha, head_sha)
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if problems:
        code = 2
    elif any(r.verdict == "regression" for r in rows):
        code = 1
    else:
        code = 0
    return _finish(code, rows, problems, base_sha, head_sha, factor, output, json_output, rc,
                   cache_files)


def _confirmed(row: Row, rerun: Row | None) -> Row:
    """``row`` (flagged) after its confirmation run: still a regression only if the rerun agrees."""
    slow = rerun.slowdown if rerun is not None else None
    verdict = "regression" if rerun is not None and rerun.verdict == "regression" else "unconfirmed"
    return dataclasses.replace(row, verdict=verdict, rerun_slowdown=slow)


def _check_run(rows, base_res, head_res, base_sha, head_sha, text, rc, bench, problems) -> None:
    """Append to ``problems`` whatever makes this asv run unusable (exit 2)."""
    for label, sha, res in (("base", base_sha, base_res), ("head", head_sha, head_res)):
        # Every benchmark failing on one side means nothing was measured there
        # (typically its build failed): no comparison is possible.
        if res and all(v[0] is None for v in res.values()):
            why = "build failed" if re.search(r"Error running .*(pip|wheel|build)|Skipping ", text) \
                else "every benchmark failed"
            problems.append(f"{label} {sha[:10]}: {why} (see asv output)")
    failed = sorted({f"{r.benchmark}({r.params})" if r.params else r.benchmark
                     for r in rows if r.verdict == "failed"})
    if failed:
        problems.append("benchmarks failed: " + ", ".join(failed[:10])
                        + (" ..." if len(failed) > 10 else ""))
    if not rows:
        problems.append("no benchmark results for this run"
                        + (f" (nothing matched --bench {bench!r}?)" if bench else ""))
    # asv exits 1 for "slower" and for its own usage errors, 2 when any benchmark
    # failed on either side (including one that only fails on base, which is
    # not HEAD's fault). Those cases are all read from the results above; any
    # other code means asv itself broke.
    if rc not in (0, 1, 2):
        problems.append(f"asv continuous exited with {rc}")


def _finish(code, rows, problems, base_sha, head_sha, factor, output, json_output, rc,
            cache_files) -> GateResult:
    table = format_table(rows, base_sha, head_sha, factor) if rows else ""
    if output:
        Path(output).write_text(table + ("\n" + "\n".join(f"- {p}" for p in problems) + "\n"
                                         if problems else ""))
    if json_output:
        Path(json_output).write_text(json.dumps({
            "exit_code": code, "base": base_sha, "head": head_sha, "factor": factor,
            "alpha": ALPHA, "asv_returncode": rc, "problems": problems,
            "numba_cache_index_files": cache_files,
            "rows": [dataclasses.asdict(r) for r in rows],
        }, indent=1, allow_nan=True))
    return GateResult(code, rows, table, problems, base_sha, head_sha, rc, cache_files)
