"""Figures of the electricity section, one function per figure.

Each function takes the tidy DataFrame the section also writes as CSV and
returns a matplotlib ``Figure`` built with :func:`scalelab.report.figures.style.new_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.figures.style import PALETTE, new_figure


def published_energy_figure(data: pd.DataFrame):
    """Training energy (MWh) and emissions (tCO2e) of published models: ours next to the published numbers.

    ``data`` columns: ``model``, ``mwh``, ``published_mwh``, ``tco2e``, ``published_tco2e``.
    """
    fig, (ax_e, ax_c) = new_figure(1, 2, width=8.0, height=3.8)
    pos = np.arange(len(data))
    w = 0.38
    for ax, ours, pub, unit in ((ax_e, "mwh", "published_mwh", "energy (MWh, log scale)"),
                                (ax_c, "tco2e", "published_tco2e", "emissions (tCO2e, log scale)")):
        ax.bar(pos - w / 2, data[pub], w, color="0.6", label="published")
        ax.bar(pos + w / 2, data[ours], w, color=PALETTE[0], label="scalelab training_energy")
        ax.set_xticks(pos, data["model"], rotation=25, ha="right")
        ax.set_yscale("log")
        ax.set_xlabel("model")
        ax.set_ylabel(unit)
    ax_e.set_title("Training energy")
    ax_c.set_title("Training emissions")
    ax_e.legend(loc="upper left")
    return fig


def frontier_power_figure(curves: pd.DataFrame, grid_shares: pd.DataFrame):
    """Average power of the largest training run by year against shares of grid output.

    ``curves`` columns: ``year``, ``power_mw_p05``/``_p50``/``_p95``, ``data_centre_twh``.
    ``grid_shares`` columns: ``label``, ``power_mw`` (horizontal reference lines).
    """
    fig, ax = new_figure(width=6.8, height=4.4)
    y = curves["year"].to_numpy()
    ax.fill_between(y, curves["power_mw_p05"], curves["power_mw_p95"], color=PALETTE[1], alpha=0.2,
                    label="largest run, 90% band")
    ax.plot(y, curves["power_mw_p50"], color=PALETTE[1], marker="o", markersize=3, label="largest run, median")
    ax.plot(y, curves["data_centre_twh"] * 1e6 / 8760.0, color=PALETTE[2],
            label="all data centres, IEA (avg MW; after 2030 extrapolated)")
    styles = [(":", "0.2"), ("--", "0.2"), (":", PALETTE[4]), ("--", PALETTE[4]), ("-.", "0.5"), ("-.", PALETTE[3])]
    for i, rec in enumerate(grid_shares.itertuples(index=False)):
        ls, color = styles[i % len(styles)]
        ax.axhline(rec.power_mw, color=color, linestyle=ls, linewidth=1.1, label=rec.label)
    ax.set(yscale="log", xlabel="year", ylabel="average power (MW, log scale)",
           title="Power of the largest training run against grid output")
    ax.legend(loc="lower right", fontsize=7.5)
    return fig
