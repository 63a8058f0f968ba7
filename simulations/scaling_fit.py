"""Approach-3 scaling-law fitting kernels: a Numba L-BFGS beside the published scipy procedure.

The model (Hoffmann et al. 2022, App. D.2, Eq. 11) is fitted in log space with the
log-sum-exp parametrization ``theta = (a, b, e, alpha, beta)``, ``A, B, E = exp(a, b, e)``:

    r_i(theta) = LSE(a - alpha * log N_i, b - beta * log D_i, e) - log L_i
    objective  = sum_i w_i * Huber_delta(r_i),   delta = 1e-3

with ``w_i = 1`` for a plain fit and ``w_i`` = the multiplicity of run ``i`` in a
bootstrap resample.

Variants (all minimise the same objective; tests check them against each other):

* :func:`huber_lse_objective` / :func:`huber_lse_gradient`: plain NumPy, float64,
  the reference the kernels are tested against.
* :func:`scipy_grid_search` + :func:`scipy_bootstrap` (together
  :func:`fit_scaling_law_scipy_reference`): the procedure as Besiroglu et al. 2024
  published it, scipy ``L-BFGS-B`` with finite-difference gradients from each start of
  the grid, then every bootstrap refit started from the full-data optimum. This is the
  performance peer; it takes about a minute on the 240 Chinchilla runs.
* :func:`grid_search_lbfgs` + :func:`bootstrap_lbfgs`: the fast path. Why it is faster:
  (1) the gradient is analytic (one pass over the runs gives value and all five partial
  derivatives, where finite differences need six passes); (2) the L-BFGS loop, its
  two-loop recursion and a strong-Wolfe line search are compiled with Numba, so a start
  costs microseconds of interpreter overhead instead of milliseconds; (3) starts (or
  bootstrap resamples) are independent, so a ``prange`` over strided blocks of them uses
  every core; (4) a bootstrap resample is compressed to its distinct runs with integer
  weights, so the ~37 % of runs a resample leaves out cost nothing.

The compiled optimiser converges more tightly than scipy's defaults (relative objective
change 1e-13 instead of 2.2e-9, gradient 1e-10 instead of 1e-5), so it reaches an
objective at least as low from the same start.

``python tools/compare_scaling_fit.py [SCIPY_STARTS]`` times both procedures interleaved
in one process on the Chinchilla Figure-4 runs.
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import njit, prange
from threadpoolctl import threadpool_limits

from scalelab.kernels._common import aligned_empty, numba_threads
from scalelab.kernels._tiles import row_sum
from scalelab.kernels._vecmath import FASTMATH_INF_SAFE_UNFUSED, exp_nonpositive_clamped, log_1_to_4

#: Huber threshold on log-loss residuals (Hoffmann et al. 2022, App. D.2: delta = 1e-3).
HUBER_DELTA = 1e-3

#: Starting grid of Hoffmann et al. 2022 App. D.2 as run by Besiroglu et al. 2024
#: (arXiv 2404.10102, Sec. 2): a = ln A and b = ln B in {0, 5, ..., 25},
#: e = ln E in {-1, -0.5, ..., 1}, alpha and beta in {0, 0.5, ..., 2}: 4,500 starts.
BESIROGLU_GRID_VALUES = {
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}

PARAM_ORDER = ("a", "b", "e", "alpha", "beta")

# Convergence of the compiled L-BFGS: relative objective change and max |gradient| of
# the objective scaled by 1/(delta * sum(w)) (so both are dimensionless).
_FTOL = 1e-13
_GTOL = 1e-10
_MAX_ITER = 2000
_MEMORY = 10
_MAX_LINE_SEARCH = 40

def grid_from_values(values: dict) -> np.ndarray:
    """Cartesian product of per-parameter start values as a ``(S, 5)`` array in ``PARAM_ORDER``."""
    missing = [k for k in PARAM_ORDER if k not in values]
    if missing:
        raise ValueError(f"init_grid must give values for {PARAM_ORDER}, missing {missing}")
    axes = [np.asarray(values[k], dtype=np.float64).ravel() for k in PARAM_ORDER]
    for name, ax in zip(PARAM_ORDER, axes):
        if ax.size == 0 or not np.all(np.isfinite(ax)):
            raise ValueError(f"init_grid[{name!r}] must be a non-empty list of finite numbers")
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.ascontiguousarray(np.stack([m.ravel() for m in mesh], axis=1))  # (S, 5)


def besiroglu_grid() -> np.ndarray:
    """The 4,500 published starting points, ``(4500, 5)`` in ``(a, b, e, alpha, beta)`` order."""
    return grid_from_values(BESIROGLU_GRID_VALUES)


# --------------------------------------------------------------------------- reference


def _lse_terms(theta, log_n, log_d):
    a, b, e, alpha, beta = theta
    t = np.stack(
        [a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0
    )  # (3, n)
    m = t.max(axis=0)  # (n,)
    u = np.exp(t - m)  # (3, n)
    s = u.sum(axis=0)  # (n,)
    return m + np.log(s), u / s  # (n,), (3, n)


def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Elementwise Huber loss: ``r**2/2`` inside ``|r| <= delta``, ``delta*(|r| - delta/2)`` outside."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def huber_lse_objective(theta, log_n, log_d, log_loss, weights=None, delta: float = HUBER_DELTA) -> float:
    """Sum of Huber losses of log-space residuals (NumPy reference, float64).

    Written lean (two ``logaddexp`` calls, no temporaries beyond the residuals) because it is
    also the objective of the scipy peer, which evaluates it hundreds of thousands of times.
    """
    a, b, e, alpha, beta = theta
    pred = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)  # (n,)
    r = pred - log_loss
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))  # (n,)
    return float(h.sum() if weights is None else weights @ h)


def huber_lse_gradient(theta, log_n, log_d, log_loss, weights=None, delta: float = HUBER_DELTA) -> np.ndarray:
    """Analytic gradient of :func:`huber_lse_objective` with respect to ``(a, b, e, alpha, beta)``."""
    pred, p = _lse_terms(np.asarray(theta, dtype=np.float64), log_n, log_d)
    dh = np.clip(pred - log_loss, -delta, delta)  # (n,) Huber derivative
    if weights is not None:
        dh = dh * weights
    return np.array(
        [
            (dh * p[0]).sum(),
            (dh * p[1]).sum(),
            (dh * p[2]).sum(),
            -(dh * p[0] * log_n).sum(),
            -(dh * p[1] * log_d).sum(),
        ]
    )


# ----------------------------------------------------------------- scipy (published) peer


def scipy_grid_search(log_n, log_d, log_loss, grid, delta: float = HUBER_DELTA):
    """Published procedure, part 1: scipy L-BFGS-B with numerical gradients from every start.

    Returns ``(thetas (S, 5), objectives (S,))``.
    """
    from scipy.optimize import minimize

    thetas = np.empty_like(grid)  # (S, 5)
    objectives = np.empty(grid.shape[0])  # (S,)
    args = (log_n, log_d, log_loss, None, delta)
    # One BLAS thread: L-BFGS-B's tiny LAPACK calls run ~5x slower when OpenBLAS hands them to
    # a second thread, which would flatter the compiled fitter unfairly.
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(1):
        for s in range(grid.shape[0]):
            res = minimize(huber_lse_objective, grid[s], args=args, method="L-BFGS-B")
            thetas[s] = res.x
            objectives[s] = res.fun
    return thetas, objectives


def scipy_bootstrap(log_n, log_d, log_loss, theta0, counts, delta: float = HUBER_DELTA):
    """Published procedure, part 2: each resample refitted by scipy L-BFGS-B from ``theta0``.

    ``counts`` is ``(B, n)``: how often each run appears in each resample.
    Returns ``(thetas (B, 5), objectives (B,))``.
    """
    from scipy.optimize import minimize

    n_boot = counts.shape[0]
    thetas = np.empty((n_boot, 5))
    objectives = np.empty(n_boot)
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(1):
        for k in range(n_boot):
            w = counts[k].astype(np.float64)
            res = minimize(
                huber_lse_objective, theta0, args=(log_n, log_d, log_loss, w, delta), method="L-BFGS-B"
            )
            thetas[k] = res.x
            objectives[k] = res.fun
    return thetas, objectives


def bootstrap_counts(n_runs: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Seeded resample multiplicities, ``(n_bootstrap, n_runs)`` int32.

    Row ``k`` counts how often each run is drawn when ``n_runs`` runs are drawn with
    replacement; drawn once up front, so every refit sees the same resample whatever
    the thread count.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_runs, size=(n_bootstrap, n_runs))  # (B, n)
    flat = (idx + n_runs * np.arange(n_bootstrap)[:, None]).ravel()
    return np.bincount(flat, minlength=n_bootstrap * n_runs).reshape(n_bootstrap, n_runs).astype(np.int32)


def fit_scaling_law_scipy_reference(log_n, log_d, log_loss, *, n_bootstrap=4000, seed=0, grid=None):
    """The published Approach-3 procedure end to end (the performance peer).

    Returns a dict with ``theta`` (best start's optimum), ``objective``, ``bootstrap``
    (``(B, 5)`` refits) and the seconds spent in ``grid_seconds`` / ``bootstrap_seconds``.
    """
    grid = besiroglu_grid() if grid is None else grid
    t0 = time.perf_counter()
    thetas, objectives = scipy_grid_search(log_n, log_d, log_loss, grid)
    best = int(np.nanargmin(objectives))
    t1 = time.perf_counter()
    counts = bootstrap_counts(log_n.size, n_bootstrap, seed)
    boot, _ = scipy_bootstrap(log_n, log_d, log_loss, thetas[best], counts)
    t2 = time.perf_counter()
    return {
        "theta": thetas[best].copy(),
        "objective": float(objectives[best]),
        "bootstrap": boot,
        "grid_seconds": t1 - t0,
        "bootstrap_seconds": t2 - t1,
    }


# ----------------------------------------------------------------------- Numba kernels


#: Rows of the objective's per-run workspace (see :func:`_objective_terms`).
_TERMS = 6


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED, error_model="numpy")
def _objective_terms(theta, log_n, log_d, log_loss, w, delta, terms):
    """Per-run summands of the objective and its gradient, written to ``terms`` (6, n).

    Rows: ``w * Huber(r)`` and, with ``c = w * clip(r) / s``, the parts of
    ``c * d LSE / d(a, b, e)`` and ``-c * u * log N``, ``-c * u * log D`` for
    ``alpha`` and ``beta``. Branch-free (selects only, no libm calls, no
    zero-division checks) and free of reductions, so LLVM vectorizes the loop
    over runs without ``reassoc``; the max-shifted log-sum-exp never overflows.
    """
    a = theta[0]
    b = theta[1]
    e = theta[2]
    alpha = theta[3]
    beta = theta[4]
    for i in range(log_n.shape[0]):
        t1 = a - alpha * log_n[i]
        t2 = b - beta * log_d[i]
        m = t1 if t1 > t2 else t2
        m = m if m > e else e
        u1 = exp_nonpositive_clamped(t1 - m)
        u2 = exp_nonpositive_clamped(t2 - m)
        u3 = exp_nonpositive_clamped(e - m)
        s = u1 + u2 + u3  # in [1, 3]
        r = m + log_1_to_4(s) - log_loss[i]
        # Huber via the clipped residual: rc * (r - rc/2) is r^2/2 inside, delta*(|r| - delta/2) outside.
        rc = r if r > -delta else -delta
        rc = rc if rc < delta else delta
        wi = w[i]
        inv = wi * rc / s
        p1 = u1 * inv
        p2 = u2 * inv
        terms[0, i] = wi * rc * (r - 0.5 * rc)
        terms[1, i] = p1
        terms[2, i] = p2
        terms[3, i] = u3 * inv
        terms[4, i] = -(p1 * log_n[i])
        terms[5, i] = -(p2 * log_d[i])


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED, error_model="numpy")
def _objective_grad(theta, log_n, log_d, log_loss, w, delta, scale, grad, terms=None):
    """Scaled objective ``scale * sum w*Huber(r)`` and its gradient (written to ``grad``).

    ``terms`` is an optional (6, n) float64 workspace (allocated when absent).
    The per-run summands come from one vectorised pass
    (:func:`_objective_terms`); each sum then runs in the fixed lane order of
    :func:`scalelab.kernels._tiles.row_sum`, so the result is the same for every
    compile (fresh or loaded from the Numba cache).
    """
    n = log_n.shape[0]
    if terms is None:
        terms = np.empty((_TERMS, n))
    _objective_terms(theta, log_n, log_d, log_loss, w, delta, terms)
    for j in range(5):
        grad[j] = row_sum(terms, j + 1, n) * scale
    return row_sum(terms, 0, n) * scale


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _dot5(u, v):
    return u[0] * v[0] + u[1] * v[1] + u[2] * v[2] + u[3] * v[3] + u[4] * v[4]


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _cubic_min(a_lo, f_lo, g_lo, a_hi, f_hi, g_hi):
    """Minimiser of the cubic through two points with slopes, safeguarded to the inner 80 %."""
    lo = min(a_lo, a_hi)
    hi = max(a_lo, a_hi)
    width = hi - lo
    if not (math.isfinite(f_hi) and math.isfinite(f_lo)):
        return 0.5 * (a_lo + a_hi)
    d1 = g_lo + g_hi - 3.0 * (f_lo - f_hi) / (a_lo - a_hi)
    disc = d1 * d1 - g_lo * g_hi
    if disc >= 0.0:
        d2 = math.sqrt(disc)
        if a_hi < a_lo:
            d2 = -d2
        denom = g_hi - g_lo + 2.0 * d2
        if denom != 0.0:
            a = a_hi - (a_hi - a_lo) * (g_hi + d2 - d1) / denom
            if lo + 0.1 * width <= a <= hi - 0.1 * width:
                return a
    return 0.5 * (a_lo + a_hi)


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _line_search(x, f0, gd0, d, step, log_n, log_d, log_loss, w, delta, scale, xt, gt, terms):
    """Strong-Wolfe line search (Nocedal & Wright 2006, Alg. 3.5/3.6) along ``d``.

    On success ``xt``/``gt`` hold the accepted point and its gradient; returns
    ``(f, n_evals, ok)``.
    """
    c1 = 1e-4
    c2 = 0.9
    a_prev = 0.0
    f_prev = f0
    g_prev = gd0
    a = step
    n_eval = 0
    a_lo = 0.0
    a_hi = 0.0
    f_lo = f0
    g_lo = gd0
    f_hi = 0.0
    g_hi = 0.0
    zoom = False
    for it in range(_MAX_LINE_SEARCH):
        for j in range(5):
            xt[j] = x[j] + a * d[j]
        ft = _objective_grad(xt, log_n, log_d, log_loss, w, delta, scale, gt, terms)
        n_eval += 1
        if not (math.isfinite(ft) and math.isfinite(xt[0] + xt[1] + xt[2] + xt[3] + xt[4])):
            # Overshot into overflow: shrink toward the last good step.
            a = a_prev + 0.25 * (a - a_prev)
            continue
        gdt = _dot5(gt, d)
        if ft > f0 + c1 * a * gd0 or (it > 0 and ft >= f_prev):
            a_lo, f_lo, g_lo = a_prev, f_prev, g_prev
            a_hi, f_hi, g_hi = a, ft, gdt
            zoom = True
            break
        if abs(gdt) <= -c2 * gd0:
            return ft, n_eval, True
        if gdt >= 0.0:
            a_lo, f_lo, g_lo = a, ft, gdt
            a_hi, f_hi, g_hi = a_prev, f_prev, g_prev
            zoom = True
            break
        a_prev, f_prev, g_prev = a, ft, gdt
        a = a * 4.0
    if not zoom:
        return f0, n_eval, False
    for it in range(_MAX_LINE_SEARCH):
        if abs(a_hi - a_lo) <= 1e-16 * max(abs(a_lo), 1e-300):
            break
        a = _cubic_min(a_lo, f_lo, g_lo, a_hi, f_hi, g_hi)
        for j in range(5):
            xt[j] = x[j] + a * d[j]
        ft = _objective_grad(xt, log_n, log_d, log_loss, w, delta, scale, gt, terms)
        n_eval += 1
        gdt = _dot5(gt, d)
        if not (math.isfinite(ft) and math.isfinite(xt[0] + xt[1] + xt[2] + xt[3] + xt[4])):
            a_hi, f_hi, g_hi = a, math.inf, 0.0
        elif ft > f0 + c1 * a * gd0 or ft >= f_lo:
            a_hi, f_hi, g_hi = a, ft, gdt
        else:
            if abs(gdt) <= -c2 * gd0:
                return ft, n_eval, True
            if gdt * (a_hi - a_lo) >= 0.0:
                a_hi, f_hi, g_hi = a_lo, f_lo, g_lo
            a_lo, f_lo, g_lo = a, ft, gdt
    # Wolfe curvature not met: accept the best sufficient-decrease point if it moved.
    if a_lo > 0.0 and f_lo < f0:
        for j in range(5):
            xt[j] = x[j] + a_lo * d[j]
        ft = _objective_grad(xt, log_n, log_d, log_loss, w, delta, scale, gt, terms)
        n_eval += 1
        return ft, n_eval, True
    return f0, n_eval, False


@njit(cache=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _lbfgs(theta0, log_n, log_d, log_loss, w, delta, ftol, gtol, max_iter, out):
    """Minimise the weighted Huber/LSE objective from ``theta0`` by L-BFGS (memory 10).

    Writes the optimum to ``out`` and returns ``(objective, n_iterations, n_evaluations)``;
    the objective is the unscaled sum ``sum w*Huber(r)``.
    """
    wsum = 0.0
    for i in range(w.shape[0]):
        wsum += w[i]
    scale = 1.0 / (delta * wsum)
    m = _MEMORY
    s_hist = np.zeros((m, 5))
    y_hist = np.zeros((m, 5))
    rho = np.zeros(m)
    alph = np.zeros(m)
    x = theta0.copy()
    g = np.empty(5)
    xt = np.empty(5)
    gt = np.empty(5)
    d = np.empty(5)
    terms = np.empty((_TERMS, log_n.shape[0]))  # (6, n) per-run summands
    f = _objective_grad(x, log_n, log_d, log_loss, w, delta, scale, g, terms)
    n_eval = 1
    if not math.isfinite(f):
        for j in range(5):
            out[j] = x[j]
        return math.inf, 0, n_eval
    n_stored = 0
    head = 0  # next slot to write
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        gmax = 0.0
        for j in range(5):
            gmax = max(gmax, abs(g[j]))
        if gmax <= gtol:
            break
        # Two-loop recursion: d = -H g.
        for j in range(5):
            d[j] = g[j]
        for k in range(n_stored):
            idx = (head - 1 - k) % m
            alph[idx] = rho[idx] * _dot5(s_hist[idx], d)
            for j in range(5):
                d[j] -= alph[idx] * y_hist[idx, j]
        if n_stored > 0:
            newest = (head - 1) % m
            gamma = _dot5(s_hist[newest], y_hist[newest]) / _dot5(y_hist[newest], y_hist[newest])
            for j in range(5):
                d[j] *= gamma
        for k in range(n_stored - 1, -1, -1):
            idx = (head - 1 - k) % m
            bet = rho[idx] * _dot5(y_hist[idx], d)
            for j in range(5):
                d[j] += s_hist[idx, j] * (alph[idx] - bet)
        for j in range(5):
            d[j] = -d[j]
        gd = _dot5(g, d)
        if not gd < 0.0:
            n_stored = 0
            for j in range(5):
                d[j] = -g[j]
            gd = -_dot5(g, g)
        step = 1.0 if n_stored > 0 else min(1.0, 1.0 / gmax)
        f_new, k_eval, ok = _line_search(x, f, gd, d, step, log_n, log_d, log_loss, w, delta, scale, xt, gt, terms)
        n_eval += k_eval
        if not ok:
            if n_stored > 0:
                n_stored = 0  # drop the curvature memory and retry along -g
                continue
            break
        sy = 0.0
        yy = 0.0
        for j in range(5):
            s_hist[head, j] = xt[j] - x[j]
            y_hist[head, j] = gt[j] - g[j]
            sy += s_hist[head, j] * y_hist[head, j]
            yy += y_hist[head, j] * y_hist[head, j]
        if sy > 1e-300 and sy > 1e-14 * yy:
            rho[head] = 1.0 / sy
            head = (head + 1) % m
            n_stored = min(n_stored + 1, m)
        f_old = f
        for j in range(5):
            x[j] = xt[j]
            g[j] = gt[j]
        f = f_new
        if f_old - f <= ftol * max(abs(f_old), abs(f), 1e-300):
            break
    for j in range(5):
        out[j] = x[j]
    return f / scale, n_iter, n_eval


@njit(cache=True, parallel=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _grid_driver(grid, log_n, log_d, log_loss, w, delta, ftol, gtol, max_iter, n_blocks, thetas, objectives, evals):
    n_starts = grid.shape[0]
    # Strided blocks: neighbouring grid points cost alike, so striding balances threads.
    for blk in prange(n_blocks):
        out = np.empty(5)
        for s in range(blk, n_starts, n_blocks):
            f, _, ne = _lbfgs(grid[s], log_n, log_d, log_loss, w, delta, ftol, gtol, max_iter, out)
            for j in range(5):
                thetas[s, j] = out[j]
            objectives[s] = f
            evals[s] = ne


@njit(cache=True, parallel=True, fastmath=FASTMATH_INF_SAFE_UNFUSED)
def _bootstrap_driver(theta0, log_n, log_d, log_loss, counts, delta, ftol, gtol, max_iter, n_blocks, thetas, objectives):
    n_boot, n = counts.shape
    for blk in prange(n_blocks):
        out = np.empty(5)
        xn = np.empty(n)
        xd = np.empty(n)
        yl = np.empty(n)
        wk = np.empty(n)
        for k in range(blk, n_boot, n_blocks):
            # Compress the resample to its distinct runs with integer weights.
            m = 0
            for i in range(n):
                c = counts[k, i]
                if c > 0:
                    xn[m] = log_n[i]
                    xd[m] = log_d[i]
                    yl[m] = log_loss[i]
                    wk[m] = c
                    m += 1
            f, _, _ = _lbfgs(theta0, xn[:m], xd[:m], yl[:m], wk[:m], delta, ftol, gtol, max_iter, out)
            for j in range(5):
                thetas[k, j] = out[j]
            objectives[k] = f


def _as_f64(name, a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def grid_search_lbfgs(
    log_n, log_d, log_loss, grid, *, weights=None, delta=HUBER_DELTA, ftol=_FTOL, gtol=_GTOL, max_iter=_MAX_ITER, threads=None
):
    """Compiled L-BFGS from every row of ``grid`` (``(S, 5)``), all starts in parallel.

    Returns ``(thetas (S, 5), objectives (S,), evaluations (S,))``; objectives are the
    unscaled Huber sums, comparable with :func:`huber_lse_objective`.
    """
    log_n, log_d, log_loss = (_as_f64(k, v) for k, v in (("log_n", log_n), ("log_d", log_d), ("log_loss", log_loss)))
    w = np.ones_like(log_n) if weights is None else _as_f64("weights", weights)
    grid = np.ascontiguousarray(grid, dtype=np.float64)
    n_starts = grid.shape[0]
    thetas = aligned_empty((n_starts, 5), np.float64)  # (S, 5)
    objectives = aligned_empty(n_starts, np.float64)  # (S,)
    evals = np.empty(n_starts, dtype=np.int64)  # (S,)
    with numba_threads(threads) as nt:
        n_blocks = max(1, min(n_starts, 16 * nt))
        _grid_driver(
            grid, log_n, log_d, log_loss, w, float(delta), float(ftol), float(gtol), int(max_iter), n_blocks,
            thetas, objectives, evals,
        )
    return thetas, objectives, evals


def bootstrap_lbfgs(
    log_n, log_d, log_loss, theta0, counts, *, delta=HUBER_DELTA, ftol=_FTOL, gtol=_GTOL, max_iter=_MAX_ITER, threads=None
):
    """Refit every resample (rows of ``counts``, ``(B, n)``) from ``theta0`` in parallel.

    Returns ``(thetas (B, 5), objectives (B,))``. Each resample's result depends only
    on its row of ``counts``, so it is the same for any thread count.
    """
    log_n, log_d, log_loss = (_as_f64(k, v) for k, v in (("log_n", log_n), ("log_d", log_d), ("log_loss", log_loss)))
    counts = np.ascontiguousarray(counts, dtype=np.int32)
    theta0 = np.ascontiguousarray(theta0, dtype=np.float64)
    n_boot = counts.shape[0]
    thetas = aligned_empty((n_boot, 5), np.float64)  # (B, 5)
    objectives = aligned_empty(n_boot, np.float64)  # (B,)
    if n_boot == 0:
        return thetas, objectives
    with numba_threads(threads) as nt:
        n_blocks = max(1, min(n_boot, 16 * nt))
        _bootstrap_driver(
            theta0, log_n, log_d, log_loss, counts, float(delta), float(ftol), float(gtol), int(max_iter), n_blocks,
            thetas, objectives,
        )
    return thetas, objectives


def warm_up() -> None:
    """Compile (or load from cache) every kernel on the dtypes the fitters use."""
    rng = np.random.default_rng(0)
    log_n = np.log(rng.uniform(1e8, 1e10, 8))
    log_d = np.log(rng.uniform(1e9, 1e11, 8))
    log_loss = np.log(2.0 + rng.uniform(0, 1, 8))
    grid = besiroglu_grid()[:2]
    thetas, _, _ = grid_search_lbfgs(log_n, log_d, log_loss, grid)
    bootstrap_lbfgs(log_n, log_d, log_loss, thetas[0], bootstrap_counts(8, 2, 0))
