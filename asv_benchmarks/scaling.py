"""Benchmarks of the Approach-3 scaling-law fit (scalelab.simulations.scaling / scalelab.simulations.scaling_fit).

Data: the 240 Chinchilla Figure-4 runs (Besiroglu et al. 2024; 5 highest losses dropped).
Peer: the published procedure, scipy ``L-BFGS-B`` with finite-difference gradients
(``scalelab.simulations.scaling_fit.scipy_grid_search`` / ``scipy_bootstrap``, BLAS limited to one
thread), timed in full: all 4,500 starts and 4,000 refits take minutes, so those cases run only
with ``SCALELAB_BENCH_FULL=1`` (the nightly job sets it), once (``repeat`` stops after 30 s),
with a 20-minute timeout. ``impl="scipy"`` runs
single-threaded only; the compiled fitter runs on 1 and 2 threads.
``python tools/compare_scaling_fit.py [SCIPY_STARTS]`` times the same pair interleaved.
The cold compile of the fitting kernels also runs only with ``SCALELAB_BENCH_FULL=1``.
"""

import numpy as np

from asv_benchmarks._util import full_only, require_full
from scalelab.simulations import scaling as sc
from scalelab.simulations import scaling_fit as sf

_CACHE = {}


def _data():
    if "data" not in _CACHE:
        runs = sc.drop_highest_loss(sc.load_chinchilla_fig4_runs(), sc.BESIROGLU2024_DROPPED_RUNS)
        _CACHE["data"] = tuple(np.log(runs[c].to_numpy()) for c in ("N", "D", "loss"))
    return _CACHE["data"]


def _optimum():
    if "theta" not in _CACHE:
        sf.warm_up()
        _CACHE["theta"] = sc.minimize_over_grid(*_data(), sf.besiroglu_grid())[0]
    return _CACHE["theta"]


class _FitBase:
    params = (["numba", *full_only("scipy")], [1, 2])
    param_names = ["impl", "threads"]
    number = 1
    repeat = (1, 5, 30.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 1200.0

    def _skip_scipy_threads(self, impl, threads):
        if impl == "scipy" and threads != 1:
            raise NotImplementedError("scipy peer is single-threaded")
        if impl == "scipy":
            require_full("the full-size scipy peer")


class FitGrid(_FitBase):
    """Grid phase: L-BFGS from all 4,500 published starts, best start wins."""

    def setup(self, impl, threads):
        self._skip_scipy_threads(impl, threads)
        log_n, log_d, log_loss = _data()
        grid = sf.besiroglu_grid()
        if impl == "numba":
            sf.warm_up()
            self.run = lambda: sc.minimize_over_grid(log_n, log_d, log_loss, grid, threads=threads)
            self.run()
        else:
            self.run = lambda: sf.scipy_grid_search(log_n, log_d, log_loss, grid)

    def time_grid(self, impl, threads):
        self.run()


class FitBootstrap(_FitBase):
    """Bootstrap phase: 4,000 seeded resamples, each refitted from the full-data optimum."""

    def setup(self, impl, threads):
        self._skip_scipy_threads(impl, threads)
        log_n, log_d, log_loss = _data()
        theta = _optimum()
        counts = sf.bootstrap_counts(log_n.size, sc.BESIROGLU2024_N_BOOTSTRAP, 0)
        if impl == "numba":
            self.run = lambda: sf.bootstrap_lbfgs(log_n, log_d, log_loss, theta, counts, ftol=sc.PASS1_FTOL,
                                                  gtol=sc.PASS1_GTOL, threads=threads)
            self.run()
        else:
            self.run = lambda: sf.scipy_bootstrap(log_n, log_d, log_loss, theta, counts)

    def time_bootstrap(self, impl, threads):
        self.run()


class FitEndToEnd:
    """``fit_scaling_law`` as users call it: 4,500 starts + 4,000 bootstraps (the < 6 s bar)."""

    params = ([1, 2],)
    param_names = ["threads"]
    number = 1
    repeat = (1, 5, 30.0)
    rounds = 1
    timeout = 600.0

    def setup(self, threads):
        sf.warm_up()
        self.runs = sc.drop_highest_loss(sc.load_chinchilla_fig4_runs(), sc.BESIROGLU2024_DROPPED_RUNS)
        sc.fit_scaling_law(self.runs, n_bootstrap=10, threads=threads)

    def time_fit_scaling_law(self, threads):
        sc.fit_scaling_law(self.runs, n_bootstrap=sc.BESIROGLU2024_N_BOOTSTRAP, threads=threads)


class Objective:
    """One objective + gradient evaluation over the 240 runs (the inner loop of every fit)."""

    params = (["numba", "numpy"],)
    param_names = ["impl"]

    def setup(self, impl):
        log_n, log_d, log_loss = _data()
        theta = np.array([6.17, 7.67, 0.597, 0.347, 0.367])
        w = np.ones_like(log_n)
        grad = np.empty(5)
        if impl == "numba":
            self.run = lambda: sf._objective_grad(theta, log_n, log_d, log_loss, w, sf.HUBER_DELTA, 1.0, grad)
        else:
            self.run = lambda: (sf.huber_lse_objective(theta, log_n, log_d, log_loss),
                                sf.huber_lse_gradient(theta, log_n, log_d, log_loss))
        self.run()

    def time_objective_and_gradient(self, impl):
        self.run()


def timeraw_import_and_load_kernels():
    """Fresh process: import and load the cached kernels (what CI pays after the first run)."""
    return """
from scalelab.simulations import scaling_fit
scaling_fit.warm_up()
"""


def timeraw_compile_kernels_cold():
    """Fresh process with an empty Numba cache: full compile of every fitting kernel."""
    return """
import os, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()
from scalelab.simulations import scaling_fit
scaling_fit.warm_up()
"""


# Generous: a shared machine or a stale cache (any edit of scaling_fit.py) turns a load into a compile.
timeraw_import_and_load_kernels.timeout = 600.0
timeraw_compile_kernels_cold.timeout = 600.0
# One process each, no warm-up call (each call is a whole interpreter; asv's defaults would run the
# cold compile four times per run), three loads and one compile.
timeraw_import_and_load_kernels.repeat = (1, 3, 10.0)
timeraw_compile_kernels_cold.repeat = 1
for _raw in (timeraw_import_and_load_kernels, timeraw_compile_kernels_cold):
    _raw.rounds = 1
    _raw.warmup_time = 0.0
del _raw
# A minute or more of CPU: followed nightly (SCALELAB_BENCH_FULL=1) only.
timeraw_compile_kernels_cold.setup = lambda: require_full("the cold compile")
