"""The kernel section's asv path: tables and figures from an asv results directory.

Everything here reads numbers asv recorded; nothing is measured while the
report builds, so kernel rates and the ceilings they are drawn against come
from the same run (the ``roofline`` benchmarks of the suite,
``asv_benchmarks/roofline.py``).

* :func:`family_of` groups asv's kernels into the families a reader knows
  (prefill, decode, paged decode, top-k, ...).
* :func:`summary_table`: per family, our speed-up over the hardest fair peer
  at the highest thread count: geometric mean over shapes and the range. The
  float64 ``*_ref`` references are oracles, never peers.
* :func:`roofline_table`: each ``track_`` rate against the ceiling of the same
  run and thread count, and whether the call's working set is within four times
  the last-level cache (then the cache may hold part of it, DRAM does not bound
  it and no DRAM ceiling applies).
* :func:`history_table`: our time per family at each commit, with the
  regression gate's verdict (:func:`scalelab.bench.regress.compare_results`)
  between consecutive commits.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from scalelab.bench import asv_results
from scalelab.simulations.calibration import DRAM_LLC_MULTIPLE

#: (family, pattern searched in asv_results' kernel name), first match wins; order is page order.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("prefill", r"prefill"),
    ("paged decode", r"paged_decode"),
    ("decode", r"(^|\.)decode"),
    ("top-k", r"top_?k"),
    ("sample / top-p", r"sample|top_p"),
    ("route + dispatch", r"route_dispatch\.route_dispatch"),
    ("route", r"(^|\.)route(_dispatch\.route)?$"),
    ("dispatch", r"dispatch$"),
    ("permute / unpermute", r"permute"),
    ("MoE layer", r"moe\.layer"),
)
#: Fair peers in order of preference when two are equally hard: PyTorch, then the float32 NumPy peer.
FAIR_PEERS = ("torch", "numpy_f32")
#: Relative noise of a best-of-repeats ``track_`` rate on this shared machine: the A/A
#: experiment of docs/regression-gate.md saw identical code's track_ ratios within 0.974-1.082x.
TRACK_NOISE = 0.10
#: asv modules that time analytic models or the machine, not kernels: left out of the kernel tables.
NOT_KERNEL_MODULES = ("inference", "scaling", "simulations", "serving", "hyperparams", "gate_probe")
#: Parameters that describe the environment, not the problem size: left out of shape labels.
_NOT_SHAPE = ("blas",)


def kernel_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of asv benchmarks of kernels and of the machine's ceilings (not of analytic models)."""
    return frame[~frame["module"].isin(NOT_KERNEL_MODULES)]


def family_of(kernel: str) -> str:
    """The kernel family a reader knows (``decode``) for asv_results' kernel name (``attention.decode.kv``)."""
    for family, pattern in FAMILIES:
        if re.search(pattern, kernel):
            return family
    return kernel


def family_rank(family: str) -> int:
    """Position of ``family`` in :data:`FAMILIES` (unknown families last)."""
    names = [f for f, _ in FAMILIES]
    return names.index(family) if family in names else len(names)


def operation_of(kernel: str, family: str, kernels_in_family: int) -> str:
    """What distinguishes a kernel within its family (``filter``/``sample``), '' when it is alone."""
    if kernels_in_family <= 1:
        return ""
    last = kernel.split(".")[-1]
    words = [w for w in last.split("_") if w not in ("top", "p", "k")] or [last]
    return "_".join(words)


def short_shape(shape: str) -> str:
    """A shape label that fits under a bar: ``B=32, V=256000`` -> ``B32 V256k``; environment parameters dropped."""
    parts = []
    for part in str(shape).split(", "):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key in _NOT_SHAPE:
            continue
        if value.isdigit() and int(value) >= 10_000:
            value = f"{int(value) / 1000:.4g}k"
        parts.append(value if key == "config" else f"{key}{value}")
    return " ".join(parts)


def shape_bytes_label(nbytes: float) -> str:
    return f"{nbytes / 2**20:.3g} MiB"


def _with_family(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``family`` and ``label`` (operation and short shape) columns."""
    out = frame.copy()
    out["family"] = out["kernel"].map(family_of)
    per_family = out.groupby("family")["kernel"].transform("nunique")
    ops = [operation_of(k, f, n) for k, f, n in zip(out["kernel"], out["family"], per_family)]
    out["label"] = [" ".join(b for b in (op, short_shape(s)) if b) or "one shape" for op, s in zip(ops, out["shape"])]
    return out


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name == "family":
        return column.map(family_rank)
    if pd.api.types.is_numeric_dtype(column):
        return column
    # Natural order: L=512 before L=1024 (numbers zero-padded).
    return column.map(lambda v: re.sub(r"\d+", lambda m: m.group(0).zfill(12), "" if pd.isna(v) else str(v)))


def sort_rows(frame: pd.DataFrame, keys=("family", "kernel", "shape", "threads")) -> pd.DataFrame:
    """Rows by family (page order), kernel and shape (numbers in natural order), then thread count."""
    keys = [k for k in keys if k in frame]
    return frame.sort_values(keys, key=_sort_key, na_position="first").reset_index(drop=True)


# --------------------------------------------------------------------------- speed-ups


def times_table(now: pd.DataFrame) -> pd.DataFrame:
    """Per kernel, shape and thread count: every implementation's time (ms) and our speed-ups over the fair peers.

    Sorted by family and shape; the first rows are the headline shapes (per
    family, its largest shape at the highest thread count), flagged ``headline``.
    """
    sp = asv_results.speedups(now)
    if sp.empty:
        return sp
    sp = _with_family(sp)
    table = pd.DataFrame({"family": sp["family"], "kernel": sp["kernel"], "shape": sp["shape"],
                          "label": sp["label"], "threads": sp["threads"]})
    for impl in ("numba", *FAIR_PEERS, "numpy"):
        table[f"{impl}_ms"] = sp[f"{impl}_s"] * 1e3
    for peer in FAIR_PEERS:
        table[f"speedup_vs_{peer}"] = sp[f"speedup_vs_{peer}"]
    table = sort_rows(table)
    top = table["threads"].fillna(0).groupby(table["family"]).transform("max")
    at_top = table[table["threads"].fillna(0) == top]
    headline_idx = at_top.groupby("family").tail(1).index  # the largest shape: last in natural order
    table["headline"] = table.index.isin(headline_idx)
    table = pd.concat([table[table["headline"]], table[~table["headline"]]])
    # What a reader compares first; asv's kernel name and full shape last.
    first = ["family", "label", "threads", "numba_ms", *(f"{p}_ms" for p in FAIR_PEERS),
             *(f"speedup_vs_{p}" for p in FAIR_PEERS), "headline"]
    table = table[first + [c for c in table if c not in first]]
    return table.rename(columns={"numpy_ms": "numpy_f64_reference_ms"}).reset_index(drop=True)


def summary_table(times: pd.DataFrame) -> pd.DataFrame:
    """Per family at its highest thread count: the geometric-mean speed-up over the hardest fair peer and its range.

    The hardest peer is the fair peer (PyTorch or the float32 NumPy peer) with
    the smallest geometric-mean speed-up over the shapes it ran. A family with
    no fair peer measured keeps a row with NaN ratios and ``peer`` empty.
    """
    rows = []
    for family, group in times.groupby("family", sort=False):
        top = group["threads"].max() if group["threads"].notna().any() else pd.NA
        at = group if pd.isna(top) else group[group["threads"] == top]
        best = None
        for peer in FAIR_PEERS:
            ratios = at[f"speedup_vs_{peer}"].dropna()
            ratios = ratios[ratios > 0]
            if ratios.empty:
                continue
            geo = float(np.exp(np.log(ratios).mean()))
            if best is None or geo < best[1]:
                best = (peer, geo, float(ratios.min()), float(ratios.max()), len(ratios))
        peer, geo, lo, hi, n = best if best else ("", math.nan, math.nan, math.nan, 0)
        rows.append(dict(family=family, threads=top, peer=peer, geomean_speedup=geo, min_speedup=lo,
                         max_speedup=hi, n_shapes=n, n_shapes_total=len(at)))
    out = pd.DataFrame(rows, columns=["family", "threads", "peer", "geomean_speedup", "min_speedup",
                                      "max_speedup", "n_shapes", "n_shapes_total"])
    return sort_rows(out, ("family",))


def detail_table(now: pd.DataFrame) -> pd.DataFrame:
    """Long rows for the small multiples: time per call of every implementation but the float64 reference,
    at each family's highest thread count."""
    t = asv_results.align_peers(now[(now["type"] == "time") & now["value"].notna()])
    t = t[t["impl"] != "numpy"]
    if t.empty:
        return pd.DataFrame(columns=["family", "kernel", "shape", "label", "threads", "impl", "ms"])
    t = _with_family(t)
    top = t["threads"].astype("Float64").fillna(0).groupby(t["family"]).transform("max")
    t = t[t["threads"].astype("Float64").fillna(0) == top]
    out = t.groupby(["family", "kernel", "shape", "label", "impl"], dropna=False).agg(
        threads=("threads", "max"), ms=("value", "min")).reset_index()
    out["ms"] *= 1e3
    return sort_rows(out, ("family", "kernel", "shape", "impl"))


# --------------------------------------------------------------------------- roofline


def ceilings_of(now: pd.DataFrame) -> dict:
    """This run's ceilings from the ``roofline`` benchmarks: {"read": {threads: bytes/s},
    "sgemm": {threads: FLOP/s}, "blas": str, "llc_bytes": float or None}.

    The ceiling at ``t`` threads is the best measured at ``t`` or fewer: a process
    with ``t`` threads can always do what fewer threads did, so a lower figure at
    ``t`` only says that its repeats were disturbed (on a loaded machine the
    2-thread run is the likelier to lose a thread to another process).
    """
    tr = now[(now["type"] == "track") & now["value"].notna() & (now["module"] == "roofline")]
    out = {"read": {}, "sgemm": {}, "blas": "", "llc_bytes": None}
    for row in tr.itertuples(index=False):
        threads = int(row.threads) if pd.notna(row.threads) else 0
        if row.method == "track_read_gbps":
            out["read"][threads] = max(out["read"].get(threads, 0.0), row.value * 1e9)
        elif row.method == "track_sgemm_gflops":
            out["sgemm"][threads] = max(out["sgemm"].get(threads, 0.0), row.value * 1e9)
            out["blas"] = _param(row.params, "blas")
        elif row.method == "track_mib":
            out["llc_bytes"] = row.value * 2**20
    for kind in ("read", "sgemm"):  # t threads can do what fewer do: a ceiling never falls with more threads
        ceil = out[kind]
        out[kind] = {t: max(v for u, v in ceil.items() if u <= t) for t in sorted(ceil)}
    return out


def _param(params_json: str, name: str) -> str:
    try:
        return str(json.loads(params_json).get(name, ""))
    except ValueError:
        return ""


def _matching_time(now: pd.DataFrame, track: pd.Series) -> float:
    """Seconds per call of the ``time_`` benchmark of the same class, parameters and implementation as
    ``track`` (the one whose name the track's name contains, or the only one); NaN if none."""
    cand = now[(now["type"] == "time") & (now["cls"] == track["cls"]) & (now["module"] == track["module"])
               & (now["params"] == track["params"]) & (now["impl"] == track["impl"]) & now["value"].notna()]
    if cand.empty:
        return math.nan
    stem = track["method"].removeprefix("track_")
    named = cand[[m.removeprefix("time_") in stem for m in cand["method"]]]
    if not named.empty:
        longest = named["method"].str.len().idxmax()
        return float(named.loc[longest, "value"])
    return float(cand["value"].iloc[0]) if cand["method"].nunique() == 1 else math.nan


def roofline_table(now: pd.DataFrame, ceilings: dict) -> pd.DataFrame:
    """Every kernel ``track_`` rate against this run's ceiling at the same thread count.

    ``working_set_bytes`` estimates the bytes one call moves: ``rate_x_time_bytes``
    (rate x time per call of the matching ``time_`` benchmark: asv's median, so an
    overestimate when that process ran slower), the smallest over the implementations of the same
    kernel, shape and thread count, which count the same bytes. ``in_llc`` when it
    is below :data:`DRAM_LLC_MULTIPLE` times the last-level cache: data re-read
    from a working set of one or two cache sizes partly stay cached across calls,
    so DRAM does not bound the rate and ``bound`` says so instead of applying the
    DRAM ceiling (the read-stream ceiling itself is measured at that multiple).
    """
    tp = asv_results.throughputs(now)
    kernel_rows = now[(now["type"] == "track") & now["value"].notna() & (now["module"] != "roofline")]
    if tp.empty or kernel_rows.empty:
        return pd.DataFrame()
    rows = []
    for _, tr in kernel_rows.iterrows():
        rate = asv_results.throughputs(now.loc[[tr.name]])
        if rate.empty:
            continue
        metric, per_s = rate["metric"].iloc[0], float(rate["per_s"].iloc[0])
        threads = int(tr["threads"]) if pd.notna(tr["threads"]) else 0
        table = ceilings["sgemm"] if metric == "compute" else ceilings["read"]
        ceiling = table.get(threads, math.nan)
        ws = per_s * _matching_time(now, tr) if metric == "bandwidth" else math.nan
        rows.append(dict(kernel=tr["kernel"], shape=tr["shape"], threads=tr["threads"], impl=tr["impl"],
                         metric=metric, value=tr["value"], unit=tr["unit"], per_s=per_s, ceiling_per_s=ceiling,
                         fraction_of_ceiling=per_s / ceiling if ceiling else math.nan, rate_x_time_bytes=ws))
    out = pd.DataFrame(rows)
    same_bytes = [out["kernel"], out["shape"], out["threads"].astype("Float64").fillna(-1)]
    out["working_set_bytes"] = out.groupby(same_bytes)["rate_x_time_bytes"].transform("min")
    llc = ceilings.get("llc_bytes")
    out["in_llc"] = [bool(llc and m == "bandwidth" and math.isfinite(ws) and ws < DRAM_LLC_MULTIPLE * llc)
                     for m, ws in zip(out["metric"], out["working_set_bytes"])]
    out["bound"] = ["fp32 matmul peak" if m == "compute" else
                    (f"last-level cache (under {DRAM_LLC_MULTIPLE}x its size; no DRAM ceiling)" if c
                     else "DRAM read stream") for m, c in zip(out["metric"], out["in_llc"])]
    out = _with_family(out)
    return sort_rows(out, ("family", "kernel", "shape", "threads", "impl"))


def above_ceiling(roof: pd.DataFrame, noise: float = TRACK_NOISE) -> pd.DataFrame:
    """Rows a DRAM or matmul ceiling bounds that exceed it by more than ``noise``: a contradiction to report."""
    if roof.empty:
        return roof
    bounded = roof[~roof["in_llc"]]
    return bounded[bounded["fraction_of_ceiling"] > 1.0 + noise]


# --------------------------------------------------------------------------- history


def history_table(frame: pd.DataFrame, results_dir, factor: float | None = None) -> pd.DataFrame:
    """Our time per call at every commit, per family (geometric mean over the shapes every commit ran,
    at the highest thread count), and the gate's verdict against the previous commit.

    ``regressions`` counts our benchmark x parameter combinations in the family
    that the gate (:func:`scalelab.bench.regress.compare_results`, reading the
    result files as the gate does) calls a regression: slower by more than
    ``factor`` and significant. ``undecided`` counts those it cannot judge
    because asv recorded neither samples nor statistics (``--quick`` runs).
    """
    from scalelab.bench import regress

    factor = regress.DEFAULT_FACTOR if factor is None else factor
    commits = asv_results.commits_in_order(frame)
    t = frame[(frame["type"] == "time") & (frame["impl"] == "numba") & frame["value"].notna()]
    if len(commits) < 2 or t.empty:
        return pd.DataFrame()
    t = _with_family(t)
    t["label_repr"] = t["params"].map(_params_label)
    top = t["threads"].astype("Float64").fillna(0).groupby(t["family"]).transform("max")
    t = t[t["threads"].astype("Float64").fillna(0) == top]
    verdicts = _gate_verdicts(t, results_dir, commits, factor)
    rows = []
    for family, group in t.groupby("family", sort=False):
        per_key = group.groupby(["benchmark", "params"])["commit"].nunique()
        common = set(per_key[per_key == len(commits)].index)
        for order, commit in enumerate(commits):
            g = group[group["commit"] == commit]
            g = g[[k in common for k in zip(g["benchmark"], g["params"])]]
            v = verdicts.get(commit, {}).get(family, {})
            rows.append(dict(family=family, commit=commit[:8], order=order,
                             date=frame.loc[frame["commit"] == commit, "date"].max(),
                             numba_ms_geomean=float(np.exp(np.log(g["value"] * 1e3).mean())) if len(g) else math.nan,
                             n_shapes=len(g), regressions=v.get("regression", 0),
                             undecided=v.get("n/a", 0)))
    return sort_rows(pd.DataFrame(rows), ("family", "order"))


def _params_label(params_json: str) -> str:
    """The gate's parameter label (asv's repr strings joined by ", ") of a row's parameter JSON."""
    return ", ".join(repr(v) for v in json.loads(params_json).values())


def _gate_verdicts(ours: pd.DataFrame, results_dir, commits: list[str], factor: float) -> dict:
    """{commit: {family: {verdict: count}}}: the gate's comparison of each commit with the one before,
    over our rows ``ours`` (columns ``benchmark``, ``label_repr``, ``family``)."""
    from scalelab.bench import regress

    machine = str(ours["machine"].iloc[0])
    family = dict(zip(zip(ours["benchmark"], ours["label_repr"]), ours["family"]))
    units = {k: v.get("unit", "") for k, v in asv_results.load_benchmark_descriptions(results_dir).items()}
    loaded = {c: regress.load_commit_results(results_dir, machine, c, None, None) for c in commits}
    out: dict = {}
    for before, after in zip(commits, commits[1:]):
        both = set(loaded[before]) & set(loaded[after]) & set(family)  # combinations both commits ran
        base = {k: loaded[before][k] for k in both}
        head = {k: loaded[after][k] for k in both}
        counts: dict = {}
        for row in regress.compare_results(base, head, units, factor):
            fam = counts.setdefault(family[(row.benchmark, row.params)], {})
            fam[row.verdict] = fam.get(row.verdict, 0) + 1
        out[after] = counts
    return out


# --------------------------------------------------------------------------- items


def _how_to_add_commit() -> str:
    return ("Only one commit is in these results, so there is no history yet. To add one, benchmark another "
            "commit into the same results: check it out (e.g. `git checkout HEAD~1`), run "
            "`asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)`, and check your branch "
            "out again (or let asv build it: `asv run HEAD~1^!`). With two or more commits this section draws "
            "each family's time per commit and flags regressions by the gate's rule.")


def publish_link(repo_root) -> str | None:
    """A Markdown link to ``asv publish``'s HTML when it exists in the checkout."""
    if repo_root is None:
        return None
    try:
        html_dir = asv_results.read_conf(repo_root).get("html_dir", ".asv/html")
    except (OSError, ValueError):
        html_dir = ".asv/html"
    index = (repo_root / html_dir / "index.html").resolve()
    if not index.is_file():
        return None
    return f"asv's own pages for these results (`asv publish`): [{html_dir}/index.html]({index.as_uri()})."


def asv_items(frame: pd.DataFrame, results_dir, machine: str, repo_root) -> list:
    """The section's items from asv results of ``machine`` (``frame`` already holds only that machine)."""
    from scalelab.report.figures import kernels_asv as kfig
    from scalelab.report.section import FigureItem, TableItem, TextItem

    items: list = []
    frame = kernel_rows(frame)
    commits = asv_results.commits_in_order(frame)
    now = asv_results.latest(frame)
    ceilings = ceilings_of(now)
    times = times_table(now)
    if not times.empty:
        summary = summary_table(times)
        if summary["peer"].eq("").all():
            items.append(TextItem("No fair peer (PyTorch or the float32 NumPy peer) was measured in these asv "
                                  "results, so there is no speed-up to show; rerun `asv run` on this checkout."))
        else:
            items.append(FigureItem(
                "asv_speedup", kfig.summary_figure(summary),
                "Per kernel family, our speed-up over its hardest fair peer at the highest thread count: the "
                "bar is the geometric mean over the shapes both ran, the whisker their range; the peer is "
                "whichever of PyTorch and the float32 NumPy peer we beat by the least. The float64 references "
                "are oracles and never a peer. Ratios of times from the same asv run.",
                data=summary,
            ))
        if times["torch_ms"].isna().all():
            items.append(TextItem("PyTorch is not installed in the environment asv ran, so the float32 NumPy "
                                  "peer is the only fair peer here; `make bench-torch` adds PyTorch."))
    detail = detail_table(now)
    if not detail.empty:
        blas = ceilings.get("blas") or ""
        items.append(FigureItem(
            "asv_families", kfig.families_figure(detail),
            "Time per call of every implementation, one panel per kernel family, shapes along x (B batch, "
            "V vocabulary, L sequence length, Hkv KV heads, T tokens, E experts, k routed experts per token"
            + (f"; BLAS {blas}" if blas else "") + "), at the family's highest thread count; lower is faster. "
            "The table below and its CSV hold every thread count.",
            data=detail,
        ))
    roof = roofline_table(now, ceilings)
    if not roof.empty and (ceilings["read"] or ceilings["sgemm"]):
        top = roof["threads"].astype("Float64").fillna(0).groupby(roof["metric"]).transform("max")
        shown = roof[roof["threads"].astype("Float64").fillna(0) == top]
        llc = ceilings.get("llc_bytes")
        items.append(FigureItem(
            "asv_roofline", kfig.roofline_figure(shown, ceilings, TRACK_NOISE),
            "Achieved GFLOP/s and GB/s of the `track_` benchmarks against ceilings measured by the same asv "
            "run (`asv_benchmarks/roofline.py`: fp32 BLAS matmul, and the better of two Numba read patterns "
            "over arrays four times the last-level cache, best of 7 each). A hatched bar's working set "
            f"(rate x time per call) is under {DRAM_LLC_MULTIPLE}x the "
            f"{shape_bytes_label(llc) if llc else 'last-level'} cache, so the cache may hold part of it, DRAM "
            "does not bound it and it may pass the DRAM line. The CSV holds every thread count.",
            data=roof,
        ))
        bad = above_ceiling(roof)
        if not bad.empty:
            items.append(TextItem(
                f"*Note:* {len(bad)} rate(s) whose working set exceeds {DRAM_LLC_MULTIPLE}x the last-level "
                f"cache ran more than "
                f"{TRACK_NOISE:.0%} above the ceiling of the same run ("
                + ", ".join(f"{r.family} {r.label} {r.impl}" for r in bad.head(4).itertuples()) + "). "
                "That contradicts the ceiling; the usual cause is load from other processes during the "
                "ceiling's repeats. Rerun `asv run -b roofline` together with these kernels."))
    elif not roof.empty:
        items.append(TextItem(
            "These asv results hold no ceilings of their own, so achieved rates are not drawn against a "
            "roofline (ceilings measured at another moment would not be comparable); run "
            "`asv run --python=same --set-commit-hash $(git rev-parse HEAD) -b roofline` to add them."))
    if not times.empty:
        items.append(TableItem(
            "asv_times", times,
            "asv time per call (ms) of each implementation and our speed-ups over the fair peers, every "
            "kernel, shape and thread count; the headline shapes (each family's largest at its highest thread "
            "count) first, then by family and shape. The float64 reference's time is listed, not compared.",
        ))
    if len(commits) >= 2:
        hist = history_table(frame, results_dir)
        # A family drawn over commits needs shapes that every commit ran.
        drawn = hist[hist.groupby("family")["n_shapes"].transform("min") > 0] if not hist.empty else hist
        if not drawn.empty:
            from scalelab.bench import regress

            undecided = int(hist["undecided"].sum())
            items.append(FigureItem(
                "asv_history", kfig.history_figure(drawn, regress.DEFAULT_FACTOR),
                f"Our time per call at each of the {len(commits)} benchmarked commits, oldest left, per family "
                "(geometric mean over the shapes every commit ran, highest thread count), relative to the oldest. "
                "A cross marks a commit where the regression gate's rule (slower than the commit before by more "
                f"than {regress.DEFAULT_FACTOR:g}x, and significant) flags a benchmark of the family."
                + (f" {undecided} comparison(s) could not be judged: asv recorded no samples or statistics "
                   "for them (quick runs)." if undecided else "")
                + (f" Not drawn (no shape benchmarked at every commit): {', '.join(sorted(missing))}."
                   if (missing := set(hist["family"]) - set(drawn["family"])) else ""),
                data=hist,
            ))
    else:
        items.append(TextItem(_how_to_add_commit()))
    link = publish_link(repo_root)
    if link:
        items.append(TextItem(link))
    compile_rows = now[(now["type"] == "timeraw") & now["value"].notna()]
    if not compile_rows.empty:
        items.append(TableItem(
            "asv_compile", compile_rows[["benchmark", "params", "value"]].rename(columns={"value": "seconds"})
            .reset_index(drop=True),
            "Compile / first-import time benchmarks (asv `timeraw_`, a fresh process each).",
        ))
    if not items:
        items.append(TextItem("The asv results hold no `time_` or `track_` benchmarks this section can read."))
    return items
