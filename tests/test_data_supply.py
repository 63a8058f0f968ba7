"""Tests of scalelab.simulations.data_supply against published figures, plus properties and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.cli.cli import main
from scalelab.simulations import data_supply as ds


# ---------------------------------------------------------------- Muennighoff et al. 2023


def test_effective_tokens_four_epochs_about_93_percent_of_raw():
    # Muennighoff et al. 2023, Sec. 3 / Fig. 3: four epochs are "almost as good as new data"; with their fitted
    # R_D* = 15.39, D' at 4 epochs is 93.1% of raw. Tolerance: 0.5 percentage point around 93%.
    unique = 1e11
    share = ds.effective_tokens(4 * unique, unique) / (4 * unique)
    assert share == pytest.approx(0.93, abs=0.005)


def test_effective_tokens_without_repetition_is_raw():
    for u in (1.0, 3.3e9, 2.5e13):
        assert ds.effective_tokens(u, u) == u


def test_effective_tokens_ceiling_is_one_plus_r_star():
    # As epochs -> infinity, D' -> U (1 + R_D*): repetition alone never beats ~16 epochs' worth of new data.
    u = 1e9
    d_eff = ds.effective_tokens(1e6 * u, u)
    assert d_eff == pytest.approx(u * (1 + ds.MUENNIGHOFF_2023.r_d_star), rel=1e-12)
    assert ds.MUENNIGHOFF_2023.r_d_star == pytest.approx(15.4, abs=0.05)  # paper, Sec. 3
    assert ds.MUENNIGHOFF_2023.r_n_star == pytest.approx(5.3, abs=0.05)  # paper, Sec. 3


@pytest.mark.parametrize(("inputs", "published"), ds.MUENNIGHOFF_2023_FIGURE1_LOSSES)
def test_data_constrained_loss_matches_published_values(inputs, published):
    # huggingface/datablations README ("Parametric Fit") prints these losses for the paper's Figure 1 (right) models;
    # the same constants must reproduce them to rounding (1e-12 relative).
    assert ds.data_constrained_loss(*inputs) == pytest.approx(published, rel=1e-12)


def test_data_constrained_loss_prefers_more_epochs_fewer_params():
    # Muennighoff et al. 2023, Fig. 1 (right): at equal compute and 25B unique tokens the 6.34B model trained on
    # 242B tokens beats the 8.67B model on 178B tokens.
    (a, _), (b, _) = ds.MUENNIGHOFF_2023_FIGURE1_LOSSES
    assert ds.data_constrained_loss(*a) < ds.data_constrained_loss(*b)


def test_data_constrained_loss_without_repetition_is_chinchilla_form():
    law = ds.MUENNIGHOFF_2023
    n, d = 1e8, 1e11  # a model much smaller than compute-optimal for the data: no excess parameters
    expected = law.e + law.a / n**law.alpha + law.b / d**law.beta
    assert ds.data_constrained_loss(n, d, d) == pytest.approx(expected, rel=1e-12)


def test_effective_tokens_broadcasts_like_scalar_calls():
    total = np.array([[1e9, 4e9, 6.4e10]])  # (1, 3)
    unique = np.array([[1e9], [5e8]])  # (2, 1)
    out = ds.effective_tokens(total, unique)  # (2, 3)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert out[i, j] == ds.effective_tokens(float(total[0, j]), float(unique[i, 0]))


@given(
    unique=st.floats(1.0, 1e14),
    epochs=st.floats(1.0, 1e4),
    more=st.floats(1.0, 10.0),
)
def test_effective_tokens_properties(unique, epochs, more):
    total = unique * epochs
    d_eff = ds.effective_tokens(total, unique)
    assert unique * (1 - 1e-12) <= d_eff <= total * (1 + 1e-12)
    assert d_eff <= unique * (1 + ds.MUENNIGHOFF_2023.r_d_star) * (1 + 1e-12)
    assert ds.effective_tokens(total * more, unique) >= d_eff * (1 - 1e-12)  # more passes never hurt


@given(unique=st.floats(1.0, 1e12), ratio=st.floats(1.0, 1e3))
def test_effective_params_properties(unique, ratio):
    n = unique * ratio
    n_eff = ds.effective_params(n, unique)
    assert unique * (1 - 1e-12) <= n_eff <= n * (1 + 1e-12)
    assert n_eff <= unique * (1 + ds.MUENNIGHOFF_2023.r_n_star) * (1 + 1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(total_tokens=-1.0, unique_tokens=1.0), "total_tokens"),
        (dict(total_tokens=1.0, unique_tokens=0.0), "unique_tokens"),
        (dict(total_tokens=1.0, unique_tokens=2.0), "unique_tokens"),
        (dict(total_tokens=float("nan"), unique_tokens=1.0), "total_tokens"),
        (dict(total_tokens=1.0, unique_tokens=1.0, r_d_star=0.0), "r_d_star"),
    ],
)
def test_effective_tokens_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ds.effective_tokens(**kwargs)


def test_effective_tokens_rejects_non_numbers():
    with pytest.raises(TypeError, match="total_tokens"):
        ds.effective_tokens("many", 1.0)


def test_loss_and_params_bad_input():
    with pytest.raises(ValueError, match="unique_tokens"):
        ds.data_constrained_loss(1e9, 1e10, 2e10)
    with pytest.raises(ValueError, match="params"):
        ds.data_constrained_loss(-1e9, 1e10, 1e10)
    with pytest.raises(ValueError, match="unique_params"):
        ds.effective_params(1e9, 2e9)


# ---------------------------------------------------------------- Villalobos et al. 2024


def test_exhaustion_year_reproduces_epoch_median_and_interval():
    # Villalobos et al. 2024 (Epoch AI), Fig. 1 and abstract: median year 2028, fully utilised "between 2026 and
    # 2032". From their published inputs (stock 3e14, 90% CI 1e14-1e15; Epoch's 2.9x/yr dataset trend) the median
    # must round to 2028 and our 90% interval must lie inside 2026-2032.
    r = ds.exhaustion_year(n_samples=200_000, seed=0)
    assert round(r.median_year) == 2028
    lo, hi = r.interval
    assert 2026.0 <= lo < r.median_year < hi <= 2032.0


def test_exhaustion_year_overtraining_5x_moves_to_2027():
    # Epoch AI blog on Villalobos et al. 2024: with 5x overtraining the stock is used up in 2027; 100x, as early as 2025.
    assert round(ds.exhaustion_year(overtrain=5.0, n_samples=200_000).median_year) == 2027
    assert math.floor(ds.exhaustion_year(overtrain=100.0, n_samples=200_000).median_year) == 2025


def test_exhaustion_year_is_seeded_and_converges():
    a = ds.exhaustion_year(n_samples=50_000, seed=3)
    b = ds.exhaustion_year(n_samples=50_000, seed=3)
    c = ds.exhaustion_year(n_samples=50_000, seed=4)
    assert a.median_year == b.median_year and a.interval == b.interval
    np.testing.assert_array_equal(a.sample_years, b.sample_years)
    assert abs(a.median_year - c.median_year) < 0.05  # Monte Carlo error at 5e4 samples is ~0.005 years


def test_exhaustion_year_deterministic_matches_closed_form_and_curves_cross():
    kw = dict(stock_interval=None, growth_interval=None, stock_tokens=3e14, growth_per_year=2.5,
              stock_growth_per_year=1.05, base_year=2024.0, base_dataset_tokens=1e13, n_samples=10)
    r = ds.exhaustion_year(**kw)
    t = 2024.0 + math.log(3e14 / 1e13) / math.log(2.5 / 1.05)
    assert r.median_year == pytest.approx(t, rel=1e-12)
    assert r.interval == pytest.approx((t, t), rel=1e-12)
    at = ds.exhaustion_year(**kw, years=[t])
    assert at.demand_tokens[1, 0] == pytest.approx(at.stock_tokens[1, 0], rel=1e-9)


def test_exhaustion_year_epochs_and_overtrain_scale_demand():
    base = ds.exhaustion_year(stock_interval=None, growth_interval=None, n_samples=4)
    more = ds.exhaustion_year(stock_interval=None, growth_interval=None, n_samples=4, epochs=4.0, overtrain=16.0)
    # sqrt(16) / 4 = 1: overtraining 16x and 4 epochs cancel.
    assert more.median_year == pytest.approx(base.median_year, rel=1e-12)
    later = ds.exhaustion_year(stock_interval=None, growth_interval=None, n_samples=4, epochs=4.0)
    assert later.median_year > base.median_year


def test_exhaustion_year_never_when_stock_outgrows_demand():
    r = ds.exhaustion_year(stock_interval=None, growth_interval=None, growth_per_year=1.05,
                           stock_growth_per_year=1.07, n_samples=3)
    assert math.isinf(r.median_year)


def test_exhaustion_curves_shapes_and_order():
    r = ds.exhaustion_year(n_samples=20_000)
    y = r.years.size
    assert r.demand_tokens.shape == (3, y) and r.stock_tokens.shape == (3, y)
    assert np.all(r.demand_tokens[0] <= r.demand_tokens[1] + 1e-6 * r.demand_tokens[1])
    assert np.all(r.demand_tokens[1] <= r.demand_tokens[2] + 1e-6 * r.demand_tokens[2])
    assert np.all(np.diff(r.demand_tokens[1]) > 0)
    assert list(r.table().columns)[0] == "year"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(overtrain=0.0), "overtrain"),
        (dict(epochs=0.5), "epochs"),
        (dict(n_samples=0), "n_samples"),
        (dict(stock_tokens=-3e14), "stock_tokens"),
        (dict(stock_tokens=5e15), "stock_tokens"),
        (dict(growth_per_year=float("inf")), "growth_per_year"),
        (dict(level=1.5), "level"),
        (dict(stock_interval=(1e15, 1e14)), "interval"),
    ],
)
def test_exhaustion_year_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ds.exhaustion_year(**kwargs)


# ---------------------------------------------------------------- tokenization


def test_tokenization_table_carries_only_traceable_ratios():
    t = ds.load_tokenization_table()
    eng = t.set_index("language").loc["English"]
    assert eng.ratio_low == eng.ratio_high == 1.0
    burmese = t.set_index("language").loc["Burmese"]
    # Yennie Jun 2023: "Armenian or Burmese require 9 to 10 times more tokens than English".
    assert (burmese.ratio_low, burmese.ratio_high) == (9.0, 10.0)
    assert "median_tokens" not in t.columns  # untraceable absolute medians are deliberately absent


def test_tokenization_disparity_arithmetic():
    d = ds.tokenization_disparity(context_tokens=8192, english_tokens_per_message=8.0).set_index("language")
    assert d.loc["English", "messages_per_window_low"] == 1024
    assert d.loc["Burmese", "window_share_low"] == pytest.approx(0.1)
    assert d.loc["Burmese", "messages_per_window_high"] == math.floor(8192 / 72.0)
    with pytest.raises(ValueError, match="context_tokens"):
        ds.tokenization_disparity(context_tokens=0)


# ---------------------------------------------------------------- CLI and report


def test_cli_data_exhaustion_prints_table(capsys):
    assert main(["data", "exhaustion", "--overtrain", "5", "--samples", "20000"]) == 0
    out = capsys.readouterr().out
    assert "Stock of public text reached in 2027" in out
    assert "demand_tok" in out and "stock_tok" in out
    assert len(out.strip().splitlines()) > 10


def test_cli_data_effective_and_tokens(capsys):
    assert main(["data", "effective", "--tokens", "4e11", "--unique", "1e11"]) == 0
    assert "0.9314" in capsys.readouterr().out
    assert main(["data", "tokens", "--english-tokens", "7"]) == 0
    assert "Burmese" in capsys.readouterr().out


def test_section_builds_quickly_in_quick_mode():
    from matplotlib.figure import Figure

    from scalelab.report.section import FigureItem, SectionContext
    from scalelab.report.sections import data_supply as section

    s = section.build(SectionContext(quick=True, seed=1))
    figs = [it for it in s.items if isinstance(it, FigureItem)]
    assert len(figs) == 3
    for it in figs:
        assert isinstance(it.figure, Figure) and it.data is not None and len(it.data) > 0
        ax = it.figure.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        assert ax.get_legend() is not None
