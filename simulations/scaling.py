"""Scaling laws for language-model pretraining: loss, compute-optimal allocation, fits.

Two functional forms, one interface (``loss``, ``compute_optimal``,
``tokens_per_parameter``, ``exponents``, ``isoflop``, ``tokens_for_loss``):

* :class:`ScalingLaw`: Hoffmann et al. 2022's ``L(N, D) = E + A / N**alpha + B / D**beta``
  (N parameters, D training tokens). Under ``C = 6 N D`` the optimum is closed form:
  ``N_opt = G (C/6)**a``, ``D_opt = (C/6)**b / G`` with ``a = beta/(alpha+beta)``,
  ``b = alpha/(alpha+beta)``, ``G = (alpha A / (beta B))**(1/(alpha+beta))``.
* :class:`KaplanLaw`: Kaplan et al. 2020's ``L(N, D) = [(Nc/N)**(aN/aD) + Dc/D]**aD``;
  its compute-optimal allocation is their empirical ``N_opt ~ C**0.73``.

Presets with citations are in :data:`LAWS`. Published tables (Hoffmann et al. 2022
Table 3 and Table A3, a list of published models, the 245 Chinchilla Figure-4 runs)
live in ``simulations/data`` with their sources and load as DataFrames.

Fitting follows Hoffmann et al.'s Approach 3 as replicated by Besiroglu et al. 2024:
:func:`fit_scaling_law` (Huber loss on log-loss residuals, log-sum-exp parametrization,
L-BFGS from a grid of starts, seeded bootstrap with percentile intervals; the compiled
optimiser is in :mod:`scalelab.simulations.scaling_fit`). :func:`fit_isoflop` is Approach 2.
:func:`simulate_runs` makes synthetic runs from a known law, :func:`extrapolate` fits
below a compute cutoff and predicts beyond it, and :func:`inference_aware_optimum`
finds the cheapest (N, D) once lifetime inference is counted (Sardana et al. 2023).

Units: N in parameters, D in tokens, C in FLOPs, loss in nats per token.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.simulations import scaling_fit as _fit
from scalelab.simulations.checks import as_positive_array

DATA_DIR = Path(__file__).resolve().parent / "data"

# ----------------------------------------------------------------------------- constants

#: Training FLOPs per parameter per token: 2 (multiply-accumulate) x 3 (forward + backward);
#: Kaplan et al. 2020 Sec. 2.1, used throughout Hoffmann et al. 2022 (C = 6ND).
TRAINING_FLOPS_PER_PARAM_TOKEN = 6.0

#: Inference FLOPs per parameter per generated or processed token (forward pass only);
#: Sardana et al. 2023, "Beyond Chinchilla-Optimal", Sec. 2 (2N FLOPs per inference token).
INFERENCE_FLOPS_PER_PARAM_TOKEN = 2.0

#: Hoffmann et al. 2022 (arXiv 2203.15556), Approach 3 fit as printed in Eq. (10), App. D.2.
HOFFMANN2022_APPROACH3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

#: Besiroglu, Erdil, Barnett & You 2024, "Chinchilla Scaling: A replication attempt"
#: (arXiv 2404.10102): their Approach-3 refit on the 240 runs extracted from Hoffmann et al.'s
#: Figure 4 (5 highest-loss runs dropped), and its bootstrap standard errors.
BESIROGLU2024_ESTIMATES = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
BESIROGLU2024_STANDARD_ERRORS = {"E": 0.026, "A": 124.52, "B": 1293.28, "alpha": 0.0154, "beta": 0.0206}
#: Runs they dropped (the highest final losses) and the bootstrap size they used.
BESIROGLU2024_DROPPED_RUNS = 5
BESIROGLU2024_N_BOOTSTRAP = 4000

#: Kaplan et al. 2020 (arXiv 2001.08361), joint law L(N, D), Eq. (1.5) with the fit of Table 2.
KAPLAN2020_JOINT = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13}
#: Kaplan et al.'s compute-efficient allocation N_opt ~ C**0.73 (Kaplan et al. 2020 Sec. 6.1,
#: Fig. 14; listed as a = 0.73 in Hoffmann et al. 2022 Table 2).
KAPLAN2020_ALLOCATION_EXPONENT = 0.73
#: Anchor of that allocation: at 1e21 FLOPs Kaplan et al.'s rule gives 4.68e9 parameters
#: (Hoffmann et al. 2022, App. D.4).
KAPLAN2020_ALLOCATION_ANCHOR = {"flops": 1e21, "params": 4.68e9}

_PARAMS = ("E", "A", "B", "alpha", "beta")


# ---------------------------------------------------------------------------- validation


def _positive(name: str, value, *, allow_zero: bool = False) -> np.ndarray:
    """``value`` as a float64 array, every entry finite and > 0 (>= 0 with ``allow_zero``)."""
    return as_positive_array(name, value, allow_zero=allow_zero)


def _out(x):
    """Python float for 0-d results, the array otherwise."""
    x = np.asarray(x)
    return float(x) if x.ndim == 0 else x


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_level(level) -> float:
    if not (isinstance(level, numbers.Real) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be a confidence level in (0, 1), got {level!r}")
    return float(level)


# ------------------------------------------------------------------------------ the laws


class _LawBase:
    """What every law derives from its own ``loss(N, D)`` and ``compute_optimal(C)``."""

    def tokens_per_parameter(self, C):
        """``D_opt / N_opt`` at budget C."""
        n, d = self.compute_optimal(C)
        return _out(np.asarray(d) / np.asarray(n))

    def optimal_loss(self, C):
        """Loss at the compute-optimal allocation for budget C."""
        n, d = self.compute_optimal(C)
        return self.loss(n, d)

    def isoflop(self, C, N):
        """Loss along the budget ``C``: N parameters trained on ``D = C / (6N)`` tokens."""
        C = _positive("C", C)
        N = _positive("N", N)
        return self.loss(N, C / (TRAINING_FLOPS_PER_PARAM_TOKEN * N))


@dataclass(frozen=True)
class ScalingLaw(_LawBase):
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, Eq. 2).

    E: irreducible loss (nats/token); A, B: coefficients; alpha, beta: exponents (> 0).
    Every method is vectorized: array arguments broadcast, scalars give floats.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "custom"
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        _positive("E", self.E, allow_zero=True)
        for key in ("A", "B", "alpha", "beta"):
            _positive(key, getattr(self, key))

    @property
    def irreducible_loss(self) -> float:
        return float(self.E)

    def loss(self, N, D):
        """Predicted loss of N parameters trained on D tokens."""
        N = _positive("N", N)
        D = _positive("D", D)
        return _out(self.E + self.A * N ** -self.alpha + self.B * D ** -self.beta)

    @property
    def exponents(self) -> tuple[float, float]:
        """``(a, b)`` with ``N_opt ~ C**a`` and ``D_opt ~ C**b`` (Hoffmann et al. 2022, Eq. 4)."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    @property
    def G(self) -> float:
        """``(alpha A / (beta B))**(1/(alpha+beta))`` of the closed-form optimum."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def compute_optimal(self, C):
        """``(N_opt, D_opt)`` minimising the loss at ``C = 6 N D`` FLOPs (closed form)."""
        C = _positive("C", C)
        a, b = self.exponents
        x = C / TRAINING_FLOPS_PER_PARAM_TOKEN
        return _out(self.G * x**a), _out(x**b / self.G)

    def tokens_for_loss(self, N, target_loss):
        """Tokens D at which N parameters reach ``target_loss``; ``inf`` where N cannot reach it."""
        N = _positive("N", N)
        target = _positive("target_loss", target_loss)
        gap = target - self.E - self.A * N ** -self.alpha
        with np.errstate(divide="ignore"):
            d = np.where(gap > 0, (self.B / np.where(gap > 0, gap, 1.0)) ** (1.0 / self.beta), np.inf)
        return _out(d)

    def min_params_for_loss(self, target_loss):
        """Smallest N that reaches ``target_loss`` with unlimited data (D -> inf)."""
        target = _positive("target_loss", target_loss)
        if np.any(target <= self.E):
            raise ValueError(f"target_loss must exceed the irreducible loss E = {self.E:g}, got {target_loss!r}")
        return _out((self.A / (target - self.E)) ** (1.0 / self.alpha))


@dataclass(frozen=True)
class KaplanLaw(_LawBase):
    """Kaplan et al. 2020's joint law ``L(N, D) = [(N_c/N)**(alpha_N/alpha_D) + D_c/D]**alpha_D``.

    Its compute-optimal allocation is Kaplan et al.'s empirical rule ``N_opt ~ C**0.73``
    (anchored at ``anchor_params`` parameters for ``anchor_flops``), with
    ``D_opt = C / (6 N_opt)``: it is *not* the minimiser of this ``loss`` at fixed C
    (Kaplan et al. fitted the allocation on early-stopped, fixed-schedule runs).
    """

    alpha_N: float
    alpha_D: float
    N_c: float
    D_c: float
    allocation_exponent: float
    anchor_flops: float
    anchor_params: float
    name: str = "custom"
    source: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        for key in ("alpha_N", "alpha_D", "N_c", "D_c", "anchor_flops", "anchor_params"):
            _positive(key, getattr(self, key))
        if not 0.0 < self.allocation_exponent < 1.0:
            raise ValueError(f"allocation_exponent must be in (0, 1), got {self.allocation_exponent!r}")

    @property
    def irreducible_loss(self) -> float:
        return 0.0

    def loss(self, N, D):
        N = _positive("N", N)
        D = _positive("D", D)
        return _out(((self.N_c / N) ** (self.alpha_N / self.alpha_D) + self.D_c / D) ** self.alpha_D)

    @property
    def exponents(self) -> tuple[float, float]:
        a = self.allocation_exponent
        return a, 1.0 - a

    def compute_optimal(self, C):
        C = _positive("C", C)
        n = self.anchor_params * (C / self.anchor_flops) ** self.allocation_exponent
        return _out(n), _out(C / (TRAINING_FLOPS_PER_PARAM_TOKEN * n))

    def tokens_for_loss(self, N, target_loss):
        N = _positive("N", N)
        target = _positive("target_loss", target_loss)
        gap = target ** (1.0 / self.alpha_D) - (self.N_c / N) ** (self.alpha_N / self.alpha_D)
        with np.errstate(divide="ignore"):
            d = np.where(gap > 0, self.D_c / np.where(gap > 0, gap, 1.0), np.inf)
        return _out(d)

    def min_params_for_loss(self, target_loss):
        target = _positive("target_loss", target_loss)
        return _out(self.N_c * target ** (-1.0 / self.alpha_N))


def hoffmann2022_law() -> ScalingLaw:
    """Hoffmann et al. 2022, Approach 3 as printed (Eq. 10): E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28.

    The printed constants are rounded, and the rounding moves the optimum: at Gopher's
    budget (5.76e23 FLOPs) this law puts the compute-optimal model at about 32B parameters,
    whereas the paper's Figure 4 (drawn with the unrounded fit) gives 40B. Besiroglu et al.
    2024 discuss the discrepancy; their refit is :func:`besiroglu2024_law`.
    """
    return ScalingLaw(
        **HOFFMANN2022_APPROACH3,
        name="hoffmann2022",
        source="Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (arXiv 2203.15556), "
        "Approach 3, Eq. (10), App. D.2",
        note="Printed constants are rounded: at the Gopher budget 5.76e23 FLOPs they give ~32B parameters, "
        "while the paper's Figure 4 shows 40B.",
    )


def besiroglu2024_law() -> ScalingLaw:
    """Besiroglu et al. 2024's refit of Approach 3 on the Figure-4 runs (arXiv 2404.10102)."""
    return ScalingLaw(
        **BESIROGLU2024_ESTIMATES,
        name="besiroglu2024",
        source="Besiroglu, Erdil, Barnett & You 2024, Chinchilla Scaling: A replication attempt "
        "(arXiv 2404.10102), Approach-3 refit on 240 runs extracted from Hoffmann et al. 2022 Fig. 4",
    )


def kaplan2020_law() -> KaplanLaw:
    """Kaplan et al. 2020's L(N, D) (Eq. 1.5, Table 2) with their N_opt ~ C**0.73 allocation."""
    return KaplanLaw(
        **KAPLAN2020_JOINT,
        allocation_exponent=KAPLAN2020_ALLOCATION_EXPONENT,
        anchor_flops=KAPLAN2020_ALLOCATION_ANCHOR["flops"],
        anchor_params=KAPLAN2020_ALLOCATION_ANCHOR["params"],
        name="kaplan2020",
        source="Kaplan et al. 2020, Scaling Laws for Neural Language Models (arXiv 2001.08361), Eq. (1.5), "
        "Table 2; allocation N_opt ~ C^0.73 (Sec. 6.1) anchored at 4.68e9 parameters for 1e21 FLOPs "
        "(Hoffmann et al. 2022, App. D.4)",
        note="Allocation is Kaplan et al.'s empirical rule, not the minimiser of this L(N, D) at fixed compute.",
    )


#: Presets by name; each carries its citation in ``source``.
LAWS: dict[str, ScalingLaw | KaplanLaw] = {
    "hoffmann2022": hoffmann2022_law(),
    "besiroglu2024": besiroglu2024_law(),
    "kaplan2020": kaplan2020_law(),
}


def get_law(name) -> ScalingLaw | KaplanLaw:
    """The preset called ``name``; a law object passes through."""
    if isinstance(name, (ScalingLaw, KaplanLaw)):
        return name
    if not isinstance(name, str):
        raise TypeError(f"law must be a preset name or a law object, got {type(name).__name__}")
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}; known: {', '.join(LAWS)}")
    return LAWS[name]


def training_flops(N, D):
    """Training compute ``6 N D`` FLOPs for N parameters and D tokens."""
    return _out(TRAINING_FLOPS_PER_PARAM_TOKEN * _positive("N", N) * _positive("D", D))


def training_tokens(dataset_tokens, epochs):
    """Tokens seen when training ``epochs`` (may be fractional) passes over ``dataset_tokens``."""
    return _out(_positive("dataset_tokens", dataset_tokens) * _positive("epochs", epochs))


# ------------------------------------------------------------------------------ tables


def _read_table(filename: str) -> pd.DataFrame:
    return pd.read_csv(DATA_DIR / filename, comment="#")


def load_hoffmann_table3() -> pd.DataFrame:
    """Hoffmann et al. 2022 Table 3 (Approach 1): ``params, flops, flops_gopher_units, tokens``."""
    return _read_table("hoffmann2022_table3.csv")


def load_hoffmann_table_a3() -> pd.DataFrame:
    """Hoffmann et al. 2022 Table A3: ``params, approach2_flops, approach2_tokens, approach3_flops, approach3_tokens``."""
    return _read_table("hoffmann2022_table_a3.csv")


def load_published_models() -> pd.DataFrame:
    """Published models: ``model, params, active_params, training_tokens, training_flops, flops_basis, year, source``.

    ``training_flops`` missing from the sources is filled with ``6 * active_params * tokens``
    (``flops_basis = "6ND estimate"``); it stays NaN where the tokens are unpublished
    (``flops_basis = "not published"``).
    """
    df = _read_table("published_models.csv")
    published = df["training_flops"].notna()
    estimate = TRAINING_FLOPS_PER_PARAM_TOKEN * df["active_params"] * df["training_tokens"]
    df["flops_basis"] = np.where(published, "published", np.where(estimate.notna(), "6ND estimate", "not published"))
    df["training_flops"] = df["training_flops"].where(published, estimate)
    cols = ["model", "params", "active_params", "training_tokens", "training_flops", "flops_basis", "year", "source"]
    return df[cols]


_FIG4_COLUMNS = ("Model Size", "Training FLOP", "loss")


def read_runs(runs) -> pd.DataFrame:
    """Training runs as a DataFrame with columns ``N, D, C, loss`` (validated).

    ``runs`` is a DataFrame or a CSV path with columns ``N, D, loss`` or, as in the
    Chinchilla Figure-4 extraction, ``Model Size, Training FLOP, loss`` (then
    ``D = C / (6 N)``). Every value must be positive and finite.
    """
    if isinstance(runs, (str, Path)):
        path = Path(runs)
        if not path.is_file():
            raise FileNotFoundError(f"runs file not found: {path}")
        try:
            frame = pd.read_csv(path, comment=None)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"runs file {path} is not a readable CSV: {exc}") from None
    elif isinstance(runs, pd.DataFrame):
        frame = runs
    else:
        raise TypeError(f"runs must be a pandas DataFrame or a CSV path, got {type(runs).__name__}")
    cols = set(frame.columns)
    if {"N", "D", "loss"} <= cols:
        raw = {"N": frame["N"], "D": frame["D"], "loss": frame["loss"]}
    elif set(_FIG4_COLUMNS) <= cols:
        raw = {"N": frame["Model Size"], "C": frame["Training FLOP"], "loss": frame["loss"]}
    else:
        raise ValueError(
            "runs must have columns N, D, loss (or Model Size, Training FLOP, loss); "
            f"got {', '.join(map(str, frame.columns)) or 'no columns'}"
        )
    values = {}
    for key, col in raw.items():
        num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~(np.isfinite(num) & (num > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"runs column {col.name!r} must be positive and finite; row {i} is {col.iloc[i]!r}")
        values[key] = num
    with np.errstate(over="ignore", under="ignore"):
        if "C" in values:
            values["D"] = values["C"] / (TRAINING_FLOPS_PER_PARAM_TOKEN * values["N"])
        else:
            values["C"] = TRAINING_FLOPS_PER_PARAM_TOKEN * values["N"] * values["D"]
    for key in ("C", "D"):
        bad = ~(np.isfinite(values[key]) & (values[key] > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"runs row {i}: {key} = {'6 N D' if key == 'C' else 'C / (6 N)'} leaves the float64 "
                             f"range (N = {values['N'][i]:g}); no training run is that large or that small")
    return pd.DataFrame({k: values[k] for k in ("N", "D", "C", "loss")})


def load_chinchilla_fig4_runs() -> pd.DataFrame:
    """The 245 runs Besiroglu et al. 2024 extracted from Hoffmann et al. 2022 Fig. 4 (``N, D, C, loss``)."""
    return read_runs(DATA_DIR / "chinchilla_fig4_extracted.csv")


def drop_highest_loss(runs, k: int) -> pd.DataFrame:
    """``runs`` without its ``k`` highest-loss rows (Besiroglu et al. drop 5), original order kept."""
    data = read_runs(runs)
    k = _check_int("k", k, 0)
    if k >= len(data):
        raise ValueError(f"k must be smaller than the number of runs ({len(data)}), got {k}")
    keep = np.sort(np.argsort(data["loss"].to_numpy(), kind="stable")[: len(data) - k])
    return data.iloc[keep].reset_index(drop=True)


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
    """``(..., 5)`` ``(a, b, e, alpha, beta)`` -> ``(..., 5)`` ``(E, A, B, alpha, beta)``."""
    theta = np.asarray(theta)
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


# --------------------------------------------------------------------- simulation, extrapolation


def isoflop_design(law, budgets, *, points: int = 9, span: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` of an IsoFLOP sweep: per budget, ``points`` sizes log-spaced over
    ``[N_opt/span, N_opt*span]`` around ``law``'s optimum, ``D = C / (6N)``. Shapes ``(len(budgets)*points,)``."""
    law = get_law(law)
    budgets = np.atleast_1d(_positive("budgets", budgets))  # (K,)
    points = _check_int("points", points, 3)
    if not (isinstance(span, numbers.Real) and span > 1):
        raise ValueError(f"span must be a number > 1, got {span!r}")
    n_opt, _ = law.compute_optimal(budgets)
    factors = np.geomspace(1.0 / span, span, points)  # (P,)
    N = (np.atleast_1d(n_opt)[:, None] * factors[None, :]).ravel()  # (K*P,)
    C = np.repeat(budgets, points)
    return N, C / (TRAINING_FLOPS_PER_PARAM_TOKEN * N)


def simulate_runs(law, N, D, *, noise: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Synthetic training runs: ``loss = law.loss(N, D) * exp(noise * z)``, ``z ~ N(0, 1)`` seeded.

    ``noise`` is the standard deviation of the log-loss (0.01 is about 1 % scatter), the
    space Approach 3 fits in. Returns ``N, D, C, loss`` (N, D broadcast, flattened).
    """
    law = get_law(law)
    if not (isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a non-negative finite number, got {noise!r}")
    seed = _check_int("seed", seed, 0)
    N, D = np.broadcast_arrays(_positive("N", N), _positive("D", D))
    N, D = N.ravel().astype(np.float64), D.ravel().astype(np.float64)
    z = np.random.default_rng(seed).standard_normal(N.size)
    loss = np.asarray(law.loss(N, D)) * np.exp(noise * z)
    return pd.DataFrame({"N": N, "D": D, "C": TRAINING_FLOPS_PER_PARAM_TOKEN * N * D, "loss": loss})


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


# ------------------------------------------------------------------------ inference-aware optimum


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


__all__ = [
    "BESIROGLU2024_ESTIMATES", "BESIROGLU2024_STANDARD_ERRORS", "HOFFMANN2022_APPROACH3", "KAPLAN2020_JOINT",
    "LAWS", "Extrapolation", "InferenceOptimum", "IsoflopFit", "KaplanLaw", "ScalingFit", "ScalingLaw",
    "drop_highest_loss", "extrapolate", "fit_isoflop", "fit_scaling_law", "get_law", "inference_aware_optimum",
    "isoflop_design", "load_chinchilla_fig4_runs", "load_hoffmann_table3", "load_hoffmann_table_a3",
    "load_published_models", "read_runs", "simulate_runs", "training_flops", "training_tokens",
]
