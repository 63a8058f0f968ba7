"""Figures of the data-supply section, one function per figure.

Each function takes the tidy DataFrame the section also writes as CSV and
returns a matplotlib ``Figure`` built with :func:`scalelab.report.figures.style.new_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.simulations.data_supply import MUENNIGHOFF_2023

from scalelab.report.figures.style import PALETTE, new_figure


def exhaustion_figure(curves: pd.DataFrame, median_year: float, interval: tuple[float, float], level: float = 0.9):
    """Stock of public text against the projected training-set size of the largest model.

    ``curves`` columns: ``year``, ``demand_p05``/``_p50``/``_p95``, ``stock_p05``/``_p50``/``_p95`` (tokens).
    The shaded vertical band is the ``level`` interval of the crossing year, the dashed line its median.
    """
    fig, ax = new_figure()
    y = curves["year"].to_numpy()
    ax.fill_between(y, curves["stock_p05"], curves["stock_p95"], color=PALETTE[0], alpha=0.18)
    ax.plot(y, curves["stock_p50"], color=PALETTE[0], label="effective stock of public text (median, 90% band)")
    ax.fill_between(y, curves["demand_p05"], curves["demand_p95"], color=PALETTE[1], alpha=0.18)
    ax.plot(y, curves["demand_p50"], color=PALETTE[1], label="largest training set (median, 90% band)")
    lo, hi = interval
    ax.axvspan(lo, hi, color="0.5", alpha=0.15, label=f"exhaustion year, {level:.0%} interval ({lo:.1f}-{hi:.1f})")
    ax.axvline(median_year, color="0.2", linestyle="--", linewidth=1.2, label=f"median {median_year:.1f}")
    ax.set_yscale("log")
    ax.set_xlabel("year")
    ax.set_ylabel("tokens (log scale)")
    ax.set_title("When the largest training set reaches the stock of human text")
    ax.legend(loc="lower right")
    return fig


def effective_tokens_figure(data: pd.DataFrame, r_d_star: float = MUENNIGHOFF_2023.r_d_star):
    """Effective against raw tokens as epochs over the same unique data grow.

    ``data`` columns: ``epochs``, ``raw_tokens``, ``effective_tokens`` (same unique set for every row),
    optionally ``unique_tokens``.
    """
    fig, ax = new_figure()
    e = data["epochs"].to_numpy()
    u = data["raw_tokens"].to_numpy() / e
    ax.plot(e, data["raw_tokens"] / u, color="0.4", linestyle="--", label="raw tokens (every repeat worth new data)")
    ax.plot(e, data["effective_tokens"] / u, color=PALETTE[0], marker="o", markersize=3,
            label="effective tokens D' (Muennighoff et al. 2023)")
    ax.axhline(1.0 + r_d_star, color=PALETTE[1], linestyle=":", linewidth=1.2,
               label=f"ceiling U (1 + R_D*) = {1.0 + r_d_star:.1f} U")
    at4 = np.interp(4.0, e, data["effective_tokens"] / u)
    ax.annotate(f"4 epochs: {at4 / 4:.0%} of raw", xy=(4.0, at4), xytext=(6, 2.5),
                arrowprops=dict(arrowstyle="->", color="0.3"), fontsize=9)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("epochs over the unique data (log scale)")
    ax.set_ylabel("tokens / unique tokens (log scale)")
    ax.set_title("Repeated data loses value: effective vs raw tokens")
    ax.legend(loc="upper left")
    return fig


def tokenization_cost_figure(data: pd.DataFrame):
    """Tokens per message relative to English, by language (MASSIVE, cl100k_base).

    ``data`` columns: ``language``, ``cost_low``, ``cost_high``; a bar spans the published range.
    """
    fig, ax = new_figure(width=6.4, height=3.4)
    d = data.sort_values("cost_high")
    pos = np.arange(len(d))
    ax.barh(pos, d["cost_high"], color=PALETTE[0], alpha=0.35, label="upper bound stated in the source")
    ax.barh(pos, d["cost_low"], color=PALETTE[0], label="lower bound stated in the source")
    for p, lo, hi in zip(pos, d["cost_low"], d["cost_high"]):
        text = f"{lo:g}x" if lo == hi else f"{lo:g}-{hi:g}x"
        ax.text(hi * 1.03, p, text, va="center", fontsize=9)
    ax.set_yticks(pos, d["language"])
    ax.set_ylabel("language")
    ax.set_xlabel("tokens (and price) per message relative to English")
    ax.set_xlim(0, float(d["cost_high"].max()) * 1.25)
    ax.set_title("Same message, different bill: cl100k_base on MASSIVE")
    ax.legend(loc="lower right")
    return fig
