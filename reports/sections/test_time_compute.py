"""Report section: the cost of best-of-N sampling and a small simulation of what selecting among N buys.

The cost side is the roofline model (:func:`scalelab.simulations.inference.best_of_n_cost`).
The accuracy side is the synthetic selection simulation of
:mod:`scalelab.simulations.test_time_compute` (not a measurement of any model).
"""

from __future__ import annotations

import pandas as pd

from scalelab.report.figures import test_time_compute as figs
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.simulations.inference import best_of_n_cost
from scalelab.simulations.test_time_compute import simulate_selection

TITLE = "Test-time compute: best-of-N"

COST_SETUP = dict(model="llama-3-8b", hw="h100-sxm", prompt_len=1024, gen_len=512)


def cost_table(ns) -> pd.DataFrame:
    s = COST_SETUP
    rows = []
    for n in ns:
        c = best_of_n_cost(s["model"], s["hw"], n=int(n), prompt_len=s["prompt_len"], gen_len=s["gen_len"])
        rows.append({"n": c.n, "prefill_s": c.prefill_s, "decode_s": c.decode_s, "total_s": c.total_s,
                     "independent_total_s": c.independent_total_s, "sequential_total_s": c.sequential_total_s,
                     "TFLOP": c.flops / 1e12,
                     "kv_cache_GiB": c.kv_cache_bytes / 2**30, "fits_memory": c.fits_memory})
    df = pd.DataFrame(rows)
    df["cost_vs_n1"] = df["total_s"] / df["total_s"].iloc[0]
    return df


def build(ctx: SectionContext) -> Section:
    s = COST_SETUP
    ns = [1, 2, 4, 8, 16, 32, 64]
    items: list = [TextItem(
        "Best-of-N spends inference compute at test time: draw N answers, keep one. The cost below comes from the "
        f"roofline model ({s['model']} on {s['hw']}, a {s['prompt_len']}-token prompt, {s['gen_len']} generated "
        "tokens per sample): the prompt is prefilled once and its KV cache shared, and the N continuations decode as "
        "one batch, which is memory-bound, so extra samples are cheap until the batch's KV reads dominate."
    )]
    ctx.progress("test-time compute: cost of best-of-N")
    cost = cost_table(ns)
    items.append(FigureItem("best_of_n_cost", figs.best_of_n_cost_figure(cost, f"{s['model']} on {s['hw']}"),
                            "Drawing n samples as one batch costs far less than n times one sample, because a "
                            "memory-bound decode step costs about the same for 1 or 8 sequences; sharing the prompt's "
                            "prefill saves a further n - 1 prefills (small next to decode here). The per-sample cost "
                            "keeps falling until the KV-cache reads of the batch dominate.", cost))
    ctx.progress("test-time compute: selection simulation")
    n_problems = 300 if ctx.quick else 2000
    sel = simulate_selection(n_problems, ns, seed=ctx.seed)
    items.append(TextItem(
        "**Simulation (synthetic, not a model measurement).** "
        f"{n_problems} problems with success probability p ~ Beta(2, 3) (mean 0.4); each candidate is correct with "
        "probability p, has about 100 x LogNormal(0, 0.6) tokens regardless of correctness, and per-token log-probabilities "
        "-Exp(1) x s, where s is 0.35 for correct and 0.45 for wrong candidates times a log-normal(0, 0.25) factor per "
        "candidate. Selectors: the highest mean token log-prob (`scalelab.kernels.sampling.best_of_n`), the highest summed "
        "log-prob (`sequence_logprob(reduce='sum')`), a random candidate; coverage is the oracle that succeeds when any "
        "of the N is correct, 1 - (1 - p)^N."
    ))
    at = sel[sel["N"] == ns[-1]].set_index("selector")["accuracy"]
    items.append(FigureItem("selection_accuracy", figs.selection_accuracy_figure(sel),
                            f"At N = {ns[-1]}: coverage {at['coverage (oracle picks any correct)']:.2f} (the simulated "
                            "curve sits on 1 - (1 - p)^N), mean log-prob "
                            f"{at['mean log-prob']:.2f}, sum log-prob {at['sum log-prob']:.2f}, random "
                            f"{at['random']:.2f}. A selector captures only part of the coverage; the sum is driven by "
                            "length (every token lowers it), so with lengths that vary and carry no signal it picks "
                            "short answers and gains less than the mean; random stays at E[p].", sel))
    merged = sel.merge(cost[["n", "total_s"]], left_on="N", right_on="n").drop(columns="n")
    items.append(FigureItem("accuracy_vs_cost", figs.accuracy_vs_cost_figure(merged),
                            "Accuracy per modelled second: the first doublings of N buy the most; beyond that the "
                            "selector, not the compute, is the limit (the gap to coverage is what a better verifier "
                            "could recover).", merged))
    items.append(TableItem("best_of_n_cost_table", cost,
                           "Modelled cost of best-of-n: one prefill, n decodes; `independent_total_s` batches n "
                           "requests that each prefill the prompt, `sequential_total_s` serves them one by one."))
    return Section(TITLE, items)
