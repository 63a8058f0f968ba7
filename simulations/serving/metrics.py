"""What a serving run measured: per-request latencies, their percentiles, throughput and goodput.

Definitions (seconds):

* TTFT, time to first token: ``first_token - arrival`` (queueing + prefill);
* TPOT, time per output token after the first: ``(finish - first_token) / (output_tokens - 1)``
  (NaN for one-token outputs);
* inter-token latency (ITL): the duration of each decode step, one sample per
  sequence in the step, so its percentiles are over generated tokens; with
  speculative decoding a step emits its accepted tokens together (at one instant),
  so the samples are over steps: the time between bursts, not between tokens;
* end-to-end latency: ``finish - arrival``; queueing delay: ``start - arrival``;
* goodput: requests per second that meet both ``slo_ttft`` and ``slo_tpot``
  (DistServe's definition: Zhong et al. 2024, "DistServe", OSDI, Section 2),
  over the run's makespan (first arrival to last finish); a one-token output
  meets any TPOT SLO. Per GPU: divided by the devices the deployment uses.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["ServingResult", "weighted_quantile", "PERCENTILES"]

PERCENTILES = (50, 90, 99)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` repeated ``weights`` times (the lower of two at a tie)."""
    if values.size == 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    cw = np.cumsum(weights[order])  # (n,)
    i = int(np.searchsorted(cw, q * cw[-1], side="left"))
    return float(values[order][min(i, values.size - 1)])


class ServingResult:
    """One simulated run: ``requests`` (one row each), ``timeline`` (one row per iteration), ``summary()``."""

    def __init__(self, requests: pd.DataFrame, timeline: pd.DataFrame, *, config: dict, n_gpus: int,
                 slo_ttft: float | None, slo_tpot: float | None, itl: tuple[np.ndarray, np.ndarray]) -> None:
        r = requests
        r["ttft"] = r["first_token"] - r["arrival"]
        owed = (r["output_tokens"] - 1).astype(np.float64)
        r["tpot"] = (r["finish"] - r["first_token"]) / owed.where(owed > 0)
        r["e2e"] = r["finish"] - r["arrival"]
        r["queueing"] = r["start"] - r["arrival"]
        r["finished"] = r["finish"].notna()
        self.requests = r
        self.timeline = timeline
        self.config = config
        self.n_gpus = n_gpus
        self.slo_ttft, self.slo_tpot = slo_ttft, slo_tpot
        self.itl_samples, self.itl_weights = itl

    def __repr__(self) -> str:
        c = self.config
        return (f"ServingResult({c['model']} on {self.n_gpus} x {c['hw']}, {c['scheduler']}, "
                f"{len(self.requests)} requests)")

    def meets_slo(self, slo_ttft: float | None = None, slo_tpot: float | None = None) -> pd.Series:
        """Whether each request finished within both SLOs (an absent SLO always holds)."""
        r = self.requests
        ok = r["finished"].copy()
        if slo_ttft is not None:
            ok &= r["ttft"] <= slo_ttft
        if slo_tpot is not None:
            ok &= r["tpot"].isna() | (r["tpot"] <= slo_tpot)
        return ok

    @property
    def makespan_s(self) -> float:
        r = self.requests
        return float(r["finish"].max() - r["arrival"].min()) if r["finished"].any() else math.nan

    def summary(self, slo_ttft: float | None = None, slo_tpot: float | None = None) -> pd.Series:
        """Percentiles (p50/p90/p99 and mean) of TTFT, TPOT, ITL, E2E and queueing; throughput; goodput.

        SLOs default to those given to :func:`~simulations.serving.simulate`.
        """
        slo_ttft = self.slo_ttft if slo_ttft is None else slo_ttft
        slo_tpot = self.slo_tpot if slo_tpot is None else slo_tpot
        r = self.requests
        done = r[r["finished"]]
        span = self.makespan_s
        out = {"requests": len(r), "finished": int(r["finished"].sum()), "n_gpus": self.n_gpus,
               "makespan_s": span}
        for col in ("ttft", "tpot", "e2e", "queueing"):
            v = done[col].dropna().to_numpy()
            out[f"{col}_mean"] = float(v.mean()) if v.size else math.nan
            for p in PERCENTILES:
                out[f"{col}_p{p}"] = float(np.percentile(v, p)) if v.size else math.nan
        for p in PERCENTILES:
            out[f"itl_p{p}"] = weighted_quantile(self.itl_samples, self.itl_weights, p / 100)
        out["preemptions"] = int(r["preemptions"].sum())
        out["throughput_rps"] = len(done) / span if span > 0 else math.nan
        out["output_tokens_per_s"] = float(done["output_tokens"].sum()) / span if span > 0 else math.nan
        if slo_ttft is not None or slo_tpot is not None:
            ok = self.meets_slo(slo_ttft, slo_tpot)
            out["slo_attainment"] = float(ok.mean())
            out["goodput_rps"] = float(ok.sum()) / span if span > 0 else 0.0
            out["goodput_per_gpu"] = out["goodput_rps"] / self.n_gpus
        return pd.Series(out)

    def latency_table(self) -> pd.DataFrame:
        """TTFT, TPOT, ITL, E2E and queueing as rows, mean and percentiles as columns (milliseconds)."""
        s = self.summary()
        rows = []
        for name, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e"), ("queueing", "queueing")):
            row = {"metric": name, "mean_ms": s.get(f"{key}_mean", math.nan) * 1e3}
            for p in PERCENTILES:
                row[f"p{p}_ms"] = s[f"{key}_p{p}"] * 1e3
            rows.append(row)
        return pd.DataFrame(rows)
