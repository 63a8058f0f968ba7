"""A step-cost model fitted to the live engine, and the simulator replaying it (the closed loop's parts)."""

import re

import numpy as np
import pandas as pd
import pytest

from scalelab.kernels.model import LlamaModel
from scalelab.simulations.serving import poisson_workload, simulate
from scalelab.simulations.serving.closed_loop import (Calibration, ClosedLoop, _calibration_batches, _hardware_for,
                                                      calibrate_engine)
from scalelab.simulations.serving.cost import StepCostModel, iteration_aggregates
from scalelab.simulations.serving.fitted import FittedStepCost, engine_iterations, fit_step_cost
from scalelab.simulations.serving.live import Engine, get_engine_model

TINY = get_engine_model("tiny")


def _synthetic(coef, seed=0, n=60):
    """Iterations like an engine's (prefill chunks and decode batches) timed exactly by ``coef``."""
    rng = np.random.default_rng(seed)
    X = []
    for _ in range(n):
        chunks = rng.integers(1, 300, rng.integers(0, 3))
        offs = rng.integers(0, 500, chunks.size)
        kv = rng.integers(1, 900, rng.integers(0 if chunks.size else 1, 20))
        X.append(iteration_aggregates(TINY, chunks, offs, kv))
    X = np.array(X)  # (n, 6)
    return X, X @ np.asarray(coef)


def test_aggregates_are_the_roofline_models():
    cost = StepCostModel("llama-3-8b", "h100-sxm")
    x = iteration_aggregates(cost.model, [100, 7], [0, 50], [10, 300, 4])
    np.testing.assert_array_equal(x, cost.aggregates([100, 7], [0, 50], [10, 300, 4]))
    # T = 107 + 3 tokens; S = 2 chunks + 3 rows; P = 100*101/2 + 7*50 + 7*8/2 + (314 + 3); K = 100 + 57 + 314 + 3
    np.testing.assert_array_equal(x, [1, 110, 5, 5050 + 350 + 28 + 317, 474, 0])


def test_fit_recovers_known_coefficients():
    coef = [2e-3, 1e-5, 3e-5, 2e-9, 4e-8, 0.0]
    X, y = _synthetic(coef)
    f = fit_step_cost(TINY, X, y)
    np.testing.assert_allclose(f.coef, coef, rtol=1e-6, atol=1e-12)
    assert f.rel_err_p90 < 1e-6 and f.n_iterations == 60
    np.testing.assert_allclose(f.time(X), y, rtol=1e-6)
    assert isinstance(f.time(X[0]), float)
    assert "fixed=0.002" in repr(f)


def test_fit_keeps_coefficients_non_negative_on_noisy_data():
    X, y = _synthetic([1e-3, 2e-5, 0, 0, 1e-7, 0], seed=3, n=200)
    noisy = y * np.random.default_rng(4).uniform(0.8, 1.25, y.size)
    f = fit_step_cost(TINY, X, noisy)
    assert (f.coef >= 0).all()
    assert f.coef[0] == pytest.approx(1e-3, rel=0.3)
    assert 0.01 < f.rel_err_p50 < 0.25


def test_fit_rejects_data_that_cannot_identify_it():
    X, y = _synthetic([1e-3, 1e-5, 0, 0, 0, 0], n=40)
    with pytest.raises(ValueError, match="y must have shape"):
        fit_step_cost(TINY, X, y[:-1])
    with pytest.raises(ValueError, match=r"X must have shape \(k, 6\)"):
        fit_step_cost(TINY, X[:, :5], y)
    with pytest.raises(ValueError, match="y must be positive and finite, got 0.0"):
        fit_step_cost(TINY, X, np.where(np.arange(y.size) == 3, 0.0, y))
    with pytest.raises(ValueError, match="at least"):
        fit_step_cost(TINY, X[:4], y[:4])
    # decode batches of one sequence at one context only: tokens, rows, pairs and reads move together
    same = np.array([iteration_aggregates(TINY, [], [], [100 + i % 2]) for i in range(30)])
    same[:, 3] = same[:, 4] = 101  # T, S vary with nothing else: make every column but T and S constant
    same[:, 1] = same[:, 2] = 1 + np.arange(30) % 3
    with pytest.raises(ValueError, match="cannot separate"):
        fit_step_cost(TINY, same, np.full(30, 1e-3))


@pytest.mark.parametrize("args, exc, message", [
    ((TINY, [-5], [0], []), ValueError, "chunk_tokens must hold whole numbers >= 1, got -5.0"),
    ((TINY, [0], [0], []), ValueError, "chunk_tokens must hold whole numbers >= 1, got 0.0"),
    ((TINY, [4], [-1], []), ValueError, "chunk_offsets must hold whole numbers >= 0, got -1.0"),
    ((TINY, [], [], [3, float("nan")]), ValueError, "decode_kv must hold whole numbers >= 0, got nan"),
    ((TINY, [], [], [2.5]), ValueError, "decode_kv must hold whole numbers >= 0, got 2.5"),
    ((TINY, [], [], [[1, 2]]), ValueError, "decode_kv must be a 1-D sequence of counts, got shape (1, 2)"),
    ((TINY, ["7"], [0], []), TypeError, "chunk_tokens must be a number or an array of numbers"),
    ((TINY, [True], [0], []), TypeError, "chunk_tokens must be a number or an array of numbers"),
    ((TINY, [4, 5], [0], []), ValueError, "chunk_offsets must hold one offset per chunk (2), got 1"),
    ((TINY, [], [], []), ValueError, "an iteration needs at least one prefill chunk"),
    ((TINY, [], [], [3], 0), ValueError, "q must be >= 1, got 0"),
    ((TINY, [], [], [3], 1.5), TypeError, "q must be an integer, got float"),
    ((3, [], [], [3]), TypeError, "model must be a preset name or a ModelConfig, got int"),
])
def test_aggregates_reject_bad_counts(args, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        iteration_aggregates(*args)


def test_aggregates_accept_whole_floats_and_arrays_like_lists():
    a = iteration_aggregates(TINY, [100, 7], [0, 50], [10, 300, 4])
    np.testing.assert_array_equal(iteration_aggregates(TINY, np.array([100.0, 7.0]), (0, 50), np.array([10, 300, 4])), a)
    np.testing.assert_array_equal(iteration_aggregates(TINY, [], [], np.array([5], np.uint8)),
                                  iteration_aggregates(TINY, [], [], [5]))


@pytest.mark.parametrize("batches, exc, message", [
    ([], ValueError, "batches must hold at least one iteration"),
    (5, TypeError, "batches must be a list of (chunk_tokens, chunk_offsets, decode_kv, seconds), got int"),
    (np.zeros((2, 4)), TypeError, "batches must be a list"),
    ([3], TypeError, "batches[0] must be a tuple (chunk_tokens, chunk_offsets, decode_kv, seconds), got int"),
    ([([4], [0], [], 0.1), ([4], [0], [])], ValueError, "batches[1] must have 4 entries"),
    ([([4], [0], [], float("nan"))], ValueError, "batches[0]: seconds must be positive and finite, got nan"),
    ([([4], [0], [], -0.1)], ValueError, "batches[0]: seconds must be positive and finite, got -0.1"),
    ([([4], [0], [], "0.1")], TypeError, "batches[0]: seconds must be a number, got str"),
    ([([4], [0], [], 0.1), ([-4], [0], [], 0.1)], ValueError, "batches[1]: chunk_tokens must hold whole numbers"),
])
def test_engine_iterations_reject_bad_logs(batches, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        engine_iterations(TINY, batches)


@pytest.mark.parametrize("X, y, exc, message", [
    (np.zeros((0, 6)), np.zeros(0), ValueError, "X must hold at least one iteration"),
    ([["a"] * 6] * 20, np.ones(20), TypeError, "X must be a number or an array of numbers"),
    (np.ones((20, 6), bool), np.ones(20), TypeError, "X must be a number or an array of numbers"),
    (np.full((20, 6), np.nan), np.ones(20), ValueError, "X must be non-negative and finite, got nan"),
    (-np.ones((20, 6)), np.ones(20), ValueError, "X must be non-negative and finite, got -1.0"),
    (np.ones((20, 5)), np.ones(20), ValueError, "X must have shape (k, 6), got (20, 5)"),
    (np.ones((20, 6)), np.ones(19), ValueError, "y must have shape (20,)"),
    (np.ones((20, 6)), np.full(20, np.inf), ValueError, "y must be positive and finite, got inf"),
    (np.ones((20, 6)), "fast", TypeError, "y must be a number or an array of numbers, got str"),
])
def test_fit_rejects_bad_input_by_name(X, y, exc, message):
    with pytest.raises(exc, match=re.escape(message)):
        fit_step_cost(TINY, X, y)


def test_fitted_cost_validates_its_coefficients():
    with pytest.raises(ValueError, match="shape"):
        FittedStepCost(TINY, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        FittedStepCost(TINY, [1e-3, -1e-6, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="above zero"):
        FittedStepCost(TINY, [0, 0, 1e-6, 0, 0, 0])


def test_simulator_on_a_fixed_cost_per_iteration_counts_iterations():
    """With 10 ms per iteration and nothing else, latencies are iteration counts times 10 ms."""
    f = FittedStepCost(TINY, [0.01, 0, 0, 0, 0, 0])
    w = poisson_workload(1e-3, 2, prompt_len=700, output_len=5, seed=0)  # far apart: each request alone
    r = simulate(TINY, _hardware_for(f), w, scheduler="chunked", token_budget=512, cost_model=f, kv_blocks=256,
                 dtype_bytes=4)
    req = r.requests
    np.testing.assert_allclose(req["first_token"] - req["arrival"], 0.02)  # two chunks: 512 + 188 tokens
    np.testing.assert_allclose(req["finish"] - req["first_token"], 0.04)  # four decode steps
    assert r.config["kv_capacity_blocks"] == 256
    with pytest.raises(ValueError, match="kv_blocks must be an int >= 1"):
        simulate(TINY, _hardware_for(f), w, cost_model=f, kv_blocks=0)
    with pytest.raises(TypeError, match="cost_model must have time"):
        simulate(TINY, _hardware_for(f), w, cost_model=object(), kv_blocks=256)
    with pytest.raises(ValueError, match="spec_k"):
        simulate(TINY, _hardware_for(f), w, cost_model=f, kv_blocks=256, spec_k=2, spec_accept=0.5)


def test_engine_logs_what_each_iteration_did():
    cfg = get_engine_model("tiny")
    engine = Engine(LlamaModel.random(cfg, seed=0), token_budget=64)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size, n) for n in (100, 10, 40)]
    engine.generate(prompts, max_new_tokens=6)
    X, y = engine_iterations(cfg, engine.batches)
    assert X[:, 1].sum() == 150 + 3 * 5  # every prompt token once, then 5 decode tokens per request
    assert (X[:, 1] <= 64 + 3).all()  # the token budget holds
    assert (y > 0).all() and len(y) == len(engine.rows)
    # decode step j of a request with prompt p attends to p + j cached tokens
    assert all(b.kind == "plain" and b.drafts == () for b in engine.batches)
    kvs = sorted(k for b in engine.batches for k in b.decode_kv)
    assert kvs == sorted(p.size + j for p in prompts for j in range(5))
    # prefill chunks tile each prompt from offset 0
    ends = sorted(o + c for b in engine.batches for c, o in zip(b.chunk_tokens, b.chunk_offsets))
    starts = sorted(o for b in engine.batches for o in b.chunk_offsets)
    assert starts.count(0) == 3 and {100, 10, 40} <= set(ends) and sorted(set(starts) - {0}) == sorted(set(ends) - {100, 10, 40})


def test_calibration_set_spans_what_the_fit_needs():
    runs = _calibration_batches(4096, 512)
    assert {n for n, _, _ in runs} >= {1, 32} and max(p for _, p, _ in runs) > 512
    assert all(p <= 2048 for _, p, _ in _calibration_batches(4096, 512))
    assert all(p <= 64 for _, p, _ in _calibration_batches(128, 512))


class _ScriptedEngine:
    """Stands in for the live engine: logs whole-prompt prefill then decode steps, timed exactly by ``coef``."""

    token_budget = 512

    def __init__(self, coef):
        self.coef = np.asarray(coef)
        self.batches = []

    def warm_up(self):
        pass

    def generate(self, prompts, *, max_new_tokens, seed):
        n, p = len(prompts), prompts[0].size
        steps = [([p] * n, [0] * n, [])] + [([], [], [p + j] * n) for j in range(max_new_tokens - 1)]
        self.batches = [(c, o, kv, float(iteration_aggregates(TINY, c, o, kv) @ self.coef)) for c, o, kv in steps]


def test_calibration_returns_its_iterations_and_leaves_the_engine_alone():
    coef = [2e-3, 1e-5, 3e-5, 2e-9, 4e-8, 0.0]
    engine = _ScriptedEngine(coef)
    cal = calibrate_engine(engine, TINY, seed=1, quick=True)
    assert isinstance(cal, Calibration) and not hasattr(engine, "calibration_batches")
    runs = _calibration_batches(TINY.max_position, 512, quick=True)
    assert len(cal.batches) == sum(k for _, _, k in runs)  # every run's iterations, not only the last run's
    assert cal.batches[-len(engine.batches):] == tuple(engine.batches)
    assert cal.fit.n_iterations == len(cal.batches)
    np.testing.assert_allclose(cal.fit.coef, coef, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("argv, message", [
    (["--loads", "2"], "--loads must be comma-separated numbers in (0, 1]"),
    (["--loads", "0.3,x"], "--loads must be comma-separated numbers in (0, 1]"),
    (["--duration", "0"], "--duration must be a positive number"),
    (["--prompt", "1"], "--prompt must be an integer >= 2"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--model", "gpt-5"], "unknown engine model 'gpt-5'"),
])
def test_cli_closed_loop_bad_input_is_one_line(capsys, argv, message):
    from scalelab.cli.cli import main

    assert main(["engine", "closed-loop", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err



def test_served_iterations_tell_a_bias_from_a_spread():
    fit = FittedStepCost(TINY, [1e-3, 1e-5, 2e-6, 1e-9, 1e-8, 0.0])
    rng = np.random.default_rng(3)

    def served(scale):  # iterations timed at ``scale`` x the fit's price, one factor per iteration
        out = []
        for f in scale:
            c, o, kv = [int(rng.integers(1, 200))], [0], [int(k) for k in rng.integers(1, 500, 4)]
            out.append((c, o, kv, fit.time(iteration_aggregates(TINY, c, o, kv)) * f))
        return out

    res = ClosedLoop(fit, 1.0, pd.DataFrame(), served={
        0.3: served(np.full(40, 1.25)),  # a bias: every iteration 25% dearer than its price
        0.8: served(np.tile([0.8, 1.2], 20)),  # a spread: right on average, +-20% each
    })
    t = res.served_iterations().set_index("load")
    assert list(t["iterations"]) == [40, 40]
    assert t.loc[0.3, "priced/measured"] == pytest.approx(0.8)
    assert t.loc[0.3, "measured/priced p50"] == pytest.approx(1.25) and t.loc[0.3, "measured/priced cv"] < 1e-9
    assert t.loc[0.8, "measured/priced p50"] == pytest.approx(1.0)
    assert t.loc[0.8, "measured/priced p10"] == pytest.approx(0.8)
    assert t.loc[0.8, "measured/priced p90"] == pytest.approx(1.2)
    assert t.loc[0.8, "measured/priced cv"] == pytest.approx(0.2)
    assert ClosedLoop(fit, 1.0, pd.DataFrame()).served_iterations().empty


def test_cli_closed_loop_prints_how_the_fit_priced_the_served_iterations(monkeypatch, capsys):
    import scalelab.simulations.serving.closed_loop as cl
    from scalelab.cli.cli import main

    fit = FittedStepCost(TINY, [1e-3, 1e-5, 2e-6, 1e-9, 1e-8, 0.0])
    table = pd.DataFrame([{"load": 0.3, "rate_rps": 1.0, "requests": 8, "metric": "TTFT p50", "measured_ms": 2.0,
                           "predicted_ms": 1.8, "predicted/measured": 0.9, "bar": "+-25%", "within_bar": True}])
    it = ([5], [0], [3, 4])
    served = {0.3: [(*it, fit.time(iteration_aggregates(TINY, *it)) * 1.5)]}
    monkeypatch.setattr(cl, "closed_loop", lambda *a, **k: cl.ClosedLoop(fit, 2.0, table, {}, served))
    assert main(["engine", "closed-loop"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 rows within the bars" in out and "served iterations against the fit's price" in out
    row = out.strip().splitlines()[-1].split()
    assert row[0] == "0.3" and row[1] == "1" and float(row[4]) == pytest.approx(1 / 1.5, rel=1e-3)


# ------------------------------------------------------------------ the wake cost after an idle gap


def test_wake_cost_builds_up_with_the_gap():
    f = FittedStepCost(TINY, [1e-3, 0, 0, 0, 0, 0], wake_s=2e-3, wake_tau_s=0.01)
    assert f.wake(0.0) == 0.0 and f.wake(np.inf) == pytest.approx(2e-3)
    g = np.array([0.0, 1e-3, 0.01, 0.05, 1.0])
    w = f.wake(g)
    np.testing.assert_allclose(w, 2e-3 * (1 - np.exp(-g / 0.01)), rtol=1e-12)
    assert (np.diff(w) > 0).all()
    assert FittedStepCost(TINY, [1e-3, 0, 0, 0, 0, 0]).wake(5.0) == 0.0  # no wake cost by default
    fw = FittedStepCost(TINY, [1e-3, 1e-5, 0, 0, 0, 0], rel_err_p50=0.1).with_wake(1e-3, 0.02)
    assert fw.wake_s == 1e-3 and fw.wake_tau_s == 0.02 and fw.rel_err_p50 == 0.1 and fw.coef[1] == 1e-5
    assert "wake=0.001 s" in repr(fw) and [r["aggregate"] for r in fw.table()][-2:] == [
        "wake_after_long_idle", "wake_time_constant"]
    for kwargs, message in [({"wake_s": -1e-3}, "wake_s must be"), ({"wake_s": np.nan}, "wake_s must be"),
                            ({"wake_tau_s": 0.0}, "wake_tau_s must be"), ({"wake_tau_s": np.inf}, "wake_tau_s must be")]:
        with pytest.raises(ValueError, match=message):
            FittedStepCost(TINY, [1e-3, 0, 0, 0, 0, 0], **kwargs)
    for gap in (-1e-3, np.nan, [0.1, -0.1]):
        with pytest.raises(ValueError, match="gap must be >= 0"):
            f.wake(gap)


def test_fit_wake_recovers_a_known_curve_and_refuses_a_flat_one():
    from scalelab.simulations.serving.fitted import fit_wake

    g = np.array([0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    noise = np.random.default_rng(1).normal(0, 2e-5, g.size)
    a, tau = fit_wake(g, 1e-3 * (1 - np.exp(-g / 0.006)) + noise)
    assert a == pytest.approx(1e-3, rel=0.05) and tau == pytest.approx(0.006, rel=0.3)
    a0, _ = fit_wake(g, -np.abs(noise))  # iterations no dearer after a gap: no wake cost
    assert a0 == 0.0
    for gaps, excess, message in [([0.0, 0.0], [0.0, 0.0], "a gap > 0"), ([0.1], [0.0], "length >= 2"),
                                  ([0.0, -1.0], [0.0, 0.0], "gaps must be non-negative and finite"),
                                  ([0.0, 0.1], [0.0, np.nan], "excess must be finite")]:
        with pytest.raises(ValueError, match=message):
            fit_wake(gaps, excess)


def _requests_of(w_kwargs, f):
    w = poisson_workload(**w_kwargs)
    return simulate(TINY, _hardware_for(f), w, scheduler="chunked", token_budget=512, cost_model=f, kv_blocks=256,
                    dtype_bytes=4).requests


def test_simulator_charges_the_wake_cost_after_idle_gaps_only():
    base = FittedStepCost(TINY, [0.01, 0, 0, 0, 0, 0])
    woke = base.with_wake(0.004, 0.001)
    far = dict(rate=1e-3, n=3, prompt_len=100, output_len=5, seed=0)  # each request alone, long gaps between
    r0, r1 = _requests_of(far, base), _requests_of(far, woke)
    # every request starts on an idle engine: its prefill iteration pays the (saturated) wake cost once
    np.testing.assert_allclose((r1["first_token"] - r1["arrival"]) - (r0["first_token"] - r0["arrival"]), 0.004)
    np.testing.assert_allclose(r1["finish"] - r1["first_token"], r0["finish"] - r0["first_token"])
    burst = dict(rate=1e9, n=6, prompt_len=100, output_len=5, seed=0)  # all at once: only the first iteration
    b0, b1 = _requests_of(burst, base), _requests_of(burst, woke)
    assert float(b1["finish"].max() - b0["finish"].max()) == pytest.approx(0.004)


def test_engine_logs_idle_gaps_and_measures_its_wake_cost():
    from scalelab.simulations.serving.closed_loop import measure_wake

    engine = Engine(LlamaModel.random(TINY, seed=0), token_budget=64)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, TINY.vocab_size, 8) for _ in range(2)]
    engine.generate(prompts, max_new_tokens=3)
    assert engine.batches[0].idle_before == np.inf  # the engine's first iteration ever
    engine.generate(prompts, max_new_tokens=4, pause_s=0.005)
    assert all(0.005 <= b.idle_before < 1.0 for b in engine.batches)
    with pytest.raises(ValueError, match="pause_s must be"):
        engine.generate(prompts, max_new_tokens=2, pause_s=-0.1)
    table = measure_wake(engine, TINY, gaps=(0.0, 0.001, 0.004), repeats=1, steps=2, batch=2, prompt=8)
    assert list(table["gap_s"]) == [0.0, 0.001, 0.004] and table["excess_s"].iloc[0] == 0.0
    assert (table["iteration_s"] > 0).all()
    with pytest.raises(ValueError, match="gaps must start with 0"):
        measure_wake(engine, TINY, gaps=(0.001, 0.002, 0.004))
    with pytest.raises(ValueError, match="gaps must start with 0"):
        measure_wake(engine, TINY, gaps=(0.0, float("nan"), 0.004))
    for kwargs, exc, message in [({"repeats": 0}, ValueError, "repeats must be positive"),
                                 ({"steps": 0}, ValueError, "steps must be positive"),
                                 ({"batch": 1.5}, TypeError, "batch must be an int"),
                                 ({"prompt": True}, TypeError, "prompt must be an int")]:
        with pytest.raises(exc, match=message):
            measure_wake(engine, TINY, **kwargs)


def test_served_iterations_price_the_wake_cost_of_iterations_after_a_gap():
    from scalelab.simulations.serving.live import EngineIteration

    fit = FittedStepCost(TINY, [1e-3, 1e-5, 2e-6, 1e-9, 1e-8, 0.0], wake_s=1e-3, wake_tau_s=1e-3)
    it = ([5], [0], [3, 4])
    price = fit.time(iteration_aggregates(TINY, *it))
    served = [EngineIteration(*it, price, idle_before=0.0), EngineIteration(*it, price + 1e-3, idle_before=np.inf)]
    t = ClosedLoop(fit, 1.0, pd.DataFrame(), served={0.3: served}).served_iterations().iloc[0]
    assert t["priced/measured"] == pytest.approx(1.0) and t["wake_s"] == pytest.approx(1e-3)


def test_refit_takes_the_wake_cost_out_of_the_iterations_it_fits():
    from scalelab.simulations.serving.closed_loop import refit_with_wake
    from scalelab.simulations.serving.live import EngineIteration

    coef = np.array([2e-3, 1e-5, 3e-5, 2e-9, 4e-8, 0.0])
    truth = FittedStepCost(TINY, coef, wake_s=1.5e-3, wake_tau_s=0.008)
    rng = np.random.default_rng(4)
    batches = []
    for i in range(120):
        chunks = [int(c) for c in rng.integers(1, 300, rng.integers(0, 3))]
        offs = [int(o) for o in rng.integers(0, 500, len(chunks))]
        kv = [int(k) for k in rng.integers(1, 900, rng.integers(0 if chunks else 1, 20))]
        gap = [0.0, 1e-3, 5e-3, 0.05, np.inf][i % 5]
        t = truth.time(iteration_aggregates(TINY, chunks, offs, kv)) + truth.wake(gap)
        batches.append(EngineIteration(chunks, offs, kv, t, idle_before=gap))
    gaps = np.array([0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
    wake = pd.DataFrame({"gap_s": gaps, "iteration_s": 0.01, "excess_s": truth.wake(gaps)})
    fit = refit_with_wake(TINY, batches, wake)
    assert fit.wake_s == pytest.approx(1.5e-3, rel=0.02) and fit.wake_tau_s == pytest.approx(0.008, rel=0.05)
    np.testing.assert_allclose(fit.coef[:5], coef[:5], rtol=0.03)
    plain = fit_step_cost(TINY, *engine_iterations(TINY, batches))  # the same data fitted without the wake cost
    assert plain.coef[0] > 1.2 * coef[0]  # charges every iteration part of what only the ones after a gap pay
