"""Report section: hyperparameter transfer (scaling extrapolation of the learning rate and batch size).

Three parts: the published laws for the optimal learning rate and batch size side by side
over 1e18-1e25 FLOPs (:mod:`simulations.hyperparams`); a DeepSeek-style fit of a
synthetic sweep with its extrapolation band; and the muP experiment run on this CPU,
loss against learning rate per width under SP and muP, and the coordinate check
(:mod:`simulations.mup`). Quick mode runs the muP experiment on widths 64-512 (the 8x
range the tests use) with one seed, and 200 bootstrap resamples instead of 1,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem

TITLE = "Hyperparameter transfer"

#: muP experiment settings: (widths, seeds) for the full and the quick report.
FULL_MUP = {"widths": (64, 128, 256, 512, 1024, 2048), "seeds": (0, 1, 2)}
QUICK_MUP = {"widths": (64, 128, 256, 512), "seeds": (0,)}
#: Budget the sweep fit extrapolates to, FLOPs (a 7B model on 2T tokens, roughly).
SWEEP_TARGET = 1e23


def _laws_table() -> pd.DataFrame:
    from scalelab.simulations.hyperparams import HPARAM_LAWS

    return pd.DataFrame([{"law": law.key, "learning rate": law.lr_formula, "batch size": law.batch_formula,
                          "inputs": law.variables, "validity": law.validity, "source": law.source}
                         for law in HPARAM_LAWS.values()])


def build(ctx: SectionContext) -> Section:
    from scalelab.simulations import hyperparams as hp
    from scalelab.simulations import mup

    from ..figures.hparams import coord_check_figure, law_comparison_figure, mup_sweep_figure, sweep_fit_figure

    items: list = [TextItem(
        "No one can tune the learning rate and batch size of the largest model by trial: each trial is the "
        "whole training run. *Scaling extrapolation* (hyperparameter transfer) predicts them from small runs, "
        "either by fitting how the best values move with scale and extrapolating, or by parametrising the network "
        "so that they do not move with width at all (muP, Yang et al. 2022)."
    )]

    ctx.progress("hparams: published laws")
    table = hp.law_comparison_table()
    items.append(FigureItem(
        "published_laws", law_comparison_figure(table),
        "The laws disagree by a factor of a few: DeepSeek's learning rate (a function of compute alone) falls "
        "slowly, Step Law's (of N and D, here along the Chinchilla-optimal path) falls faster; both grow the "
        "optimal batch size with compute. Kaplan et al.'s critical batch size (dashed) is where larger batches "
        "stop buying fewer steps, an upper end for an efficient batch rather than an optimum.", table))
    items.append(TableItem(
        "law_presets", _laws_table(),
        "The presets, their inputs and sources. Porian et al. 2024 fit learning-rate and batch-size laws too, but "
        "their constants could not be traced to the paper's text here, so the preset gives none."))

    ctx.progress("hparams: sweep fit")
    runs = hp.simulate_hparam_sweep(budgets=np.geomspace(1e17, 1e20, 7), noise=0.001, seed=ctx.seed)
    fit = hp.fit_hparam_sweep(runs, margin=0.01, n_bootstrap=200 if ctx.quick else 1000, seed=ctx.seed)
    pred = fit.predict(SWEEP_TARGET).iloc[0]
    items.append(FigureItem(
        "sweep_fit", sweep_fit_figure(fit, runs, targets=[SWEEP_TARGET]),
        f"A synthetic sweep ({fit.n_runs} runs, 7 budgets) generated from DeepSeek's Eq. 1 with noise, fitted the "
        f"DeepSeek way (near-optimal region within {100 * fit.margin:.3g}% of each budget's best loss, power laws "
        f"in compute). Fitted exponents {fit.lr_exponent:.3f} (true -0.125) and {fit.batch_exponent:.3f} (true "
        f"0.327). Three decades beyond the data, at {SWEEP_TARGET:.0e} FLOPs, the 95% band spans a factor "
        f"{pred.lr_hi / pred.lr_lo:.2f} in learning rate and {pred.batch_hi / pred.batch_lo:.2f} in batch size.",
        fit.optima))
    items.append(TableItem("sweep_fit_constants", fit.summary().reset_index(names="parameter"),
                           "Fitted constants with 95% stratified-bootstrap percentile intervals."))

    settings = QUICK_MUP if ctx.quick else FULL_MUP
    ctx.progress("hparams: muP experiment (SP)")
    sp = mup.mup_experiment(parametrization="sp", **settings)
    ctx.progress("hparams: muP experiment (muP)")
    mu = mup.mup_experiment(parametrization="mup", **settings)
    best = pd.concat([mup.best_lr_table(sp).assign(parametrization="sp"),
                      mup.best_lr_table(mu).assign(parametrization="mup")], ignore_index=True)
    shift = {p: int(g["grid_index"].max() - g["grid_index"].min()) for p, g in best.groupby("parametrization")}
    narrow_lr = mup.best_lr_table(mu)["best_lr"].iloc[0]
    at_narrow = mu[mu["lr"] == narrow_lr].groupby("width")["loss"].mean().to_numpy()  # (W,) by width
    wider = ("the wider model is never worse" if np.all(np.diff(at_narrow) <= 0)
             else "the wider model is not always better") + " at the learning rate tuned on the narrowest one"
    w = settings["widths"]
    items.append(TextItem(
        f"**muP on this CPU.** One-hidden-layer ReLU MLPs of widths {w[0]}-{w[-1]} learn a fixed random teacher "
        f"with Adam, {len(settings['seeds'])} seed(s) per point, under the standard parametrisation and under muP "
        "(Tensor Programs V, Table 3, relative to the narrowest width). Only the parametrisation differs between "
        "the two panels; see `simulations/mup.py` for the task and the rules."))
    items.append(FigureItem(
        "mup_lr_sweep", mup_sweep_figure(sp, mu),
        f"Loss against learning rate, one line per width; rings mark each width's best. Across widths the best "
        f"learning rate moves {shift.get('sp', 0)} grid step(s) (factors of 2) under SP and {shift.get('mup', 0)} "
        f"under muP, where {wider}.",
        pd.concat([sp, mu], ignore_index=True)))
    items.append(TableItem("mup_best_lr", best, "Best learning rate on the grid per width (mean loss over seeds)."))

    ctx.progress("hparams: coordinate check")
    cc_widths = (64, 128, 256, 512) if ctx.quick else (64, 128, 256, 512, 1024, 2048)
    cc_sp = mup.coord_check(parametrization="sp", widths=cc_widths)
    cc_mu = mup.coord_check(parametrization="mup", widths=cc_widths)
    items.append(FigureItem(
        "coord_check", coord_check_figure(cc_sp, cc_mu),
        "The coordinate check muP users run first (two hidden layers, a few Adam steps at one learning rate): "
        "under SP the second hidden layer and the output grow with width, because Adam moves every entry of an "
        "n-wide weight by about the learning rate and n such moves add up; under muP every layer keeps its size.",
        pd.concat([cc_sp, cc_mu], ignore_index=True)))
    return Section(TITLE, items)
