"""Training runs for scaling-law work: published tables, reading a run list, synthetic runs.

Published tables (Hoffmann et al. 2022 Table 3 and Table A3, a list of published
models, the 245 Chinchilla Figure-4 runs) live in ``simulations/data`` with their
sources and load as DataFrames. :func:`read_runs` turns a CSV or DataFrame into the
validated ``N, D, C, loss`` frame every fit takes; :func:`isoflop_design` and
:func:`simulate_runs` make synthetic runs from a known law.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.simulations.checks import as_positive_array as _positive
from scalelab.simulations.checks import check_int as _check_int
from scalelab.simulations.checks import show
from scalelab.simulations.scaling_laws import TRAINING_FLOPS_PER_PARAM_TOKEN, get_law

DATA_DIR = Path(__file__).resolve().parent / "data"


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
            value = col.iloc[i]  # a NumPy scalar, or the text of a cell that is not a number
            shown = repr(value) if isinstance(value, str) else show(value)
            raise ValueError(f"runs column {col.name!r} must be positive and finite; row {i} is {shown}")
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


# ------------------------------------------------------------------------------ synthetic runs


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
