"""Training data as a bottleneck: repeated data, the stock of human text, tokenization.

Three pieces, each with its published source beside its constants:

* :func:`effective_tokens`, :func:`effective_params` and :func:`data_constrained_loss`:
  the value of repeated data and of excess parameters after Muennighoff et al.
  2023, "Scaling Data-Constrained Language Models" (NeurIPS 2023, arXiv:2305.16264).
* :func:`exhaustion_year`: a vectorized, seeded Monte Carlo of the year in which
  the training set of the largest model reaches the stock of public human text,
  after Villalobos et al. 2024, "Will we run out of data? Limits of LLM scaling
  based on human-generated data" (ICML 2024, arXiv:2211.04325v2; Epoch AI).
* :func:`tokenization_disparity`: what per-language tokenization costs mean for
  price per message and messages per context window (MASSIVE, cl100k_base).

Model of exhaustion (all inputs overridable)::

    demand(t) = D0 * sqrt(overtrain) / epochs * g ** (t - t0)     # unique tokens wanted
    stock(t)  = S0 * s ** (t - t0)                                # effective stock of text
    t*        = t0 + ln(S0 * epochs / (D0 * sqrt(overtrain))) / (ln g - ln s)

``S0`` is lognormal with Villalobos et al.'s 90% interval and ``g`` is lognormal
around Epoch's dataset-growth trend; ``t*`` is computed per sample in closed
form, so a million samples cost a few NumPy passes. ``sqrt(overtrain)``: at
fixed compute C = 6 N D, multiplying the tokens-per-parameter ratio by k
multiplies D by sqrt(k). ``epochs`` is repetition *beyond* what the stock already
allows for (Villalobos et al.'s effective stock already counts multi-epoch
training), so ``epochs=1`` reproduces their setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from scalelab.simulations.checks import as_float_array, as_positive_array

DATA_DIR = Path(__file__).resolve().parent / "data"

# --------------------------------------------------------------------------------------
# Muennighoff et al. 2023: repeated data and excess parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConstrainedLaw:
    """Fitted constants of the data-constrained scaling law.

    L(N, D, U) = E + A / N'^alpha + B / D'^beta with D' (effective data) and N'
    (effective parameters) from the exponential-decay forms of Section 3.
    ``log_a``, ``log_b``, ``log_e`` are natural logs of A, B, E as fitted.
    """

    log_a: float
    log_b: float
    log_e: float
    alpha: float
    beta: float
    r_d_star: float  # repetitions of data after which its value has decayed by 1 - 1/e
    r_n_star: float  # same for excess parameters
    source: str = ""

    @property
    def a(self) -> float:
        return math.exp(self.log_a)

    @property
    def b(self) -> float:
        return math.exp(self.log_b)

    @property
    def e(self) -> float:
        return math.exp(self.log_e)


#: Muennighoff et al. 2023, Section 3 (Eqs. 5-6) reports R_D* ~ 15.4 and R_N* ~ 5.3; the full-precision
#: fit (C4, GPT-2 tokenizer) is the one the authors publish with their code, huggingface/datablations
#: README, "Parametric Fit": [log A, log B, log E, alpha, beta, R_D*, R_N*] =
#: [6.255414, 7.3049974, 0.6254804, 0.3526596, 0.3526596, 15.387756, 5.309743].
MUENNIGHOFF_2023 = DataConstrainedLaw(
    log_a=6.255414,
    log_b=7.3049974,
    log_e=0.6254804,
    alpha=0.3526596,
    beta=0.3526596,
    r_d_star=15.387756,
    r_n_star=5.309743,
    source="Muennighoff et al. 2023, Sec. 3; constants from huggingface/datablations README 'Parametric Fit'",
)

#: Loss values the same README prints for the two models of the paper's Figure 1 (right), used as a check:
#: (N, D, U) -> L.
MUENNIGHOFF_2023_FIGURE1_LOSSES = (
    ((6.34e9, 242e9, 25e9), 2.2256440889984477),
    ((8.67e9, 178e9, 25e9), 2.2269634075087867),
)





def _positive(name: str, value, *, allow_zero: bool = False) -> np.ndarray:
    return as_positive_array(name, value, allow_zero=allow_zero)


def _scalar_or_array(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def _decayed(unique: np.ndarray, repeats: np.ndarray, r_star: float) -> np.ndarray:
    # U + U * R* * (1 - exp(-R / R*)); expm1 keeps it exact for tiny R (a single epoch gives exactly U).
    return unique + unique * r_star * (-np.expm1(-repeats / r_star))


def _effective(names: tuple[str, str, str], total, unique, r_star: float, too_many_unique: str):
    """``_decayed(U, total / U - 1, R*)`` after the checks Eq. 5 and Eq. 6 share.

    ``names`` are the argument names of ``total``, ``unique`` and ``r_star`` for the
    errors; ``too_many_unique`` is the message when some ``unique > total``.
    """
    total = _positive(names[0], total)
    unique = _positive(names[1], unique)
    if not (math.isfinite(r_star) and r_star > 0):
        raise ValueError(f"{names[2]} must be a positive finite number, got {r_star!r}")
    total, unique = np.broadcast_arrays(total, unique)
    if np.any(unique > total):
        raise ValueError(too_many_unique)
    return _scalar_or_array(_decayed(unique, total / unique - 1.0, r_star))


def effective_tokens(total_tokens, unique_tokens, *, r_d_star: float = MUENNIGHOFF_2023.r_d_star):
    """Effective data D' of ``total_tokens`` drawn from ``unique_tokens`` distinct tokens.

    D' = U + U * R_D* * (1 - exp(-R_D / R_D*)), R_D = total / unique - 1
    (Muennighoff et al. 2023, Eq. 5). D' = total when nothing repeats; the
    value of further epochs decays with e-folding R_D* ~ 15.4 repetitions.

    Parameters
    ----------
    total_tokens, unique_tokens : float or array_like
        Tokens seen in training (repeats included) and distinct tokens; broadcast together.
        Need 0 < unique_tokens <= total_tokens.
    r_d_star : float
        Decay constant; default the paper's fit.

    Returns
    -------
    float or ndarray (float64), the shape of the broadcast inputs.
    """
    return _effective(("total_tokens", "unique_tokens", "r_d_star"), total_tokens, unique_tokens, r_d_star,
                      "unique_tokens must not exceed total_tokens (cannot have more distinct tokens than seen)")


def effective_params(params, unique_params, *, r_n_star: float = MUENNIGHOFF_2023.r_n_star):
    """Effective parameters N' when only ``unique_params`` of ``params`` are worth their full value.

    N' = U_N + U_N * R_N* * (1 - exp(-R_N / R_N*)), R_N = params / U_N - 1
    (Muennighoff et al. 2023, Eq. 6). In the paper U_N is the compute-optimal
    size for the unique data (see :func:`data_constrained_loss`); excess
    parameters decay faster than repeated data (R_N* ~ 5.3 < R_D* ~ 15.4).
    Needs 0 < unique_params <= params.
    """
    return _effective(("params", "unique_params", "r_n_star"), params, unique_params, r_n_star,
                      "unique_params must not exceed params")


def compute_optimal_params(tokens, law: DataConstrainedLaw = MUENNIGHOFF_2023):
    """Parameters that are compute-optimal for ``tokens`` under the law's Chinchilla-form terms.

    Minimising A/N^alpha + B/D^beta at fixed N*D gives N = G * (D * G)^(beta/alpha)
    with G = (alpha A / (beta B))^(1/(alpha+beta)); this sets U_N, the part of a
    model that unique data can use in full.
    """
    d = _positive("tokens", tokens)
    g = ((law.alpha * law.a) / (law.beta * law.b)) ** (1.0 / (law.alpha + law.beta))
    return _scalar_or_array((d * g) ** (law.beta / law.alpha) * g)


def data_constrained_loss(params, tokens, unique_tokens, law: DataConstrainedLaw = MUENNIGHOFF_2023):
    """Predicted loss of a model with ``params`` trained on ``tokens`` drawn from ``unique_tokens``.

    L = E + A / N'^alpha + B / D'^beta, where D' = :func:`effective_tokens` and
    N' = :func:`effective_params` with U_N = min(N, compute-optimal N for U).
    The absolute loss is on the authors' C4 validation setting; compare models
    with it rather than reading it as a quality score.
    """
    n = _positive("params", params)
    d = _positive("tokens", tokens)
    u = _positive("unique_tokens", unique_tokens)
    n, d, u = np.broadcast_arrays(n, d, u)
    if np.any(u > d):
        raise ValueError("unique_tokens must not exceed tokens")
    d_eff = _decayed(u, d / u - 1.0, law.r_d_star)
    u_n = np.minimum(n, compute_optimal_params(u, law))
    n_eff = _decayed(u_n, n / u_n - 1.0, law.r_n_star)
    loss = law.e + law.a / n_eff**law.alpha + law.b / d_eff**law.beta
    return _scalar_or_array(loss)


# --------------------------------------------------------------------------------------
# Villalobos et al. 2024: when does the largest training set reach the stock of text?
# --------------------------------------------------------------------------------------

#: Villalobos et al. 2024 (Epoch AI), Sec. 3 / blog summary: effective stock of public human text
#: ~3e14 tokens, 90% interval 1e14 to 1e15 (quality-filtered, allowing for multi-epoch training).
STOCK_TOKENS_MEDIAN = 3e14
STOCK_TOKENS_90 = (1e14, 1e15)

#: Growth of the stock: ~7%/yr. Villalobos et al. 2022 (arXiv:2211.04325v1), Key takeaways: "the stock of language
#: data currently grows by ~7% yearly"; consistent with the 2024 paper's Figure 1, where the stock reaches ~4e14 tokens
#: by 2028 (3e14 * 1.07**4 = 3.9e14).
STOCK_GROWTH_PER_YEAR = 1.07

#: Dataset-size growth of language models: 2.9x/yr ("doubles approximately every eight months"), Epoch AI,
#: Notable AI Models data insight (updated Dec 2024). Revisions of the same insight quoted 2.9x-3.7x; the 90% interval
#: below (2.2x-3.8x) is our assumption, widened symmetric in log around 2.9x to cover that spread and slower futures.
DATASET_GROWTH_PER_YEAR = 2.9
DATASET_GROWTH_90 = (2.2, 3.8)

#: Base point: Llama 3.1 405B (released July 2024), trained with 3.8e25 FLOP (Llama 3 Herd paper, Sec. 3.2.1).
#: Villalobos et al. project dataset sizes of *non-overtrained* models, so the base is that compute's Chinchilla-optimal
#: dataset, D = sqrt(C * 20 / 6) (C = 6 N D, D = 20 N; Hoffmann et al. 2022), ~1.13e13 tokens; Llama 3.1 itself used
#: 15.6e12 tokens, i.e. it was overtrained ~1.9x in tokens per parameter.
BASE_YEAR = 2024.5
BASE_TRAINING_FLOPS = 3.8e25
CHINCHILLA_TOKENS_PER_PARAM = 20.0
BASE_DATASET_TOKENS = math.sqrt(BASE_TRAINING_FLOPS * CHINCHILLA_TOKENS_PER_PARAM / 6.0)

#: Z score of a central 90% interval of a normal distribution.
_Z90 = 1.6448536269514722


def lognormal_sigma_from_interval(low: float, high: float, level: float = 0.9) -> float:
    """Log-space standard deviation of a lognormal whose central ``level`` interval is (low, high)."""
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"interval must satisfy 0 < low < high, got ({low!r}, {high!r})")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    z = _Z90 if level == 0.9 else NormalDist().inv_cdf(0.5 + level / 2.0)
    return (math.log(high) - math.log(low)) / (2.0 * z)


@dataclass(frozen=True)
class ExhaustionResult:
    """Outcome of :func:`exhaustion_year`.

    ``years`` is the reporting grid; ``demand_tokens`` and ``stock_tokens`` are
    (3, Y) arrays of the 5th, 50th and 95th percentiles on that grid. Samples that
    never cross (stock growing at least as fast as demand) count as ``inf`` years.
    """

    median_year: float
    interval: tuple[float, float]  # central ``level`` interval of the crossing year
    level: float
    years: np.ndarray  # (Y,)
    demand_tokens: np.ndarray  # (3, Y): p5, p50, p95 of unique tokens wanted by the largest run
    stock_tokens: np.ndarray  # (3, Y): p5, p50, p95 of the effective stock
    sample_years: np.ndarray = field(repr=False)  # (n_samples,) crossing year of each sample
    inputs: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Per-year demand and stock (median and 90% band) as a DataFrame."""
        return pd.DataFrame(
            {
                "year": self.years,
                "demand_p05": self.demand_tokens[0],
                "demand_p50": self.demand_tokens[1],
                "demand_p95": self.demand_tokens[2],
                "stock_p05": self.stock_tokens[0],
                "stock_p50": self.stock_tokens[1],
                "stock_p95": self.stock_tokens[2],
            }
        )


#: Largest Monte Carlo sample count the projections accept: each sample costs a few float64s, so
#: 1e7 stays within a few hundred MB; more would fail on memory instead of with a named error.
MAX_SAMPLES = 10_000_000


def check_n_samples(n_samples) -> int:
    """Validate a Monte Carlo sample count: an integer in ``[1, MAX_SAMPLES]``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an integer, got {type(n_samples).__name__}")
    if not 1 <= n_samples <= MAX_SAMPLES:
        raise ValueError(f"n_samples must be in [1, {MAX_SAMPLES}], got {int(n_samples)}")
    return int(n_samples)


def check_seed(seed) -> int:
    """Validate a seed for ``np.random.default_rng``: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {int(seed)}")
    return int(seed)


def _check_scalar(name: str, value, *, low: float = 0.0, inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok = value >= low if inclusive else value > low
    if not (math.isfinite(value) and ok):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be finite and {relation} {low:g}, got {value!r}")
    return value


def order_quantiles(x: np.ndarray, probs) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of ``x`` (NumPy's "inverted_cdf": always a sample value) and their mirror images.

    Returns ``(q, m)`` where ``q[i]`` is the ``probs[i]`` quantile and ``m[i]`` the order statistic
    mirrored about the median: for any non-increasing f, the ``probs[i]`` quantile of f(x) is
    ``f(m[i])``. One ``np.partition`` serves every probability and both sides.
    """
    n = x.shape[0]
    k = np.clip(np.ceil(np.asarray(probs, dtype=np.float64) * n - 1e-9).astype(np.int64), 1, n)  # (P,) 1-based
    idx, mirror = k - 1, n - k  # (P,) 0-based: k-th smallest and k-th largest
    part = np.partition(x, np.unique(np.concatenate([idx, mirror])))
    return part[idx], part[mirror]


LOG_FLOAT64_MAX = math.log(np.finfo(np.float64).max)


def _quantile_curves(base: float, log_rate: np.ndarray, dt: np.ndarray, probs) -> np.ndarray:
    """Quantiles over samples of ``base * exp(dt * log_rate)`` at each dt, without forming (n, Y).

    For dt >= 0 the curve is non-decreasing in ``log_rate``, so its p-quantile is the
    curve at the p-quantile of ``log_rate``; for dt < 0 the order flips.
    """
    q, m = order_quantiles(log_rate, probs)  # (P,), (P,)
    rate = np.where(dt[None, :] >= 0, q[:, None], m[:, None])  # (P, Y)
    log_curve = math.log(base) + dt[None, :] * rate  # (P, Y)
    if np.max(log_curve) >= LOG_FLOAT64_MAX:
        year = float(dt[np.argmax(np.max(log_curve, axis=0) >= LOG_FLOAT64_MAX)])
        raise ValueError(f"the projection exceeds the float64 range ({np.finfo(np.float64).max:.3g}) "
                         f"{year:g} years from the base year: the growth rate is far outside the model's range")
    return np.exp(log_curve)  # (P, Y)


def exhaustion_year(
    *,
    stock_tokens: float = STOCK_TOKENS_MEDIAN,
    stock_interval: tuple[float, float] | None = STOCK_TOKENS_90,
    stock_growth_per_year: float = STOCK_GROWTH_PER_YEAR,
    base_year: float = BASE_YEAR,
    base_dataset_tokens: float = BASE_DATASET_TOKENS,
    growth_per_year: float = DATASET_GROWTH_PER_YEAR,
    growth_interval: tuple[float, float] | None = DATASET_GROWTH_90,
    overtrain: float = 1.0,
    epochs: float = 1.0,
    n_samples: int = 100_000,
    seed: int = 0,
    level: float = 0.9,
    years=None,
) -> ExhaustionResult:
    """When the training set of the largest model reaches the stock of public human text.

    Parameters
    ----------
    stock_tokens, stock_interval
        Median effective stock in ``base_year`` and its 90% interval (lognormal); ``None`` fixes it.
    stock_growth_per_year
        Yearly growth factor of the stock (deterministic; 1.0 holds it fixed).
    base_year, base_dataset_tokens
        Where the demand curve starts: a non-overtrained frontier dataset.
    growth_per_year, growth_interval
        Median yearly growth factor of dataset size and its 90% interval (lognormal); ``None`` fixes it.
    overtrain
        Tokens-per-parameter ratio relative to compute-optimal (>= 1 overtrains); demand scales by sqrt(overtrain).
    epochs
        Passes over unique data beyond what the stock estimate allows for; demand scales by 1/epochs.
    n_samples, seed
        Monte Carlo size and seed (NumPy ``default_rng``); same seed, same answer.
    level
        Central probability mass of the reported interval.
    years
        Grid for the demand and stock curves; default ``base_year - 4 ... base_year + 12`` in whole years.

    Returns
    -------
    ExhaustionResult
    """
    stock_tokens = _check_scalar("stock_tokens", stock_tokens)
    stock_growth_per_year = _check_scalar("stock_growth_per_year", stock_growth_per_year)
    base_year = _check_scalar("base_year", base_year, low=-math.inf)
    base_dataset_tokens = _check_scalar("base_dataset_tokens", base_dataset_tokens)
    growth_per_year = _check_scalar("growth_per_year", growth_per_year)
    overtrain = _check_scalar("overtrain", overtrain)
    epochs = _check_scalar("epochs", epochs)
    if epochs < 1.0:
        raise ValueError(f"epochs must be >= 1 (a fraction of an epoch does not stretch the stock), got {epochs!r}")
    n_samples = check_n_samples(n_samples)
    seed = check_seed(seed)
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    sigma_stock = 0.0 if stock_interval is None else lognormal_sigma_from_interval(*stock_interval)
    sigma_growth = 0.0 if growth_interval is None else lognormal_sigma_from_interval(*growth_interval)
    if stock_interval is not None and not stock_interval[0] <= stock_tokens <= stock_interval[1]:
        raise ValueError(f"stock_tokens ({stock_tokens:g}) must lie inside stock_interval {stock_interval}")
    if growth_interval is not None and not growth_interval[0] <= growth_per_year <= growth_interval[1]:
        raise ValueError(f"growth_per_year ({growth_per_year:g}) must lie inside growth_interval {growth_interval}")

    rng = np.random.default_rng(seed)
    log_stock0 = math.log(stock_tokens) + sigma_stock * rng.standard_normal(n_samples)  # (n,)
    log_growth = math.log(growth_per_year) + sigma_growth * rng.standard_normal(n_samples)  # (n,)
    log_demand0 = math.log(base_dataset_tokens) + 0.5 * math.log(overtrain) - math.log(epochs)
    rate = log_growth - math.log(stock_growth_per_year)  # (n,) log-gap closed per year
    with np.errstate(divide="ignore", invalid="ignore"):
        dt = (log_stock0 - log_demand0) / rate  # (n,)
    # A gap that never closes (rate <= 0 while demand is below the stock) is "never": +inf.
    never = (rate <= 0) & (log_stock0 > log_demand0)
    sample_years = np.where(never, np.inf, base_year + dt)
    # Demand already above the stock at the base year means exhausted then, not at a backward-extrapolated
    # crossing (overtrain 1e308 once gave the year 1672); the curves hold only from the base year on.
    sample_years = np.where(((rate <= 0) & ~never) | (log_stock0 <= log_demand0), base_year, sample_years)

    tail = (1.0 - level) / 2.0
    # Order statistics are sample values, so samples that never cross stay +inf instead of interpolating to NaN.
    lo, med, hi = order_quantiles(sample_years, [tail, 0.5, 1.0 - tail])[0]

    if years is None:
        years = np.arange(math.floor(base_year) - 4, math.floor(base_year) + 13, dtype=np.float64)
    years = as_float_array("years", years).reshape(-1)  # (Y,)
    probs = [0.05, 0.5, 0.95]
    ddt = years - base_year  # (Y,)
    demand = _quantile_curves(math.exp(log_demand0), log_growth, ddt, probs)  # (3, Y)
    stock_q = order_quantiles(log_stock0, probs)[0]  # (3,)
    stock = np.exp(stock_q[:, None]) * stock_growth_per_year ** ddt[None, :]  # (3, Y)

    inputs = dict(
        stock_tokens=stock_tokens, stock_interval=stock_interval, stock_growth_per_year=stock_growth_per_year,
        base_year=base_year, base_dataset_tokens=base_dataset_tokens, growth_per_year=growth_per_year,
        growth_interval=growth_interval, overtrain=overtrain, epochs=epochs, n_samples=int(n_samples), seed=int(seed),
    )
    return ExhaustionResult(
        median_year=float(med), interval=(float(lo), float(hi)), level=float(level), years=years,
        demand_tokens=demand, stock_tokens=stock, sample_years=sample_years, inputs=inputs,
    )


# --------------------------------------------------------------------------------------
# Tokenization disparity (MASSIVE, cl100k_base)
# --------------------------------------------------------------------------------------

TOKENIZATION_CSV = DATA_DIR / "tokenization_massive.csv"


def load_tokenization_table(path: str | Path = TOKENIZATION_CSV) -> pd.DataFrame:
    """The per-language token ratios of ``simulations/data/tokenization_massive.csv`` (source in its header)."""
    table = pd.read_csv(path, comment="#")
    required = {"language", "ratio_low", "ratio_high"}
    missing = required - set(table.columns)
    if missing:
        raise ValueError(f"tokenization table {path} lacks columns {sorted(missing)}")
    if (table["ratio_low"] <= 0).any() or (table["ratio_high"] < table["ratio_low"]).any():
        raise ValueError(f"tokenization table {path} needs 0 < ratio_low <= ratio_high")
    return table


def tokenization_disparity(
    table: pd.DataFrame | None = None,
    *,
    context_tokens: int = 8192,
    english_tokens_per_message: float | None = None,
) -> pd.DataFrame:
    """Relative cost per message and messages per context window by language.

    Parameters
    ----------
    table
        Rows with ``language``, ``ratio_low``, ``ratio_high`` (tokens per message relative to English);
        default :func:`load_tokenization_table`.
    context_tokens
        Context window in tokens (8,192 was GPT-4's at the time of the MASSIVE analysis).
    english_tokens_per_message
        Median English tokens per message, if known; without it only ratios are returned.

    Returns
    -------
    DataFrame with ``cost_low``/``cost_high`` (price per message relative to English at the same per-token
    price), ``window_share_low``/``window_share_high`` (messages fitting in one window relative to English),
    and, when ``english_tokens_per_message`` is given, ``messages_per_window_low``/``_high``.
    """
    if table is None:
        table = load_tokenization_table()
    context_tokens = _check_scalar("context_tokens", context_tokens)
    out = pd.DataFrame({"language": table["language"]})
    out["cost_low"] = table["ratio_low"].to_numpy(dtype=float)
    out["cost_high"] = table["ratio_high"].to_numpy(dtype=float)
    # A language that needs r times more tokens fits 1/r as many messages in the same window.
    out["window_share_low"] = 1.0 / out["cost_high"]
    out["window_share_high"] = 1.0 / out["cost_low"]
    if english_tokens_per_message is not None:
        eng = _check_scalar("english_tokens_per_message", english_tokens_per_message)
        out["messages_per_window_low"] = np.floor(context_tokens / (eng * out["cost_high"]))
        out["messages_per_window_high"] = np.floor(context_tokens / (eng * out["cost_low"]))
    return out


__all__ = [
    "DataConstrainedLaw",
    "MUENNIGHOFF_2023",
    "MUENNIGHOFF_2023_FIGURE1_LOSSES",
    "effective_tokens",
    "effective_params",
    "compute_optimal_params",
    "data_constrained_loss",
    "ExhaustionResult",
    "exhaustion_year",
    "lognormal_sigma_from_interval",
    "load_tokenization_table",
    "tokenization_disparity",
]
