"""Figures of the kernel section drawn from asv results, one function per figure.

Each takes the tidy table the section writes as CSV (see
:mod:`scalelab.report.sections.kernels_asv`) and returns a ``Figure`` with
constrained layout whose size follows the number of families or rows, so
labels never need to shrink or overlap.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scalelab.report.figures.kernels import IMPL_ORDER, IMPL_STYLE, _plain_log_ticks
from scalelab.report.figures.style import PALETTE, new_figure

#: Short peer names written on the summary bars.
PEER_SHORT = {"torch": "PyTorch", "numpy_f32": "NumPy float32"}
#: Colours of other variants (a dense baseline): palette entries the peers do not use, yellow left out (too faint).
_VARIANT_COLORS = (PALETTE[4], PALETTE[7], PALETTE[5])
#: Most panels in one row of a small-multiples figure.
PANELS_PER_ROW = 3


def _style(impl: str, i: int) -> dict:
    """Colour, marker and legend label of an implementation; variants (``dense``) get the next free colour."""
    if impl in IMPL_STYLE:
        return dict(IMPL_STYLE[impl])
    return dict(color=_VARIANT_COLORS[i % len(_VARIANT_COLORS)], marker="v", label=f"{impl} (variant)")


def _impl_order(impls) -> list[str]:
    impls = list(dict.fromkeys(impls))
    return [i for i in IMPL_ORDER if i in impls] + sorted(i for i in impls if i not in IMPL_ORDER)


def _grid(n_panels: int, panel_w: float = 3.4, panel_h: float = 2.7, extra_h: float = 0.9, **kwargs):
    """Figure and a flat list of ``n_panels`` axes, at most :data:`PANELS_PER_ROW` per row; spare axes removed."""
    ncols = max(1, min(PANELS_PER_ROW, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig, axes = new_figure(nrows, ncols, width=panel_w * ncols, height=panel_h * nrows + extra_h, squeeze=False,
                           **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.remove()
    return fig, flat[:n_panels]


def summary_figure(summary: pd.DataFrame):
    """Per family: geometric-mean speed-up over its hardest fair peer, with the range over shapes as whiskers.

    ``summary`` columns: ``family``, ``peer``, ``threads``, ``geomean_speedup``,
    ``min_speedup``, ``max_speedup``, ``n_shapes``. A family without a fair peer
    gets no bar, only the words "no fair peer measured".
    """
    n = len(summary)
    fig, ax = new_figure(width=7.6, height=0.42 * n + 1.5)
    y = np.arange(n)
    geo = summary["geomean_speedup"].to_numpy(float)
    lo = summary["min_speedup"].to_numpy(float)
    hi = summary["max_speedup"].to_numpy(float)
    colors = [IMPL_STYLE.get(p, {}).get("color", "0.6") for p in summary["peer"]]
    ax.barh(y, np.where(np.isfinite(geo), geo, np.nan), height=0.62, color=colors, left=0, zorder=2)
    ok = np.isfinite(geo)
    ax.errorbar(geo[ok], y[ok], xerr=np.clip([geo[ok] - lo[ok], hi[ok] - geo[ok]], 0, None), fmt="none", ecolor="0.15",
                elinewidth=1.0, capsize=3, zorder=3)
    ax.axvline(1.0, color="0.2", linestyle="--", linewidth=1.0, zorder=1)
    ax.set_xscale("log")
    finite = np.concatenate([lo[ok], hi[ok], [1.0]])
    ax.set_xlim(finite.min() / 1.5, finite.max() * 1.5)
    _plain_log_ticks(ax, "x")
    ax.set_yticks(y, list(summary["family"]))
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    for yi, row in zip(y, summary.itertuples(index=False)):
        if np.isfinite(row.geomean_speedup):
            text = (f"{row.geomean_speedup:.2g}x vs {PEER_SHORT.get(row.peer, row.peer)}"
                    f"  ({row.min_speedup:.2g}-{row.max_speedup:.2g}x, {row.n_shapes} shape"
                    f"{'s' if row.n_shapes != 1 else ''})")
        else:
            text = "no fair peer measured"
        # In the right margin, as a column: it never collides with a bar or whisker.
        ax.text(1.02, yi, text, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    threads = sorted({int(t) for t in summary["threads"].dropna()})
    ax.set_xlabel("speed-up = peer time / our time (log scale; > 1: ours is faster)")
    ax.set_title("Numba kernels vs the hardest fair peer, "
                 + (f"{'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}" if threads else "asv"),
                 loc="left")
    return fig


def families_figure(detail: pd.DataFrame):
    """Small multiples: one panel per family, shapes on x, time per call (log) of each implementation.

    ``detail`` columns: ``family``, ``label`` (short shape), ``impl``, ``ms``.
    """
    families = list(dict.fromkeys(detail["family"]))
    widest = max((len(list(dict.fromkeys(detail.loc[detail["family"] == f, "label"]))) for f in families), default=1)
    fig, axes = _grid(len(families), panel_w=max(3.4, 0.5 * widest + 1.3))
    impls = _impl_order(detail["impl"])
    handles = {}
    for ax, family in zip(axes, families):
        sub = detail[detail["family"] == family]
        labels = list(dict.fromkeys(sub["label"]))
        x = np.arange(len(labels))
        for i, impl in enumerate(impls):
            s = sub[sub["impl"] == impl].groupby("label")["ms"].min()
            if s.empty:
                continue
            vals = np.array([s.get(lab, np.nan) for lab in labels])
            style = _style(impl, i)
            (line,) = ax.plot(x, vals, marker=style["marker"], color=style["color"], markersize=4.5,
                              linewidth=1.3, linestyle="-" if len(labels) > 1 else "none")
            handles.setdefault(style["label"], line)
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_xticks(x, [lab.replace(" ", "\n") for lab in labels], fontsize=7.5)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        threads = sub["threads"].dropna()
        ax.set_title(f"{family}" + (f" ({int(threads.max())} thr)" if len(threads) else ""), fontsize=9.5)
        ax.tick_params(axis="y", labelsize=7.5)
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_ylabel("ms per call (log)")
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
               ncols=min(4, max(1, len(handles))), frameon=False)
    return fig


def roofline_figure(roof: pd.DataFrame, ceilings: dict, noise: float):
    """Achieved rate of each ``track_`` benchmark at the highest thread count against this run's ceilings.

    Two stacked panels, compute (GFLOP/s vs the fp32 matmul peak) and memory
    (GB/s vs the read stream); a bar whose working set is within a few times the
    last-level cache (``in_llc``: partly cache-resident) is hatched, and the DRAM
    line does not bound it. ``roof`` columns:
    ``family``, ``label``, ``impl``, ``metric``, ``per_s``, ``threads``, ``in_llc``.
    """
    metrics = [m for m in ("compute", "bandwidth") if m in set(roof["metric"])]
    counts = [max(1, roof.loc[roof["metric"] == m, ["family", "label"]].drop_duplicates().shape[0]) for m in metrics]
    fig, axes = new_figure(len(metrics), 1, width=7.6, height=sum(0.3 * c + 1.1 for c in counts) + 0.6,
                           squeeze=False, gridspec_kw=dict(height_ratios=[c + 2.5 for c in counts]))
    handles = {}
    for ax, metric in zip(axes[:, 0], metrics):
        sub = roof[roof["metric"] == metric]
        keys = list(dict.fromkeys(zip(sub["family"], sub["label"])))
        impls = _impl_order(sub["impl"])
        bar_h = 0.8 / len(impls)
        y = np.arange(len(keys))
        threads = int(sub["threads"].max()) if sub["threads"].notna().any() else 0
        ceiling = (ceilings["sgemm"] if metric == "compute" else ceilings["read"]).get(threads)
        for i, impl in enumerate(impls):
            s = sub[sub["impl"] == impl].set_index(["family", "label"])
            vals = np.array([s["per_s"].get(k, np.nan) for k in keys]) / 1e9
            cached = np.array([bool(s["in_llc"].get(k, False)) for k in keys])
            style = _style(impl, i)
            bars = ax.barh(y - 0.4 + bar_h * (i + 0.5), vals, height=bar_h * 0.9, color=style["color"])
            handles.setdefault(style["label"], bars[0])
            for bar, c in zip(bars, cached):
                if c:
                    bar.set_hatch("////")
                    bar.set_edgecolor("white")
                    bar.set_alpha(0.55)
        unit = "GFLOP/s" if metric == "compute" else "GB/s"
        if ceiling:
            what = "fp32 matmul peak" if metric == "compute" else "DRAM read stream"
            ax.axvline(ceiling / 1e9, color="0.15", linestyle="--", linewidth=1.2)
            ax.axvspan(ceiling / 1e9, ceiling / 1e9 * (1 + noise), color="0.5", alpha=0.15, linewidth=0)
            ax.set_title(f"{'compute' if metric == 'compute' else 'memory'}-bound kernels, {threads} thread"
                         f"{'s' if threads != 1 else ''}\nceiling (dashed): {what} {ceiling / 1e9:.3g} {unit}, "
                         f"same asv run; grey: +{noise:.0%} noise", fontsize=9, loc="left")
        ax.set_yticks(y, [f"{f}  {lab}" for f, lab in keys], fontsize=7.5)
        ax.invert_yaxis()
        ax.grid(False, axis="y")
        ax.set_xlabel(f"achieved {unit}")
    if roof["in_llc"].any():
        from matplotlib.patches import Patch

        from scalelab.simulations.calibration import DRAM_LLC_MULTIPLE

        handles[f"working set within {DRAM_LLC_MULTIPLE}x the last-level cache (no DRAM bound)"] = Patch(
            facecolor="0.7", hatch="////", edgecolor="white")
    fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncols=2, frameon=False,
               fontsize=7.5)
    return fig


def history_figure(hist: pd.DataFrame, factor: float):
    """Small multiples over commits: our time per call relative to the oldest commit, per family.

    ``hist`` columns: ``family``, ``commit``, ``order``, ``numba_ms_geomean``,
    ``regressions``. The y axis is shared and linear (1 = as fast as the oldest
    commit); the dotted line is the gate's slowdown ``factor``, and a cross marks
    a commit where the gate's rule flags a benchmark of the family.
    """
    from matplotlib.lines import Line2D

    families = list(dict.fromkeys(hist["family"]))
    commits = hist.sort_values("order")["commit"].drop_duplicates().tolist()
    fig, axes = _grid(len(families), panel_w=max(3.0, 0.45 * len(commits) + 1.6), panel_h=2.2, sharey=True)
    for ax, family in zip(axes, families):
        g = hist[hist["family"] == family].sort_values("order")
        first = g["numba_ms_geomean"].dropna()
        rel = g["numba_ms_geomean"] / (first.iloc[0] if len(first) else np.nan)
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.axhline(factor, color=PALETTE[1], linewidth=0.8, linestyle=":")
        ax.plot(g["order"], rel, marker="o", markersize=4, color=PALETTE[0])
        bad = g["regressions"] > 0
        ax.plot(g.loc[bad, "order"], rel[bad], linestyle="none", marker="X", markersize=9, color=PALETTE[1])
        ax.set_xticks(range(len(commits)), [c[:7] for c in commits], rotation=45, ha="right", fontsize=7.5)
        ax.set_xlim(-0.4, len(commits) - 0.6)
        ax.set_title(family, fontsize=9.5)
        ax.tick_params(axis="y", labelsize=7.5)
    top = float(np.nanmax([factor * 1.15, *(hist["numba_ms_geomean"] / hist.groupby("family")[
        "numba_ms_geomean"].transform("first")).dropna() * 1.1]))
    axes[0].set_ylim(0, top)
    for ax in axes[::PANELS_PER_ROW]:
        ax.set_ylabel("time / oldest commit's")
    fig.legend([Line2D([], [], marker="o", color=PALETTE[0]), Line2D([], [], linestyle=":", color=PALETTE[1]),
                Line2D([], [], marker="X", linestyle="none", markersize=9, color=PALETTE[1])],
               ["scalelab (Numba), oldest commit left", f"gate's slowdown factor ({factor:g}x)",
                "regression by the gate's rule"],
               loc="outside lower center", ncols=3, frameon=False, fontsize=8)
    return fig


__all__ = ["summary_figure", "families_figure", "roofline_figure", "history_figure", "PEER_SHORT"]
