"""Serving workloads: requests as (arrival time, prompt tokens, output tokens).

A :class:`Workload` is a table sorted by arrival. It comes from a generator
(:func:`poisson_workload`, :func:`bursty_workload`) with lengths that are
fixed or drawn from a length distribution (:class:`Uniform`,
:class:`LogNormal`, :class:`Empirical`), or from a trace (:func:`load_trace`):
the Azure LLM inference traces of 2023 ship in ``simulations/data`` (see the
README beside them for their source, CC-BY licence and summary statistics).

Arrival times are seconds from the first request; lengths are token counts
(int64). Every draw comes from ``numpy.random.default_rng(seed)``, so a
workload is a pure function of its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scalelab.simulations.inference import _check_count, _check_positive

__all__ = [
    "Workload", "Uniform", "LogNormal", "Empirical", "LengthDistribution",
    "poisson_workload", "bursty_workload", "load_trace", "TRACE_FILES", "TRACE_DIR",
]

TRACE_DIR = Path(__file__).resolve().parent.parent / "data" / "azure_llm_trace_2023"
#: The shipped traces: Patel et al. 2024, "Splitwise", ISCA (Azure Public Dataset, CC-BY 4.0).
TRACE_FILES = {"conv": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}
COLUMNS = ("arrival", "prompt_tokens", "output_tokens")


class Workload:
    """Requests sorted by arrival: columns ``arrival`` (s), ``prompt_tokens``, ``output_tokens``.

    Built from a DataFrame (or anything with those three columns); checked
    once here, so the simulator trusts it. ``name`` labels tables and plots.
    """

    def __init__(self, table: pd.DataFrame, name: str = "workload") -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"workload table must be a pandas DataFrame, got {type(table).__name__}")
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"workload table is missing column(s) {missing}; needs {list(COLUMNS)}")
        if len(table) == 0:
            raise ValueError("workload must hold at least one request")
        arrival = np.asarray(table["arrival"], dtype=np.float64)  # (n,)
        if not np.all(np.isfinite(arrival)) or arrival.min() < 0:
            raise ValueError("workload arrival times must be finite and >= 0")
        if np.any(np.diff(arrival) < 0):
            raise ValueError("workload arrival times must be sorted (non-decreasing)")
        lengths = {}
        for col, low in (("prompt_tokens", 1), ("output_tokens", 1)):
            raw = np.asarray(table[col])
            if raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise ValueError(f"workload {col} must be whole numbers")
            if raw.min() < low:
                raise ValueError(f"workload {col} must be >= {low}, got a minimum of {raw.min()}")
            lengths[col] = raw.astype(np.int64)
        self.table = pd.DataFrame({"arrival": arrival, **lengths})
        self.table.flags.allows_duplicate_labels = False
        self.name = name

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"Workload({self.name!r}, {len(self)} requests over {self.duration_s:.1f} s)"

    @property
    def arrival(self) -> np.ndarray:
        return self.table["arrival"].to_numpy()

    @property
    def prompt_tokens(self) -> np.ndarray:
        return self.table["prompt_tokens"].to_numpy()

    @property
    def output_tokens(self) -> np.ndarray:
        return self.table["output_tokens"].to_numpy()

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival."""
        a = self.arrival
        return float(a[-1] - a[0])

    @property
    def rate(self) -> float:
        """Mean arrival rate, requests/s (``(n - 1) / duration``; inf for simultaneous arrivals)."""
        d = self.duration_s
        return (len(self) - 1) / d if d > 0 else math.inf

    def scaled(self, rate_scale: float) -> "Workload":
        """Replay at ``rate_scale`` times the rate (arrival gaps divided by it)."""
        _check_positive(rate_scale=rate_scale)
        t = self.table.copy()
        t["arrival"] = (t["arrival"] - t["arrival"].iloc[0]) / rate_scale
        return Workload(t, f"{self.name} x{rate_scale:g}")

    def head(self, n: int) -> "Workload":
        """The first ``n`` requests."""
        _check_count(limit=n)
        return Workload(self.table.iloc[:n].reset_index(drop=True), self.name)

    def sample(self, fraction: float, *, seed: int = 0) -> "Workload":
        """Keep each request with probability ``fraction`` (a thinned trace: the rate scales by ``fraction``)."""
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        keep = np.random.default_rng(seed).random(len(self)) < fraction  # (n,)
        if not keep.any():
            keep[0] = True
        return Workload(self.table[keep].reset_index(drop=True), f"{self.name} ({fraction:g} sampled)")


# --------------------------------------------------------------------------- lengths


class LengthDistribution:
    """A distribution of token counts; ``sample(n, rng)`` returns (n,) int64 values >= 1."""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(LengthDistribution):
    """Whole numbers uniform on ``[low, high]`` (inclusive)."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _check_count(low=self.low, high=self.high)
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")

    def sample(self, n, rng):
        return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)


@dataclass(frozen=True)
class LogNormal(LengthDistribution):
    """``round(median * exp(sigma * Z))``, clipped to ``[1, max_tokens]``."""

    median: float
    sigma: float
    max_tokens: int = 1 << 20

    def __post_init__(self) -> None:
        _check_positive(median=self.median)
        if not (isinstance(self.sigma, (int, float)) and self.sigma >= 0 and math.isfinite(self.sigma)):
            raise ValueError(f"sigma must be finite and >= 0, got {self.sigma!r}")
        _check_count(max_tokens=self.max_tokens)

    def sample(self, n, rng):
        x = np.round(self.median * np.exp(self.sigma * rng.standard_normal(n)))  # (n,)
        return np.clip(x, 1, self.max_tokens).astype(np.int64)


class Empirical(LengthDistribution):
    """Resample (with replacement) from observed lengths, e.g. a trace's prompt lengths."""

    def __init__(self, values) -> None:
        v = np.asarray(values)
        if v.ndim != 1 or v.size == 0 or v.dtype.kind not in "iu" or v.min() < 1:
            raise ValueError("Empirical needs a non-empty 1-D array of integer lengths >= 1")
        self.values = v.astype(np.int64)
        self.values.flags.writeable = False

    def sample(self, n, rng):
        return self.values[rng.integers(0, self.values.size, size=n)]

    def __repr__(self) -> str:
        return f"Empirical({self.values.size} values, median {np.median(self.values):g})"


def _lengths(spec, name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec, LengthDistribution):
        return spec.sample(n, rng)
    if isinstance(spec, bool) or not isinstance(spec, (int, np.integer)):
        raise TypeError(f"{name} must be an int or a length distribution (Uniform, LogNormal, Empirical), "
                        f"got {type(spec).__name__}")
    _check_count(**{name: int(spec)})
    return np.full(n, int(spec), dtype=np.int64)


# --------------------------------------------------------------------------- generators


def poisson_workload(rate: float, n: int, *, prompt_len=512, output_len=128, seed: int = 0) -> Workload:
    """``n`` requests arriving as a Poisson process of ``rate`` requests/s (first at t = 0)."""
    return bursty_workload(rate, n, cv=1.0, prompt_len=prompt_len, output_len=output_len, seed=seed)


def bursty_workload(rate: float, n: int, *, cv: float, prompt_len=512, output_len=128, seed: int = 0) -> Workload:
    """``n`` requests with gamma inter-arrival times of mean ``1 / rate`` and coefficient of variation ``cv``.

    ``cv = 1`` is Poisson, ``cv > 1`` burstier, ``cv = 0`` evenly spaced.
    The gamma shape is ``1 / cv**2`` and the scale ``cv**2 / rate``.
    """
    _check_positive(rate=rate)
    _check_count(n=n)
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not (cv >= 0 and math.isfinite(cv)):
        raise ValueError(f"cv must be a finite number >= 0, got {cv!r}")
    rng = np.random.default_rng(seed)
    if cv == 0:
        gaps = np.full(n - 1, 1.0 / rate)  # (n - 1,)
    elif cv == 1.0:
        gaps = rng.exponential(1.0 / rate, size=n - 1)  # (n - 1,)
    else:
        gaps = rng.gamma(1.0 / cv**2, cv**2 / rate, size=n - 1)  # (n - 1,)
    arrival = np.concatenate([[0.0], np.cumsum(gaps)])  # (n,)
    table = pd.DataFrame({
        "arrival": arrival,
        "prompt_tokens": _lengths(prompt_len, "prompt_len", n, rng),
        "output_tokens": _lengths(output_len, "output_len", n, rng),
    })
    kind = "Poisson" if cv == 1.0 else f"gamma cv={cv:g}"
    return Workload(table, f"{kind} {rate:g} req/s")


def load_trace(trace: str | Path, *, rate_scale: float = 1.0, limit: int | None = None) -> Workload:
    """A request trace: ``"conv"`` or ``"code"`` (the shipped Azure 2023 traces) or a CSV path.

    A CSV needs either the Azure columns ``TIMESTAMP, ContextTokens,
    GeneratedTokens`` (timestamps as dates) or ``arrival, prompt_tokens,
    output_tokens`` (seconds). Arrivals are shifted to start at 0 and must be
    sorted. ``rate_scale`` replays at that multiple of the recorded rate;
    ``limit`` keeps the first requests only.
    """
    if isinstance(trace, str) and trace.lower() in TRACE_FILES:
        path, name = TRACE_DIR / TRACE_FILES[trace.lower()], f"azure-{trace.lower()}"
    elif isinstance(trace, (str, Path)):
        path, name = Path(trace), Path(trace).stem
        if not path.is_file():
            raise FileNotFoundError(f"trace file not found: {path} (or use 'conv' / 'code')")
    else:
        raise TypeError(f"trace must be 'conv', 'code' or a CSV path, got {type(trace).__name__}")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"trace {path}: not a readable CSV ({exc})") from None
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= set(raw.columns):
        try:
            stamps = pd.to_datetime(raw["TIMESTAMP"], format="mixed")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"trace {path}: TIMESTAMP column is not a date-time ({exc})") from None
        seconds = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy() if len(raw) else np.zeros(0)
        table = pd.DataFrame({"arrival": seconds, "prompt_tokens": raw["ContextTokens"],
                              "output_tokens": raw["GeneratedTokens"]})
    elif set(COLUMNS) <= set(raw.columns):
        table = raw[list(COLUMNS)].copy()
        table["arrival"] = table["arrival"] - (table["arrival"].iloc[0] if len(table) else 0.0)
    else:
        raise ValueError(f"trace {path}: needs columns TIMESTAMP, ContextTokens, GeneratedTokens or "
                         f"{', '.join(COLUMNS)}; found {', '.join(map(str, raw.columns))}")
    if len(table) and np.any(np.diff(table["arrival"].to_numpy(dtype=np.float64)) < 0):
        raise ValueError(f"trace {path}: arrival times are not sorted")
    w = Workload(table, name)
    if limit is not None:
        w = w.head(limit)
    return w if rate_scale == 1.0 else w.scaled(rate_scale)

