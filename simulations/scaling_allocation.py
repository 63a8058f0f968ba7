"""Compute allocation once inference is paid for: the cheapest (N, D) for a target loss.

:func:`inference_aware_optimum` finds the (N, D) reaching a target loss at the least
training plus lifetime-inference compute (Sardana et al. 2023); with no inference
demand it is the training-compute optimum of the law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab.simulations.checks import as_positive_array as _positive
from scalelab.simulations.scaling_laws import (
    INFERENCE_FLOPS_PER_PARAM_TOKEN, TRAINING_FLOPS_PER_PARAM_TOKEN, get_law,
)


@dataclass(frozen=True, eq=False)
class InferenceOptimum:
    """Cheapest (N, D) reaching a target loss once lifetime inference is paid for (arrays over demand)."""

    target_loss: float
    inference_tokens: np.ndarray  # (K,) lifetime tokens served
    N: np.ndarray  # (K,) parameters
    D: np.ndarray  # (K,) training tokens
    training_flops: np.ndarray  # (K,) 6 N D
    inference_flops: np.ndarray  # (K,) 2 N T
    total_flops: np.ndarray  # (K,)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "inference_tokens": self.inference_tokens, "N": self.N, "D": self.D,
            "training_flops": self.training_flops, "inference_flops": self.inference_flops,
            "total_flops": self.total_flops, "tokens_per_parameter": self.D / self.N,
        })


def inference_aware_optimum(law, target_loss, inference_tokens) -> InferenceOptimum:
    """The (N, D) reaching ``target_loss`` at least ``6 N D + 2 N T`` FLOPs (Sardana et al. 2023).

    For each lifetime inference demand ``T`` (tokens, scalar or array, >= 0) the loss
    constraint gives ``D(N)`` in closed form and the total cost is minimised over
    ``log N`` (dense grid, then bounded Brent). With ``T = 0`` this is the training-compute
    optimum: for a :class:`ScalingLaw` the same point as ``compute_optimal(6 N D)``.
    """
    from scipy.optimize import minimize_scalar

    law = get_law(law)
    target = float(_positive("target_loss", target_loss))
    if target <= law.irreducible_loss:
        raise ValueError(f"target_loss must exceed the law's irreducible loss {law.irreducible_loss:g}, got {target!r}")
    demand = np.atleast_1d(_positive("inference_tokens", inference_tokens, allow_zero=True)).astype(np.float64)
    log_n_min = math.log(float(law.min_params_for_loss(target)))

    def log_cost(u, t):
        n = np.exp(u)
        d = np.asarray(law.tokens_for_loss(n, target))
        with np.errstate(over="ignore"):
            return np.log(TRAINING_FLOPS_PER_PARAM_TOKEN * n * d + INFERENCE_FLOPS_PER_PARAM_TOKEN * n * t)

    grid = log_n_min + np.geomspace(1e-9, 40.0, 4001)  # (U,) dense near N_min where D blows up
    N = np.empty_like(demand)
    for k, t in enumerate(demand):
        c = log_cost(grid, t)
        j = int(np.argmin(c))
        lo, hi = grid[max(j - 1, 0)], grid[min(j + 1, grid.size - 1)]
        res = minimize_scalar(lambda u: float(log_cost(np.array([u]), t)[0]), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-12})
        N[k] = math.exp(res.x if res.fun <= c[j] else grid[j])
    D = np.asarray(law.tokens_for_loss(N, target), dtype=np.float64).reshape(N.shape)
    train = TRAINING_FLOPS_PER_PARAM_TOKEN * N * D
    infer = INFERENCE_FLOPS_PER_PARAM_TOKEN * N * demand
    return InferenceOptimum(target_loss=target, inference_tokens=demand, N=N, D=D, training_flops=train,
                            inference_flops=infer, total_flops=train + infer)
