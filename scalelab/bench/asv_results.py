"""Read asv benchmark results: the one reader for the regression gate and the report.

asv (0.6, results API version 2) writes one JSON file per machine, commit and
environment: ``<results_dir>/<machine>/<commit[:8]>-<env>.json``. Each file
holds ``result_columns`` (``result``, ``params``, ``version``, ``started_at``,
``duration``, ``stats_*`` ...) and, per benchmark, a row in that column order;
trailing empty columns are dropped. A parametrized benchmark's ``result`` is a
flat list over the Cartesian product of its ``params`` (lists of ``repr``
strings); a failed or skipped combination is ``null`` / ``NaN``. The benchmark
descriptions (``param_names``, ``unit``, ``type``) live in
``<results_dir>/benchmarks.json``; without it parameters are named ``p0, p1 ...``.

:func:`read_result_file` reads one file the way asv's own ``Results.load``
does, without importing asv (a development dependency the report must not
need): an entry per benchmark and parameter combination with its value,
statistics, samples and start time. The regression gate
(:mod:`scalelab.bench.regress`) selects from these entries what its asv run
produced; :func:`load_results` turns all files into one long DataFrame, a row per
(file, benchmark, parameter combination). :func:`classify` names the kernel and
the implementation (``numba`` = ours, ``numpy`` = the reference, ``torch``)
from the benchmark's name and parameters, by pattern, so new benchmarks are
picked up without a table to maintain.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import math
import re
from pathlib import Path

import pandas as pd

#: Parameter names that say which implementation ran.
IMPL_PARAMS = ("impl", "implementation", "backend", "peer", "library", "lib", "engine", "variant", "method")
#: Parameter names that hold the thread count.
THREAD_PARAMS = ("threads", "n_threads", "num_threads", "nthreads", "thread")
#: Words stripped from class/method names when naming the kernel.
_NOISE = re.compile(
    r"(suite|benchmarks?|bench|timing|time|track|peakmem|mem|"
    r"numba|ours|numpy|reference|ref|torch|pytorch|sdpa|"
    r"gflops?|gflop_s|gb_?s|gbps|bandwidth|throughput|flops|rate)",
    re.IGNORECASE,
)
_TYPES = ("timeraw", "peakmem", "time", "track", "mem")

COLUMNS = [
    "machine", "commit", "date", "env_name", "benchmark", "module", "cls", "method", "type",
    "unit", "params", "value", "q25", "q75", "ci99_low", "ci99_high", "number", "repeat",
    "kernel", "impl", "threads", "shape",
]


def _literal(text):
    """A parameter value from its repr string (``'512'`` -> 512, ``"'numba'"`` -> 'numba')."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _number(value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def impl_of(text: str) -> str | None:
    """``torch`` / ``numpy_f32`` / ``numpy`` / ``numba`` if ``text`` names one, else None.

    ``numpy_f32`` is the fair float32 NumPy peer (:mod:`scalelab.kernels.peers`),
    ``numpy`` the float64 reference (an oracle, not a peer). A name with the
    word ``dense`` is a dense baseline (the MoE layer's dense FFN with the same
    active parameters): a different computation, a ceiling-like comparison and
    not a peer doing the same work, so ``torch_dense`` stays ``torch_dense``
    (never ``torch``, whose time the speed-ups would otherwise take as the
    faster of the two) and a plain ``dense`` is not named here.
    """
    low = str(text).lower()
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", str(text)).lower()  # TorchDense -> torch_dense
    if re.search(r"(^|[_\W])dense($|[_\W])", words):
        base = impl_of(re.sub(r"dense", " ", low))
        return f"{base}_dense" if base else None
    if "torch" in low or "sdpa" in low:
        return "torch"
    if "numpy" in low and re.search(r"f(loat)?32|peer", low):
        return "numpy_f32"
    if "numpy" in low or re.search(r"(^|[_\W])ref(erence)?($|[_\W])", low) or low in ("np", "ref"):
        return "numpy"
    if "numba" in low or "ours" in low or low in ("jit", "scalelab"):
        return "numba"
    return None


def _words(name: str) -> list[str]:
    """Lower-case words of a CamelCase or snake_case name, minus type, implementation and unit words."""
    name = re.sub(r"^(timeraw|peakmem|time|track|mem)_", "", name)
    name = re.sub(r"(?i)(^|_)(f|float)(16|32|64)(?=_|$)", "", name)  # a dtype names the peer, not the kernel
    name = re.sub(r"NumPy|Numpy|PyTorch|Torch|Numba|SDPA|MoE|GQA|KV", lambda m: f"_{m.group(0).lower()}_", name)
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\b|_|\d)|[A-Z]?[a-z]+|\d+", name)
    return [p.lower() for p in parts if not _NOISE.fullmatch(p)]


def class_key(benchmark: str) -> str:
    """The benchmark's area and class without implementation words (``sampling.top_k`` for
    both ``sampling.TopK`` and ``sampling.TopKTorch``): pairs peers kept in sibling classes."""
    pieces = benchmark.split(".")
    cls = pieces[-2] if len(pieces) >= 3 else ""
    area = pieces[-3] if len(pieces) >= 3 else (pieces[0] if len(pieces) > 1 else "")
    return ".".join(b for b in (area, "_".join(w for w in _words(cls) if w != area)) if b)


def _method_kernel(benchmark: str) -> str:
    """Area, class and *all* method words: tells apart several timed methods of one class."""
    pieces = benchmark.split(".")
    area = pieces[-3] if len(pieces) >= 3 else ""
    words = [w for w in _words(pieces[-1]) if w != area]
    return ".".join(b for b in (class_key(benchmark), "_".join(words)) if b)


def classify(benchmark: str, params: dict) -> tuple[str, str, int | None, str]:
    """Return ``(kernel, impl, threads, shape)`` for one result row.

    ``benchmark`` is asv's dotted name (``attention.Prefill.time_numba``).
    The implementation comes from an ``impl``-like parameter if there is one,
    else from the method name, else the class name; a benchmark naming no
    peer is ours (``numba``).
    """
    pieces = benchmark.split(".")
    method = pieces[-1]
    cls = pieces[-2] if len(pieces) >= 3 else ""
    module = ".".join(pieces[:-2]) if len(pieces) >= 3 else ".".join(pieces[:-1])
    impl = None
    threads = None
    shape_parts = []
    for key, value in params.items():
        low = str(key).lower()
        if low in IMPL_PARAMS and impl is None:
            # A recognised peer name maps to its canonical name (numpy_ref -> numpy); any
            # other variant (e.g. a dense baseline) keeps its own name, so it is never
            # mistaken for our kernel.
            impl = impl_of(value) or str(value).lower()
        elif low in THREAD_PARAMS:
            try:
                threads = int(value)
            except (TypeError, ValueError):
                shape_parts.append(f"{key}={value}")
        else:
            shape_parts.append(f"{key}={value}")
    if impl is None:
        impl = impl_of(method) or impl_of(cls) or "numba"
    area = module.split(".")[-1] if module else ""
    cls_words = [w for w in _words(cls) if w != area]
    method_words = [w for w in _words(method) if w != area and w not in cls_words]
    name_bits = [b for b in ("_".join(cls_words), "_".join(method_words)) if b]
    kernel = ".".join([area, *name_bits]).strip(".")
    return kernel or benchmark, impl, threads, ", ".join(shape_parts)


def read_conf(repo_root: Path) -> dict:
    """``asv.conf.json`` of ``repo_root`` as a dict (asv allows ``//`` comment lines).

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        It is not valid JSON.
    """
    text = (Path(repo_root) / "asv.conf.json").read_text(encoding="utf-8")
    text = re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"asv.conf.json: not valid JSON ({exc})") from None


def find_results_dir(repo_root: Path | None) -> Path | None:
    """``<repo>/.asv/results`` (or asv.conf.json's ``results_dir``) if it holds any result file."""
    if repo_root is None:
        return None
    results = Path(repo_root) / ".asv" / "results"
    try:
        results = Path(repo_root) / read_conf(repo_root).get("results_dir", ".asv/results")
    except (OSError, ValueError):
        pass
    if not results.is_dir():
        return None
    if any(result_files(results)):
        return results
    return None


def result_files(results_dir: Path, machine: str = "*", commit: str | None = None):
    """Every per-commit result file under ``results_dir`` (not machine.json / benchmarks.json),
    optionally only ``machine``'s and only ``commit``'s (asv names files ``<commit[:8]>-<env>.json``)."""
    pattern = f"{commit[:8]}-*.json" if commit else "*.json"
    for path in sorted(Path(results_dir).glob(f"{machine}/{pattern}")):
        if path.name not in ("machine.json", "benchmarks.json"):
            yield path


@dataclasses.dataclass(frozen=True)
class ResultEntry:
    """One parameter combination of one benchmark in one result file.

    ``value`` is asv's stored figure (``None`` or NaN for a failed or skipped
    combination), ``stats`` the ``stats_*`` columns of this combination without
    their prefix (``{"ci_99_a": ..., "q_25": ...}``; None when the file has no
    statistics for the benchmark), ``samples`` the raw samples when asv recorded
    them, ``started_at`` the benchmark's start time (a JavaScript timestamp, ms).
    """

    benchmark: str
    params: tuple[str, ...]  # repr strings, one per parameter, in asv's order
    value: float | None
    stats: dict | None
    samples: list | None
    started_at: float | None


@dataclasses.dataclass(frozen=True)
class ResultFile:
    """One asv result file: which commit, machine and environment, and its entries."""

    path: Path
    commit: str
    machine: str | None  # from the file's own ``params`` (None if it names none)
    date_ms: float | None
    env_name: str
    entries: tuple[ResultEntry, ...]


def read_result_file(path: Path) -> ResultFile:
    """Read one asv result file (results API version 2), as asv's ``Results.load`` reads it.

    Every stored combination of every benchmark becomes a :class:`ResultEntry`,
    including combinations whose value asv kept from an earlier run (asv rewrites
    a whole benchmark's row when it reruns some of its combinations, under the new
    start time): selecting what a run produced is the caller's job.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        It is not an asv result file of API version 2.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("version", 2) != 2:
            raise ValueError(f"results API version {data.get('version')!r}, expected 2")
        columns = list(data["result_columns"])
        results = data["results"]
        commit = str(data["commit_hash"])
        if not isinstance(results, dict):
            raise TypeError("'results' is not an object")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{path}: not an asv result file ({exc})") from None
    entries = []
    for name, row_values in results.items():
        if not isinstance(row_values, list):
            continue
        row = dict(zip(columns, row_values))  # asv drops trailing empty columns
        params = row.get("params") or []
        combos = list(itertools.product(*params)) if params else [()]
        result = row.get("result")
        if not isinstance(result, list):
            result = [result] * len(combos)
        samples = row.get("samples")
        stat_cols = {k[len("stats_"):]: v for k, v in row.items()
                     if k.startswith("stats_") and isinstance(v, list)}

        def at(seq, j):
            return seq[j] if isinstance(seq, list) and j < len(seq) else None

        for j, combo in enumerate(combos):
            # Like asv: no statistics columns, or none reaching this combination, is None.
            stats = ({k: v[j] for k, v in stat_cols.items() if j < len(v) and v[j] is not None}
                     if any(j < len(v) for v in stat_cols.values()) else None)
            entries.append(ResultEntry(
                benchmark=name, params=tuple(str(c) for c in combo), value=at(result, j),
                stats=stats, samples=at(samples, j), started_at=row.get("started_at"),
            ))
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    date = data.get("date")
    return ResultFile(path=Path(path), commit=commit, machine=params.get("machine"),
                      date_ms=float(date) if isinstance(date, (int, float)) else None,
                      env_name=str(data.get("env_name", "")), entries=tuple(entries))


def load_benchmark_descriptions(results_dir: Path) -> dict:
    """asv's ``benchmarks.json`` (written at every discovery) as {name: description}; {} if absent."""
    try:
        data = json.loads((Path(results_dir) / "benchmarks.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def load_machine_info(results_dir: Path) -> dict[str, dict]:
    """``machine.json`` of each machine folder (cpu, num_cpu, ram, ...)."""
    out = {}
    for path in sorted(Path(results_dir).glob("*/machine.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return out


def load_results(results_dir: Path) -> pd.DataFrame:
    """All asv results under ``results_dir`` as a long DataFrame (columns :data:`COLUMNS`).

    Files that are not valid asv results are skipped. ``value`` is in the
    benchmark's unit (seconds for ``time_``); ``NaN`` marks a skipped or failed
    combination (kept, so a missing peer is visible rather than silently absent).
    """
    described = load_benchmark_descriptions(results_dir)
    rows = []
    for path in result_files(results_dir):
        try:
            rf = read_result_file(path)
        except (OSError, ValueError):
            continue
        machine = rf.machine or path.parent.name
        date = pd.to_datetime(rf.date_ms, unit="ms", utc=True, errors="coerce")
        for entry in rf.entries:
            name = entry.benchmark
            desc = described.get(name, {})
            param_names = list(desc.get("param_names") or [])
            if len(param_names) != len(entry.params):
                param_names = [f"p{i}" for i in range(len(entry.params))]
            method = name.split(".")[-1]
            # By name first: asv files timeraw_ benchmarks under type "time", but a
            # fresh-process compile time is not a kernel time to compare with peers.
            kind = next((t for t in _TYPES if method.startswith(t + "_")), None) or desc.get("type") or "unknown"
            unit = desc.get("unit") or ("seconds" if kind in ("time", "timeraw") else "")
            stats = entry.stats or {}
            pdict = {k: _literal(v) for k, v in zip(param_names, entry.params)}
            kernel, impl, threads, shape = classify(name, pdict)
            pieces = name.split(".")
            rows.append({
                "machine": machine, "commit": rf.commit, "date": date, "env_name": rf.env_name,
                "benchmark": name, "module": ".".join(pieces[:-2]) or pieces[0],
                "cls": pieces[-2] if len(pieces) >= 3 else "", "method": method, "type": kind,
                "unit": unit, "params": json.dumps(pdict, default=str, sort_keys=False),
                "value": _number(entry.value), "q25": _number(stats.get("q_25")),
                "q75": _number(stats.get("q_75")),
                "ci99_low": _number(stats.get("ci_99_a")), "ci99_high": _number(stats.get("ci_99_b")),
                "number": _number(stats.get("number")), "repeat": _number(stats.get("repeat")),
                "kernel": kernel, "impl": impl,
                "threads": threads if threads is not None else pd.NA, "shape": shape,
            })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["threads"] = frame["threads"].astype("Int64")
    if not frame.empty:
        # Several timed methods of one class that name the same kernel (RouteDispatch has
        # time_route, time_dispatch, time_route_dispatch) keep their method names.
        keys = ["module", "cls", "type", "impl", "kernel"]
        clash = frame.groupby(keys)["method"].transform("nunique") > 1
        frame.loc[clash, "kernel"] = frame.loc[clash, "benchmark"].map(_method_kernel)
    return frame


def align_peers(frame: pd.DataFrame) -> pd.DataFrame:
    """Give peer rows kept in a sibling class (``TopKTorch.time_torch_topk``) the kernel
    name of ours (``TopK.time_top_k``) when that pairing is unambiguous.

    A peer row whose kernel has no ``numba`` row of the same type is matched to the
    single ``numba`` kernel with the same :func:`class_key`; with none or several
    candidates it is left alone (and then has nothing to be compared with).
    """
    if frame.empty:
        return frame
    out = frame.copy()
    ckey = out["benchmark"].map(class_key)
    for kind in out["type"].unique():
        of_type = out["type"] == kind
        ours = out[of_type & (out["impl"] == "numba")]
        our_kernels = set(ours["kernel"])
        by_class: dict[str, set] = {}
        for k, c in zip(ours["kernel"], ckey[ours.index]):
            by_class.setdefault(c, set()).add(k)
        orphan = of_type & (out["impl"] != "numba") & ~out["kernel"].isin(our_kernels)
        for idx in out.index[orphan]:
            candidates = by_class.get(ckey[idx], set())
            if len(candidates) == 1:
                out.at[idx, "kernel"] = next(iter(candidates))
    return out


def pick_machine(frame: pd.DataFrame, preferred: str | None = None) -> str | None:
    """The machine to report: ``preferred`` (this host) if it has results, else the most recent."""
    if frame.empty:
        return None
    if preferred is not None and (frame["machine"] == preferred).any():
        return preferred
    return str(frame.sort_values("date")["machine"].iloc[-1])


def commits_in_order(frame: pd.DataFrame) -> list[str]:
    """Commits of ``frame``, oldest first (by the commit date asv recorded)."""
    order = frame.groupby("commit")["date"].max().sort_values()
    return list(order.index)


def latest(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the most recent commit; when several environments ran it, all of them."""
    if frame.empty:
        return frame
    return frame[frame["commit"] == commits_in_order(frame)[-1]]


_KEYS = ["kernel", "shape", "threads"]
#: Implementations a kernel is timed against, as :func:`impl_of` names them.
PEERS = ("numpy", "torch", "numpy_f32")


def speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Per kernel, shape and thread count: our time and the peers', and the ratios.

    Uses ``time_`` rows only. ``speedup_vs_numpy`` = NumPy reference time / our
    time (> 1 means ours is faster); likewise ``speedup_vs_torch`` and
    ``speedup_vs_numpy_f32`` (the float32 NumPy peer). A peer that was
    skipped (torch not installed) leaves NaN.
    """
    t = align_peers(frame[(frame["type"] == "time") & frame["value"].notna()])
    if t.empty:
        return pd.DataFrame(columns=[*_KEYS, "numba_s", *(f"{p}_s" for p in PEERS),
                                     *(f"speedup_vs_{p}" for p in PEERS)])
    t["threads"] = t["threads"].fillna(-1)
    wide = t.pivot_table(index=_KEYS, columns="impl", values="value", aggfunc="min")
    out = pd.DataFrame(index=wide.index)
    for impl in ("numba", *PEERS):
        out[f"{impl}_s"] = wide[impl] if impl in wide else math.nan
    for peer in PEERS:
        out[f"speedup_vs_{peer}"] = out[f"{peer}_s"] / out["numba_s"]
    out = out[out["numba_s"].notna()].reset_index()
    out["threads"] = out["threads"].astype("Int64").replace(-1, pd.NA)
    return out.sort_values(_KEYS, key=_natural_key).reset_index(drop=True)


def throughputs(frame: pd.DataFrame) -> pd.DataFrame:
    """``track_`` rows whose unit is a rate (GFLOP/s, GB/s ...), with the rate in base units."""
    t = frame[(frame["type"] == "track") & frame["value"].notna()].copy()
    if t.empty:
        return pd.DataFrame(columns=[*_KEYS, "impl", "unit", "value", "metric", "per_s"])
    scale = {"t": 1e12, "g": 1e9, "m": 1e6, "k": 1e3, "": 1.0}
    metrics, per_s = [], []
    for unit, value in zip(t["unit"], t["value"]):
        u = str(unit).replace(" ", "").lower()
        m = re.fullmatch(r"([tgmk]?)(flops?|flop/s|b/s|bytes?/s|byte/s|flop/s)(/s)?", u)
        if m is None:
            m2 = re.fullmatch(r"([tgmk]?)(i?b)/s", u)
            if m2 is None:
                metrics.append(None)
                per_s.append(math.nan)
                continue
            metrics.append("bandwidth")
            per_s.append(value * scale[m2.group(1)])
            continue
        metrics.append("compute" if "flop" in m.group(2) else "bandwidth")
        per_s.append(value * scale[m.group(1)])
    t["metric"] = metrics
    t["per_s"] = per_s
    t = t[t["metric"].notna()]
    return t[[*_KEYS, "impl", "unit", "value", "metric", "per_s"]].sort_values(
        _KEYS, key=_natural_key).reset_index(drop=True)


def history(frame: pd.DataFrame) -> pd.DataFrame:
    """Our ``time_`` results and the NumPy speedup for every commit, oldest first."""
    t = frame[(frame["type"] == "time") & frame["value"].notna()].copy()
    if t.empty:
        return pd.DataFrame(columns=["commit", "date", *_KEYS, "numba_s", "speedup_vs_numpy", "order"])
    parts = []
    for order, commit in enumerate(commits_in_order(t)):
        s = speedups(t[t["commit"] == commit])
        if s.empty:
            continue
        s.insert(0, "commit", commit[:8])
        s.insert(1, "date", t.loc[t["commit"] == commit, "date"].max())
        s["order"] = order
        parts.append(s)
    if not parts:
        return pd.DataFrame(columns=["commit", "date", *_KEYS, "numba_s", "speedup_vs_numpy", "order"])
    out = pd.concat(parts, ignore_index=True)
    return out[["commit", "date", *_KEYS, "numba_s", "speedup_vs_numpy", "speedup_vs_torch", "order"]]


def _natural_key(column: pd.Series) -> pd.Series:
    """Sort ``L=512`` before ``L=1024``: zero-pad every number in strings."""
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        return column.astype(str).map(lambda s: re.sub(r"\d+", lambda m: m.group(0).zfill(12), s))
    return column


__all__ = [
    "COLUMNS", "classify", "class_key", "align_peers", "impl_of", "read_conf", "find_results_dir", "result_files",
    "ResultEntry", "ResultFile", "read_result_file", "load_results",
    "load_benchmark_descriptions", "load_machine_info", "pick_machine", "commits_in_order",
    "latest", "speedups", "throughputs", "history",
]
