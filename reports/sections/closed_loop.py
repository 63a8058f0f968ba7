"""Report section: the serving simulator checked against the live CPU engine (the closed loop).

The engine (:mod:`simulations.serving.live`) serves Poisson traffic in real
time on our kernels; the simulator replays the same workload on a step cost
fitted to the engine's own iterations beforehand
(:mod:`simulations.serving.closed_loop`). Everything is measured on the
machine that builds the report.
"""

from __future__ import annotations

import os

import pandas as pd

from scalelab.report.figures import closed_loop as figs
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.simulations.serving.closed_loop import BARS, closed_loop

TITLE = "Simulator against the live engine"

MODEL = "tiny"
LOADS = (0.3, 0.8)
DURATION_S = 25.0  # seconds of arrivals per load (real time)
QUICK_DURATION_S = 6.0


def build(ctx: SectionContext) -> Section:
    ctx.progress("closed loop: calibrating the live engine")
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    res = closed_loop(MODEL, loads=LOADS, duration_s=QUICK_DURATION_S if ctx.quick else DURATION_S, seed=ctx.seed,
                      quick=ctx.quick)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t = res.table
    fit = res.fit
    n_ok, n = int(t["within_bar"].sum()), len(t)
    items: list = [TextItem(
        "The live engine (continuous batching with chunked prefill on our attention, sampling and `linear` kernels, "
        f"model `{MODEL}`, float32) first runs a fixed calibration set of batches; a step cost `c . x` over the "
        "iteration's aggregates (fixed cost, new tokens, logit rows, attention pairs, KV tokens read) is fitted "
        f"to its {fit.n_iterations} iterations by non-negative least squares (relative error on those iterations: "
        f"median {fit.rel_err_p50:.1%}, 90th percentile {fit.rel_err_p90:.1%}). The simulator on that cost "
        f"predicts a capacity of {res.capacity_rps:.2f} requests/s for the study's workload (log-normal prompts of "
        "median 128 tokens and outputs of median 32). Then, at "
        + " and ".join(f"{x:.0%}" for x in LOADS)
        + " of that capacity, the engine serves Poisson arrivals in real time while the simulator replays the same "
        f"requests. Bars: p50 within +-{BARS[50]:.0%}, p99 within +-{BARS[99]:.0%}; {n_ok} of {n} rows meet them. "
        f"Load average of the machine: {load_before:.1f} before, {load_after:.1f} after (a busy machine slows the "
        "engine while it serves, which the calibration cannot foresee)."
    )]
    items.append(FigureItem(
        "closed_loop_cdf", figs.latency_cdf_figure(res.runs, f"live engine ({MODEL}) against the simulator"),
        "Solid: measured on the live engine; dashed: predicted by the simulator on the fitted step cost.",
        pd.concat([pd.DataFrame({"load": load, "source": src, "ttft_ms": r.requests["ttft"] * 1e3,
                                 "tpot_ms": r.requests["tpot"] * 1e3})
                   for load, pair in res.runs.items() for src, r in zip(("measured", "predicted"), pair)],
                  ignore_index=True)))
    items.append(TableItem(
        "closed_loop_latency", t,
        "Predicted against measured latency per load. A miss is stated, not hidden: the simulator prices an "
        "iteration by its mean cost, so the tail (p99) carries the engine's iteration-to-iteration noise that "
        "a mean cannot know, and a time-shared CPU adds queueing the fit never saw."))
    items.append(TableItem(
        "closed_loop_served", res.served_iterations(),
        "How the fit priced the iterations the engine ran while it served each load. `priced/measured` below 1 "
        "is a bias (served iterations dearer than their price: the queue grows faster than predicted); the spread "
        "of `measured/priced` (p10 to p90, cv) is noise the simulator's mean price leaves out, and a queue with "
        "variable service times waits longer than one with constant times of the same mean."))
    if res.wake is not None:
        items.append(TableItem(
            "closed_loop_wake", res.wake,
            "One decode iteration (4 sequences) back to back and after idle gaps: the median iteration and its "
            "excess over back to back. While the engine waits, its caches and its core go to other work; the fit "
            f"carries the excess as a wake cost ({fit.wake_s * 1e3:.2f} ms after a long gap, building up over "
            f"about {fit.wake_tau_s * 1e3:.1f} ms of idle), which the simulator adds to an iteration that follows "
            "an idle gap."))
    items.append(TableItem(
        "closed_loop_fit", pd.DataFrame(fit.table()),
        "The fitted step cost: seconds per unit of each aggregate (zero where the fit found no cost), and the "
        "wake cost after an idle gap."))
    return Section(TITLE, items)
