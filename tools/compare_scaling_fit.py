"""Time the Numba scaling-law fit against the published scipy procedure, interleaved in one process.

Usage: ``python tools/compare_scaling_fit.py [SCIPY_STARTS]`` (from the repository root, with
the package installed). On the 240 Chinchilla Figure-4 runs it times
:func:`scalelab.simulations.scaling.fit_scaling_law`'s two phases (grid search, bootstrap)
and scipy's ``L-BFGS-B`` grid and bootstrap, ours before and after every scipy run, and
prints seconds (wall and CPU), objectives and parameters. The asv benchmarks in
``asv_benchmarks/scaling.py`` time the same pair one at a time.
"""

from __future__ import annotations

import sys
import time

import numba
import numpy as np

from scalelab.simulations.scaling import (
    PASS1_FTOL, PASS1_GTOL, drop_highest_loss, load_chinchilla_fig4_runs, minimize_over_grid,
)
from scalelab.simulations.scaling_fit import (
    besiroglu_grid, bootstrap_counts, bootstrap_lbfgs, scipy_bootstrap, scipy_grid_search, warm_up,
)


def compare_with_scipy(n_bootstrap: int = 4000, repeats: int = 1, scipy_starts: int | None = None) -> dict:
    """Time :func:`scalelab.simulations.scaling.fit_scaling_law`'s two phases and the published scipy
    procedure interleaved in one process on the 240 Chinchilla Figure-4 runs.

    ``scipy_starts`` times scipy on the first that many grid starts only and scales the
    grid time to 4,500 starts (the full scipy grid takes about a minute on a quiet machine);
    None runs the full grid. Returns a dict of seconds, objectives and parameters.
    """
    runs = drop_highest_loss(load_chinchilla_fig4_runs(), 5)
    log_n, log_d, log_loss = (np.log(runs[c].to_numpy()) for c in ("N", "D", "loss"))
    grid = besiroglu_grid()
    warm_up()
    counts = bootstrap_counts(log_n.size, n_bootstrap, 0)
    # Wall time (what a user waits) and process CPU time (all threads; robust to other load on a
    # shared machine: wall on a quiet machine is about CPU / threads for the parallel fitter).
    clock = {k: [] for k in ("numba_grid", "numba_bootstrap", "scipy_grid", "scipy_bootstrap")}
    cpu = {k: [] for k in clock}

    def timed(key, fn, scale=1.0):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        clock[key].append((time.perf_counter() - w0) * scale)
        cpu[key].append((time.process_time() - c0) * scale)
        return out

    def ours():
        th, ob = timed("numba_grid", lambda: minimize_over_grid(log_n, log_d, log_loss, grid))
        timed("numba_bootstrap", lambda: bootstrap_lbfgs(log_n, log_d, log_loss, th, counts, ftol=PASS1_FTOL,
                                                         gtol=PASS1_GTOL))
        return th, ob

    for _ in range(repeats):
        theta, objective = ours()
        sub = grid if scipy_starts is None else grid[:scipy_starts]
        s_thetas, s_obj = timed("scipy_grid", lambda: scipy_grid_search(log_n, log_d, log_loss, sub),
                                scale=grid.shape[0] / sub.shape[0])
        s_best = int(np.nanargmin(s_obj))
        timed("scipy_bootstrap", lambda: scipy_bootstrap(log_n, log_d, log_loss, s_thetas[s_best], counts))
    ours()  # ours before and after every scipy run, so a change in machine load hits both
    result = {f"{k}_s": min(v) for k, v in clock.items()}
    result.update({f"{k}_cpu_s": min(v) for k, v in cpu.items()})
    result.update({
        "numba_objective": objective, "scipy_objective": float(s_obj[s_best]),
        "numba_theta": theta, "scipy_theta": s_thetas[s_best], "scipy_starts": sub.shape[0],
        "threads": numba.get_num_threads(),
    })
    result["cpu_ratio"] = (result["scipy_grid_cpu_s"] + result["scipy_bootstrap_cpu_s"]) / (
        result["numba_grid_cpu_s"] + result["numba_bootstrap_cpu_s"]
    )
    result["ratio"] = (result["scipy_grid_s"] + result["scipy_bootstrap_s"]) / (
        result["numba_grid_s"] + result["numba_bootstrap_s"]
    )
    return result


if __name__ == "__main__":
    res = compare_with_scipy(scipy_starts=int(sys.argv[1]) if len(sys.argv) > 1 else None)
    for key, value in res.items():
        print(f"{key}: {value}")
