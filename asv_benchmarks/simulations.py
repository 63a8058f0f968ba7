"""Benchmarks of the Monte Carlo simulations (scalelab.simulations.data_supply, scalelab.simulations.energy).

Bar: ``exhaustion_year`` and ``frontier_power_projection`` with 1e6
samples each under 2 s. Peers measured in the same run:

* ``rng_floor``: drawing the same standard normals with the same generator,
  the least any seeded Monte Carlo of this size can cost;
* ``dense``: the obvious implementation of the per-year curves, forming the
  (n_samples, years) matrix and taking ``np.quantile`` down each column, which
  the library avoids by taking quantiles of the one log-rate the curves depend on.

No Numba here: the work is a few vectorized NumPy passes.
"""

from __future__ import annotations

import math

import numpy as np

from asv_benchmarks._util import best_time
from scalelab.simulations import data_supply as ds
from scalelab.simulations import energy as en

YEARS = np.arange(2020, 2037, dtype=np.float64)  # (17,) the default exhaustion grid


def _dense_exhaustion_curves(n: int, seed: int) -> np.ndarray:
    """Peer: demand curves via the full (n, Y) matrix and per-column quantiles."""
    rng = np.random.default_rng(seed)
    sig_s = ds.lognormal_sigma_from_interval(*ds.STOCK_TOKENS_90)
    sig_g = ds.lognormal_sigma_from_interval(*ds.DATASET_GROWTH_90)
    log_s0 = math.log(ds.STOCK_TOKENS_MEDIAN) + sig_s * rng.standard_normal(n)  # (n,)
    log_g = math.log(ds.DATASET_GROWTH_PER_YEAR) + sig_g * rng.standard_normal(n)  # (n,)
    dt = YEARS - ds.BASE_YEAR  # (Y,)
    demand = ds.BASE_DATASET_TOKENS * np.exp(log_g[:, None] * dt[None, :])  # (n, Y)
    years = ds.BASE_YEAR + (log_s0 - math.log(ds.BASE_DATASET_TOKENS)) / (log_g - math.log(ds.STOCK_GROWTH_PER_YEAR))
    np.quantile(years, [0.05, 0.5, 0.95])
    return np.quantile(demand, [0.05, 0.5, 0.95], axis=0)  # (3, Y)


class ExhaustionYear:
    """``exhaustion_year`` against its peers, by sample count."""

    params = ([10_000, 1_000_000], ["scalelab", "rng_floor", "dense"])
    param_names = ["n_samples", "impl"]
    timeout = 120

    def setup(self, n_samples, impl):
        self.n = n_samples
        ds.exhaustion_year(n_samples=1000)  # warm imports and first-call paths

    def time_exhaustion_year(self, n_samples, impl):
        if impl == "scalelab":
            ds.exhaustion_year(n_samples=self.n, seed=0)
        elif impl == "rng_floor":
            rng = np.random.default_rng(0)
            rng.standard_normal(self.n), rng.standard_normal(self.n)
        else:
            _dense_exhaustion_curves(self.n, 0)

    def peakmem_exhaustion_year(self, n_samples, impl):
        self.time_exhaustion_year(n_samples, impl)


class FrontierPower:
    """``frontier_power_projection`` against the RNG floor (three normal draws), by sample count."""

    params = ([10_000, 1_000_000], ["scalelab", "rng_floor"])
    param_names = ["n_samples", "impl"]
    timeout = 120

    def setup(self, n_samples, impl):
        self.n = n_samples
        en.frontier_power_projection(n_samples=1000)

    def time_frontier_power_projection(self, n_samples, impl):
        if impl == "scalelab":
            en.frontier_power_projection(n_samples=self.n, seed=0)
        else:
            rng = np.random.default_rng(0)
            rng.standard_normal(self.n), rng.standard_normal(self.n), rng.standard_normal(self.n)


class MonteCarloThroughput:
    """Samples per second of both simulations at 1e6 samples."""

    params = (["exhaustion_year", "frontier_power_projection"],)
    param_names = ["simulation"]
    unit = "samples/s"
    timeout = 120

    def setup(self, simulation):
        self.fn = ds.exhaustion_year if simulation == "exhaustion_year" else en.frontier_power_projection
        self.fn(n_samples=1000)

    def track_samples_per_second(self, simulation):
        return 1_000_000 / best_time(lambda: self.fn(n_samples=1_000_000, seed=0), repeats=3)

    track_samples_per_second.unit = "samples/s"


class EffectiveTokens:
    """Vectorized Muennighoff effective tokens on 1e6 (total, unique) pairs."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.unique = rng.uniform(1e9, 1e12, 1_000_000)  # (n,)
        self.total = self.unique * rng.uniform(1.0, 64.0, 1_000_000)  # (n,)

    def time_effective_tokens(self):
        ds.effective_tokens(self.total, self.unique)
