"""Figures of the hyperparameter-transfer section, one function per figure.

The numbers come from :mod:`simulations.hyperparams` (published laws, sweep fits) and
:mod:`simulations.mup` (the muP experiment and coordinate check).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .style import PALETTE, new_figure

_LAW_LABELS = {"deepseek2024": "DeepSeek LLM 2024, Eq. 1 (C)",
               "steplaw2025": "Step Law 2025 (Chinchilla-optimal N, D)",
               "kaplan2020": "Kaplan 2020 critical batch (loss of Kaplan-optimal model)"}


def law_comparison_figure(table: pd.DataFrame):
    """Optimal learning rate (left) and batch size (right) of every published law against compute.

    ``table``: :func:`simulations.hyperparams.law_comparison_table`.
    """
    fig, (ax_lr, ax_b) = new_figure(1, 2, width=10.0, height=4.2)
    for i, (law, g) in enumerate(table.groupby("law", sort=False)):
        label = _LAW_LABELS.get(law, law)
        if g["lr"].notna().any():
            ax_lr.plot(g["compute"], g["lr"], color=PALETTE[i], label=label)
        style = "--" if (g["batch_kind"] == "critical").all() else "-"
        ax_b.plot(g["compute"], g["batch_size"], color=PALETTE[i], linestyle=style, label=label)
    for ax in (ax_lr, ax_b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
    ax_lr.set(ylabel="optimal peak learning rate (AdamW)", title="learning rate")
    ax_b.set(ylabel="batch size (tokens)", title="batch size (dashed: critical)")
    ax_b.legend(loc="lower right", fontsize=7.5)
    return fig


def sweep_fit_figure(fit, runs: pd.DataFrame, *, targets=None):
    """A sweep's near-optimal region per budget with the fitted power laws and their bootstrap band.

    ``fit``: :class:`simulations.hyperparams.HparamFit`; ``runs``: the sweep (normalised columns).
    ``targets``: compute budgets to mark the extrapolation at.
    """
    from scalelab.simulations.hyperparams import normalise_sweep

    runs = normalise_sweep(runs)
    fig, (ax_lr, ax_b) = new_figure(1, 2, width=10.0, height=4.2)
    budgets = fit.optima["compute"].to_numpy()
    hi = max(budgets.max(), max(targets) if targets else 0.0) * 3.0
    grid = np.geomspace(budgets.min() / 2.0, hi, 80)  # (P,)
    pred = fit.predict(grid)
    best = runs.groupby("compute")["loss"].transform("min")
    near = runs["loss"] <= best * (1.0 + fit.margin)
    for ax, col, opt, est, lo, hi_, label in (
            (ax_lr, "lr", "lr_opt", "lr", "lr_lo", "lr_hi", "learning rate"),
            (ax_b, "batch_size", "batch_opt", "batch_size", "batch_lo", "batch_hi", "batch size (tokens)")):
        ax.scatter(runs["compute"], runs[col], s=6, color="0.8", label="all runs", zorder=1)
        ax.scatter(runs.loc[near, "compute"], runs.loc[near, col], s=10, color=PALETTE[0],
                   label=f"near-optimal (within {100 * fit.margin:.3g}%)", zorder=2)
        ax.scatter(fit.optima["compute"], fit.optima[opt], s=40, marker="D", color=PALETTE[1],
                   label="per-budget optimum (geometric mean)", zorder=3)
        ax.plot(grid, pred[est], color=PALETTE[1], label="power-law fit")
        if pred[lo].notna().all():
            ax.fill_between(grid, pred[lo], pred[hi_], color=PALETTE[1], alpha=0.2,
                            label=f"{round(100 * fit.level)}% bootstrap band")
        if targets:
            t = fit.predict(targets)
            ax.errorbar(t["compute"], t[est], yerr=[t[est] - t[lo], t[hi_] - t[est]], fmt="*", ms=10,
                        color=PALETTE[2], label="extrapolation", zorder=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(label)
    ax_lr.set_title(f"lr_opt = {fit.lr_coef:.3g} C^{fit.lr_exponent:.3f}")
    ax_b.set_title(f"B_opt = {fit.batch_coef:.3g} C^{fit.batch_exponent:.3f}")
    ax_lr.legend(loc="lower left", fontsize=7.5)
    return fig


def mup_sweep_figure(sp: pd.DataFrame, mup: pd.DataFrame):
    """Final loss against base learning rate, one line per width: SP (left) and muP (right).

    Each point is the mean over seeds; the marker is each width's best learning rate.
    """
    fig, axes = new_figure(1, 2, width=10.0, height=4.2, sharey=True)
    widths = sorted(set(sp["width"]) | set(mup["width"]))
    cmap = [PALETTE[i % len(PALETTE)] for i in range(len(widths))]
    for ax, df, title in ((axes[0], sp, "standard parametrisation (SP)"), (axes[1], mup, "muP")):
        mean = df.groupby(["width", "lr"])["loss"].mean().unstack("lr")  # (W, L)
        for i, w in enumerate(widths):
            if w not in mean.index:
                continue
            row = mean.loc[w]
            ok = np.isfinite(row.to_numpy())
            ax.plot(row.index[ok], row.to_numpy()[ok], color=cmap[i], marker=".", label=f"width {w}")
            j = int(np.argmin(np.where(ok, row.to_numpy(), np.inf)))
            ax.plot(row.index[j], row.iloc[j], color=cmap[i], marker="o", ms=8, mfc="none")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("base Adam learning rate eta")
        ax.set_title(title)
    axes[0].set_ylabel("held-out loss (half MSE, teacher targets of unit variance)")
    axes[1].legend(loc="upper right", fontsize=7.5)
    return fig


def coord_check_figure(sp: pd.DataFrame, mup: pd.DataFrame, *, step: int | None = None):
    """Mean absolute activation of each layer against width after a few Adam steps: SP (left), muP (right)."""
    fig, axes = new_figure(1, 2, width=10.0, height=4.0, sharey=True)
    for ax, df, title in ((axes[0], sp, "SP"), (axes[1], mup, "muP")):
        s = df["step"].max() if step is None else step
        g = df[df["step"] == s].groupby(["layer", "width"])["mean_abs"].mean()
        for i, layer in enumerate(sorted(g.index.get_level_values(0).unique(), key=lambda n: (n == "output", n))):
            ax.plot(g.loc[layer].index, g.loc[layer].to_numpy(), marker="o", color=PALETTE[i], label=layer)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width (hidden units)")
        ax.set_title(f"{title}, after {s} Adam steps")
    axes[0].set_ylabel("mean |activation coordinate|")
    axes[1].legend(loc="upper left")
    return fig


__all__ = ["law_comparison_figure", "sweep_fit_figure", "mup_sweep_figure", "coord_check_figure"]
