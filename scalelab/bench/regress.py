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

Benchmark selection follows asv's ``--bench`` exactly: the regular expression
is searched in the benchmark's name, and for a *parameterized* benchmark only
in its name with the parameter list, ``sampling.TopK.time_top_k(32, 256000,
1)``, one combination at a time. So ``time_top_k$`` selects nothing there.
Before building anything the gate lists the suite with asv's own discovery
script in this interpreter (:func:`discover_benchmarks`, a few seconds) and
refuses a pattern that selects nothing, naming the nearest benchmarks. The
confirmation run selects exactly the flagged benchmark x parameter
combinations (:func:`selection_regex`).

asv's own exit code is not enough on its own: ``asv continuous`` returns 1
both for "performance decreased" and for user errors, and 2 when any
benchmark failed, in which case it prints no comparison at all. So the gate
uses the code only as one more failure signal and takes its verdict from the
stored samples.

Noise control (see ``docs/regression-gate.md``):

* BLAS/OpenMP pools are pinned to one thread in the asv subprocess
  (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``);
  ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are passed through untouched.
* Each revision gets its own ``NUMBA_CACHE_DIR``: the gate makes a
  temporary root and a ``sitecustomize`` module (handed to asv's benchmark
  processes through ``ASV_PYTHONPATH``) that sets
  ``NUMBA_CACHE_DIR=<root>/<ASV_COMMIT>`` at interpreter start-up, before
  anything imports Numba. asv exports ``ASV_COMMIT`` for the revision whose
  wheel is installed. The head's directory starts from the base's entries
  (copied in by head's first process that finds no index file there): every
  cached function's stamp is the SHA-256 of its source and of the kernel
  modules compiled into it, so head loads base's machine code only where its
  source is identical and recompiles what the pull request changed. Nothing
  from an earlier run (or from ``~/.cache``) is reused.
* Benchmarks warm every Numba kernel in ``setup()`` (project rule), so
  compilation never lands in a timed sample.

Public API: :func:`run_gate`, :func:`compare_results`, :func:`format_table`,
:func:`discover_benchmarks`, :func:`selected_names`, :func:`selection_regex`,
:data:`DEFAULT_FACTOR`.
"""

from __future__ import annotations

import dataclasses
import difflib
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
import types
from pathlib import Path
from typing import Iterable

from scalelab.bench import asv_results
from scalelab.bench import select as selection_rules
from scalelab.bench.select import names_regex

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
#
# A revision other than the seed (the base) starts from the seed's entries: the
# first process that finds no index file (``*.nbi``) in its revision's directory
# copies in every file of the seed's directory it does not have. (asv's
# discovery imports the suite with the head installed before any round, which
# creates the directory empty, so "no index file yet" is the test, not "no
# directory".) That is safe because every cached scalelab function is stamped
# with the SHA-256 of its source file and of the kernel modules compiled into
# it (numba's own stamp and kernels/_cache_stamp.py): an entry whose source
# differs in this revision is stale and recompiled, and an entry that loads is
# the machine code this revision's identical source compiles to. So a pull
# request's head compiles only what it changed. Each file is copied under a
# temporary name and renamed into place, so no process reads a half-copied one,
# and an existing file is never replaced.
_SITECUSTOMIZE = '''\
import os as _os
_root = _os.environ.get("SCALELAB_NUMBA_CACHE_ROOT")
_commit = _os.environ.get("ASV_COMMIT")
if _root and _commit:
    _dir = _os.path.join(_root, _commit)
    _seed = _os.path.join(_root, _os.environ.get("SCALELAB_NUMBA_CACHE_SEED") or _commit)

    def _has_index(top):
        return any(f.endswith(".nbi") for _, _, fs in _os.walk(top) for f in fs)

    if _seed != _dir and _os.path.isdir(_seed) and not _has_index(_dir):
        import shutil as _shutil
        for _top, _, _files in _os.walk(_seed):
            _dst = _os.path.join(_dir, _os.path.relpath(_top, _seed))
            try:
                _os.makedirs(_dst, exist_ok=True)
                for _f in _files:
                    _target = _os.path.join(_dst, _f)
                    if not _os.path.exists(_target):
                        _tmp = _os.path.join(_dst, ".seed-%d-%s" % (_os.getpid(), _f))
                        _shutil.copy2(_os.path.join(_top, _f), _tmp)
                        _os.replace(_tmp, _target)
            except OSError:
                pass  # no space or a race: numba compiles what is missing, as usual
        del _shutil
    _os.environ["NUMBA_CACHE_DIR"] = _dir
    del _dir, _seed, _has_index
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
    selection: str = ""  # what was selected and why (``select=``), one reason per line


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


def gate_environment(numba_cache_root: Path, sitecustomize_dir: Path,
                     seed_commit: str | None = None) -> dict[str, str]:
    """Environment for the asv subprocess: single-threaded BLAS, per-revision Numba cache.

    ``seed_commit`` (the base revision) names the cache directory another
    revision's first process copies before it starts (see ``_SITECUSTOMIZE``).
    """
    env = dict(os.environ)
    env.update(SINGLE_THREAD_ENV)
    env["SCALELAB_NUMBA_CACHE_ROOT"] = str(numba_cache_root)
    if seed_commit:
        env["SCALELAB_NUMBA_CACHE_SEED"] = seed_commit
    else:
        env.pop("SCALELAB_NUMBA_CACHE_SEED", None)
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
        # One server per revision and round imports the suite, then forks a process per
        # benchmark x parameter combination: 1-1.5 s of CPU less per combination than a
        # fresh interpreter (docs/regression-gate.md, "What a pull request runs").
        "--launch-method", "forkserver",
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


# ----------------------------------------------------------------- selection


def asv_name(benchmark: str, params: str) -> str:
    """The name asv's ``--bench`` is matched against: ``name`` or ``name(p1, p2)``."""
    return f"{benchmark}({params})" if params else benchmark


def discover_benchmarks(root: Path, conf: dict, timeout: float = 120.0) -> list[dict] | None:
    """The benchmarks asv would find in ``root``'s benchmark directory, without a build.

    Runs asv's own discovery script (the one asv runs inside each benchmark
    environment) in this interpreter with ``root`` first on the import path,
    so names and parameter lists are exactly asv's. Returns asv's benchmark
    descriptions (dicts with ``name`` and ``params``), or None when the suite
    cannot be imported here (a dependency only the benchmark environment has),
    in which case the caller must not conclude anything.
    """
    from asv.runner import BENCHMARK_RUN_SCRIPT

    bench_dir = (root / conf.get("benchmark_dir", "benchmarks")).resolve()
    env = dict(os.environ)
    env.update(SINGLE_THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="scalelab-discover-") as tmp:
        out = Path(tmp) / "benchmarks.json"
        try:
            proc = subprocess.run(
                [sys.executable, BENCHMARK_RUN_SCRIPT, "discover", str(bench_dir), str(out)],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if proc.returncode != 0 or not out.is_file():
            return None
        try:
            found = json.loads(out.read_text())
        except ValueError:
            return None
    return [b for b in found if isinstance(b, dict) and "name" in b]


def selected_names(benchmarks: Iterable[dict], bench: str | None) -> list[str]:
    """asv names (:func:`asv_name`) that ``--bench bench`` selects among ``benchmarks``.

    Uses asv's own selection (``asv.benchmarks.Benchmarks``), so a pattern is
    judged exactly as ``asv continuous`` will judge it.
    """
    from asv.benchmarks import Benchmarks

    benchmarks = list(benchmarks)
    chosen = Benchmarks(types.SimpleNamespace(benchmark_dir=""), benchmarks, regex=bench)
    names = []
    for b in benchmarks:
        if b["name"] not in chosen:
            continue
        combos = list(itertools.product(*b["params"])) if b.get("params") else [()]
        picked = chosen.benchmark_selection.get(b["name"])
        for i, combo in enumerate(combos):
            if picked is None or i in picked:
                names.append(asv_name(b["name"], ", ".join(combo)))
    return names


def selection_regex(rows: Iterable[Row]) -> str:
    """A ``--bench`` pattern selecting exactly these rows' benchmark x parameter combinations."""
    return names_regex(sorted({asv_name(r.benchmark, r.params) for r in rows}))


def nothing_selected_message(bench: str, benchmarks: Iterable[dict]) -> str:
    """One line saying that ``bench`` selects nothing, with the nearest benchmark names."""
    benchmarks = list(benchmarks)
    names = sorted(b["name"] for b in benchmarks)
    # Compare names with the pattern's literal text (escapes resolved, regex syntax dropped).
    plain = re.sub(r"\\(.)|[\^$()\[\]{}?*+|]", lambda m: m.group(1) or "", bench)
    near = [n for n in names if plain and plain.lower() in n.lower()]
    near += difflib.get_close_matches(plain, names, n=5, cutoff=0.5)
    near = list(dict.fromkeys(near))[:4]
    msg = f"--bench {bench!r} selects no benchmark"
    # The common trap: the pattern matches a parameterized benchmark's bare name,
    # which asv never searches.
    trapped = [b for b in benchmarks if b.get("params") and re.search(bench, b["name"])]
    if trapped:
        example = asv_name(trapped[0]["name"], ", ".join(p[0] for p in trapped[0]["params"]))
        msg += (f" (asv matches a parameterized benchmark as 'name(params)', e.g. {example!r}:"
                " end the pattern with '\\(' rather than '$')")
    if near:
        return msg + "; nearest names: " + ", ".join(near)
    return msg + f"; no name is close (the suite has {len(names)} benchmarks)"


# ----------------------------------------------------------------------- results


def load_commit_results(results_dir: Path, machine: str, commit: str, since_ms: float | None,
                        bench: str | None) -> dict[tuple[str, str], tuple]:
    """Results of ``commit`` on ``machine`` as {(benchmark, params): (value, stats, samples)}.

    Only entries started at or after ``since_ms`` (a JavaScript timestamp) are
    kept, so results left in ``.asv/results`` by an earlier run are never
    mistaken for this one's. ``bench`` filters exactly like asv's ``--bench``
    (see :func:`asv_name`): when asv runs some combinations of a
    parameterized benchmark it keeps the others' earlier results in the same
    file under the new start time, so only the selected ones may be read.
    """
    out: dict[tuple[str, str], tuple] = {}
    pattern = re.compile(bench) if bench else None
    for path in asv_results.result_files(results_dir, machine, commit):
        res = asv_results.read_result_file(path)
        if res.machine != machine:
            raise ValueError(f"{path}: results of machine {res.machine!r}, expected {machine!r}")
        if res.commit != commit:
            continue
        for entry in res.entries:
            if since_ms is not None and (entry.started_at or 0) < since_ms:
                continue
            label = ", ".join(entry.params)
            if pattern is None or pattern.search(asv_name(entry.benchmark, label)):
                out[(entry.benchmark, label)] = (entry.value, entry.stats, entry.samples)
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
    select: str | None = None,
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
    select
        Used when ``bench`` is None. ``"auto"``: the benchmarks the diff
        between the merge base of BASE and HEAD can affect
        (:mod:`scalelab.bench.select`); an empty selection returns exit 0
        without building anything. ``"all"`` or None: the whole suite.

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

    conf = asv_results.read_conf(root)
    results_dir = root / conf.get("results_dir", "results")
    described_selection = ""
    if select not in (None, "auto", "all"):
        raise ValueError(f"--select must be 'auto' or 'all', got {select!r}")
    if select and not bench:
        bench, described_selection = _select(root, conf, base_sha, head_sha, select)
        if echo:
            echo("scalelab regress: " + described_selection.replace("\n", "\nscalelab regress: "))
        if bench == "":
            result = _finish(0, [], [], base_sha, head_sha, factor, output, json_output, None, {},
                             described_selection)
            return result
    if bench:
        # asv would build and install both revisions before telling that the
        # pattern selects nothing; discovery here takes seconds.
        suite = discover_benchmarks(root, conf)
        if suite is None:
            if echo:
                echo("scalelab regress: could not list the benchmarks in this interpreter; "
                     "--bench is checked after the run")
        elif not selected_names(suite, bench):
            raise ValueError(nothing_selected_message(bench, suite))

    problems: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="scalelab-regress-"))
    try:
        cache_root = tmp / "numba-cache"
        cache_root.mkdir()
        site_dir = tmp / "site"
        site_dir.mkdir()
        (site_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        env = gate_environment(cache_root, site_dir, seed_commit=base_sha)
        try:
            ensure_machine(root, machine, env)
        except RuntimeError as exc:
            problems.append(str(exc))
            return _finish(2, [], problems, base_sha, head_sha, factor, output, json_output, None, {},
                           described_selection)

        described: dict[str, dict] = {}

        def measure(bench_regex):
            since_ms = math.floor(time.time()) * 1000.0  # asv stores whole seconds
            cmd = asv_continuous_command(
                base_sha, head_sha, factor=factor, bench=bench_regex, machine=machine,
                rounds=int(rounds), repeat=int(repeat),
            )
            rc, text = _run_streaming(cmd, root, env, Path(log_path) if log_path else None, echo)
            described.update(asv_results.load_benchmark_descriptions(results_dir))
            base_res = load_commit_results(results_dir, machine, base_sha, since_ms, bench_regex)
            head_res = load_commit_results(results_dir, machine, head_sha, since_ms, bench_regex)
            return rc, text, base_res, head_res

        rc, text, base_res, head_res = measure(bench)
        units = {name: d.get("unit", "") for name, d in described.items()}
        rows = compare_results(base_res, head_res, units, factor, rounds=int(rounds))
        _check_run(rows, base_res, head_res, base_sha, head_sha, text, rc, bench, described, problems)
        flagged = [r for r in rows if r.verdict == "regression"]
        if confirm and flagged and not problems:
            # A second, independent run of just the flagged benchmark x parameter
            # combinations: a false alarm from per-process speed (see
            # DEFAULT_ROUNDS) rarely repeats, a real slowdown does.
            regex = selection_regex(flagged)
            if log_path:
                log_path = Path(str(log_path) + ".confirm")
            rc2, text2, base2, head2 = measure(regex)
            rows2 = {(r.benchmark, r.params): r
                     for r in compare_results(base2, head2, units, factor, rounds=int(rounds))}
            _check_run(list(rows2.values()), base2, head2, base_sha, head_sha, text2, rc2, regex,
                       described, problems)
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
                   cache_files, described_selection)


def _select(root: Path, conf: dict, base_sha: str, head_sha: str, select: str) -> tuple[str | None, str]:
    """``--bench`` pattern for ``select`` (None: everything, "": nothing) and the lines saying why."""
    if select == "all":
        sel = selection_rules.select_benchmarks([], selection_rules.scan_tree(root), everything=True,
                                                why_everything="--select all")
        return None, sel.describe()
    paths = selection_rules.changed_paths(root, base_sha, head_sha)
    sel = selection_rules.select_benchmarks(paths, selection_rules.scan_tree(root))
    text = sel.describe()
    if sel.empty:
        return "", text
    if sel.everything:
        return None, text
    suite = discover_benchmarks(root, conf)
    if suite is None:  # cannot list the suite here: whole modules, peers and all thread counts included
        return selection_rules.bench_regex(sel), text + "\n  (suite not importable here: whole modules run)"
    names = selection_rules.pull_request_names(sel, suite)
    if not names:
        return "", text + "\n  (no benchmark of our own code in the selected modules)"
    return names_regex(names), text + f"\n  {len(names)} benchmark x parameter combinations: ours, 1 thread"


def _confirmed(row: Row, rerun: Row | None) -> Row:
    """``row`` (flagged) after its confirmation run: still a regression only if the rerun agrees."""
    slow = rerun.slowdown if rerun is not None else None
    verdict = "regression" if rerun is not None and rerun.verdict == "regression" else "unconfirmed"
    return dataclasses.replace(row, verdict=verdict, rerun_slowdown=slow)


def _check_run(rows, base_res, head_res, base_sha, head_sha, text, rc, bench, described,
               problems) -> None:
    """Append to ``problems`` whatever makes this asv run unusable (exit 2)."""
    for label, sha, res in (("base", base_sha, base_res), ("head", head_sha, head_res)):
        # Every benchmark failing on one side means nothing was measured there
        # (typically its build failed): no comparison is possible.
        if res and all(v[0] is None for v in res.values()):
            why = "build failed" if re.search(r"Error running .*(pip|wheel|build)|Skipping ", text) \
                else "every benchmark failed"
            problems.append(f"{label} {sha[:10]}: {why} (see asv output)")
    failed = sorted({asv_name(r.benchmark, r.params) for r in rows if r.verdict == "failed"})
    if failed:
        problems.append("benchmarks failed: " + ", ".join(failed[:10])
                        + (" ..." if len(failed) > 10 else ""))
    if not rows:
        if bench and described and not selected_names(described.values(), bench):
            problems.append("no benchmark results for this run: "
                            + nothing_selected_message(bench, described.values()))
        else:
            problems.append("no benchmark results for this run"
                            + (f" (nothing matched --bench {bench!r}?)" if bench else ""))
    # asv exits 1 for "slower" and for its own usage errors, 2 when any benchmark
    # failed on either side (including one that only fails on base, which is
    # not HEAD's fault). Those cases are all read from the results above; any
    # other code means asv itself broke.
    if rc not in (0, 1, 2):
        problems.append(f"asv continuous exited with {rc}")


def _finish(code, rows, problems, base_sha, head_sha, factor, output, json_output, rc,
            cache_files, selection: str = "") -> GateResult:
    table = format_table(rows, base_sha, head_sha, factor) if rows else ""
    if output:
        why = "".join(f"    {line}\n" for line in selection.splitlines())
        Path(output).write_text((why + "\n" if why else "") + table
                                + ("\n" + "\n".join(f"- {p}" for p in problems) + "\n" if problems else ""))
    if json_output:
        Path(json_output).write_text(json.dumps({
            "exit_code": code, "base": base_sha, "head": head_sha, "factor": factor,
            "alpha": ALPHA, "asv_returncode": rc, "problems": problems,
            "numba_cache_index_files": cache_files, "selection": selection,
            "rows": [dataclasses.asdict(r) for r in rows],
        }, indent=1, allow_nan=True))
    return GateResult(code, rows, table, problems, base_sha, head_sha, rc, cache_files, selection)
