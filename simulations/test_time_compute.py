"""Test-time compute: a synthetic simulation of what selecting among N sampled answers buys.

This is a **synthetic simulation**, not a measurement of any model: problems have a
per-sample success probability ``p``; each candidate answer is correct with probability
``p`` and carries per-token log-probabilities whose typical size depends a little on
whether it is correct. Selection uses our kernels (:func:`scalelab.kernels.sampling.best_of_n`,
the mean token log-probability, and :func:`scalelab.kernels.sampling.sequence_logprob`
with ``reduce="sum"``). The cost of best-of-N is the roofline model's
:func:`scalelab.simulations.inference.best_of_n_cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab.kernels.sampling import best_of_n, sequence_logprob


@dataclass(frozen=True)
class SelectionSimulation:
    """Parameters of the synthetic best-of-N world (all made up, all stated)."""

    p_alpha: float = 2.0  # per-problem success probability p ~ Beta(alpha, beta): mean 0.4
    p_beta: float = 3.0
    median_len: float = 100.0  # candidate length: log-normal around this many tokens, independent of correctness
    len_sigma: float = 0.6  # log-normal sigma of the length: generations vary a lot in length
    nll_correct: float = 0.35  # mean per-token negative log-prob of a correct candidate
    nll_wrong: float = 0.45  # ... of a wrong one: the only link between confidence and correctness
    candidate_spread: float = 0.25  # per-candidate log-normal spread of that mean (confidence varies by sample)


def simulate_selection(n_problems: int, ns, *, seed: int, sim: SelectionSimulation = SelectionSimulation()) -> pd.DataFrame:
    """Accuracy of choosing among N candidates by mean log-prob, by sum log-prob, at random; and coverage.

    Candidates are nested (the first N of one draw of ``max(ns)``), so curves
    over N are comparable. Returns columns ``N, selector, accuracy`` plus
    ``analytic`` (``E[1 - (1 - p)^N]``) on the coverage rows.
    """
    ns = sorted(int(n) for n in ns)
    if not ns or ns[0] < 1 or n_problems < 1:
        raise ValueError(f"ns must be positive and n_problems >= 1, got {ns}, {n_problems}")
    rng = np.random.default_rng(seed)
    n_max = ns[-1]
    p = rng.beta(sim.p_alpha, sim.p_beta, size=n_problems)  # (P,)
    hits = {sel: np.zeros(len(ns)) for sel in ("mean log-prob", "sum log-prob", "random", "coverage (oracle picks any correct)")}
    for i in range(n_problems):
        correct = rng.random(n_max) < p[i]  # (N,)
        lengths = 1 + np.round(sim.median_len * rng.lognormal(0.0, sim.len_sigma, n_max)).astype(np.int64)  # (N,)
        scale = np.where(correct, sim.nll_correct, sim.nll_wrong) * rng.lognormal(0.0, sim.candidate_spread, n_max)
        t_max = int(lengths.max())
        # per-token log-probs: -Exponential(scale); padding beyond each length is ignored by the kernels
        logp = -rng.exponential(1.0, size=(n_max, t_max)) * scale[:, None]  # (N, T)
        pick_random = rng.integers(0, np.array(ns))  # one uniform pick per N
        for j, n in enumerate(ns):
            lp, ln = logp[:n], lengths[:n]
            hits["mean log-prob"][j] += correct[best_of_n(lp, ln)]
            hits["sum log-prob"][j] += correct[int(np.argmax(sequence_logprob(lp, ln, reduce="sum")))]
            hits["random"][j] += correct[pick_random[j]]
            hits["coverage (oracle picks any correct)"][j] += correct[:n].any()
    rows = []
    for sel, h in hits.items():
        for j, n in enumerate(ns):
            row = {"N": n, "selector": sel, "accuracy": h[j] / n_problems}
            if sel.startswith("coverage"):
                row["analytic"] = float(np.mean(1.0 - (1.0 - p) ** n))
            rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["SelectionSimulation", "simulate_selection"]
