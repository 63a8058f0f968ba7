"""Tests of scalelab.simulations.energy against published figures, plus properties and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.cli.cli import main
from scalelab.simulations import energy as en
from scalelab.simulations.hardware import HARDWARE


# ---------------------------------------------------------------- published runs


def test_gpt3_energy_and_emissions_reproduce_patterson_2021():
    # Patterson et al. 2021, Table 4 (GPT-3): 10,000 V100 x 14.8 days at 330 W, PUE 1.10 -> 1,287 MWh (tolerance 0.5%)
    # and 552 tCO2e at 0.429 kg/kWh (tolerance 1%).
    p = en.PATTERSON_2021_GPT3
    gpu_hours = p["gpus"] * p["days"] * 24.0
    est = en.training_energy(gpu_hours=gpu_hours, hardware="v100", power_w=p["power_w"], pue=p["pue"],
                             carbon_kg_per_kwh=p["carbon_kg_per_kwh"])
    assert est.mwh == pytest.approx(1287.0, rel=0.005)
    assert est.tco2e == pytest.approx(552.0, rel=0.01)


@pytest.mark.parametrize("model", ["8B", "70B", "405B"])
def test_llama31_emissions_per_model_within_2_percent(model):
    # Llama 3.1 model card, "Training Greenhouse Gas Emissions": GPU-hours at 700 W that already include PUE, so
    # pue=1.0; location-based 420 / 2,040 / 8,930 tCO2e. The intensity is derived from the card's totals
    # (11,390 t over 39.3M GPU-h x 0.7 kW). Tolerance 2% per model.
    card = en.LLAMA31_CARD[model]
    est = en.training_energy(gpu_hours=card["gpu_hours"], hardware="h100", power_w=en.LLAMA31_POWER_W, pue=1.0,
                             carbon_kg_per_kwh=en.LLAMA31_CARBON_KG_PER_KWH)
    assert est.tco2e == pytest.approx(card["tco2e"], rel=0.02)


def test_llama31_derived_intensity_and_totals():
    assert en.LLAMA31_CARBON_KG_PER_KWH == pytest.approx(11_390 / 27_510, rel=1e-12)
    assert sum(v["tco2e"] for v in en.LLAMA31_CARD.values()) == en.LLAMA31_TOTAL_TCO2E
    assert sum(v["gpu_hours"] for v in en.LLAMA31_CARD.values()) == pytest.approx(en.LLAMA31_TOTAL_GPU_HOURS, rel=1e-3)


def test_reproduce_published_table_within_tolerances():
    t = en.reproduce_published().set_index("model")
    assert abs(t.loc["GPT-3 175B", "mwh_rel_error"]) < 0.005
    assert abs(t.loc["GPT-3 175B", "tco2e_rel_error"]) < 0.01
    for m in ("Llama 3.1 8B", "Llama 3.1 70B", "Llama 3.1 405B"):
        assert abs(t.loc[m, "tco2e_rel_error"]) < 0.02


def test_iea_data_centre_growth_about_15_percent():
    # IEA, Energy and AI (2025): 415 TWh (2024) -> 945 TWh (2030), "around 15% per year". Tolerance 1 point.
    assert en.iea_data_centre_growth_rate() == pytest.approx(0.15, abs=0.01)
    np.testing.assert_allclose(en.data_centre_twh([2024, 2030]), [415.0, 945.0], rtol=1e-12)
    # ~1.5% of world electricity in 2024 against ~30,800 TWh of generation (Ember): 1.35%, a consumption-vs-
    # generation gap IEA's rounded share absorbs.
    assert 415.0 / en.WORLD_GENERATION_TWH_2024 == pytest.approx(en.IEA_DATA_CENTRE_SHARE_2024, abs=0.002)


# ---------------------------------------------------------------- training_energy


def test_hardware_is_shared_with_the_presets():
    assert en.HARDWARE is HARDWARE
    assert en.get_hardware("h100") is HARDWARE["h100-sxm"]


def test_flops_path_matches_gpu_hours_path():
    flops = en.training_flops(70e9, 1.4e12)  # Chinchilla 70B: 5.88e23 FLOP
    assert flops == pytest.approx(5.88e23, rel=1e-12)
    a = en.training_energy(flops=flops, hardware="h100", mfu=0.4)
    hours = flops / (989e12 * 0.4) / 3600.0
    b = en.training_energy(gpu_hours=hours, hardware="h100")
    assert a.gpu_hours == pytest.approx(hours, rel=1e-12)
    assert a.mwh == pytest.approx(b.mwh, rel=1e-12) and a.tco2e == pytest.approx(b.tco2e, rel=1e-12)
    assert a.mwh == pytest.approx(hours * 700 * 1.1 / 1e6, rel=1e-12)  # default power is the TDP, pue 1.1


@given(
    hours=st.floats(1.0, 1e9),
    scale=st.floats(0.5, 100.0),
    power=st.floats(50.0, 2000.0),
    pue=st.floats(1.0, 2.0),
    carbon=st.floats(0.0, 1.2),
)
def test_energy_is_linear_in_hours_power_and_pue(hours, scale, power, pue, carbon):
    a = en.training_energy(gpu_hours=hours, hardware="a100", power_w=power, pue=pue, carbon_kg_per_kwh=carbon)
    b = en.training_energy(gpu_hours=hours * scale, hardware="a100", power_w=power, pue=pue, carbon_kg_per_kwh=carbon)
    assert a.mwh == pytest.approx(hours * power * pue / 1e6, rel=1e-12)
    assert b.mwh == pytest.approx(a.mwh * scale, rel=1e-9)
    assert a.tco2e == pytest.approx(a.mwh * carbon, rel=1e-12, abs=1e-300)
    assert math.isfinite(b.tco2e) and b.tco2e >= 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(flops=-1e24, hardware="h100", mfu=0.4), "flops"),
        (dict(flops=1e24, hardware="h100", mfu=0.0), "mfu"),
        (dict(flops=1e24, hardware="h100", mfu=1.5), "mfu"),
        (dict(flops=1e24, hardware="h100"), "mfu"),
        (dict(flops=1e24, hardware="tpu-v9", mfu=0.4), "hardware"),
        (dict(flops=1e24, gpu_hours=1e6, hardware="h100", mfu=0.4), "flops or gpu_hours"),
        (dict(hardware="h100"), "flops or gpu_hours"),
        (dict(gpu_hours=-5.0, hardware="h100"), "gpu_hours"),
        (dict(gpu_hours=5.0, hardware="h100", pue=0.9), "pue"),
        (dict(gpu_hours=5.0, hardware="h100", power_w=0.0), "power_w"),
        (dict(gpu_hours=5.0, hardware="h100", carbon_kg_per_kwh=-0.1), "carbon_kg_per_kwh"),
        (dict(gpu_hours=float("inf"), hardware="h100"), "gpu_hours"),
    ],
)
def test_training_energy_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        en.training_energy(**kwargs)


def test_training_flops_bad_input():
    with pytest.raises(ValueError, match="tokens"):
        en.training_flops(7e9, -1.0)
    with pytest.raises(TypeError, match="params"):
        en.training_flops("7B", 1e12)


# ---------------------------------------------------------------- frontier power


def test_frontier_power_deterministic_closed_form():
    years = np.array([2024.5, 2026.5, 2030.5])
    r = en.frontier_power_projection(
        years, compute_growth_interval=None, efficiency_growth_interval=None, duration_growth_interval=None,
        n_samples=5,
    )
    rate = 4.5 / (1.4 * 1.2)
    expected = en.BASE_POWER_W * rate ** (years - en.BASE_YEAR)
    for k in range(3):
        np.testing.assert_allclose(r.power_w[k], expected, rtol=1e-12)
    # Year in which one run needs 1% of US generation, solved by hand.
    target = 0.01 * en.US_GENERATION_TWH_2024 * 1e12 / 8760.0
    t = en.BASE_YEAR + math.log(target / en.BASE_POWER_W) / math.log(rate)
    assert r.share_years[("us", 0.01)][1] == pytest.approx(t, rel=1e-12)


def test_frontier_power_bands_ordered_and_seeded():
    a = en.frontier_power_projection(n_samples=50_000, seed=7)
    b = en.frontier_power_projection(n_samples=50_000, seed=7)
    np.testing.assert_array_equal(a.power_w, b.power_w)
    assert a.share_years == b.share_years
    assert np.all(np.diff(a.power_w[1]) > 0)
    after = a.years >= en.BASE_YEAR
    assert np.all(a.power_w[0, after] <= a.power_w[1, after]) and np.all(a.power_w[1, after] <= a.power_w[2, after])
    # A smaller share of a smaller grid comes first.
    assert a.share_years[("us", 0.01)][1] < a.share_years[("world", 0.01)][1] < a.share_years[("world", 0.1)][1]


def test_frontier_power_base_year_is_the_base_run():
    r = en.frontier_power_projection([en.BASE_YEAR], n_samples=1000)
    np.testing.assert_allclose(r.power_w[:, 0], en.BASE_POWER_W, rtol=1e-12)
    # Llama 3.1 405B: 16,384 x 700 W = 11.5 MW for ~78 days = ~21.6 GWh (the card's 30.84M GPU-h x 700 W).
    assert r.energy_twh[1, 0] * 1e3 == pytest.approx(30.84e6 * 700 / 1e9, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(n_samples=0), "n_samples"),
        (dict(compute_growth=-4.0), "compute_growth"),
        (dict(efficiency_growth=9.0), "efficiency_growth"),
        (dict(shares=(0.0,)), "shares"),
        (dict(grids={"mars": -1.0}), "grids"),
        (dict(years=[]), "years"),
        (dict(base_power_w=float("nan")), "base_power_w"),
    ],
)
def test_frontier_power_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        en.frontier_power_projection(**kwargs)


# ---------------------------------------------------------------- CLI and report


def test_cli_energy_train_prints_table(capsys):
    argv = ["energy", "train", "--params", "70e9", "--tokens", "1.4e12", "--gpu", "h100", "--mfu", "0.4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    est = en.training_energy(flops=en.training_flops(70e9, 1.4e12), hardware="h100", mfu=0.4)
    assert "mwh" in out and "tco2e" in out
    assert f"{est.mwh:.4g}" in out and f"{est.tco2e:.4g}" in out


def test_cli_energy_train_from_gpu_hours(capsys):
    argv = ["energy", "train", "--gpu-hours", "30.84e6", "--gpu", "h100", "--power-w", "700", "--pue", "1.0",
            "--carbon", "0.414"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "21588" in out and "8937" in out  # MWh, and tCO2e at 0.414 kg/kWh (card: 8,930)


def test_cli_energy_published_and_frontier(capsys):
    assert main(["energy", "published"]) == 0
    assert "GPT-3 175B" in capsys.readouterr().out
    assert main(["energy", "frontier", "--samples", "2000", "--to", "2030"]) == 0
    out = capsys.readouterr().out
    assert "world" in out and "2030" in out


def test_section_builds_in_quick_mode():
    from matplotlib.figure import Figure

    from scalelab.report.section import FigureItem, SectionContext, TableItem
    from scalelab.report.sections import energy as section

    s = section.build(SectionContext(quick=True, seed=2))
    figs = [it for it in s.items if isinstance(it, FigureItem)]
    assert len(figs) == 2 and any(isinstance(it, TableItem) for it in s.items)
    for it in figs:
        assert isinstance(it.figure, Figure) and it.data is not None and len(it.data) > 0
        ax = it.figure.axes[0]
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
