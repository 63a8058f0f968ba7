"""Figures of the scaling-law section, one function per figure.

Each function returns a matplotlib ``Figure`` built with
:func:`scalelab.report.figures.style.new_figure`; the numbers behind a figure come from
:mod:`scalelab.simulations.scaling` (the helpers :func:`frontier_table` and
:func:`tokens_per_parameter_table` build the same tables the section writes as CSV).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.figures.style import PALETTE, new_figure

#: Compute range drawn for frontiers, FLOPs.
BUDGETS = np.geomspace(1e18, 1e27, 91)


def frontier_table(laws: dict, budgets=BUDGETS) -> pd.DataFrame:
    """Compute-optimal ``N_opt, D_opt, tokens_per_parameter, loss`` per preset and budget (long format)."""
    rows = []
    for name, law in laws.items():
        n, d = law.compute_optimal(budgets)
        rows.append(pd.DataFrame({"law": name, "C": budgets, "N_opt": n, "D_opt": d,
                                  "tokens_per_parameter": d / n, "loss": law.loss(n, d)}))
    return pd.concat(rows, ignore_index=True)


def tokens_per_parameter_table(laws: dict, budgets=BUDGETS) -> pd.DataFrame:
    """Alias of :func:`frontier_table` restricted to the columns the tokens-per-parameter figure uses."""
    return frontier_table(laws, budgets)[["law", "C", "tokens_per_parameter"]]


def loss_contour_figure(law, laws: dict, models: pd.DataFrame):
    """Loss of ``law`` over (N, D) with iso-FLOP lines, each preset's frontier and published models.

    ``models`` columns: ``model``, ``active_params``, ``training_tokens`` (rows without tokens are skipped).
    """
    fig, ax = new_figure(width=7.0, height=5.2)
    n = np.geomspace(1e8, 3e12, 220)  # (P,)
    d = np.geomspace(1e9, 1e14, 220)  # (T,)
    nn, dd = np.meshgrid(n, d)  # (T, P)
    loss = law.loss(nn, dd)
    levels = np.round(np.linspace(max(law.loss(n[-1], d[-1]), 1.6) + 0.02, min(loss.max(), 3.4), 12), 2)
    cs = ax.contourf(nn, dd, loss, levels=levels, cmap="Greys", alpha=0.55)
    fig.colorbar(cs, ax=ax, label=f"predicted loss, {law.name} (nats/token)")
    for c in 10.0 ** np.arange(19, 28, 1):
        ax.plot(n, c / (6 * n), color="0.35", linestyle=":", linewidth=0.8)
        x = c / (6 * 1.2e9)  # label where the line meets the bottom edge
        if n[0] < x < n[-1] / 3:
            ax.annotate(f"1e{np.log10(c):.0f}", (x, 1.25e9), fontsize=6.5, color="0.3")
    budgets = np.geomspace(1e18, 1e28, 60)
    for i, (name, preset) in enumerate(laws.items()):
        nopt, dopt = preset.compute_optimal(budgets)
        ax.plot(nopt, dopt, color=PALETTE[i], label=f"compute-optimal, {name}")
    pub = models.dropna(subset=["training_tokens"])
    ax.scatter(pub["active_params"], pub["training_tokens"], color="k", marker="*", s=55, zorder=5,
               label="published models (active params)")
    # Alternate label offsets so neighbours at similar (N, D) do not overprint.
    for k, rec in enumerate(pub.sort_values(["active_params", "training_tokens"]).itertuples(index=False)):
        ax.annotate(rec.model, (rec.active_params, rec.training_tokens), textcoords="offset points",
                    xytext=(4, 4) if k % 2 == 0 else (4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(n[0], n[-1])
    ax.set_ylim(d[0], d[-1])
    ax.set_xlabel("parameters N")
    ax.set_ylabel("training tokens D")
    ax.set_title("Loss over model size and data; dotted: equal compute C = 6ND (FLOPs at the bottom)", fontsize=9.5)
    ax.legend(loc="upper left", fontsize=7.5)
    return fig


def tokens_per_parameter_figure(table: pd.DataFrame):
    """Compute-optimal tokens per parameter against compute, one line per preset.

    ``table`` columns: ``law``, ``C``, ``tokens_per_parameter`` (:func:`tokens_per_parameter_table`).
    """
    fig, ax = new_figure(width=6.4, height=4.2)
    for i, (name, grp) in enumerate(table.groupby("law", sort=False)):
        ax.plot(grp["C"], grp["tokens_per_parameter"], color=PALETTE[i], label=name)
    ax.axhline(20.0, color="0.4", linestyle="--", linewidth=1.0, label="20 tokens/parameter (rule of thumb)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute-optimal tokens per parameter D/N")
    ax.set_title("How many tokens per parameter each law prescribes")
    ax.legend(fontsize=8)
    return fig


def fitted_law_figure(fit, runs: pd.DataFrame):
    """Observed losses against compute with the fitted law's predictions and bootstrap bands.

    Lines: the compute-optimal frontier and three fixed model sizes; shaded: the ``fit.level``
    percentile band of the bootstrap refits (no band for a fit without refits).
    ``runs`` columns: ``N``, ``D``, ``C``, ``loss``.
    """
    banded = fit.bootstrap.shape[0] > 0
    fig, ax = new_figure(width=7.0, height=4.6)
    sc = ax.scatter(runs["C"], runs["loss"], c=np.log10(runs["N"]), cmap="viridis", s=12, alpha=0.8, zorder=3)
    fig.colorbar(sc, ax=ax, label="log10 parameters N")
    c = np.geomspace(runs["C"].min() / 2, runs["C"].max() * 10, 120)
    if banded:
        est, lo, hi = fit.optimal_loss_band(c)
        ax.fill_between(c, lo, hi, color=PALETTE[1], alpha=0.25, linewidth=0)
        label = f"fitted compute-optimal loss ({fit.level:.0%} bootstrap band)"
    else:
        est, label = fit.law.optimal_loss(c), "fitted compute-optimal loss (no bootstrap)"
    ax.plot(c, est, color=PALETTE[1], label=label)
    sizes = np.quantile(runs["N"], [0.1, 0.5, 0.9])
    for k, n in enumerate(sizes):
        d = c / (6.0 * n)
        if banded:
            e, l_, h_ = fit.loss_band(np.full_like(c, n), d)
            ax.fill_between(c, l_, h_, color=PALETTE[2 + k], alpha=0.2, linewidth=0)
        else:
            e = fit.law.loss(np.full_like(c, n), d)
        ax.plot(c, e, color=PALETTE[2 + k], linewidth=1.2, label=f"fitted loss at N = {n:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C = 6ND (FLOPs)")
    ax.set_ylabel("final training loss (nats/token)")
    law = fit.law
    ax.set_title(f"Approach-3 fit: E={law.E:.3g}, A={law.A:.3g}, B={law.B:.3g}, "
                 f"alpha={law.alpha:.3f}, beta={law.beta:.3f}", fontsize=9.5)
    ax.set_ylim(max(1.5, runs["loss"].min() - 0.3), min(runs["loss"].max() + 0.2, 6.0))
    ax.legend(fontsize=7.5, loc="upper right")
    return fig


def extrapolation_figure(ext):
    """Fit below a compute cutoff and its prediction beyond, against the held-out runs.

    ``ext`` is a :class:`scalelab.simulations.scaling.Extrapolation`.
    """
    fig, ax = new_figure(width=7.0, height=4.4)
    ax.scatter(ext.used["C"], ext.used["loss"], s=10, color=PALETTE[0], alpha=0.7, label="runs used for the fit")
    if len(ext.held_out):
        ax.scatter(ext.held_out["C"], ext.held_out["loss"], s=14, facecolors="none", edgecolors=PALETTE[1],
                   label="held-out runs (above cutoff)")
    fr = ext.frontier
    ax.fill_between(fr["C"], fr["loss_lo"], fr["loss_hi"], color=PALETTE[2], alpha=0.25, linewidth=0)
    ax.plot(fr["C"], fr["loss"], color=PALETTE[2], label=f"predicted compute-optimal loss ({ext.fit.level:.0%} band)")
    ax.axvline(ext.cutoff_flops, color="0.3", linestyle="--", linewidth=1.0, label="fit cutoff")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Scaling extrapolation: fit on small runs, predict large budgets")
    ax.set_ylim(max(1.2, fr["loss_lo"].min() - 0.1), min(ext.used["loss"].max() + 0.2, 6.0))
    ax.legend(fontsize=7.5)
    return fig


def inference_allocation_figure(table: pd.DataFrame, target_loss: float, law_name: str):
    """Inference-aware (N, D) and the compute it saves, against lifetime inference demand.

    ``table`` is :meth:`scalelab.simulations.scaling.InferenceOptimum.to_frame` with extra columns
    ``N_compute_optimal``, ``total_flops_compute_optimal`` (the T = 0 choice paying for the same demand).
    """
    fig, (ax_nd, ax_save) = new_figure(1, 2, width=8.6, height=3.9)
    t = table["inference_tokens"]
    ax_nd.plot(t, table["N"], color=PALETTE[0], label="parameters N")
    ax_nd.plot(t, table["D"], color=PALETTE[1], label="training tokens D")
    ax_nd.axhline(table["N_compute_optimal"].iloc[0], color=PALETTE[0], linestyle=":", linewidth=1.0,
                  label="N, compute-optimal (no inference)")
    ax_nd.axhline(table["D_compute_optimal"].iloc[0], color=PALETTE[1], linestyle=":", linewidth=1.0,
                  label="D, compute-optimal (no inference)")
    ax_nd.set_xscale("log")
    ax_nd.set_yscale("log")
    ax_nd.set_xlabel("lifetime inference demand T (tokens)")
    ax_nd.set_ylabel("count (parameters or tokens)")
    ax_nd.set_title(f"Cheapest model reaching loss {target_loss:.3f} ({law_name})", fontsize=9.5)
    ax_nd.legend(fontsize=7)
    saving = 1.0 - table["total_flops"] / table["total_flops_compute_optimal"]
    ax_save.plot(t, 100.0 * saving, color=PALETTE[2])
    ax_save.set_xscale("log")
    ax_save.set_xlabel("lifetime inference demand T (tokens)")
    ax_save.set_ylabel("total FLOPs saved vs compute-optimal model (%)")
    ax_save.set_title("Training + inference compute saved", fontsize=9.5)
    return fig
