"""Figures of the kernel-performance section, one function per figure.

Every function takes a tidy DataFrame (the same one the report writes as CSV)
and returns a matplotlib ``Figure`` built with :func:`scalelab.report.figures.style.new_figure`.
Implementations keep one colour and marker everywhere: ours (Numba), the
float32 NumPy peer, PyTorch, the float64 NumPy reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from scalelab.report.figures.style import PALETTE, new_figure

IMPL_STYLE = {
    "numba": dict(color=PALETTE[0], marker="o", label="scalelab (Numba)"),
    "numpy": dict(color=PALETTE[1], marker="s", label="NumPy reference"),
    "torch": dict(color=PALETTE[2], marker="^", label="PyTorch"),
    "numpy_f32": dict(color=PALETTE[3], marker="D", label="NumPy float32 peer"),
}
PEER_LABEL = {"numpy": "vs NumPy float64 reference (an oracle, not a peer)", "torch": "vs PyTorch CPU",
              "numpy_f32": "vs NumPy float32"}
#: Order of implementations in legends and bar groups.
IMPL_ORDER = ("numba", "numpy_f32", "torch", "numpy")


def _plain_log_ticks(ax, axis: str = "y") -> None:
    """Log axis ticks written as plain numbers (0.5, 2, 100) rather than 10^k."""
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(fmt)
    target.set_minor_formatter(NullFormatter())


def prefill_throughput_figure(data: pd.DataFrame, peak_flops: float | None = None):
    """Achieved GFLOP/s of causal prefill attention against sequence length.

    ``data`` columns: ``L``, ``impl``, ``gflops`` (one row per length and implementation).
    """
    fig, ax = new_figure()
    for impl, group in data.groupby("impl", sort=False):
        g = group.sort_values("L")
        style = IMPL_STYLE.get(impl, dict(label=impl, marker="o"))
        ax.plot(g["L"], g["gflops"], **style)
    if peak_flops:
        ax.axhline(peak_flops / 1e9, color="0.3", linestyle="--", linewidth=1.2,
                   label=f"measured fp32 matmul peak ({peak_flops / 1e9:.0f} GFLOP/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(data["L"].unique()))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    _plain_log_ticks(ax)
    ax.set_xlabel("sequence length L (tokens, Lq = Lk)")
    ax.set_ylabel("achieved throughput (GFLOP/s, log scale)")
    ax.set_title("Causal prefill attention, float32")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


def speedup_figure(data: pd.DataFrame, title: str = "Speed-up of the Numba kernels",
                   peer_labels: dict[str, str] | None = None):
    """Grouped bars: our speed-up over each peer, per kernel and shape (log scale, 1 = parity).

    ``data`` columns: ``label`` (kernel and shape), ``peer`` (``numpy_f32``/``torch``/``numpy``),
    ``speedup``. ``peer_labels`` overrides the legend text of a peer (e.g. with torch's version).
    """
    labels = list(dict.fromkeys(data["label"]))
    legend = {**PEER_LABEL, **(peer_labels or {})}
    peers = [p for p in IMPL_ORDER if p in set(data["peer"])]
    peers += [p for p in dict.fromkeys(data["peer"]) if p not in peers]
    height = max(3.2, 0.3 * len(labels) * max(len(peers), 1) + 1.5)
    fig, ax = new_figure(width=8.0, height=min(height, 11.0))
    y = np.arange(len(labels))
    bar_h = 0.8 / max(len(peers), 1)
    for i, peer in enumerate(peers):
        sub = data[data["peer"] == peer].set_index("label")["speedup"]
        values = np.array([sub.get(label, np.nan) for label in labels], dtype=float)
        color = IMPL_STYLE.get(peer, {}).get("color", PALETTE[(i + 3) % len(PALETTE)])
        pos = y - 0.4 + bar_h * (i + 0.5)
        ax.barh(pos, values, height=bar_h * 0.9, color=color, label=legend.get(peer, f"vs {peer}"))
        for p, v in zip(pos, values):
            if np.isfinite(v):
                ax.annotate(f"{v:.2g}x", (v, p), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7.5)
    ax.axvline(1.0, color="0.2", linewidth=1.0, linestyle="--")
    ax.set_xscale("log")
    _plain_log_ticks(ax, "x")
    finite = data["speedup"][np.isfinite(data["speedup"])]
    if len(finite):
        lo, hi = float(finite.min()), float(finite.max())
        ax.set_xlim(min(lo, 1.0) / 1.6, max(hi, 1.0) * 2.2)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    ax.set_xlabel("speed-up = peer time / Numba time (log scale)")
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=max(len(peers), 1), frameon=False)
    return fig


def roofline_figure(data: pd.DataFrame, peak_flops: float, bandwidth: float):
    """Achieved GFLOP/s against arithmetic intensity under this machine's measured roofline.

    ``data`` columns: ``label``, ``impl``, ``intensity`` (FLOP/byte), ``gflops``.
    """
    fig, ax = new_figure()
    lo = min(float(data["intensity"].min()) / 3, 0.1)
    hi = max(float(data["intensity"].max()) * 3, 4 * peak_flops / bandwidth)
    x = np.geomspace(lo, hi, 256)
    ax.plot(x, np.minimum(peak_flops, bandwidth * x) / 1e9, color="0.25", linewidth=1.6,
            label=f"roofline: {peak_flops / 1e9:.0f} GFLOP/s, {bandwidth / 1e9:.1f} GB/s (measured)")
    ridge = peak_flops / bandwidth
    ax.axvline(ridge, color="0.6", linewidth=0.8, linestyle=":")
    ax.annotate(f"ridge {ridge:.1f} FLOP/B", (ridge, peak_flops / 1e9), xytext=(4, -12),
                textcoords="offset points", fontsize=7.5, color="0.35")
    seen = set()
    n_labelled = 0
    for row in data.itertuples(index=False):
        style = dict(IMPL_STYLE.get(row.impl, dict(label=row.impl, marker="o")))
        label = style.pop("label")
        ax.scatter(row.intensity, row.gflops, s=34, zorder=3, edgecolor="white", linewidth=0.5,
                   label=None if label in seen else label, **style)
        seen.add(label)
        if row.impl == "numba":
            # Alternate above/below so labels of neighbouring shapes do not overprint.
            dy = 4 if n_labelled % 2 == 0 else -11
            ax.annotate(row.label, (row.intensity, row.gflops), xytext=(5, dy), textcoords="offset points",
                        fontsize=7, color="0.25")
            n_labelled += 1
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved, log scale)")
    ax.set_ylabel("achieved throughput (GFLOP/s, log scale)")
    ax.set_title("Attention kernels on this machine's measured roofline")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


def time_bars_figure(data: pd.DataFrame, title: str):
    """Wall time per implementation for kernels without a FLOP model (sampling, MoE).

    ``data`` columns: ``label``, ``impl``, ``seconds``.
    """
    labels = list(dict.fromkeys(data["label"]))
    impls = [i for i in IMPL_ORDER if i in set(data["impl"])]
    fig, ax = new_figure(width=8.0, height=min(max(3.0, 0.3 * len(labels) * len(impls) + 1.5), 11.0))
    y = np.arange(len(labels))
    bar_h = 0.8 / max(len(impls), 1)
    for i, impl in enumerate(impls):
        s = data[data["impl"] == impl].set_index("label")["seconds"]
        vals = np.array([s.get(label, np.nan) for label in labels]) * 1e3
        style = IMPL_STYLE[impl]
        ax.barh(y - 0.4 + bar_h * (i + 0.5), vals, height=bar_h * 0.9, color=style["color"], label=style["label"])
    ax.set_xscale("log")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.grid(False, axis="y")
    _plain_log_ticks(ax, "x")
    ax.set_xlabel("time per call (ms, log scale)")
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=max(len(impls), 1), frameon=False)
    return fig


__all__ = [
    "IMPL_STYLE", "prefill_throughput_figure", "speedup_figure", "roofline_figure", "time_bars_figure",
]
