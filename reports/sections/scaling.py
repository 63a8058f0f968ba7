"""Report section: scaling laws and compute-optimal training.

Presets (Hoffmann et al. 2022 as printed, Besiroglu et al. 2024's refit, Kaplan et al. 2020),
their compute-optimal frontiers against published models, an Approach-3 refit of the
245 Chinchilla Figure-4 runs with bootstrap intervals, an extrapolation from small runs and
the inference-aware allocation of Sardana et al. 2023. Quick mode: 200 bootstrap resamples
instead of 4,000 and a 243-start grid instead of the published 4,500-start grid (it reaches the
same optimum on these runs; ``tests/test_scaling.py`` checks that).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem

TITLE = "Scaling laws"

#: Compute cutoff of the extrapolation experiment (FLOPs): fit on runs at or below it.
EXTRAPOLATION_CUTOFF = 1e20
#: A coarse 3^5 grid for quick mode, in the same (a, b, e, alpha, beta) ranges as the published grid.
QUICK_GRID = {"a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0], "e": [-1.0, 0.0, 1.0],
              "alpha": [0.0, 1.0, 2.0], "beta": [0.0, 1.0, 2.0]}


def _presets_table(sc, budget: float) -> pd.DataFrame:
    rows = []
    for name, law in sc.LAWS.items():
        n, d = law.compute_optimal(budget)
        a, b = law.exponents
        rows.append({"law": name, "a (N_opt ~ C^a)": a, "b (D_opt ~ C^b)": b, "N_opt": n, "D_opt": d,
                     "tokens/param": d / n, "loss": law.loss(n, d), "source": law.source})
    return pd.DataFrame(rows)


def build(ctx: SectionContext) -> Section:
    from scalelab.simulations import scaling as sc

    from scalelab.report.figures.scaling import (
        extrapolation_figure, fitted_law_figure, frontier_table, inference_allocation_figure,
        loss_contour_figure, tokens_per_parameter_figure, tokens_per_parameter_table,
    )

    n_boot = 200 if ctx.quick else sc.BESIROGLU2024_N_BOOTSTRAP
    items = []
    table3 = sc.load_hoffmann_table3()
    gopher_budget = float(table3.loc[table3["flops_gopher_units"] == 1.0, "flops"].iloc[0])

    ctx.progress("scaling: presets")
    items.append(TableItem(
        "presets", _presets_table(sc, gopher_budget),
        f"Compute-optimal allocation of each preset at Gopher's budget ({gopher_budget:.3g} FLOPs). Hoffmann et al.'s "
        "printed constants are rounded and give a smaller model than their Figure 4 (40B); Kaplan et al.'s rule puts "
        "far more of the budget into parameters.",
    ))
    models = sc.load_published_models()
    items.append(FigureItem(
        "loss_contours", loss_contour_figure(sc.LAWS["besiroglu2024"], sc.LAWS, models),
        "Shading is the loss Besiroglu et al.'s refit predicts; each coloured line is a preset's compute-optimal path "
        "through (N, D) as compute grows along the dotted iso-FLOP lines. Models above the Chinchilla lines are trained "
        "on more tokens than compute-optimal (Llama 3, DeepSeek-V3), those below on fewer (GPT-3, Gopher).",
        frontier_table(sc.LAWS),
    ))
    tpp = tokens_per_parameter_table(sc.LAWS)
    items.append(FigureItem(
        "tokens_per_parameter", tokens_per_parameter_figure(tpp),
        "Besiroglu et al.'s refit keeps close to 20 tokens per parameter at every scale; Hoffmann et al.'s rounded "
        "constants prescribe more tokens as compute grows, Kaplan et al.'s allocation ever fewer.",
        tpp,
    ))

    ctx.progress("scaling: Approach-3 fit of the Chinchilla Figure-4 runs")
    runs_all = sc.load_chinchilla_fig4_runs()
    runs = sc.drop_highest_loss(runs_all, sc.BESIROGLU2024_DROPPED_RUNS)
    grid = QUICK_GRID if ctx.quick else None
    fit = sc.fit_scaling_law(runs, n_bootstrap=n_boot, seed=ctx.seed, init_grid=grid)
    summary = fit.summary()
    rows = []
    for name in ("E", "A", "B", "alpha", "beta"):
        rows.append({"parameter": name, "ours": summary.loc[name, "estimate"],
                     "published": sc.BESIROGLU2024_ESTIMATES[name], "our SE": summary.loc[name, "se"],
                     "published SE": sc.BESIROGLU2024_STANDARD_ERRORS[name],
                     "95% lo": summary.loc[name, "lo"], "95% hi": summary.loc[name, "hi"]})
    items.append(TableItem(
        "chinchilla_refit", pd.DataFrame(rows),
        f"Approach 3 on the {fit.n_runs} runs (5 highest-loss dropped) from {fit.n_starts} L-BFGS starts, "
        f"{fit.bootstrap.shape[0]} bootstrap refits (seed {ctx.seed}) against Besiroglu et al. 2024's published "
        "estimates and standard errors.",
    ))
    est, lo, hi = fit.loss_band(runs["N"].to_numpy(), runs["D"].to_numpy())
    items.append(FigureItem(
        "fitted_law", fitted_law_figure(fit, runs),
        "Dots are the extracted runs; the orange line is the fitted compute-optimal loss with its bootstrap band, the "
        "thinner lines the fitted loss at three fixed model sizes. Each run's loss sits on or above the frontier.",
        runs.assign(predicted=est, predicted_lo=lo, predicted_hi=hi),
    ))
    a_lo, a_hi = fit.interval("a")
    tpp_est, tpp_lo, tpp_hi = fit.tokens_per_parameter(gopher_budget)
    items.append(TextItem(
        f"The refit's allocation exponent is a = {fit.estimates['a']:.3f} (95% interval {a_lo:.3f}-{a_hi:.3f}), "
        f"and at Gopher's budget it prescribes {tpp_est:.1f} tokens per parameter ({tpp_lo:.1f}-{tpp_hi:.1f}), "
        "consistent with Hoffmann et al.'s Approaches 1 and 2 (about 20) and not with their printed Approach-3 "
        "constants, as Besiroglu et al. found."
    ))

    ctx.progress("scaling: extrapolation")
    budgets = np.geomspace(runs["C"].min(), 1e24, 60)
    ext = sc.extrapolate(runs, cutoff_flops=EXTRAPOLATION_CUTOFF, budgets=budgets, n_bootstrap=min(n_boot, 1000),
                         seed=ctx.seed, init_grid=grid)
    inside = ((ext.held_out["loss"] >= ext.held_out["lo"]) & (ext.held_out["loss"] <= ext.held_out["hi"])).mean()
    items.append(FigureItem(
        "extrapolation", extrapolation_figure(ext),
        f"Fitted only on the {len(ext.used)} runs at or below {EXTRAPOLATION_CUTOFF:.0e} FLOPs, the law predicts the "
        f"compute-optimal loss beyond; {inside:.0%} of the {len(ext.held_out)} held-out runs fall inside their own "
        "95% prediction band (a band for the law, not for run-to-run noise).",
        ext.frontier,
    ))

    ctx.progress("scaling: inference-aware allocation")
    law = sc.LAWS["besiroglu2024"]
    target = float(law.optimal_loss(gopher_budget))
    demand = np.concatenate([[0.0], np.geomspace(1e9, 1e16, 36)])
    opt = sc.inference_aware_optimum(law, target, demand)
    frame = opt.to_frame()
    n0, d0 = frame["N"].iloc[0], frame["D"].iloc[0]
    frame["N_compute_optimal"] = n0
    frame["D_compute_optimal"] = d0
    frame["total_flops_compute_optimal"] = sc.training_flops(n0, d0) + sc.INFERENCE_FLOPS_PER_PARAM_TOKEN * n0 * demand
    shown = frame.iloc[1:].reset_index(drop=True)
    items.append(FigureItem(
        "inference_allocation", inference_allocation_figure(shown, target, law.name),
        f"To reach loss {target:.3f} (the compute-optimal loss at Gopher's budget), a model that will serve many "
        "tokens should be smaller and trained longer (Sardana et al. 2023); the right panel shows the total "
        "training + inference compute that saves against the compute-optimal model serving the same demand.",
        frame,
    ))
    return Section(title=TITLE, items=items)
