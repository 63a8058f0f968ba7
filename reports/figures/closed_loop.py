"""Figures of the closed-loop section: latency CDFs the live engine measured beside the simulator's prediction."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from .style import PALETTE, new_figure


def _cdf(ax, values, color, linestyle, label) -> None:
    v = np.sort(np.asarray(values, dtype=np.float64)[np.isfinite(values)])  # (n,)
    if v.size:
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=color, linestyle=linestyle, label=label)


def latency_cdf_figure(runs: dict, title: str = ""):
    """TTFT and TPOT CDFs (ms) per load: measured (solid) and predicted (dashed).

    ``runs`` maps a load fraction to ``(measured, predicted)`` ServingResults.
    """
    fig, axes = new_figure(1, 2, width=9.6, height=3.9)
    for i, (load, (measured, predicted)) in enumerate(sorted(runs.items())):
        color = PALETTE[i % len(PALETTE)]
        for ax, key in zip(axes, ("ttft", "tpot")):
            _cdf(ax, measured.requests[key] * 1e3, color, "-", f"{load:.0%} load, measured")
            _cdf(ax, predicted.requests[key] * 1e3, color, "--", f"{load:.0%} load, predicted")
    for ax, name in zip(axes, ("time to first token (ms, log scale)", "time per output token (ms, log scale)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only: minor labels overlapped
        ax.set_xlabel(name)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
