"""One consistent figure style for every scalelab plot.

Use :func:`new_figure` instead of ``plt.subplots`` so that every figure gets
the same size, fonts, grid and colour cycle, and so that figures are built on
the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Colour-blind-safe palette (Okabe & Ito 2008), used in this order.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]

RC = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "lines.linewidth": 1.8,
    "svg.fonttype": "none",
}


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.2, **kwargs):
    """Return ``(fig, axes)`` in the scalelab style (a ``Figure``, not attached to pyplot)."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, **kwargs)
        for ax in fig.axes:
            ax.grid(True, which="major", alpha=RC["grid.alpha"], linewidth=RC["grid.linewidth"])
            ax.spines["top"].set_visible(False)
            ax.spines["right"].set_visible(False)
            ax.set_prop_cycle(color=PALETTE)
    return fig, axes


__all__ = ["PALETTE", "RC", "new_figure", "Figure", "plt"]
