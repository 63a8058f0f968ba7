"""Figures of the test-time-compute section: what best-of-N costs and what selection buys."""

from __future__ import annotations

import pandas as pd
from matplotlib.ticker import FuncFormatter

from scalelab.report.figures.style import PALETTE, new_figure

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")

SELECTOR_STYLE = {
    "coverage (oracle picks any correct)": dict(color="0.25", linestyle="--", marker=""),
    "mean log-prob": dict(color=PALETTE[0], marker="o"),
    "sum log-prob": dict(color=PALETTE[1], marker="s"),
    "random": dict(color=PALETTE[2], marker="^"),
}


def best_of_n_cost_figure(data: pd.DataFrame, title: str = ""):
    """Wall time of best-of-n with one shared prefill against unshared and sequential requests (left); per sample (right).

    ``data`` columns: ``n, total_s, independent_total_s, sequential_total_s, prefill_s``.
    """
    fig, axes = new_figure(1, 2, width=9.0, height=3.8)
    ax = axes[0]
    ax.plot(data["n"], data["total_s"], marker="o", color=PALETTE[0], label="shared prefill, n decoded as a batch")
    ax.plot(data["n"], data["independent_total_s"], marker="s", color=PALETTE[1],
            label="n requests batched, prompt prefilled n times")
    ax.plot(data["n"], data["sequential_total_s"], marker="^", color=PALETTE[3], label="n requests one after another")
    ax.plot(data["n"], data["prefill_s"], color=PALETTE[2], linestyle=":", label="prefill (once)")
    ax.set_yscale("log")
    ax.set_ylabel("wall time for n samples (s, log scale)")
    ax = axes[1]
    ax.plot(data["n"], data["total_s"] / data["n"], marker="o", color=PALETTE[0], label="shared prefill")
    ax.plot(data["n"], data["independent_total_s"] / data["n"], marker="s", color=PALETTE[1], label="batched, no sharing")
    ax.plot(data["n"], data["sequential_total_s"] / data["n"], marker="^", color=PALETTE[3], label="one after another")
    ax.set_yscale("log")
    ax.set_ylabel("wall time per sample (s, log scale)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlabel("samples per prompt n (log scale)")
        ax.legend(fontsize=7.5)
    if title:
        fig.suptitle(title)
    return fig


def selection_accuracy_figure(data: pd.DataFrame, title: str = ""):
    """Accuracy of the selected answer against N per selector, with coverage 1 - (1 - p)^N as the ceiling.

    ``data`` columns: ``N, selector, accuracy`` (and ``analytic`` for the coverage rows).
    """
    fig, ax = new_figure()
    for selector, g in data.groupby("selector", sort=False):
        g = g.sort_values("N")
        style = dict(SELECTOR_STYLE.get(selector, dict(marker="o")))
        ax.plot(g["N"], g["accuracy"], markersize=4, label=f"{selector} (simulated)", **style)
        if selector.startswith("coverage") and "analytic" in g:
            ax.plot(g["N"], g["analytic"], color="0.55", linewidth=3, alpha=0.35,
                    label="E[1 - (1 - p)^N] over the problems' p")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.set(ylim=(0, 1), xlabel="candidates per problem N (log scale)", ylabel="fraction of problems answered correctly",
           title=title or "Best-of-N selection (synthetic simulation)")
    ax.legend(fontsize=7.5, loc="lower right")
    return fig


def accuracy_vs_cost_figure(data: pd.DataFrame, title: str = ""):
    """Accuracy of each selector against the modelled wall time of drawing N samples.

    ``data`` columns: ``N, selector, accuracy, total_s``.
    """
    fig, ax = new_figure()
    for selector, g in data.groupby("selector", sort=False):
        g = g.sort_values("N")
        style = dict(SELECTOR_STYLE.get(selector, dict(marker="o")))
        ax.plot(g["total_s"], g["accuracy"], markersize=4, label=selector, **style)
        if selector == "mean log-prob":
            for _, r in g.iterrows():
                ax.annotate(f"N={int(r['N'])}", (r["total_s"], r["accuracy"]), xytext=(3, -10),
                            textcoords="offset points", fontsize=7, color=style["color"])
    # linear: shared-prefill batching keeps the whole sweep within a factor of ~2 in time
    ax.set(ylim=(0, 1), xlabel="modelled wall time per prompt (s)", ylabel="fraction of problems answered correctly",
           title=title or "What test-time compute buys (synthetic accuracy, modelled cost)")
    ax.legend(fontsize=7.5, loc="lower right")
    return fig
