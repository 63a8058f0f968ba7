"""Report section: electricity as a bottleneck.

Energy and emissions of published training runs reproduced from their inputs,
and the power of the largest training run by year against data-centre electricity
and world and US generation. Quick mode draws 20,000 samples instead of 1,000,000.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem

TITLE = "Electricity"


def build(ctx: SectionContext) -> Section:
    from scalelab.simulations import energy as en

    from scalelab.report.figures.energy import frontier_power_figure, published_energy_figure

    n = 20_000 if ctx.quick else 1_000_000
    items = []

    ctx.progress("energy: published runs")
    pub = en.reproduce_published()
    items.append(FigureItem(
        "published_training", published_energy_figure(pub),
        "Grey bars are the published numbers, blue bars ours from the published inputs (GPU-hours, watts, PUE, grid "
        f"intensity); the largest gap is {pub['mwh_rel_error'].abs().max():.1%} in energy and "
        f"{pub['tco2e_rel_error'].abs().max():.1%} in emissions. Llama 3.1's intensity "
        f"({en.LLAMA31_CARBON_KG_PER_KWH:.3f} kg/kWh) is derived from the card's totals.", pub,
    ))

    ctx.progress("energy: frontier power Monte Carlo")
    years = np.arange(2024, 2036, dtype=np.float64)
    res = en.frontier_power_projection(years, n_samples=n, seed=ctx.seed)
    curves = res.table()
    refs = []
    for name, label in (("world", "world generation"), ("us", "US generation")):
        for share in (0.01, 0.1):
            refs.append(dict(label=f"{share:.0%} of {label} (2024)",
                             power_mw=share * en.GRIDS_TWH[name] * 1e6 / en.HOURS_PER_YEAR))
    refs = pd.DataFrame(refs)
    items.append(FigureItem(
        "frontier_power", frontier_power_figure(curves, refs),
        f"The largest run's average power grows about "
        f"{en.COMPUTE_GROWTH_PER_YEAR / (en.EFFICIENCY_GROWTH_PER_YEAR * en.DURATION_GROWTH_PER_YEAR):.1f}x a year "
        f"(compute {en.COMPUTE_GROWTH_PER_YEAR:g}x over efficiency {en.EFFICIENCY_GROWTH_PER_YEAR:g}x and duration "
        f"{en.DURATION_GROWTH_PER_YEAR:g}x); where its band crosses a horizontal line one run would draw that share "
        "of a grid's average output.",
        curves,
    ))
    share_rows = [dict(grid=g, share=s, year_p05=y[0], year_p50=y[1], year_p95=y[2])
                  for (g, s), y in res.share_years.items()]
    items.append(TableItem(
        "grid_share_years", pd.DataFrame(share_rows),
        f"Year in which one training run's average power reaches a share of 2024 generation (world "
        f"{en.WORLD_GENERATION_TWH_2024:,.0f} TWh, Ember; US {en.US_GENERATION_TWH_2024:,.0f} TWh, EIA); {n:,} "
        f"samples, seed {ctx.seed}.", float_format="{:.4g}",
    ))
    items.append(TextItem(
        "IEA's data-centre figures ("
        + ", ".join(f"{twh:,.0f} TWh in {year}" for year, twh in sorted(en.IEA_DATA_CENTRE_TWH.items()))
        + f") imply growth of {en.iea_data_centre_growth_rate():.1%} a year. The base run is Llama 3.1 405B "
        f"({en.BASE_GPUS:,} H100 at {en.LLAMA31_POWER_W:.0f} W including PUE, {en.BASE_DURATION_DAYS:.0f} days). "
        "Growth factors are Epoch AI's trends with 90% intervals that are partly our assumptions (see `simulations/energy.py`)."
    ))
    return Section(title=TITLE, items=items)
