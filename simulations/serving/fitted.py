"""A step-cost model fitted to a real engine's iterations, for the simulator to replay.

The roofline cost (:class:`~simulations.serving.cost.StepCostModel`) prices the
operations of an iteration from a device's peaks; it leaves out what a real
engine also spends per iteration: Python scheduling, kernel launches, sampling,
thread-pool wake-ups. On a small model that overhead is most of an iteration
(the live CPU engine's tiny model spends a few milliseconds per step where the
roofline predicts microseconds), so a simulator driven by the roofline
predicts latencies orders of magnitude too low.

:class:`FittedStepCost` is the other way round: it learns the price of an
iteration from the engine itself. Every iteration is the aggregate vector
``x = [1, T, S, P, K, U]`` of :func:`~simulations.serving.cost.iteration_aggregates`
(new tokens, logit rows, attention pairs, KV tokens read, MoE experts touched),
and its wall time is modelled as ``c . x`` with non-negative coefficients
``c`` fitted by non-negative least squares (:func:`scipy.optimize.nnls`) on
relative errors, so short and long iterations weigh alike. The errors are
taken relative to the *prediction* (iteratively reweighted: a plain fit, then
weights ``1 / (c . x)``), not to the measurement: weights ``1 / y`` favour
predictions that are too low (under-predicting costs at most 100% of an
iteration, over-predicting without bound); on the engine's calibration set
on a loaded machine they fitted a total time 46% below the measured one,
where the reweighted fit came within 3%. ``c[0]`` is the
fixed cost of an iteration, the part the roofline misses. The fit reports
its own quality (median and 90th-percentile relative error on the iterations
it was fitted on), and :func:`fit_step_cost` refuses data that cannot
identify the coefficients.

The model has the interface the simulator's instances read (``time(x)``,
``touched(tokens)``), so ``simulate(..., cost_model=fitted)`` replays a
workload on it.

An iteration after the engine sat idle
--------------------------------------
On a CPU the same iteration costs more when the engine had nothing to do
just before it: while it waited, the operating system and other tenants of
the machine took its caches (the shared L3 holds most of a small model's
weights) and its core went idle. The tiny model's batch-4 decode iteration
took 1.5 ms back to back and 1.9, 2.5 and 2.6 ms after idle gaps of 5, 20
and 100 ms (a quiet Zen 3, 2026-12-02; one thread or two alike, and a
busy-waiting gap still cost half of it, so it is not only thread wake-up).
A calibration that runs its batches back to back never sees this, and a
served workload at a light load has a gap before many of its iterations.
So a fit may carry a *wake cost*: ``wake(gap) = wake_s * (1 - exp(-gap /
wake_tau_s))`` seconds added to the first iteration after an idle gap of
``gap`` seconds (:meth:`FittedStepCost.wake`; :func:`fit_wake` fits the two
numbers to excess times measured after controlled gaps). The simulator adds
it whenever an instance starts work after being idle.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import nnls

from scalelab.simulations.checks import as_float_array, as_positive_array, check_positive
from scalelab.simulations.inference import ModelConfig, get_model
from scalelab.simulations.serving.cost import N_AGGREGATES, experts_touched, iteration_aggregates

__all__ = ["FittedStepCost", "fit_step_cost", "engine_iterations", "engine_idle_gaps", "fit_wake", "wake_cost",
           "AGGREGATE_NAMES", "IRLS_ROUNDS"]

#: Reweighting rounds of the fit (plain least squares, then weights 1 / prediction); the
#: coefficients of the calibration data here settle within 1% by the fourth round.
IRLS_ROUNDS = 8

#: The names of the iteration vector's entries (see :mod:`simulations.serving.cost`).
AGGREGATE_NAMES = ("fixed", "tokens", "logit_rows", "attention_pairs", "kv_read", "experts")


class FittedStepCost:
    """Seconds for an iteration as ``coef . x``; ``coef (6,)`` in seconds per unit of each aggregate.

    Parameters
    ----------
    model : ModelConfig or preset name
        The model whose iterations were measured (for the MoE aggregate).
    coef : array_like (6,)
        Non-negative seconds per unit of ``[1, T, S, P, K, U]``.
    rel_err_p50, rel_err_p90 : float
        The fit's relative errors on its own iterations (NaN when unknown).
    n_iterations : int
        How many iterations the fit saw.
    wake_s, wake_tau_s : float
        The wake cost (module docstring): extra seconds of the first iteration after a long
        idle gap (>= 0; 0, the default, for none) and the gap over which it builds up (> 0).
    """

    def __init__(self, model, coef, *, rel_err_p50: float = math.nan, rel_err_p90: float = math.nan,
                 n_iterations: int = 0, wake_s: float = 0.0, wake_tau_s: float = 0.01) -> None:
        self.model: ModelConfig = get_model(model)
        c = np.asarray(coef, dtype=np.float64)
        if c.shape != (N_AGGREGATES,):
            raise ValueError(f"coef must have shape ({N_AGGREGATES},), got {c.shape}")
        if not (np.isfinite(c).all() and (c >= 0).all()):
            raise ValueError(f"coef must be finite and >= 0, got {c.tolist()}")
        if c[0] <= 0 and c[1] <= 0:
            raise ValueError("coef must price an iteration above zero (coef[0] or coef[1] > 0)")
        self.coef = c
        self.rel_err_p50 = float(rel_err_p50)
        self.rel_err_p90 = float(rel_err_p90)
        self.n_iterations = int(n_iterations)
        check_positive(wake_tau_s=wake_tau_s)
        self.wake_s = float(as_positive_array("wake_s", wake_s, allow_zero=True))
        self.wake_tau_s = float(wake_tau_s)

    def with_wake(self, wake_s: float, wake_tau_s: float) -> "FittedStepCost":
        """The same fit with the given wake cost."""
        return FittedStepCost(self.model, self.coef, rel_err_p50=self.rel_err_p50, rel_err_p90=self.rel_err_p90,
                              n_iterations=self.n_iterations, wake_s=wake_s, wake_tau_s=wake_tau_s)

    def wake(self, gap):
        """Extra seconds of an iteration after ``gap`` idle seconds: :func:`wake_cost` with this fit's numbers."""
        return wake_cost(gap, self.wake_s, self.wake_tau_s)

    def time(self, x):
        """Seconds for iteration vector(s) ``x``: ``(6,)`` -> float, ``(k, 6)`` -> ``(k,)``."""
        t = np.asarray(x, dtype=np.float64) @ self.coef  # () or (k,)
        return float(t) if t.ndim == 0 else t

    def touched(self, tokens):
        """The MoE aggregate ``U`` for ``tokens`` new tokens (0 for a dense model)."""
        return experts_touched(self.model, tokens)

    def aggregates(self, chunk_tokens, chunk_offsets, decode_kv, q: int = 1) -> np.ndarray:
        """The iteration vector ``(6,)`` (see :func:`~simulations.serving.cost.iteration_aggregates`)."""
        return iteration_aggregates(self.model, chunk_tokens, chunk_offsets, decode_kv, q)

    def table(self) -> list[dict]:
        """The coefficients as rows ``{aggregate, seconds_per_unit}``; with a wake cost, two rows more
        (``wake_after_long_idle``: seconds per iteration; ``wake_time_constant``: seconds of idle)."""
        rows = [{"aggregate": n, "seconds_per_unit": float(v)} for n, v in zip(AGGREGATE_NAMES, self.coef)]
        if self.wake_s > 0:
            rows += [{"aggregate": "wake_after_long_idle", "seconds_per_unit": self.wake_s},
                     {"aggregate": "wake_time_constant", "seconds_per_unit": self.wake_tau_s}]
        return rows

    def __repr__(self) -> str:
        terms = ", ".join(f"{n}={v:.3g}" for n, v in zip(AGGREGATE_NAMES, self.coef) if v > 0)
        if self.wake_s > 0:
            terms += f", wake={self.wake_s:.3g} s (tau {self.wake_tau_s:.3g} s)"
        return (f"FittedStepCost({self.model.name}: {terms}; rel. error p50 {self.rel_err_p50:.1%}, "
                f"p90 {self.rel_err_p90:.1%} over {self.n_iterations} iterations)")


def engine_iterations(model, batches) -> tuple[np.ndarray, np.ndarray]:
    """Iteration vectors ``X (k, 6)`` and wall seconds ``y (k,)`` from a live engine's ``batches`` log.

    ``batches`` holds ``(chunk_tokens, chunk_offsets, decode_kv, seconds)`` per iteration, or
    the :class:`~simulations.serving.live.EngineIteration` entries a live engine records. Only
    plain iterations are accepted: an entry of kind ``"speculative"`` (an engine with a draft
    model) times draft steps and a multi-token verification together, which the iteration
    vector does not describe.

    Raises
    ------
    TypeError
        ``batches`` not a list or tuple, or an entry that is not a 4-tuple/list of the types above.
    ValueError
        No iteration; an entry of another length; a speculative entry; counts
        :func:`iteration_aggregates` rejects; seconds that are not finite and > 0. The message
        names the entry (``batches[i]``).
    """
    m = get_model(model)
    if not isinstance(batches, (list, tuple)):
        raise TypeError(f"batches must be a list of (chunk_tokens, chunk_offsets, decode_kv, seconds), "
                        f"got {type(batches).__name__}")
    if len(batches) == 0:
        raise ValueError("batches must hold at least one iteration")
    X = np.empty((len(batches), N_AGGREGATES))  # (k, 6)
    y = np.empty(len(batches))  # (k,)
    for i, entry in enumerate(batches):
        if not isinstance(entry, (list, tuple)):
            raise TypeError(f"batches[{i}] must be a tuple (chunk_tokens, chunk_offsets, decode_kv, seconds), "
                            f"got {type(entry).__name__}")
        kind = getattr(entry, "kind", "plain")
        if kind != "plain":
            raise ValueError(f"batches[{i}] is an iteration of kind {kind!r} (an engine with a draft model: draft "
                             "steps and a multi-token verification in one entry), which the step-cost fit does "
                             "not model; fit on the iterations of an engine without a draft")
        if len(entry) != 4 and not hasattr(entry, "kind"):
            raise ValueError(f"batches[{i}] must have 4 entries (chunk_tokens, chunk_offsets, decode_kv, "
                             f"seconds), got {len(entry)}")
        c, o, kv, t = entry[:4]
        try:
            X[i] = iteration_aggregates(m, c, o, kv)
            check_positive(seconds=t)
            y[i] = t
        except (TypeError, ValueError) as e:
            raise type(e)(f"batches[{i}]: {e}") from None
    return X, y


def wake_cost(gap, wake_s: float, wake_tau_s: float):
    """``wake_s * (1 - exp(-gap / wake_tau_s))`` seconds after ``gap`` idle seconds (scalar or array).

    0 after no gap, ``wake_s`` after a long one; ``gap = inf`` stands for an engine idle since it started.
    """
    g = np.asarray(gap, dtype=np.float64)
    if np.isnan(g).any() or (g < 0).any():
        raise ValueError("gap must be >= 0 seconds (inf for an engine idle since it started)")
    w = -wake_s * np.expm1(-g / wake_tau_s)  # () or (k,)
    return float(w) if w.ndim == 0 else w


def engine_idle_gaps(batches) -> np.ndarray:
    """``(k,)`` idle seconds before each iteration of a live engine's ``batches`` log.

    Entries that do not record it (plain 4-tuples) count as iterations with no gap before them.
    """
    return np.array([float(getattr(b, "idle_before", 0.0)) for b in batches], dtype=np.float64)


def fit_wake(gaps, excess) -> tuple[float, float]:
    """Fit ``excess ~ wake_s * (1 - exp(-gap / wake_tau_s))``: the wake cost's two numbers.

    Parameters
    ----------
    gaps : array_like (k,)
        Idle seconds before the measured iterations, >= 0 and finite.
    excess : array_like (k,)
        Their extra seconds over the same iteration run back to back (may be negative: noise).

    Returns
    -------
    (wake_s, wake_tau_s) : seconds; ``wake_s`` is 0 when the excesses do not rise with the gap.

    The fit is least squares over a grid of ``wake_tau_s`` (a geometric grid from a tenth of
    the smallest positive gap to ten times the largest, 200 points), where for each ``tau`` the
    best ``wake_s >= 0`` is closed-form; the grid keeps the answer deterministic and free of
    a starting guess.
    """
    g = as_positive_array("gaps", gaps, allow_zero=True)
    e = as_float_array("excess", excess)
    if g.ndim != 1 or e.shape != g.shape or g.size < 2:
        raise ValueError(f"gaps and excess must be 1-D of one length >= 2, got {g.shape} and {e.shape}")
    pos = g[g > 0]
    if pos.size == 0:
        raise ValueError("gaps must include a gap > 0")
    best = (math.inf, 0.0, float(pos.min()))
    for tau in np.geomspace(pos.min() / 10, pos.max() * 10, 200):
        f = -np.expm1(-g / tau)  # (k,) shape of the curve at this tau
        a = max(0.0, float(f @ e) / float(f @ f))
        sse = float(((a * f - e) ** 2).sum())
        if sse < best[0]:
            best = (sse, a, float(tau))
    return best[1], best[2]


def fit_step_cost(model, X, y) -> FittedStepCost:
    """Fit ``y ~ coef . X`` with ``coef >= 0``, minimising relative errors.

    Parameters
    ----------
    model : ModelConfig or preset name
    X : array_like (k, 6)
        Iteration vectors.
    y : array_like (k,)
        Measured seconds per iteration, > 0.

    Raises
    ------
    TypeError
        ``X`` or ``y`` not numbers (strings, booleans, objects).
    ValueError
        On mismatched shapes, no rows, negative or non-finite ``X``, non-positive or
        non-finite times, fewer iterations than coefficients to fit, or data whose
        design cannot separate the aggregates it varies (rank below the number of
        varying columns).
    """
    m = get_model(model)
    X = as_positive_array("X", X, allow_zero=True)
    y = as_positive_array("y", y)
    if X.ndim != 2 or X.shape[1] != N_AGGREGATES:
        raise ValueError(f"X must have shape (k, {N_AGGREGATES}), got {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one iteration (row)")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) (one time per row of X), got {y.shape}")
    cols = [j for j in range(N_AGGREGATES) if np.ptp(X[:, j]) > 0 or j == 0]  # constant columns fold into 'fixed'
    if X.shape[0] < 2 * len(cols):
        raise ValueError(f"need at least {2 * len(cols)} iterations to fit {len(cols)} coefficients, "
                         f"got {X.shape[0]}")
    A = X[:, cols]  # (k, len(cols))
    scale = np.abs(A).max(axis=0)  # (len(cols),) column scaling for the solver
    if np.linalg.matrix_rank(A / scale) < len(cols):
        names = [AGGREGATE_NAMES[j] for j in cols]
        raise ValueError(f"the iterations cannot separate the aggregates {names}: vary prefill lengths, "
                         "batch sizes and contexts independently")
    w = np.ones_like(y)  # first pass: plain least squares
    for _ in range(IRLS_ROUNDS):
        sol, _ = nnls(A / scale * w[:, None], y * w)
        pred = (A / scale) @ sol  # (k,)
        w = 1.0 / np.maximum(pred, y.min() * 1e-3)  # relative to the prediction, not to the measurement
    coef = np.zeros(N_AGGREGATES)
    coef[cols] = sol / scale
    rel = np.abs(X @ coef - y) / y  # (k,)
    return FittedStepCost(m, coef, rel_err_p50=float(np.median(rel)), rel_err_p90=float(np.quantile(rel, 0.9)),
                          n_iterations=X.shape[0])
