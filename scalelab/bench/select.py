"""Which benchmarks a pull request runs: from the paths its diff changes to an asv ``--bench`` pattern.

The whole suite is too slow for every pull request (docs/regression-gate.md
has the figures), so the gate runs

* every benchmark module that **imports**, directly or through other project
  modules, a file the diff changes (``kernels/sampling.py`` ->
  ``asv_benchmarks/sampling.py``, and also ``gate_probe.py``, which imports
  ``top_k``); the import graph is read from the source text, so a
  new benchmark module or a new import needs no table edited here;
* **every module** when a file every benchmark depends on changes (the shared
  kernel helpers, ``asv_benchmarks/_util.py``, ``asv.conf.json``, the
  packaging), with the same filtering as any selected module (our own
  implementations at one thread, see :func:`pull_request_names`);
* the **whole suite**, peers and two-thread cases included, only when asked
  (``--select all``, a pull-request label);
* plus a fixed **headline** set (:data:`HEADLINE`, one shape per kernel family
  on our own kernels, plus the gate's probes) whenever anything code-like
  changed, so a change whose effect the import graph cannot see still meets a
  few benchmarks;
* **nothing** when only inert files changed (docs, tests, Markdown, CI
  files other than the benchmark workflow): the gate then exits 0 and says so.

Everything here is pure: :func:`select_benchmarks` takes the changed paths
and a snapshot of the tree (:func:`scan_tree`), so the tests can feed it any
diff. :func:`changed_paths` reads a diff from git.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import re
import subprocess
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping

__all__ = ["END_TO_END", "EVERYTHING", "HEADLINE", "INERT", "PEER_IMPLS", "Selection", "TreeIndex", "bench_regex",
           "changed_paths", "names_regex", "pull_request_names", "scan_tree", "select_benchmarks"]

#: Source folders and the dotted package each one is installed as (pyproject ``package-dir``).
PACKAGE_DIRS = {
    "kernels": "scalelab.kernels",
    "simulations": "scalelab.simulations",
    "reports": "scalelab.report",
    "scalelab": "scalelab",
    "asv_benchmarks": "asv_benchmarks",
}

BENCHMARK_DIR = "asv_benchmarks"

#: Paths whose change selects every benchmark module: what every benchmark runs on or is built by.
EVERYTHING = (
    "kernels/_vecmath.py", "kernels/_tiles.py", "kernels/_common.py",
    "asv_benchmarks/_util.py", "asv_benchmarks/__init__.py", "asv.conf.json",
    "pyproject.toml", "setup.py", "setup.cfg", "requirements*.txt",
)

#: Paths that can change no benchmark's result (fnmatch patterns; ``*`` crosses ``/``).
INERT = (
    "docs/*", "tests/*", "*.md", "*.rst", "LICENSE*", "CITATION*", ".gitignore", ".gitattributes",
    ".github/*", "tools/*", "Makefile", "examples/*", "notebooks/*", "reports/output/*",
)

#: Benchmark modules that run a whole model end to end: minutes per parameter combination, so a pull
#: request runs them only when a file they import *directly* (or the module itself) changes; the
#: nightly run covers the indirect cases.
END_TO_END = ("engine",)

#: Implementations that are peers, not ours (:func:`scalelab.bench.asv_results.classify` names them):
#: a peer's code does not change between two revisions of this project unless ``kernels/peers.py`` does.
PEER_IMPLS = frozenset({"torch", "torch_dense", "numpy", "numpy_f32", "scipy", "transformers", "loop",
                        "dense", "rng_floor", "one_lr_at_a_time"})

#: The thread counts a pull request times. One thread: the least noisy setting on a shared runner
#: (docs/regression-gate.md); the 2-thread cases run nightly, with the history check.
PR_THREADS = (None, 1)

#: Units of the ``track_`` benchmarks that return samples (``normalized.py``'s
#: ``{"samples": [...]}`` ratios). Every other ``track_`` returns one number derived
#: from a call its ``time_`` twin already times; the gate can test no significance
#: on one number and reports it "n/a", never gating, so a pull request skips it.
SAMPLED_TRACK_UNITS = frozenset({"ratio"})

#: Benchmark modules a pull request never runs (the nightly job does): ``busy`` times the
#: kernels beside a competing process, so its samples are bimodal by design and would break
#: the gate's measured A/A false-positive rate.
NIGHTLY_ONLY = frozenset({"busy"})

#: Paths that are not inert but map to no benchmark module: the headline set covers them.
HEADLINE_ONLY = (".github/workflows/benchmarks.yml", "scalelab/bench/*")

#: The fixed headline set: asv names (with their parameters exactly as asv prints
#: them) of one shape per kernel family, our kernels only (a peer does not change
#: between two revisions of this project), at one Numba thread (the least noisy
#: setting; docs/regression-gate.md), plus the machine-normalized probes and the
#: gate probes (whole modules). A prefix ending in ``.`` selects a whole module. The
#: roofline ceilings are not here: they never gate (one number, no samples) and cost
#: a process each per round; the nightly run records them.
HEADLINE = (
    "attention.PrefillAttention.time_prefill('numba', 1024, 1)",
    "attention.DecodeAttention.time_decode('numba', 8, 1)",
    "sampling.TopK.time_top_k(1, 128256, 1)",
    "sampling.Sample.time_sample_top_p(32, 128256, 1)",
    "moe.RouteDispatch.time_route_dispatch(8192, 'E8k2', 'numba', 1)",
    "moe.PermuteUnpermute.time_permute_unpermute(8192, 'E8k2', 'numba', 1)",
    "recurrent.MambaScan.time_scan('numba')",
    "recurrent.RwkvWkv.time_wkv('chunked')",
    "scaling.Objective.time_objective_and_gradient('numba')",
    "normalized.",
    "gate_probe.",
)


@dataclasses.dataclass(frozen=True)
class TreeIndex:
    """What selection needs to know about the tree: benchmark modules and the project's import graph.

    ``modules`` maps each project file (posix path relative to the root) to the
    project files it imports; ``benchmarks`` maps benchmark module names
    (``sampling``) to their file (``asv_benchmarks/sampling.py``).
    """

    modules: Mapping[str, frozenset[str]]
    benchmarks: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Selection:
    """The benchmarks a run selects and why.

    ``everything``: the whole suite; otherwise ``modules`` (whole benchmark
    modules) plus ``headline`` (entries of :data:`HEADLINE` present in the
    tree). ``reasons`` are one line per changed path, for the log.
    """

    everything: bool
    modules: tuple[str, ...]
    headline: tuple[str, ...]
    reasons: tuple[str, ...]
    peers_changed: bool = False  # kernels/peers.py changed: time the peers of selected modules too

    @property
    def empty(self) -> bool:
        return not (self.everything or self.modules or self.headline)

    def describe(self) -> str:
        """Multi-line summary: what runs, then why."""
        if self.everything:
            head = "selected: the whole suite"
        elif self.empty:
            head = "selected: nothing (no changed file can affect a benchmark)"
        else:
            parts = [f"modules {', '.join(self.modules)}" if self.modules else "",
                     f"{len(self.headline)} headline entries" if self.headline else ""]
            head = "selected: " + " + ".join(p for p in parts if p)
        return "\n".join([head, *("  " + r for r in self.reasons)])


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


def _dotted(path: str) -> str | None:
    """``kernels/moe.py`` -> ``scalelab.kernels.moe``; ``kernels/__init__.py`` -> ``scalelab.kernels``."""
    p = PurePosixPath(path)
    if p.suffix != ".py" or not p.parts or p.parts[0] not in PACKAGE_DIRS:
        return None
    parts = [PACKAGE_DIRS[p.parts[0]], *p.parts[1:-1]]
    if p.stem != "__init__":
        parts.append(p.stem)
    return ".".join(parts)


_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.M)
_MODULE_STRING = re.compile(r"""["']((?:scalelab|asv_benchmarks)(?:\.\w+)+)["']""")


def _imported_names(source: str, dotted: str, is_package: bool) -> set[str]:
    """Every dotted name a module's source imports, plus module-name strings.

    Read with regular expressions rather than :mod:`ast`: imports anywhere count
    (inside functions, and inside the source strings of ``timeraw_`` benchmarks,
    which run in their own interpreter), and walking the syntax trees of the
    whole project took seconds.
    """
    package = dotted if is_package else dotted.rpartition(".")[0]
    names: set[str] = set()
    for m in _IMPORT.finditer(source):
        names.update(part.split()[0] for part in m.group(1).split(",") if part.split())
    for m in _FROM.finditer(source):
        level, module = len(m.group(1)), m.group(2)
        if level:
            base = package.split(".")
            base = base[: len(base) - (level - 1)]
            module = ".".join(base + ([module] if module else []))
        names.add(module)
        for part in m.group(3).strip("()").replace("\\", " ").split(","):
            if part.split():
                names.add(f"{module}.{part.split()[0]}")
    names.update(_MODULE_STRING.findall(source))  # importlib.import_module("scalelab.kernels.peers")
    return names


def scan_tree(root: Path | str) -> TreeIndex:
    """Read the project's import graph and benchmark modules from the files under ``root``."""
    root = Path(root)
    files: dict[str, str] = {}  # dotted -> relative path
    for top in PACKAGE_DIRS:
        for f in sorted((root / top).rglob("*.py")) if (root / top).is_dir() else ():
            rel = f.relative_to(root).as_posix()
            dotted = _dotted(rel)
            if dotted:
                files[dotted] = rel
    modules: dict[str, frozenset[str]] = {}
    for dotted, rel in files.items():
        try:
            names = _imported_names((root / rel).read_text(encoding="utf-8"), dotted,
                                    rel.endswith("__init__.py"))
        except UnicodeDecodeError:
            names = set()
        deps = {files[n] for n in names if n in files}
        parts = dotted.split(".")
        deps.update(files[p] for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in files)
        deps.discard(rel)
        modules[rel] = frozenset(deps)
    benchmarks = {PurePosixPath(rel).stem: rel for rel in modules
                  if PurePosixPath(rel).parent.as_posix() == BENCHMARK_DIR
                  and not PurePosixPath(rel).stem.startswith("_")}
    return TreeIndex(modules=modules, benchmarks=benchmarks)


def _closure(index: TreeIndex, rel: str) -> set[str]:
    """Every project file ``rel`` imports, directly or transitively.

    Through the shared files of :data:`EVERYTHING` the search goes one step only:
    what ``asv_benchmarks/_util.py`` imports counts (the float32 peers), what those
    import does not (``_util.best_time`` loads ``simulations/calibration.py``, which
    imports the attention kernels to measure the machine, not to benchmark them).
    """
    seen: set[str] = set()
    todo = [rel]
    while todo:
        node = todo.pop()
        shared = node != rel and _matches(node, EVERYTHING)
        for dep in index.modules.get(node, ()):
            if dep not in seen:
                seen.add(dep)
                if not shared:
                    todo.append(dep)
    return seen


def _headline_present(index: TreeIndex) -> tuple[str, ...]:
    return tuple(h for h in HEADLINE if re.match(r"\w+", h).group(0) in index.benchmarks)


def select_benchmarks(changed: Iterable[str], index: TreeIndex, *, everything: bool = False,
                      why_everything: str = "asked for the whole suite") -> Selection:
    """Benchmarks to run for a diff that changed ``changed`` (posix paths relative to the root).

    Parameters
    ----------
    changed
        Paths the diff added, modified, renamed or deleted.
    index
        The head revision's tree (:func:`scan_tree`).
    everything
        Run the whole suite whatever changed (a flag or a label); ``why_everything`` is its reason.

    Returns
    -------
    Selection
    """
    if everything:
        return Selection(True, (), (), (why_everything,))
    changed = sorted(set(changed))
    deps = {name: (index.modules.get(rel, frozenset()) if name in END_TO_END else _closure(index, rel)) | {rel}
            for name, rel in index.benchmarks.items()}
    modules: set[str] = set()
    reasons: list[str] = []
    code_changed = False
    for path in changed:
        if _matches(path, EVERYTHING):
            # every module, filtered like any module a diff selects (ours, 1 thread, no cold compiles);
            # the literal whole suite, peers and 2 threads included, is --select all (hours here)
            every = sorted(n for n in index.benchmarks if n not in NIGHTLY_ONLY)
            nightly = sorted(n for n in index.benchmarks if n in NIGHTLY_ONLY)
            why = f"{path}: every benchmark depends on it: every module" \
                + (f" (nightly only: {', '.join(nightly)})" if nightly else "")
            return Selection(False, tuple(every), (), (why,), peers_changed="kernels/peers.py" in changed)
        if _matches(path, HEADLINE_ONLY):
            code_changed = True
            reasons.append(f"{path}: no benchmark imports it; headline set")
            continue
        if _matches(path, INERT):
            reasons.append(f"{path}: cannot change a benchmark (docs, tests, tools, CI)")
            continue
        code_changed = True
        if path.endswith(".py") and _dotted(path):
            hit = sorted(n for n, d in deps.items() if path in d)
            what = "benchmark module" if path in index.benchmarks.values() else "imported by"
        else:  # data or other files inside a package folder: whatever imports that folder
            top = PurePosixPath(path).parts[0]
            hit = sorted(n for n, d in deps.items() if any(f.startswith(top + "/") for f in d)) \
                if top in PACKAGE_DIRS else []
            what = f"data under {top}/, used by"
        nightly = [n for n in hit if n in NIGHTLY_ONLY]
        hit = [n for n in hit if n not in NIGHTLY_ONLY]
        modules.update(hit)
        reasons.append((f"{path}: {what} {', '.join(hit)}" if hit
                        else f"{path}: no benchmark imports it; headline set")
                       + (f" (nightly only: {', '.join(nightly)})" if nightly else ""))
    headline = tuple(h for h in _headline_present(index) if not h.startswith(tuple(m + "." for m in modules)))
    return Selection(False, tuple(sorted(modules)), headline if code_changed else (), tuple(reasons),
                     peers_changed="kernels/peers.py" in changed)


def bench_regex(selection: Selection) -> str | None:
    """The asv ``--bench`` pattern of ``selection``; None for the whole suite.

    Whole modules match by prefix (``^sampling\\.``); headline entries match
    exactly (``^name\\(params\\)$``), so one parameter combination of a
    parameterized benchmark runs and not its siblings. Raises ValueError for an
    empty selection (asv would run everything for an empty pattern).
    """
    if selection.everything:
        return None
    if selection.empty:
        raise ValueError("the selection is empty; there is nothing to run")
    alts = [re.escape(m + ".") for m in selection.modules]
    alts += [re.escape(h) if h.endswith(".") else re.escape(h) + "$" for h in selection.headline]
    return "^(?:" + "|".join(alts) + ")"


def pull_request_names(selection: Selection, suite: Iterable[dict]) -> list[str]:
    """asv names a pull request times among ``suite`` (asv's discovery output) for ``selection``.

    Of what :func:`bench_regex` selects, keeps our own implementations (not
    :data:`PEER_IMPLS`, unless ``kernels/peers.py`` changed) at :data:`PR_THREADS`,
    of the ``track_`` benchmarks only those that return samples
    (:data:`SAMPLED_TRACK_UNITS`), and no ``timeraw_`` benchmark (cold Numba
    compiles: the gate's ``repeat`` makes each sample a fresh interpreter that
    compiles for up to minutes, so 4 rounds x 20 samples x 2 revisions would take
    hours; compile time is followed nightly). Headline entries are kept as named.
    """
    from scalelab.bench.asv_results import _literal, classify

    suite = list(suite)
    rx = re.compile(bench_regex(selection) or "")
    headline = {h for h in selection.headline if not h.endswith(".")}
    names = []
    whole = tuple(h for h in selection.headline if h.endswith("."))  # headline modules run as they are
    for b in suite:
        method = b["name"].rpartition(".")[2]
        track = method.startswith("track_")
        combos = list(itertools.product(*b["params"])) if b.get("params") else [()]
        for combo in combos:
            name = f"{b['name']}({', '.join(combo)})" if combo else b["name"]  # as asv's --bench sees it
            if not rx.search(name):
                continue
            if name not in headline and not name.startswith(whole):
                params = dict(zip(b.get("param_names") or [], (_literal(c) for c in combo)))
                _, impl, threads, _ = classify(b["name"], params)
                if track:  # a sampled ratio runs whatever its name says; a one-number rate never gates
                    keep = b.get("unit") in SAMPLED_TRACK_UNITS
                else:
                    keep = impl not in PEER_IMPLS or selection.peers_changed
                if not keep or threads not in PR_THREADS or method.startswith("timeraw_"):
                    continue
            names.append(name)
    return names


def names_regex(names: Iterable[str]) -> str:
    """An asv ``--bench`` pattern selecting exactly ``names`` (asv names, with parameters)."""
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def changed_paths(repo: Path | str, base: str, head: str) -> list[str]:
    """Paths changed between the merge base of ``base`` and ``head``, and ``head`` (``git diff base...head``).

    Renames list both the old and the new path. Raises ValueError when git fails.
    """
    proc = subprocess.run(["git", "diff", "--name-only", "--no-renames", f"{base}...{head}"], cwd=repo,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["git diff failed"])[-1]
        raise ValueError(f"cannot list the changed files between {base} and {head}: {msg}")
    return [line for line in proc.stdout.splitlines() if line]


def main(argv=None) -> int:
    """``python -m scalelab.bench.select [--headline] [PATH ...]``: print a selection and its reasons.

    With paths: what a diff changing them selects (``--bench`` pattern last). With
    ``--headline``: only the headline set's ``--bench`` pattern (for ``tools/aa_experiment.py``).
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scalelab.bench.select", description=main.__doc__)
    parser.add_argument("paths", nargs="*", help="changed paths, relative to the repository root")
    parser.add_argument("--headline", action="store_true", help="print the headline set's --bench pattern")
    parser.add_argument("--root", default=".", help="repository root (default: .)")
    args = parser.parse_args(argv)
    index = scan_tree(args.root)
    if args.headline:
        print(bench_regex(Selection(False, (), _headline_present(index), ())))
        return 0
    selection = select_benchmarks(args.paths, index)
    print(selection.describe())
    if not selection.empty:
        print(bench_regex(selection) or "(no --bench: the whole suite)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from scalelab._closed_pipe import run_tool

    raise SystemExit(run_tool(main))
