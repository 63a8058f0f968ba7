"""Scaling extrapolation of hyperparameters: published laws for the optimal learning rate and batch size, and fits of your own.

Nobody can tune the learning rate and batch size of the largest model: the runs are
too expensive. Two answers exist. One fits how the best values move with scale on
small runs and extrapolates (this module); the other reparametrises the network so
the best values do not move with width at all (muP, :mod:`simulations.mup`).

**Published laws** (:data:`HPARAM_LAWS`, looked up with :func:`optimal_lr` and
:func:`optimal_batch_size`; batch sizes are in tokens):

| key | learning rate | batch size (tokens) | inputs |
| --- | --- | --- | --- |
| ``deepseek2024`` | ``0.3118 C^-0.1250`` | ``0.2920 C^0.3271`` | compute C (FLOPs, ``C = M D``) |
| ``steplaw2025`` | ``1.79 N^-0.713 D^0.307`` | ``0.58 D^0.571`` | N non-embedding params, D tokens |
| ``kaplan2020`` | (none) | critical batch ``2e8 L^(-1/0.21)`` | loss L (nats/token) |
| ``porian2024`` | (constants not traced) | (constants not traced) | |

DeepSeek measures model scale as non-embedding FLOPs per token ``M`` and compute as
``C = M D`` (their Sec. 3.2), not ``6 N D``; pass that compute. Kaplan et al.'s
critical batch size is the batch beyond which more data per step stops buying fewer
steps; it is a function of the loss reached, not of compute. Porian et al. 2024
("Resolving Discrepancies in Compute-Optimal Scaling of Language Models") derive laws for
the optimal learning rate and batch size, but their fitted constants could not be traced
to the paper's text from here, so the preset carries the citation and raises
:class:`UntracedLawError` instead of inventing numbers.

**Fitting a sweep** (:func:`fit_hparam_sweep`) follows DeepSeek LLM Sec. 3.1: per
compute budget, every run whose final loss is within a relative ``margin`` of the
budget's best is *near-optimal*; the budget's optimal learning rate and batch size are
the geometric means over that region; ``log lr_opt`` and ``log B_opt`` are then fitted
against ``log C`` by least squares. Intervals come from a seeded stratified bootstrap
(runs resampled within each budget, the whole pipeline repeated, percentile
intervals), vectorised over resamples. :func:`simulate_hparam_sweep` makes synthetic
sweeps from known laws (tests, benchmarks, the report).

Units: C in FLOPs, N in parameters, D and batch sizes in tokens, loss in nats/token,
learning rates for AdamW as the papers state them (peak learning rate).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# One validation of numbers for every simulation module (the same messages and rules).
from .checks import as_positive_array as _positive
from .checks import check_int as _check_int
from .checks import float_or_array as _out
from .checks import lookup_preset

#: Default near-optimal margin (relative excess loss). DeepSeek LLM Sec. 3.1 calls a run
#: near-optimal when its generalization error is within a small margin of the budget's minimum;
#: 0.25% is our recollection of their band and could not be traced to the text from here, so it
#: is our default, not a cited constant. Widen it for noisy sweeps.
DEEPSEEK_NEAR_OPTIMAL_MARGIN = 0.0025


class UntracedLawError(ValueError):
    """A law whose constants are not traced to its paper's text: no numbers are given."""


class LawInputError(ValueError):
    """A law asked for with inputs it does not take (e.g. compute for a law in N and D)."""


# ---------------------------------------------------------------------------- the laws


@dataclass(frozen=True)
class PowerLaw:
    """``coef * prod(x_i ** exponent_i)`` over named inputs (``compute``, ``n``, ``d``, ``loss``)."""

    coef: float
    exponents: tuple[tuple[str, float], ...]

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.exponents)

    def __call__(self, values: dict) -> float | np.ndarray:
        log = math.log(self.coef)
        for name, p in self.exponents:
            log = log + p * np.log(values[name])
        return _out(np.exp(log))


@dataclass(frozen=True)
class HparamLaw:
    """A published law for the optimal (or critical) learning rate and batch size.

    ``lr`` and ``batch`` are :class:`PowerLaw` s or None where the paper gives none or the
    constants are not traced; ``batch_kind`` says what the batch size means
    (``"optimal"`` or ``"critical"``).
    """

    key: str
    name: str
    lr: PowerLaw | None
    batch: PowerLaw | None
    lr_formula: str
    batch_formula: str
    variables: str  # what each input means, with units
    validity: str  # the range the paper fitted or tested
    source: str  # paper, section/equation
    batch_kind: str = "optimal"
    traced: bool = True

    @property
    def inputs(self) -> tuple[str, ...]:
        seen = []
        for law in (self.lr, self.batch):
            for name in law.inputs if law else ():
                if name not in seen:
                    seen.append(name)
        return tuple(seen)


HPARAM_LAWS: dict[str, HparamLaw] = {
    "deepseek2024": HparamLaw(
        key="deepseek2024",
        name="DeepSeek LLM (Bi et al. 2024)",
        # DeepSeek LLM (arXiv 2401.02954), Sec. 3.1, Eq. (1): eta_opt = 0.3118 C^-0.1250,
        # B_opt = 0.2920 C^0.3271 (C in FLOPs, B in tokens).
        lr=PowerLaw(0.3118, (("compute", -0.1250),)),
        batch=PowerLaw(0.2920, (("compute", 0.3271),)),
        lr_formula="eta_opt = 0.3118 C^-0.1250",
        batch_formula="B_opt = 0.2920 C^0.3271 tokens",
        variables="C = M D training FLOPs, M = non-embedding FLOPs per token (Sec. 3.2), D = tokens",
        validity="fitted on small-scale grid searches (Sec. 3.1); the paper set its 7B and 67B models' "
                 "hyperparameters with it (Table 2), near 1e23-1e24 FLOPs",
        source="Bi et al. 2024, DeepSeek LLM: Scaling Open-Source Language Models with Longtermism "
               "(arXiv 2401.02954), Sec. 3.1, Eq. (1)",
    ),
    "steplaw2025": HparamLaw(
        key="steplaw2025",
        name="Step Law (Li et al. 2025)",
        # Li et al. 2025, Predictable Scale Part I (arXiv 2503.04715): eta(N, D) = 1.79 N^-0.713 D^0.307,
        # B(D) = 0.58 D^0.571 (N non-embedding parameters, D tokens, B in tokens).
        lr=PowerLaw(1.79, (("n", -0.713), ("d", 0.307))),
        batch=PowerLaw(0.58, (("d", 0.571),)),
        lr_formula="eta(N, D) = 1.79 N^-0.713 D^0.307",
        batch_formula="B(D) = 0.58 D^0.571 tokens",
        variables="N = non-embedding parameters, D = training tokens",
        validity="grid searches over 3,700 dense and MoE models trained on up to 100T tokens in total; "
                 "fixed final learning rate 1e-5 (the paper's schedule)",
        source="Li et al. 2025, Predictable Scale: Part I, Step Law - Optimal Hyperparameter Scaling Law in "
               "LLM Pre-training (arXiv 2503.04715), the Step Law (abstract and Sec. 3)",
    ),
    "kaplan2020": HparamLaw(
        key="kaplan2020",
        name="Kaplan et al. 2020 critical batch size",
        lr=None,
        # Kaplan et al. 2020 (arXiv 2001.08361), Eq. (1.4)/(5.3): B_crit(L) = B_* / L^(1/alpha_B),
        # B_* ~ 2e8 tokens, alpha_B ~ 0.21 (Fig. 10 draws the fit as 2.1e8 tokens * L^-4.8).
        batch=PowerLaw(2e8, (("loss", -1.0 / 0.21),)),
        lr_formula="(no learning-rate law in this preset)",
        batch_formula="B_crit(L) = 2e8 tokens / L^(1/0.21)",
        variables="L = cross-entropy loss reached (nats/token, WebText2)",
        validity="WebText2 models up to 1.5B parameters; B_crit is where doubling the batch stops halving the steps",
        source="Kaplan et al. 2020, Scaling Laws for Neural Language Models (arXiv 2001.08361), Eq. (1.4) "
               "and Sec. 5.1, Eq. (5.3), Fig. 10",
        batch_kind="critical",
    ),
    "porian2024": HparamLaw(
        key="porian2024",
        name="Porian et al. 2024",
        lr=None,
        batch=None,
        lr_formula="optimal learning rate as a power law of model size (constants not traced)",
        batch_formula="optimal batch size as a power law of model size (constants not traced)",
        variables="N = parameters",
        validity="models of 5M-901M parameters on OpenWebText2 and RefinedWeb",
        source="Porian, Wortsman, Jitsev, Schmidt & Carmon 2024, Resolving Discrepancies in Compute-Optimal "
               "Scaling of Language Models (arXiv 2406.19146), Sec. 4 (hyperparameter laws); the fitted "
               "constants could not be traced to the paper's text, so none are given",
        traced=False,
    ),
}


def get_hparam_law(law) -> HparamLaw:
    """The preset called ``law`` (a key of :data:`HPARAM_LAWS`); a law object passes through."""
    return lookup_preset("law", law, HPARAM_LAWS, HparamLaw, expected="a key of HPARAM_LAWS or an HparamLaw",
                         known="known laws", sort=True)


def _evaluate(law: HparamLaw, which: str, given: dict):
    part = law.lr if which == "lr" else law.batch
    what = "learning-rate" if which == "lr" else "batch-size"
    if not law.traced:
        raise UntracedLawError(f"{law.key}: the {what} law's constants are not traced to the paper ({law.source})")
    if part is None:
        raise LawInputError(f"{law.key} gives no {what} law")
    supplied = {k for k, v in given.items() if v is not None}
    needed = set(part.inputs)
    if supplied != needed:
        extra = sorted(supplied - needed)
        missing = sorted(needed - supplied)
        parts = []
        if missing:
            parts.append(f"needs {', '.join(missing)}")
        if extra:
            parts.append(f"does not take {', '.join(extra)}")
        raise LawInputError(f"{law.key} {what} law takes {', '.join(part.inputs)} ({law.variables}); "
                            + "; ".join(parts))
    values = {k: _positive(k, given[k]) for k in needed}
    return part(values)


def optimal_lr(law, *, compute=None, n=None, d=None, loss=None):
    """The law's optimal (peak) learning rate; scalars give floats, arrays broadcast.

    Raises :class:`LawInputError` (a ValueError) for inputs the law does not take and
    :class:`UntracedLawError` for a law without traced constants.
    """
    return _evaluate(get_hparam_law(law), "lr", {"compute": compute, "n": n, "d": d, "loss": loss})


def optimal_batch_size(law, *, compute=None, n=None, d=None, loss=None):
    """The law's optimal batch size in tokens (the critical batch size for ``kaplan2020``)."""
    return _evaluate(get_hparam_law(law), "batch", {"compute": compute, "n": n, "d": d, "loss": loss})


#: Compute range of the comparison table and figure, FLOPs.
COMPARISON_BUDGETS = np.geomspace(1e18, 1e25, 29)


def law_comparison_table(budgets=COMPARISON_BUDGETS) -> pd.DataFrame:
    """Every traced law's learning rate and batch size over compute budgets (long format).

    Laws not stated in compute need their inputs derived from C, which this table does
    openly: Step Law gets the Chinchilla-optimal ``(N, D)`` of Hoffmann et al. 2022
    (:data:`simulations.scaling.LAWS` ``"hoffmann2022"``), and Kaplan's critical batch size
    gets the loss of Kaplan et al.'s own compute-optimal allocation
    (``"kaplan2020"`` there). The ``inputs`` column says which.
    """
    from .scaling import LAWS

    C = _positive("budgets", budgets).ravel()  # (M,)
    rows = [pd.DataFrame({"law": "deepseek2024", "compute": C, "lr": optimal_lr("deepseek2024", compute=C),
                          "batch_size": optimal_batch_size("deepseek2024", compute=C),
                          "batch_kind": "optimal", "inputs": "C"})]
    n, d = LAWS["hoffmann2022"].compute_optimal(C)
    rows.append(pd.DataFrame({"law": "steplaw2025", "compute": C, "lr": optimal_lr("steplaw2025", n=n, d=d),
                              "batch_size": optimal_batch_size("steplaw2025", d=d), "batch_kind": "optimal",
                              "inputs": "Chinchilla-optimal N, D (Hoffmann et al. 2022)"}))
    kaplan_loss = LAWS["kaplan2020"].optimal_loss(C)
    rows.append(pd.DataFrame({"law": "kaplan2020", "compute": C, "lr": np.nan,
                              "batch_size": optimal_batch_size("kaplan2020", loss=kaplan_loss),
                              "batch_kind": "critical",
                              "inputs": "loss of Kaplan et al.'s compute-optimal model"}))
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------------------- sweeps

#: Column names a sweep CSV may use, mapped to ours.
_ALIASES = {"compute": "compute", "c": "compute", "flops": "compute", "lr": "lr", "learning_rate": "lr",
            "batch_size": "batch_size", "b": "batch_size", "batch": "batch_size", "loss": "loss",
            "n": "n", "params": "n", "d": "d", "tokens": "d"}


def normalise_sweep(runs: pd.DataFrame) -> pd.DataFrame:
    """Columns ``compute, lr, batch_size, loss`` from a sweep table, validated.

    Accepts ``compute`` (or ``C``/``flops``), or ``N`` and ``D`` (then ``C = 6 N D``,
    Kaplan et al. 2020 Sec. 2.1); ``lr`` (or ``learning_rate``); ``batch_size`` (tokens;
    or ``B``); ``loss``. Case-insensitive. Losses must be positive; ``inf`` marks a
    diverged run (never near-optimal); NaN is an error.
    """
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}")
    cols = {}
    for col in runs.columns:
        key = _ALIASES.get(str(col).strip().lower())
        if key is not None and key not in cols:
            cols[key] = runs[col]
    if "compute" not in cols:
        if "n" in cols and "d" in cols:
            cols["compute"] = 6.0 * pd.to_numeric(cols["n"], errors="coerce") * pd.to_numeric(cols["d"], errors="coerce")
        else:
            raise ValueError("runs need a 'compute' column (FLOPs) or both 'N' and 'D'; "
                             f"got columns {list(runs.columns)}")
    for need in ("lr", "batch_size", "loss"):
        if need not in cols:
            raise ValueError(f"runs need a {need!r} column; got columns {list(runs.columns)}")
    out = pd.DataFrame({k: pd.to_numeric(cols[k], errors="coerce").astype(np.float64)
                        for k in ("compute", "lr", "batch_size", "loss")})
    if len(out) == 0:
        raise ValueError("runs is empty")
    for k in ("compute", "lr", "batch_size"):
        v = out[k].to_numpy()
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"column {k!r} must hold positive finite numbers (row {int(np.argmin(np.isfinite(v) & (v > 0)))})")
    loss = out["loss"].to_numpy()
    if np.isnan(loss).any() or (loss <= 0).any() or np.isneginf(loss).any():
        raise ValueError("column 'loss' must hold positive numbers (inf for a diverged run), not NaN")
    return out


def read_sweep(path) -> pd.DataFrame:
    """Read a sweep CSV (see :func:`normalise_sweep` for the columns)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such sweep file: {path}")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} as CSV: {exc}") from None
    return normalise_sweep(df)


@dataclass(frozen=True)
class _Groups:
    """Runs sorted by budget: ``order`` into the table, each budget's start and size."""

    order: np.ndarray  # (R,)
    log_c: np.ndarray  # (G,) log of each budget
    starts: np.ndarray  # (G,)
    sizes: np.ndarray  # (G,)


def _group_budgets(compute: np.ndarray) -> _Groups:
    # Budgets equal to 1e-9 relative are one budget (CSV round-trips may perturb the last digits).
    key = np.round(np.log(compute) * 1e9).astype(np.int64)  # (R,)
    order = np.argsort(key, kind="stable")
    uniq, starts, sizes = np.unique(key[order], return_index=True, return_counts=True)
    log_c = np.array([np.log(compute[order][s:s + z]).mean() for s, z in zip(starts, sizes)])
    return _Groups(order, log_c, starts, sizes)


def _optima(loss, log_lr, log_bs, starts, sizes, margin):
    """Per budget: geometric-mean lr and batch size of the near-optimal runs, vectorised over rows.

    ``loss, log_lr, log_bs`` are (K, R) with runs sorted by budget; returns (K, G) arrays.
    """
    best = np.minimum.reduceat(loss, starts, axis=1)  # (K, G)
    near = loss <= np.repeat(best * (1.0 + margin), sizes, axis=1)  # (K, R)
    count = np.add.reduceat(near, starts, axis=1)  # (K, G)
    lr = np.add.reduceat(np.where(near, log_lr, 0.0), starts, axis=1) / count  # (K, G)
    bs = np.add.reduceat(np.where(near, log_bs, 0.0), starts, axis=1) / count  # (K, G)
    return lr, bs, count, best


def _ols(x: np.ndarray, y: np.ndarray):
    """Least-squares ``y = a + b x`` for each row of y (K, G); returns (intercept, slope), each (K,)."""
    xc = x - x.mean()
    slope = (y - y.mean(axis=-1, keepdims=True)) @ xc / (xc @ xc)
    return y.mean(axis=-1) - slope * x.mean(), slope


@dataclass(frozen=True)
class HparamFit:
    """Power laws ``lr_opt = lr_coef C^lr_exponent`` and ``B_opt = batch_coef C^batch_exponent``.

    ``optima``: per budget, the near-optimal region's geometric-mean learning rate and batch
    size (``compute, lr_opt, batch_opt, best_loss, n_runs, n_near``). ``bootstrap``: (K, 4) refits
    of ``(ln lr_coef, lr_exponent, ln batch_coef, batch_exponent)``. Intervals are percentile
    intervals at ``level``.
    """

    lr_coef: float
    lr_exponent: float
    batch_coef: float
    batch_exponent: float
    optima: pd.DataFrame
    bootstrap: np.ndarray = field(repr=False)
    margin: float = DEEPSEEK_NEAR_OPTIMAL_MARGIN
    level: float = 0.95
    seed: int = 0
    n_runs: int = 0

    def _q(self) -> tuple[float, float]:
        a = (1.0 - self.level) / 2.0
        return a, 1.0 - a

    def summary(self) -> pd.DataFrame:
        """Estimate and percentile interval of each fitted constant (index: parameter)."""
        est = {"lr_coef": self.lr_coef, "lr_exponent": self.lr_exponent,
               "batch_coef": self.batch_coef, "batch_exponent": self.batch_exponent}
        rows = {}
        boot = self.bootstrap
        cols = {"lr_coef": np.exp(boot[:, 0]), "lr_exponent": boot[:, 1],
                "batch_coef": np.exp(boot[:, 2]), "batch_exponent": boot[:, 3]}
        for name, value in est.items():
            if boot.shape[0] >= 2:
                lo, hi = np.quantile(cols[name], self._q())
            else:
                lo = hi = np.nan
            rows[name] = {"estimate": value, "lo": float(lo), "hi": float(hi)}
        return pd.DataFrame.from_dict(rows, orient="index")

    def predict(self, compute) -> pd.DataFrame:
        """Predicted optimal learning rate and batch size at ``compute`` FLOPs, with the bootstrap band.

        Columns ``compute, lr, lr_lo, lr_hi, batch_size, batch_lo, batch_hi``; the band is the
        percentile interval of the bootstrap refits' predictions at each budget.
        """
        C = np.atleast_1d(_positive("compute", compute)).astype(np.float64).ravel()  # (M,)
        x = np.log(C)  # (M,)
        out = {"compute": C,
               "lr": self.lr_coef * C ** self.lr_exponent,
               "batch_size": self.batch_coef * C ** self.batch_exponent}
        boot = self.bootstrap
        if boot.shape[0] >= 2:
            q = self._q()
            lr_b = boot[:, :1] + boot[:, 1:2] * x  # (K, M) log lr of each refit
            bs_b = boot[:, 2:3] + boot[:, 3:4] * x  # (K, M)
            lo, hi = np.quantile(lr_b, q, axis=0)
            out["lr_lo"], out["lr_hi"] = np.exp(lo), np.exp(hi)
            lo, hi = np.quantile(bs_b, q, axis=0)
            out["batch_lo"], out["batch_hi"] = np.exp(lo), np.exp(hi)
        else:
            for k in ("lr_lo", "lr_hi", "batch_lo", "batch_hi"):
                out[k] = np.full_like(C, np.nan)
        return pd.DataFrame(out)[["compute", "lr", "lr_lo", "lr_hi", "batch_size", "batch_lo", "batch_hi"]]


def fit_hparam_sweep(runs: pd.DataFrame, *, margin: float = DEEPSEEK_NEAR_OPTIMAL_MARGIN, n_bootstrap: int = 1000,
                     seed: int = 0, level: float = 0.95) -> HparamFit:
    """Fit the optimal learning rate and batch size against compute from a sweep of runs.

    Parameters
    ----------
    runs : DataFrame
        One row per run (see :func:`normalise_sweep`): compute (or N and D), lr, batch_size, loss.
    margin : float
        Relative excess loss that still counts as near-optimal (DeepSeek LLM Sec. 3.1 uses 0.25%).
    n_bootstrap : int
        Stratified bootstrap resamples (0 for none; intervals are then NaN).
    seed : int
        Seed of the bootstrap's generator; the same seed gives the same intervals bit for bit.
    level : float
        Confidence level of the percentile intervals.

    Raises
    ------
    ValueError
        For a sweep with fewer than two compute budgets, or a single learning rate or batch
        size overall (nothing to locate an optimum in), or a budget where every run diverged.
    """
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not (0.0 <= float(margin) < 1.0) \
            or not math.isfinite(float(margin)):
        raise ValueError(f"margin must be a relative loss excess in [0, 1), got {margin!r}")
    n_bootstrap = _check_int("n_bootstrap", n_bootstrap, 0)
    seed = _check_int("seed", seed, 0)
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    df = normalise_sweep(runs)
    compute = df["compute"].to_numpy()
    groups = _group_budgets(compute)
    if groups.starts.size < 2:
        raise ValueError("the sweep has a single compute budget; fitting a law against compute needs at least 2")
    for col, what in (("lr", "learning rate"), ("batch_size", "batch size")):
        if np.unique(df[col].to_numpy()).size < 2:
            raise ValueError(f"the sweep uses a single {what} ({df[col].iloc[0]:g}); "
                             f"its optimum cannot be located, so no {what} law can be fitted")
    loss = df["loss"].to_numpy()[groups.order]  # (R,)
    if not np.all(np.isfinite(np.minimum.reduceat(loss, groups.starts))):
        raise ValueError("every run at some compute budget diverged (loss inf); drop that budget")
    log_lr = np.log(df["lr"].to_numpy()[groups.order])  # (R,)
    log_bs = np.log(df["batch_size"].to_numpy()[groups.order])  # (R,)

    lr_g, bs_g, count, best = _optima(loss[None], log_lr[None], log_bs[None], groups.starts, groups.sizes, margin)
    a_lr, b_lr = _ols(groups.log_c, lr_g)
    a_bs, b_bs = _ols(groups.log_c, bs_g)
    optima = pd.DataFrame({"compute": np.exp(groups.log_c), "lr_opt": np.exp(lr_g[0]), "batch_opt": np.exp(bs_g[0]),
                           "best_loss": best[0], "n_runs": groups.sizes, "n_near": count[0]})

    boot = np.empty((0, 4))
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        # Resample within each budget so every refit sees every budget (a law needs them all).
        u = rng.random((n_bootstrap, loss.size))  # (K, R)
        idx = np.repeat(groups.starts, groups.sizes) + (u * np.repeat(groups.sizes, groups.sizes)).astype(np.int64)
        lr_k, bs_k, _, _ = _optima(loss[idx], log_lr[idx], log_bs[idx], groups.starts, groups.sizes, margin)
        al, bl = _ols(groups.log_c, lr_k)
        ab, bb = _ols(groups.log_c, bs_k)
        boot = np.stack([al, bl, ab, bb], axis=1)  # (K, 4)
    boot.setflags(write=False)  # the fit is frozen; so are its refits
    return HparamFit(lr_coef=float(np.exp(a_lr[0])), lr_exponent=float(b_lr[0]),
                     batch_coef=float(np.exp(a_bs[0])), batch_exponent=float(b_bs[0]),
                     optima=optima, bootstrap=boot, margin=float(margin), level=float(level), seed=seed,
                     n_runs=int(loss.size))


def simulate_hparam_sweep(*, budgets=(1e17, 3e17, 1e18, 3e18, 1e19), lr_law=(0.3118, -0.1250),
                          batch_law=(0.2920, 0.3271), lr_steps=np.arange(-6, 7) * 0.25,
                          batch_steps=np.arange(-3, 4) * 0.5, lr_curvature: float = 0.02,
                          batch_curvature: float = 0.01, noise: float = 0.0005, seed: int = 0) -> pd.DataFrame:
    """A synthetic sweep whose optimal learning rate and batch size follow known power laws.

    At budget C the true optima are ``lr_law[0] C^lr_law[1]`` and ``batch_law[0] C^batch_law[1]``
    (default: DeepSeek's Eq. 1). Runs sit on a grid around them, ``2**lr_steps`` and
    ``2**batch_steps`` times the optimum, shifted per budget by a random fraction of a grid step
    so the grid never lands exactly on the optimum. The loss is a bowl in log space,
    ``L*(C) (1 + lr_curvature ln(lr/lr*)^2 + batch_curvature ln(B/B*)^2)`` with
    ``L*(C) = 1.8 + 9 (C/1e15)^-0.15`` (a made-up frontier), times log-normal noise of
    relative size ``noise``. Columns ``compute, lr, batch_size, loss``.
    """
    C = _positive("budgets", budgets).ravel()  # (G,)
    seed = _check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    lr_steps = np.asarray(lr_steps, dtype=np.float64)
    batch_steps = np.asarray(batch_steps, dtype=np.float64)
    lr_step = np.min(np.diff(np.sort(lr_steps))) if lr_steps.size > 1 else 1.0
    bs_step = np.min(np.diff(np.sort(batch_steps))) if batch_steps.size > 1 else 1.0
    rows = []
    for c in C:
        lr_opt = lr_law[0] * c ** lr_law[1]
        bs_opt = batch_law[0] * c ** batch_law[1]
        lr = lr_opt * 2.0 ** (lr_steps + lr_step * (rng.random() - 0.5))  # (A,)
        bs = bs_opt * 2.0 ** (batch_steps + bs_step * (rng.random() - 0.5))  # (Z,)
        ll, bb = np.meshgrid(lr, bs, indexing="ij")  # (A, Z)
        base = 1.8 + 9.0 * (c / 1e15) ** -0.15
        bowl = 1.0 + lr_curvature * np.log(ll / lr_opt) ** 2 + batch_curvature * np.log(bb / bs_opt) ** 2
        loss = base * bowl * np.exp(noise * rng.standard_normal(ll.shape))
        rows.append(pd.DataFrame({"compute": c, "lr": ll.ravel(), "batch_size": bb.ravel(), "loss": loss.ravel()}))
    return pd.concat(rows, ignore_index=True)


__all__ = ["HPARAM_LAWS", "HparamLaw", "PowerLaw", "UntracedLawError", "LawInputError", "get_hparam_law",
           "optimal_lr", "optimal_batch_size", "law_comparison_table", "COMPARISON_BUDGETS",
           "DEEPSEEK_NEAR_OPTIMAL_MARGIN", "normalise_sweep", "read_sweep", "HparamFit", "fit_hparam_sweep",
           "simulate_hparam_sweep"]
