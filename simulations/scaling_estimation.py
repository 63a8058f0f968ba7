"""Estimating a scaling law from training runs: Approach 3, Approach 2, extrapolation.

Fitting follows Hoffmann et al.'s Approach 3 as replicated by Besiroglu et al. 2024:
:func:`fit_scaling_law` (Huber loss on log-loss residuals, log-sum-exp parametrization,
L-BFGS from a grid of starts, seeded bootstrap with percentile intervals; the compiled
optimiser is in :mod:`scalelab.simulations.scaling_fit`). :func:`fit_isoflop` is
Approach 2 (IsoFLOP profiles). :func:`extrapolate` fits below a compute cutoff and
predicts beyond it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab.simulations import scaling_fit as _fit
from scalelab.simulations.checks import as_positive_array as _positive
from scalelab.simulations.checks import check_int as _check_int
from scalelab.simulations.checks import check_level as _check_level
from scalelab.simulations.checks import float_or_array as _out
from scalelab.simulations.scaling_laws import TRAINING_FLOPS_PER_PARAM_TOKEN, ScalingLaw
from scalelab.simulations.scaling_runs import read_runs

#: Order of the fitted parameters in :attr:`ScalingFit.bootstrap` rows.
_PARAMS = ("E", "A", "B", "alpha", "beta")


# -------------------------------------------------------------------------------- fitting


def _resolve_grid(init_grid) -> np.ndarray:
    if init_grid is None:
        return _fit.besiroglu_grid()
    if isinstance(init_grid, dict):
        return _fit.grid_from_values(init_grid)
    grid = np.asarray(init_grid, dtype=np.float64)
    if grid.ndim != 2 or grid.shape[1] != 5 or grid.shape[0] == 0:
        raise ValueError(f"init_grid must be a (S, 5) array of (a, b, e, alpha, beta) starts, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise ValueError("init_grid must hold finite values")
    return np.ascontiguousarray(grid)


def _theta_to_params(theta: np.ndarray) -> np.ndarray:
    """``(..., 5)`` ``(a, b, e, alpha, beta)`` -> ``(..., 5)`` ``(E, A, B, alpha, beta)``.

    A log-coefficient above ~709 gives ``inf`` (without a RuntimeWarning); callers reject it.
    """
    theta = np.asarray(theta)
    with np.errstate(over="ignore"):
        return np.stack(
            [np.exp(theta[..., 2]), np.exp(theta[..., 0]), np.exp(theta[..., 1]), theta[..., 3], theta[..., 4]], axis=-1
        )


#: Starts kept for the tight polish after the first L-BFGS pass over the grid.
_POLISH_TOP = 16
#: First-pass tolerances (still tighter than scipy's defaults 2.2e-9 and 1e-5).
PASS1_FTOL = 1e-10
PASS1_GTOL = 1e-7


def minimize_over_grid(log_n, log_d, log_loss, grid, *, threads=None) -> tuple[np.ndarray, float]:
    """Best L-BFGS optimum over the starting ``grid``: ``(theta (5,), objective)``.

    Every start is run to the first-pass tolerance; the 16 best end points are then
    polished to the tight tolerance and the lowest objective wins (ties: first start).
    """
    thetas, objectives, _ = _fit.grid_search_lbfgs(
        log_n, log_d, log_loss, grid, ftol=PASS1_FTOL, gtol=PASS1_GTOL, threads=threads
    )
    finite = np.isfinite(objectives)
    if not finite.any():
        raise ValueError("no start of init_grid reached a finite objective")
    order = np.argsort(np.where(finite, objectives, np.inf), kind="stable")[:_POLISH_TOP]
    polished, pobj, _ = _fit.grid_search_lbfgs(log_n, log_d, log_loss, thetas[order], threads=threads)
    best = int(np.argmin(pobj))
    return polished[best].copy(), float(pobj[best])


@dataclass(frozen=True, eq=False)
class ScalingFit:
    """A fitted :class:`ScalingLaw` with its bootstrap.

    ``bootstrap`` is ``(n_valid, 5)`` in ``(E, A, B, alpha, beta)`` order (refits that
    diverged or left alpha, beta <= 0 are dropped and counted in ``n_bootstrap_failed``).
    Intervals are percentile intervals at ``level``.
    """

    law: ScalingLaw
    objective: float  # sum of Huber losses at the optimum
    theta: np.ndarray  # (5,) (a, b, e, alpha, beta)
    bootstrap: np.ndarray  # (n_valid, 5) (E, A, B, alpha, beta)
    n_runs: int
    n_starts: int
    n_bootstrap_failed: int = 0
    level: float = 0.95
    seed: int = 0

    @property
    def estimates(self) -> dict[str, float]:
        law = self.law
        a, b = law.exponents
        return {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": a, "b": b}

    def _samples(self, name: str) -> np.ndarray:
        if self.bootstrap.shape[0] < 2:
            raise ValueError("intervals need a bootstrap: refit with n_bootstrap >= 2")
        if name in _PARAMS:
            return self.bootstrap[:, _PARAMS.index(name)]
        al, be = self.bootstrap[:, 3], self.bootstrap[:, 4]
        if name == "a":
            return be / (al + be)
        if name == "b":
            return al / (al + be)
        raise ValueError(f"name must be one of {_PARAMS + ('a', 'b')}, got {name!r}")

    def _pct(self, samples: np.ndarray, axis=0):
        if np.shape(samples)[axis] == 0:
            raise ValueError("this fit has no bootstrap refits; intervals need n_bootstrap >= 1")
        q = 50.0 * (1.0 - self.level)
        return np.percentile(samples, [q, 100.0 - q], axis=axis)

    def interval(self, name: str) -> tuple[float, float]:
        """Percentile interval of E, A, B, alpha, beta, a or b."""
        lo, hi = self._pct(self._samples(name))
        return float(lo), float(hi)

    def standard_error(self, name: str) -> float:
        """Bootstrap standard error (sample standard deviation of the refits)."""
        return float(np.std(self._samples(name), ddof=1))

    def summary(self) -> pd.DataFrame:
        """One row per quantity: ``estimate, se, lo, hi``."""
        rows = []
        for name in _PARAMS + ("a", "b"):
            lo, hi = self.interval(name)
            rows.append({"name": name, "estimate": self.estimates[name], "se": self.standard_error(name), "lo": lo, "hi": hi})
        return pd.DataFrame(rows).set_index("name")

    def _bootstrap_laws_arrays(self):
        E, A, B, al, be = (self.bootstrap[:, j][:, None] for j in range(5))  # each (K, 1)
        return E, A, B, al, be

    def tokens_per_parameter(self, C):
        """``(estimate, lo, hi)`` of the compute-optimal D/N at budget(s) C."""
        scalar = np.ndim(C) == 0
        C = np.atleast_1d(_positive("C", C))  # (M,)
        E, A, B, al, be = self._bootstrap_laws_arrays()
        G = (al * A / (be * B)) ** (1.0 / (al + be))  # (K, 1)
        x = C[None, :] / TRAINING_FLOPS_PER_PARAM_TOKEN  # (1, M)
        ratio = x ** ((al - be) / (al + be)) / G**2  # (K, M): D/N = (C/6)^(b-a) / G^2
        lo, hi = self._pct(ratio)
        est = np.asarray(self.law.tokens_per_parameter(C))
        if scalar:
            return float(est[0]), float(lo[0]), float(hi[0])
        return est, lo, hi

    def loss_band(self, N, D):
        """``(estimate, lo, hi)`` of the predicted loss at (N, D), broadcast to 1-D."""
        N, D = np.broadcast_arrays(np.atleast_1d(_positive("N", N)), np.atleast_1d(_positive("D", D)))
        E, A, B, al, be = self._bootstrap_laws_arrays()
        pred = E + A * N[None, :] ** -al + B * D[None, :] ** -be  # (K, M)
        lo, hi = self._pct(pred)
        return np.asarray(self.law.loss(N, D)), lo, hi

    def optimal_loss_band(self, C):
        """``(estimate, lo, hi)`` of the compute-optimal loss at budget(s) C (each refit's own optimum)."""
        C = np.atleast_1d(_positive("C", C))  # (M,)
        E, A, B, al, be = self._bootstrap_laws_arrays()
        G = (al * A / (be * B)) ** (1.0 / (al + be))
        x = C[None, :] / TRAINING_FLOPS_PER_PARAM_TOKEN
        n = G * x ** (be / (al + be))  # (K, M)
        d = x ** (al / (al + be)) / G
        pred = E + A * n**-al + B * d**-be
        lo, hi = self._pct(pred)
        return np.asarray(self.law.optimal_loss(C)), lo, hi


class NotIdentifiableError(ValueError):
    """The runs cannot determine the five parameters of ``E + A/N**alpha + B/D**beta``."""


#: Distinct values of N (and of D) a fit needs: E, A and alpha are three numbers, and a power law
#: plus a constant through two points has a free parameter left.
MIN_DISTINCT_SIZES = 3


def check_identifiable(log_n: np.ndarray, log_d: np.ndarray) -> None:
    """Raise :class:`NotIdentifiableError` when the runs cannot determine the law.

    Two conditions, both necessary: at least ``MIN_DISTINCT_SIZES`` distinct N and
    distinct D, and a design ``[1, log N, log D]`` of rank 3 (N and D not tied by
    one power law across all runs, which would let the N and D terms trade off).
    Without them the optimiser returns wherever it started, which looks like a fit.
    """
    distinct_n = np.unique(log_n).size
    distinct_d = np.unique(log_d).size
    if min(distinct_n, distinct_d) < MIN_DISTINCT_SIZES:
        raise NotIdentifiableError(
            f"runs hold {distinct_n} distinct N and {distinct_d} distinct D; the law needs at least "
            f"{MIN_DISTINCT_SIZES} of each (vary both model size and tokens across runs)"
        )
    design = np.column_stack([np.ones_like(log_n), log_n - log_n.mean(), log_d - log_d.mean()])  # (R, 3)
    rank = np.linalg.matrix_rank(design, tol=1e-9 * max(1.0, float(np.abs(design).max())) * len(log_n))
    if rank < 3:
        raise NotIdentifiableError(
            f"log N and log D are collinear across the runs (design rank {rank} < 3): every run has D "
            "proportional to a power of N, so the N and D terms cannot be told apart"
        )


class NotConvergedError(ValueError):
    """The optimiser stopped at a point that is not a minimum of the fit objective."""


#: Largest gradient component, per run, accepted at the optimum. Converged fits of the
#: Chinchilla Figure-4 runs and of simulated isoFLOP designs reach ~1e-9 in total;
#: the threshold leaves four orders of magnitude for harder data.
GRADIENT_TOL_PER_RUN = 1e-5


def check_converged(theta: np.ndarray, objective: float, log_n, log_d, log_loss) -> None:
    """Raise :class:`NotConvergedError` unless ``theta`` is a finite stationary point of the objective."""
    if not (np.all(np.isfinite(theta)) and np.isfinite(objective)):
        raise NotConvergedError(f"the fit diverged: parameters {np.round(theta, 4).tolist()}, objective {objective:g}")
    grad = _fit.huber_lse_gradient(theta, log_n, log_d, log_loss)  # (5,)
    norm = float(np.max(np.abs(grad)))
    if not norm <= GRADIENT_TOL_PER_RUN * len(log_n):
        raise NotConvergedError(
            f"the fit did not converge: largest gradient component {norm:.3g} at the best point "
            f"(tolerance {GRADIENT_TOL_PER_RUN * len(log_n):.3g}); the runs constrain the law too weakly"
        )


def fit_scaling_law(runs, *, n_bootstrap: int = 1000, seed: int = 0, init_grid=None, level: float = 0.95,
                    threads: int | None = None) -> ScalingFit:
    """Fit ``L = E + A/N**alpha + B/D**beta`` by Approach 3 of Hoffmann et al. 2022.

    Minimises ``sum_i Huber_1e-3(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i)``
    by L-BFGS from every start of ``init_grid`` (default: the 4,500-point grid of
    Hoffmann et al. App. D.2 as run by Besiroglu et al. 2024; a dict of per-parameter
    values or an ``(S, 5)`` array of ``(a, b, e, alpha, beta)`` also work). The best start
    wins. Then ``n_bootstrap`` seeded resamples of the runs are refitted from that optimum,
    giving percentile intervals at ``level``.

    Parameters
    ----------
    runs : DataFrame or CSV path with ``N, D, loss`` (or ``Model Size, Training FLOP, loss``).
    n_bootstrap : resamples (0 skips the bootstrap; intervals then raise).
    seed : seed of the resampling; results do not depend on ``threads``.
    threads : Numba threads (None: current setting).
    """
    data = read_runs(runs)
    if len(data) < 5:
        raise ValueError(f"runs must hold at least 5 runs (one per fitted parameter), got {len(data)}")
    n_bootstrap = _check_int("n_bootstrap", n_bootstrap, 0)
    seed = _check_int("seed", seed, 0)
    level = _check_level(level)
    grid = _resolve_grid(init_grid)
    log_n, log_d, log_loss = (np.log(data[c].to_numpy()) for c in ("N", "D", "loss"))
    check_identifiable(log_n, log_d)
    theta, objective = minimize_over_grid(log_n, log_d, log_loss, grid, threads=threads)
    check_converged(theta, objective, log_n, log_d, log_loss)
    params = _theta_to_params(theta)
    if not np.all(np.isfinite(params)):
        raise NotConvergedError(
            f"the fit diverged: E, A, B = {params[0]:g}, {params[1]:g}, {params[2]:g} leave the float64 range "
            f"(runs' loss up to {float(np.exp(log_loss.max())):g}: the law cannot describe these runs)"
        )
    if not (params[3] > 0 and params[4] > 0):
        raise ValueError(
            f"the best fit has alpha = {params[3]:.3g}, beta = {params[4]:.3g}; both must be > 0: the runs do not "
            "constrain the law (vary both N and D across runs)"
        )
    law = ScalingLaw(*params, name="fit", source=f"fit_scaling_law on {len(data)} runs")
    boot = np.empty((0, 5))
    failed = 0
    if n_bootstrap:
        counts = _fit.bootstrap_counts(len(data), n_bootstrap, seed)
        bt, bo = _fit.bootstrap_lbfgs(
            log_n, log_d, log_loss, theta, counts, ftol=PASS1_FTOL, gtol=PASS1_GTOL, threads=threads
        )
        boot = _theta_to_params(bt)  # (B, 5)
        ok = np.isfinite(bo) & np.all(np.isfinite(boot), axis=1) & (boot[:, 3] > 0) & (boot[:, 4] > 0)
        failed = int((~ok).sum())
        boot = boot[ok]
    return ScalingFit(
        law=law, objective=objective, theta=theta, bootstrap=boot, n_runs=len(data), n_starts=grid.shape[0],
        n_bootstrap_failed=failed, level=level, seed=seed,
    )


# ---------------------------------------------------------------------- Approach 2 (IsoFLOP)


@dataclass(frozen=True, eq=False)
class IsoflopFit:
    """Approach 2: per-budget parabola minima and the power laws through them."""

    a: float  # N_opt ~ C**a
    b: float  # D_opt ~ C**b (= 1 - a under C = 6ND)
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    coefficient: float  # N_opt = coefficient * C**a
    minima: pd.DataFrame  # C, N_opt, D_opt, loss_opt per budget
    level: float

    def compute_optimal(self, C):
        """``(N_opt, D_opt)`` from the fitted power law."""
        C = _positive("C", C)
        n = self.coefficient * C**self.a
        return _out(n), _out(C / (TRAINING_FLOPS_PER_PARAM_TOKEN * n))


def _group_budgets(log_c: np.ndarray, rel_tol: float) -> list[np.ndarray]:
    order = np.argsort(log_c, kind="stable")
    gaps = np.diff(log_c[order]) > math.log1p(rel_tol)
    return np.split(order, np.flatnonzero(gaps) + 1)


def _isoflop_minima(log_c, log_n, loss, groups):
    """Per group: vertex of the parabola loss(log N); groups without an upward parabola are skipped."""
    out = []
    for g in groups:
        p2, p1, p0 = np.polyfit(log_n[g], loss[g], 2)
        if not p2 > 0:
            continue
        x = -p1 / (2.0 * p2)
        out.append((float(np.mean(log_c[g])), x, p0 - p1 * p1 / (4.0 * p2)))
    return np.array(out).reshape(-1, 3)  # (G, 3): log C, log N_opt, loss_opt


def fit_isoflop(runs, *, n_bootstrap: int = 200, seed: int = 0, level: float = 0.95, rel_tol: float = 0.05) -> IsoflopFit:
    """Approach 2 of Hoffmann et al. 2022: IsoFLOP profiles.

    Runs whose compute agrees within ``rel_tol`` form one budget; per budget a parabola
    in ``log N`` locates the loss minimum, then ``log N_opt = a log C + c`` is fitted
    through the minima (``b = 1 - a`` since ``D = C / 6N``). Intervals: percentile
    bootstrap resampling runs within each budget (seeded).
    """
    data = read_runs(runs)
    n_bootstrap = _check_int("n_bootstrap", n_bootstrap, 0)
    seed = _check_int("seed", seed, 0)
    level = _check_level(level)
    if not (isinstance(rel_tol, numbers.Real) and 0 < rel_tol < 1):
        raise ValueError(f"rel_tol must be in (0, 1), got {rel_tol!r}")
    log_c = np.log(data["C"].to_numpy())
    log_n = np.log(data["N"].to_numpy())
    loss = data["loss"].to_numpy()
    groups = [g for g in _group_budgets(log_c, rel_tol) if g.size >= 3]
    minima = _isoflop_minima(log_c, log_n, loss, groups)
    if minima.shape[0] < 2:
        raise ValueError(
            "runs must contain at least 2 compute budgets with >= 3 runs each and a loss minimum inside; "
            f"found {minima.shape[0]}"
        )
    a, c0 = np.polyfit(minima[:, 0], minima[:, 1], 1)
    rng = np.random.default_rng(seed)
    boot_a = []
    for _ in range(n_bootstrap):
        resampled = [g[rng.integers(0, g.size, g.size)] for g in groups]
        m = _isoflop_minima(log_c, log_n, loss, resampled)
        if m.shape[0] >= 2 and np.ptp(m[:, 0]) > 0:
            boot_a.append(np.polyfit(m[:, 0], m[:, 1], 1)[0])
    if len(boot_a) >= 2:
        q = 50.0 * (1.0 - level)
        lo, hi = np.percentile(boot_a, [q, 100.0 - q])
    else:
        lo = hi = float("nan")
    C = np.exp(minima[:, 0])
    N_opt = np.exp(minima[:, 1])
    table = pd.DataFrame({"C": C, "N_opt": N_opt, "D_opt": C / (TRAINING_FLOPS_PER_PARAM_TOKEN * N_opt), "loss_opt": minima[:, 2]})
    return IsoflopFit(
        a=float(a), b=float(1.0 - a), a_interval=(float(lo), float(hi)), b_interval=(float(1.0 - hi), float(1.0 - lo)),
        coefficient=float(math.exp(c0)), minima=table, level=level,
    )


# ---------------------------------------------------------------------------- extrapolation


@dataclass(frozen=True, eq=False)
class Extrapolation:
    """A fit on runs below ``cutoff_flops`` and its predictions beyond."""

    fit: ScalingFit
    cutoff_flops: float
    frontier: pd.DataFrame  # C, N_opt, D_opt, loss, loss_lo, loss_hi at the requested budgets
    held_out: pd.DataFrame  # runs above the cutoff: N, D, C, loss, predicted, lo, hi
    used: pd.DataFrame  # runs the fit saw


def extrapolate(runs, *, cutoff_flops, budgets, n_bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                init_grid=None, threads: int | None = None) -> Extrapolation:
    """Fit Approach 3 only on runs with ``C <= cutoff_flops``; predict the compute-optimal
    loss at ``budgets`` (and every held-out run's loss) with a bootstrap band."""
    data = read_runs(runs)
    cutoff = float(_positive("cutoff_flops", cutoff_flops))
    budgets = np.atleast_1d(_positive("budgets", budgets))
    below = data["C"].to_numpy() <= cutoff
    if below.sum() < 5:
        raise ValueError(f"cutoff_flops={cutoff:g} leaves {int(below.sum())} runs; the fit needs at least 5")
    used = data[below].reset_index(drop=True)
    fit = fit_scaling_law(used, n_bootstrap=n_bootstrap, seed=seed, init_grid=init_grid, level=level, threads=threads)
    est, lo, hi = fit.optimal_loss_band(budgets)
    n_opt, d_opt = fit.law.compute_optimal(budgets)
    frontier = pd.DataFrame({"C": budgets, "N_opt": n_opt, "D_opt": d_opt, "loss": est, "loss_lo": lo, "loss_hi": hi})
    held = data[~below].reset_index(drop=True)
    if len(held):
        p, plo, phi = fit.loss_band(held["N"].to_numpy(), held["D"].to_numpy())
        held = held.assign(predicted=p, lo=plo, hi=phi)
    else:
        held = held.assign(predicted=[], lo=[], hi=[])
    return Extrapolation(fit=fit, cutoff_flops=cutoff, frontier=frontier, held_out=held, used=used)
