"""Electricity as a bottleneck: energy and emissions of training runs, and frontier power by year.

* :func:`training_energy` turns FLOPs (via a device's peak and the achieved MFU)
  or GPU-hours into GPU-hours, MWh and tCO2e. It reproduces GPT-3 (Patterson et
  al. 2021, Table 4) and Llama 3.1 (model card) from their published inputs.
* :func:`frontier_power_projection` projects the average power drawn by the
  largest training run by year from the growth of training compute, hardware
  energy efficiency and training duration, as a seeded Monte Carlo, and compares
  it with data-centre electricity (IEA) and world and US generation.

Power model (per sample, closed form)::

    compute(t)    = C0 * gc ** (t - t0)
    efficiency(t) = (C0 / E0) * ge ** (t - t0)          # FLOP per joule, facility included
    duration(t)   = T0 * gd ** (t - t0)
    power(t)      = compute / (efficiency * duration) = P0 * (gc / (ge * gd)) ** (t - t0)

so every percentile curve follows from the percentile of one log-rate, and the
year in which one run needs a share ``f`` of a grid's average output solves
``power(t) = f * G / 8760 h`` per sample.

Published constants live here, each with its citation; the device presets are
:mod:`scalelab.simulations.hardware` (re-exported as :data:`HARDWARE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.simulations.data_supply import (
    _quantile_curves, check_n_samples, check_seed, lognormal_sigma_from_interval, order_quantiles,
)
from scalelab.simulations.checks import as_float_array, show
from scalelab.simulations.hardware import HARDWARE, Hardware, get_hardware

DATA_DIR = Path(__file__).resolve().parent / "data"
PUBLISHED_TRAINING_ENERGY_CSV = DATA_DIR / "published_training_energy.csv"

HOURS_PER_YEAR = 8760.0

# --------------------------------------------------------------------------------------
# Published constants
# --------------------------------------------------------------------------------------

#: Patterson et al. 2021, "Carbon Emissions and Large Neural Network Training", Table 4 (GPT-3 row).
PATTERSON_2021_GPT3 = dict(
    gpus=10_000, days=14.8, power_w=330.0, pue=1.10, mwh=1287.0, tco2e=552.0, carbon_kg_per_kwh=0.429,
)

#: Llama 3.1 model card, "Training Greenhouse Gas Emissions": GPU-hours at 700 W (PUE already inside) and
#: location-based tCO2e per model. The card gives no grid intensity; the one that reproduces its numbers is
#: total emissions over total energy: 11,390 t / (39.3e6 GPU-h x 0.7 kW = 27,510 MWh) = 0.4140 kg/kWh.
LLAMA31_CARD = {
    "8B": dict(gpu_hours=1.46e6, tco2e=420.0),
    "70B": dict(gpu_hours=7.0e6, tco2e=2040.0),
    "405B": dict(gpu_hours=30.84e6, tco2e=8930.0),
}
LLAMA31_POWER_W = 700.0
LLAMA31_TOTAL_TCO2E = 11_390.0
LLAMA31_TOTAL_GPU_HOURS = 39.3e6

#: IEA, "Energy and AI" (April 2025): data centres used ~415 TWh in 2024 (~1.5% of world electricity consumption),
#: ~945 TWh projected for 2030 in the base case (growth ~15%/yr).
IEA_DATA_CENTRE_TWH = {2024: 415.0, 2030: 945.0}
IEA_DATA_CENTRE_SHARE_2024 = 0.015

#: World electricity generation in 2024: Ember, Global Electricity Review 2025: low-carbon sources supplied
#: 12,609 TWh = 40.9% of the total, i.e. ~30,830 TWh.
WORLD_GENERATION_TWH_2024 = 12_609.0 / 0.409

#: US electricity generation in 2024, all sources including small-scale solar: 4,304,039 GWh (EIA, Electric Power
#: Monthly, 2024 annual totals).
US_GENERATION_TWH_2024 = 4_304.0

#: Epoch AI, "Training compute of frontier AI models grows by 4-5x per year" (2024): median 4.5x, 90% range 4x-5x
#: (our reading of the recommended 4-5x summary as a 90% interval).
COMPUTE_GROWTH_PER_YEAR = 4.5
COMPUTE_GROWTH_90 = (4.0, 5.0)

#: Epoch AI, Machine Learning Hardware data insights (2024): "Leading ML hardware becomes 50% more energy-efficient
#: each year"; an earlier Epoch estimate put it at ~30%/yr. Median 1.4x, 90% interval 1.3x-1.5x spans the two.
EFFICIENCY_GROWTH_PER_YEAR = 1.4
EFFICIENCY_GROWTH_90 = (1.3, 1.5)

#: Epoch AI, Notable AI Models data insight: training runs have grown longer by ~1.2x per year since 2010. The 90%
#: interval 1.0x-1.4x is our assumption (duration cannot grow for long: runs longer than a year or so lose to waiting).
DURATION_GROWTH_PER_YEAR = 1.2
DURATION_GROWTH_90 = (1.0, 1.44)

#: Base run: Llama 3.1 405B (July 2024): 3.8e25 FLOP (Llama 3 Herd paper, Sec. 3.2.1) on up to 16,384 H100
#: (Sec. 3.3.1); 30.84M GPU-hours at 700 W incl. PUE (model card). Average power = 16,384 x 700 W = 11.5 MW over
#: 30.84e6 / 16,384 h = 78 days.
BASE_YEAR = 2024.5
BASE_FLOPS = 3.8e25
BASE_GPUS = 16_384
BASE_POWER_W = BASE_GPUS * LLAMA31_POWER_W
BASE_DURATION_DAYS = LLAMA31_CARD["405B"]["gpu_hours"] / BASE_GPUS / 24.0


#: kg/kWh = (t * 1000 kg/t) / (MWh * 1000 kWh/MWh) = t / MWh.
LLAMA31_CARBON_KG_PER_KWH = LLAMA31_TOTAL_TCO2E / (LLAMA31_TOTAL_GPU_HOURS * LLAMA31_POWER_W / 1e6)


# --------------------------------------------------------------------------------------
# Training energy
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy and emissions of one training run."""

    gpu_hours: float  # device-hours
    mwh: float  # facility energy, MWh (device power x hours x PUE)
    tco2e: float  # tonnes CO2-equivalent at the given grid intensity

    @property
    def gwh(self) -> float:
        return self.mwh / 1e3


def _number(name: str, value, *, allow_none: bool = False):
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _positive(name: str, value, *, allow_none: bool = False):
    value = _number(name, value, allow_none=allow_none)
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def training_flops(params: float, tokens: float) -> float:
    """Dense-transformer training FLOPs, 6 N D (forward 2ND + backward 4ND; Kaplan et al. 2020, Sec. 2.1)."""
    return 6.0 * _positive("params", params) * _positive("tokens", tokens)


def training_energy(
    *,
    flops: float | None = None,
    gpu_hours: float | None = None,
    hardware: str | Hardware,
    mfu: float | None = None,
    power_w: float | None = None,
    pue: float = 1.1,
    carbon_kg_per_kwh: float = PATTERSON_2021_GPT3["carbon_kg_per_kwh"],
) -> EnergyEstimate:
    """Energy and emissions of a training run, from FLOPs or from GPU-hours.

    Parameters
    ----------
    flops
        Training FLOPs; needs ``mfu``. GPU-hours = flops / (peak_flops * mfu) / 3600.
    gpu_hours
        Device-hours, if known instead of ``flops`` (give exactly one of the two).
    hardware
        Preset name (``"h100"``, ``"v100"``, ...) or a :class:`~scalelab.simulations.hardware.Hardware`.
    mfu
        Model FLOPs utilisation in (0, 1].
    power_w
        Average power per device including its share of the server; default the device TDP.
    pue
        Power usage effectiveness, >= 1 (1.0 when ``power_w`` already includes the facility).
    carbon_kg_per_kwh
        Grid carbon intensity, kgCO2e/kWh; default Patterson et al.'s 0.429 for GPT-3.
    """
    hw = get_hardware(hardware)
    if (flops is None) == (gpu_hours is None):
        raise ValueError("give exactly one of flops or gpu_hours")
    pue = _number("pue", pue)
    if pue < 1.0:
        raise ValueError(f"pue must be >= 1 (facility energy cannot be below IT energy), got {pue!r}")
    carbon = _number("carbon_kg_per_kwh", carbon_kg_per_kwh)
    if carbon < 0:
        raise ValueError(f"carbon_kg_per_kwh must be non-negative, got {carbon!r}")
    if power_w is None and hw.tdp_w is None:
        raise ValueError(f"power_w is required: hardware {hw.name!r} has no known board power (tdp_w)")
    power = hw.tdp_w if power_w is None else _positive("power_w", power_w)
    if flops is not None:
        flops = _positive("flops", flops)
        mfu = _number("mfu", mfu)
        if not 0 < mfu <= 1:
            raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
        hours = flops / (hw.peak_flops * mfu) / 3600.0
    else:
        hours = _positive("gpu_hours", gpu_hours)
        if mfu is not None:
            mfu = _number("mfu", mfu)
            if not 0 < mfu <= 1:
                raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    with np.errstate(over="ignore"):
        mwh = hours * power * pue / 1e6
        tco2e = mwh * carbon  # MWh x kg/kWh = t
    if not all(math.isfinite(v) for v in (hours, mwh, tco2e)):
        given = (f"flops {show(flops)} at mfu {show(mfu)}" if flops is not None
                 else f"gpu_hours {show(hours)} at {show(power)} W and pue {show(pue)}")
        raise ValueError(f"the run overflows float64 (gpu_hours {show(hours)}, MWh {show(mwh)}): "
                         f"{given} is outside any physical run")
    return EnergyEstimate(gpu_hours=hours, mwh=mwh, tco2e=tco2e)


def load_published_training_energy(path: str | Path = PUBLISHED_TRAINING_ENERGY_CSV) -> pd.DataFrame:
    """Published energy and emissions of training runs (``simulations/data/published_training_energy.csv``)."""
    return pd.read_csv(path, comment="#")


def reproduce_published(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our :func:`training_energy` for every published run, next to the published numbers.

    Rows without a stated intensity (Llama 3.1) use :data:`LLAMA31_CARBON_KG_PER_KWH`.
    """
    if table is None:
        table = load_published_training_energy()
    rows = []
    for rec in table.itertuples(index=False):
        carbon = rec.carbon_kg_per_kwh if pd.notna(rec.carbon_kg_per_kwh) else LLAMA31_CARBON_KG_PER_KWH
        est = training_energy(
            gpu_hours=float(rec.gpu_hours), hardware=rec.hardware, power_w=float(rec.power_w),
            pue=float(rec.pue), carbon_kg_per_kwh=float(carbon),
        )
        rows.append(
            dict(
                model=rec.model, gpu_hours=est.gpu_hours, mwh=est.mwh, tco2e=est.tco2e,
                published_mwh=float(rec.mwh), published_tco2e=float(rec.tco2e),
                mwh_rel_error=est.mwh / float(rec.mwh) - 1.0, tco2e_rel_error=est.tco2e / float(rec.tco2e) - 1.0,
                carbon_kg_per_kwh=float(carbon), source=rec.source,
            )
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Grid references
# --------------------------------------------------------------------------------------


def iea_data_centre_growth_rate() -> float:
    """Yearly growth of data-centre electricity implied by IEA's 2024 and 2030 figures (~0.15)."""
    (y0, e0), (y1, e1) = sorted(IEA_DATA_CENTRE_TWH.items())
    return (e1 / e0) ** (1.0 / (y1 - y0)) - 1.0


def data_centre_twh(years) -> np.ndarray:
    """IEA base-case data-centre electricity by year: exponential through 2024 and 2030, extended at the same rate
    (beyond 2030 an extrapolation of ours, not IEA's)."""
    years = as_float_array("years", years)
    (y0, e0), _ = sorted(IEA_DATA_CENTRE_TWH.items())
    return e0 * (1.0 + iea_data_centre_growth_rate()) ** (years - y0)


GRIDS_TWH = {"world": WORLD_GENERATION_TWH_2024, "us": US_GENERATION_TWH_2024}


# --------------------------------------------------------------------------------------
# Frontier power projection
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontierPowerResult:
    """Outcome of :func:`frontier_power_projection`.

    ``power_w`` and ``energy_twh`` are (3, Y) arrays: 5th, 50th, 95th percentiles
    of the average power drawn by the largest run and of its total energy.
    ``share_years`` maps (grid, share) to (p5, p50, p95) of the year in which one
    run's average power reaches ``share`` of that grid's average output.
    """

    years: np.ndarray  # (Y,)
    power_w: np.ndarray  # (3, Y)
    energy_twh: np.ndarray  # (3, Y)
    data_centre_twh: np.ndarray  # (Y,)
    grid_twh: dict  # grid name -> TWh/yr at each year, (Y,)
    share_years: dict  # (grid, share) -> (p5, p50, p95)
    inputs: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                "year": self.years,
                "power_mw_p05": self.power_w[0] / 1e6,
                "power_mw_p50": self.power_w[1] / 1e6,
                "power_mw_p95": self.power_w[2] / 1e6,
                "run_energy_twh_p50": self.energy_twh[1],
                "data_centre_twh": self.data_centre_twh,
            }
        )
        for name, twh in self.grid_twh.items():
            out[f"share_of_{name}_p50"] = self.power_w[1] * HOURS_PER_YEAR / 1e12 / twh
        return out


def _lognormal_log_samples(rng, name: str, median: float, interval, n: int) -> np.ndarray:
    median = _positive(name, median)
    if interval is None:
        return np.full(n, math.log(median))
    lo, hi = interval
    if not lo <= median <= hi:
        raise ValueError(f"{name} ({median:g}) must lie inside its interval {interval}")
    return math.log(median) + lognormal_sigma_from_interval(lo, hi) * rng.standard_normal(n)


#: Years the frontier projection accepts. Its growth rates are fitted on 2010-2024 runs; by 2100 the
#: median run already draws more than the world's power, and near 3000 the curves overflow float64.
FRONTIER_YEARS = (2000, 2100)
MAX_FRONTIER_YEARS = 10_000


def frontier_power_projection(
    years=None,
    *,
    base_year: float = BASE_YEAR,
    base_power_w: float = BASE_POWER_W,
    base_duration_days: float = BASE_DURATION_DAYS,
    compute_growth: float = COMPUTE_GROWTH_PER_YEAR,
    compute_growth_interval=COMPUTE_GROWTH_90,
    efficiency_growth: float = EFFICIENCY_GROWTH_PER_YEAR,
    efficiency_growth_interval=EFFICIENCY_GROWTH_90,
    duration_growth: float = DURATION_GROWTH_PER_YEAR,
    duration_growth_interval=DURATION_GROWTH_90,
    grid_growth: float = 1.0,
    grids: dict | None = None,
    shares=(0.01, 0.1),
    n_samples: int = 100_000,
    seed: int = 0,
) -> FrontierPowerResult:
    """Average power of the largest training run by year, with Monte Carlo bands.

    Parameters
    ----------
    years
        Years to report (default 2024 ... 2035).
    base_year, base_power_w, base_duration_days
        The base run (default Llama 3.1 405B: 11.5 MW for 78 days in mid-2024).
    compute_growth, efficiency_growth, duration_growth and their ``*_interval``
        Median yearly growth factors of training compute, FLOP per joule and run duration, with 90% intervals
        (lognormal; ``None`` fixes the factor).
    grid_growth
        Yearly growth factor of the grids' generation (1.0: held at their 2024 level).
    grids
        Name -> TWh/yr in ``base_year``; default world and US generation in 2024.
    shares
        Fractions of a grid's average output for which to report the year one run reaches them.
    n_samples, seed
        Monte Carlo size and seed.
    """
    if years is None:
        years = np.arange(2024, 2036, dtype=np.float64)
    years = np.asarray(years, dtype=np.float64).reshape(-1)  # (Y,)
    if years.size == 0 or not np.all(np.isfinite(years)):
        raise ValueError("years must be a non-empty array of finite years")
    if years.size > MAX_FRONTIER_YEARS or years.min() < FRONTIER_YEARS[0] or years.max() > FRONTIER_YEARS[1]:
        raise ValueError(f"years must be at most {MAX_FRONTIER_YEARS} values in [{FRONTIER_YEARS[0]}, "
                         f"{FRONTIER_YEARS[1]}], got {years.size} in [{years.min():g}, {years.max():g}]")
    base_year = _number("base_year", base_year)
    base_power_w = _positive("base_power_w", base_power_w)
    base_duration_days = _positive("base_duration_days", base_duration_days)
    grid_growth = _positive("grid_growth", grid_growth)
    n_samples = check_n_samples(n_samples)
    seed = check_seed(seed)
    grids = dict(GRIDS_TWH if grids is None else grids)
    for name, twh in grids.items():
        _positive(f"grids[{name!r}]", twh)
    shares = tuple(float(s) for s in shares)
    if any(not 0 < s <= 1 for s in shares):
        raise ValueError(f"shares must be fractions in (0, 1], got {shares!r}")

    rng = np.random.default_rng(seed)
    log_gc = _lognormal_log_samples(rng, "compute_growth", compute_growth, compute_growth_interval, n_samples)  # (n,)
    log_ge = _lognormal_log_samples(rng, "efficiency_growth", efficiency_growth, efficiency_growth_interval, n_samples)
    log_gd = _lognormal_log_samples(rng, "duration_growth", duration_growth, duration_growth_interval, n_samples)
    power_rate = log_gc - log_ge - log_gd  # (n,) log growth of average power
    energy_rate = log_gc - log_ge  # (n,) log growth of energy per run

    probs = [0.05, 0.5, 0.95]
    dt = years - base_year  # (Y,)
    power = _quantile_curves(base_power_w, power_rate, dt, probs)  # (3, Y)
    base_energy_twh = base_power_w * base_duration_days * 24.0 / 1e12
    energy = _quantile_curves(base_energy_twh, energy_rate, dt, probs)  # (3, Y)

    # One run gains on a grid at rel_rate per year; the year it reaches a target is non-increasing in rel_rate
    # (+inf when it never gains), so its quantiles are that year at the mirrored order statistics of rel_rate.
    rel_rate = power_rate - math.log(grid_growth)  # (n,)
    _, mirrored = order_quantiles(rel_rate, probs)  # (3,)
    share_years = {}
    for name, twh in grids.items():
        for share in shares:
            target_w = share * twh * 1e12 / HOURS_PER_YEAR
            gap = math.log(target_w / base_power_w)
            if gap <= 0:  # the base run already draws that much
                share_years[(name, share)] = (base_year, base_year, base_year)
                continue
            share_years[(name, share)] = tuple(
                float(base_year + gap / r) if r > 0 else math.inf for r in mirrored
            )

    grid_curves = {name: twh * grid_growth ** (years - base_year) for name, twh in grids.items()}
    inputs = dict(
        base_year=base_year, base_power_w=base_power_w, base_duration_days=base_duration_days,
        compute_growth=compute_growth, efficiency_growth=efficiency_growth, duration_growth=duration_growth,
        grid_growth=grid_growth, n_samples=int(n_samples), seed=int(seed),
    )
    return FrontierPowerResult(
        years=years, power_w=power, energy_twh=energy, data_centre_twh=data_centre_twh(years),
        grid_twh=grid_curves, share_years=share_years, inputs=inputs,
    )


__all__ = [
    "HARDWARE",
    "Hardware",
    "get_hardware",
    "EnergyEstimate",
    "training_flops",
    "training_energy",
    "load_published_training_energy",
    "reproduce_published",
    "iea_data_centre_growth_rate",
    "data_centre_twh",
    "FrontierPowerResult",
    "frontier_power_projection",
    "PATTERSON_2021_GPT3",
    "LLAMA31_CARD",
    "LLAMA31_CARBON_KG_PER_KWH",
    "IEA_DATA_CENTRE_TWH",
    "WORLD_GENERATION_TWH_2024",
    "US_GENERATION_TWH_2024",
]
