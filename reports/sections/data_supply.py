"""Report section: training data as a bottleneck.

Repeated data (Muennighoff et al. 2023), when the largest training set reaches the
stock of public text (Villalobos et al. 2024), and what tokenization costs by
language. Quick mode draws 20,000 Monte Carlo samples instead of 1,000,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem

TITLE = "Data supply"


def build(ctx: SectionContext) -> Section:
    from scalelab.simulations import data_supply as ds

    from scalelab.report.figures.data_supply import effective_tokens_figure, exhaustion_figure, tokenization_cost_figure

    n = 20_000 if ctx.quick else 1_000_000
    items = []

    ctx.progress("data supply: exhaustion Monte Carlo")
    base = ds.exhaustion_year(n_samples=n, seed=ctx.seed)
    curves = base.table()
    lo, hi = base.interval
    items.append(TextItem(
        f"The effective stock of public human text (about {ds.STOCK_TOKENS_MEDIAN:.0e} tokens, 90% interval "
        f"{ds.STOCK_TOKENS_90[0]:.0e} to {ds.STOCK_TOKENS_90[1]:.0e}; Villalobos et al. 2024) growing {ds.STOCK_GROWTH_PER_YEAR - 1:.0%} a year, against a training-set size starting from the "
        f"compute-optimal dataset of Llama 3.1 405B's compute ({ds.BASE_DATASET_TOKENS:.3g} tokens in mid-2024) and "
        f"growing {ds.DATASET_GROWTH_PER_YEAR:g}x a year (Epoch AI; 90% interval {ds.DATASET_GROWTH_90[0]:g}x to "
        f"{ds.DATASET_GROWTH_90[1]:g}x). With {n:,} samples (seed {ctx.seed}) the median crossing is "
        f"**{base.median_year:.1f}**, 90% interval {lo:.1f} to {hi:.1f}; Villalobos et al. report a median of 2028 "
        f"and an interval of 2026 to 2032."
    ))
    items.append(FigureItem(
        "exhaustion", exhaustion_figure(curves, base.median_year, base.interval, base.level),
        "Where the orange band (largest training set) crosses the blue band (stock of text) the public stock is used "
        "up; the grey band is the 90% interval of that year. A factor 10 in the stock moves the year by about two "
        "years, because demand grows almost 3x a year.", curves,
    ))

    rows = []
    for overtrain in (1.0, 5.0, 10.0, 100.0):
        for epochs in (1.0, 4.0):
            r = ds.exhaustion_year(overtrain=overtrain, epochs=epochs, n_samples=n, seed=ctx.seed)
            rows.append(dict(overtrain=overtrain, epochs=epochs, median_year=r.median_year,
                             year_p05=r.interval[0], year_p95=r.interval[1]))
    items.append(TableItem(
        "exhaustion_scenarios", pd.DataFrame(rows),
        "Exhaustion year by overtraining factor (tokens per parameter relative to compute-optimal) and extra epochs "
        "over the stock. Epoch reports 2027 for 5x overtraining and as early as 2025 for 100x.",
        float_format="{:.1f}",
    ))

    ctx.progress("data supply: effective tokens")
    epochs = np.geomspace(1.0, 64.0, 49)  # (E,)
    unique = 1e11
    eff = ds.effective_tokens(epochs * unique, unique)  # (E,)
    eff_table = pd.DataFrame({"epochs": epochs, "unique_tokens": unique, "raw_tokens": epochs * unique,
                              "effective_tokens": eff, "effective_over_raw": eff / (epochs * unique)})
    at4 = float(ds.effective_tokens(4 * unique, unique)) / (4 * unique)
    items.append(FigureItem(
        "effective_tokens", effective_tokens_figure(eff_table),
        f"Up to about four epochs repeated data is nearly as good as new ({at4:.1%} of raw at 4 epochs); beyond "
        f"~16 epochs extra passes add little, and no amount of repetition exceeds {1 + ds.MUENNIGHOFF_2023.r_d_star:.1f}x "
        f"the unique data.", eff_table,
    ))

    ctx.progress("data supply: tokenization")
    tok = ds.tokenization_disparity(context_tokens=8192)
    items.append(FigureItem(
        "tokenization_cost", tokenization_cost_figure(tok),
        "At the same per-token price a message in Armenian, Burmese or Amharic costs 9-10x an English one and 9-10x "
        "fewer such messages fit in a context window. Only ratios stated in the source's text are shown; its "
        "per-language medians could not be traced and are left out.", tok,
    ))
    return Section(title=TITLE, items=items)
