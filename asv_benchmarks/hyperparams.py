"""Benchmarks of hyperparameter scaling: the sweep fit (simulations.hyperparams) and the muP experiment (simulations.mup).

Bars: fitting a 500-run sweep with 1,000 bootstrap resamples under 2 s; the full muP
experiment (widths 64-2048, nine learning rates, three seeds, SP and muP) under 2 minutes
on 2 cores and the quick one used by ``scalelab report --quick`` under 20 s.

Peers measured in the same run:

* ``SweepFit`` ``impl="loop"``: the same stratified bootstrap written the plain way, one
  resample and one budget at a time (a Python loop over 1,000 x 10 groups), which the
  library replaces by ``reduceat`` over a (resamples, runs) matrix;
* ``MupExperiment`` ``impl="one_lr_at_a_time"``: the same training with each learning rate
  run on its own instead of batched along a leading learning-rate axis (quick size only;
  the full size would take minutes). The full size itself runs only with ``SCALELAB_BENCH_FULL=1``
  (the nightly job sets it).
"""

from __future__ import annotations

import numpy as np

from asv_benchmarks._util import full_only, require_full
from scalelab.simulations import hyperparams as hp
from scalelab.simulations import mup
from scalelab.report.sections.hparams import FULL_MUP, QUICK_MUP


def _sweep_500() -> "pd.DataFrame":  # noqa: F821
    """500 runs: 10 budgets x 10 learning rates x 5 batch sizes from DeepSeek's Eq. (1)."""
    return hp.simulate_hparam_sweep(budgets=np.geomspace(1e17, 1e20, 10), lr_steps=np.arange(-5, 5) * 0.25,
                                    batch_steps=np.arange(-2, 3) * 0.5, noise=0.001, seed=0)


def _loop_bootstrap(runs, margin: float, n_bootstrap: int, seed: int) -> np.ndarray:
    """Peer: the bootstrap one resample and one budget at a time; returns (K, 2) lr and batch exponents."""
    rng = np.random.default_rng(seed)
    groups = [g for _, g in runs.groupby("compute", sort=True)]
    log_c = np.log([g["compute"].iloc[0] for g in groups])  # (G,)
    out = np.empty((n_bootstrap, 2))
    for k in range(n_bootstrap):
        lr_opt, bs_opt = [], []
        for g in groups:
            pick = g.iloc[rng.integers(0, len(g), len(g))]
            near = pick[pick["loss"] <= pick["loss"].min() * (1.0 + margin)]
            lr_opt.append(np.log(near["lr"]).mean())
            bs_opt.append(np.log(near["batch_size"]).mean())
        out[k, 0] = np.polyfit(log_c, lr_opt, 1)[0]
        out[k, 1] = np.polyfit(log_c, bs_opt, 1)[0]
    return out


class SweepFit:
    """``fit_hparam_sweep`` on 500 runs with 1,000 stratified bootstrap resamples, against the loop peer."""

    params = (["scalelab", "loop"],)
    param_names = ["impl"]
    timeout = 300

    def setup(self, impl):
        self.runs = _sweep_500()
        assert len(self.runs) == 500

    def time_fit_500_runs_1000_bootstraps(self, impl):
        if impl == "scalelab":
            hp.fit_hparam_sweep(self.runs, margin=0.01, n_bootstrap=1000, seed=0)
        else:
            _loop_bootstrap(self.runs, 0.01, 1000, 0)

    def peakmem_fit_500_runs_1000_bootstraps(self, impl):
        self.time_fit_500_runs_1000_bootstraps(impl)


class MupExperiment:
    """The muP experiment at the report's quick and full sizes, both parametrisations per call."""

    params = (["quick", *full_only("full")], ["batched_lrs", "one_lr_at_a_time"])
    param_names = ["size", "impl"]
    number = 1
    repeat = (1, 3, 60.0)
    timeout = 600

    def setup(self, size, impl):
        if size == "full" and impl == "one_lr_at_a_time":
            raise NotImplementedError("the unbatched peer runs at the quick size only")
        if size == "full":
            require_full("the full muP experiment (up to 2 minutes per call)")
        self.settings = QUICK_MUP if size == "quick" else FULL_MUP
        mup.mup_experiment(widths=(64,), lrs=(1e-3,), seeds=(0,), steps=2)  # warm imports and first-call paths

    def time_mup_experiment(self, size, impl):
        for p in mup.PARAMETRIZATIONS:
            if impl == "batched_lrs":
                mup.mup_experiment(parametrization=p, **self.settings)
            else:
                for lr in mup.DEFAULT_LRS:
                    mup.mup_experiment(parametrization=p, lrs=(lr,), **self.settings)
