"""Scaling laws for language-model pretraining: loss, compute-optimal allocation, fits.

The one import for scaling-law work; each idea lives in its own module and every
public name is re-exported here:

* :mod:`~scalelab.simulations.scaling_laws`: the laws (:class:`ScalingLaw`,
  Hoffmann et al. 2022; :class:`KaplanLaw`, Kaplan et al. 2020) with their
  closed-form compute-optimal allocation, the published constants with citations,
  the presets :data:`LAWS` and ``C = 6 N D``.
* :mod:`~scalelab.simulations.scaling_runs`: training runs: the published tables in
  ``simulations/data``, :func:`read_runs`, :func:`drop_highest_loss`, and synthetic
  runs from a known law (:func:`isoflop_design`, :func:`simulate_runs`).
* :mod:`~scalelab.simulations.scaling_estimation`: estimating a law from runs:
  :func:`fit_scaling_law` (Approach 3 as replicated by Besiroglu et al. 2024; the
  compiled optimiser is :mod:`~scalelab.simulations.scaling_fit`), :func:`fit_isoflop`
  (Approach 2) and :func:`extrapolate` (fit below a compute cutoff, predict beyond).
* :mod:`~scalelab.simulations.scaling_allocation`: :func:`inference_aware_optimum`,
  the cheapest (N, D) once lifetime inference is counted (Sardana et al. 2023).

Units: N in parameters, D in tokens, C in FLOPs, loss in nats per token.
"""

from __future__ import annotations

from scalelab.simulations.checks import as_positive_array as _positive  # noqa: F401
from scalelab.simulations.checks import check_int as _check_int  # noqa: F401
from scalelab.simulations.checks import check_level as _check_level  # noqa: F401
from scalelab.simulations.checks import float_or_array as _out  # noqa: F401
from scalelab.simulations.scaling_allocation import InferenceOptimum, inference_aware_optimum
from scalelab.simulations.scaling_estimation import (  # noqa: F401
    _PARAMS, _POLISH_TOP, GRADIENT_TOL_PER_RUN, MIN_DISTINCT_SIZES, PASS1_FTOL, PASS1_GTOL, Extrapolation,
    IsoflopFit, NotConvergedError, NotIdentifiableError, ScalingFit, _theta_to_params, check_converged,
    check_identifiable, extrapolate, fit_isoflop, fit_scaling_law, minimize_over_grid,
)
from scalelab.simulations.scaling_laws import (  # noqa: F401
    BESIROGLU2024_DROPPED_RUNS, BESIROGLU2024_ESTIMATES, BESIROGLU2024_N_BOOTSTRAP,
    BESIROGLU2024_STANDARD_ERRORS, HOFFMANN2022_APPROACH3, INFERENCE_FLOPS_PER_PARAM_TOKEN,
    KAPLAN2020_ALLOCATION_ANCHOR, KAPLAN2020_ALLOCATION_EXPONENT, KAPLAN2020_JOINT, LAWS,
    TRAINING_FLOPS_PER_PARAM_TOKEN, KaplanLaw, ScalingLaw, besiroglu2024_law, get_law, hoffmann2022_law,
    kaplan2020_law, training_flops, training_tokens,
)
from scalelab.simulations.scaling_runs import (  # noqa: F401
    DATA_DIR, drop_highest_loss, isoflop_design, load_chinchilla_fig4_runs, load_hoffmann_table3,
    load_hoffmann_table_a3, load_published_models, read_runs, simulate_runs,
)

__all__ = [
    "BESIROGLU2024_ESTIMATES", "BESIROGLU2024_STANDARD_ERRORS", "HOFFMANN2022_APPROACH3", "KAPLAN2020_JOINT",
    "LAWS", "Extrapolation", "InferenceOptimum", "IsoflopFit", "KaplanLaw", "ScalingFit", "ScalingLaw",
    "drop_highest_loss", "extrapolate", "fit_isoflop", "fit_scaling_law", "get_law", "inference_aware_optimum",
    "isoflop_design", "load_chinchilla_fig4_runs", "load_hoffmann_table3", "load_hoffmann_table_a3",
    "load_published_models", "read_runs", "simulate_runs", "training_flops", "training_tokens",
]
