"""The live engine: seeded sampling independent of the batch, preemption by recompute, serving a workload."""

import numpy as np
import pytest

from scalelab.kernels.model import LlamaConfig, LlamaModel, llama_forward_ref
from scalelab.simulations.serving import ServingResult, poisson_workload
from scalelab.simulations.serving.live import Engine, get_engine_model

CFG = LlamaConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=97, max_position=256)


@pytest.fixture(scope="module")
def model():
    return LlamaModel.random(CFG, seed=0)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(2)
    return [rng.integers(0, CFG.vocab_size, n) for n in (5, 40, 17, 33)]


@pytest.fixture(scope="module")
def alone(model, prompts):
    """Each prompt generated on its own engine (seed 10 + i)."""
    return [Engine(model).generate([p], max_new_tokens=12, seed=[10 + i])[0] for i, p in enumerate(prompts)]


@pytest.mark.parametrize("scheduler", ["chunked", "continuous", "static"])
def test_tokens_do_not_depend_on_the_batch(model, prompts, alone, scheduler):
    together = Engine(model, scheduler=scheduler, token_budget=24).generate(
        prompts, max_new_tokens=12, seed=[10, 11, 12, 13])
    for a, b in zip(alone, together):
        assert b.dtype == np.int64 and b.shape == (12,)
        assert np.array_equal(a, b)


def test_different_seeds_give_different_tokens(model, prompts):
    a = Engine(model).generate(prompts[:1], max_new_tokens=12, seed=[1])[0]
    b = Engine(model).generate(prompts[:1], max_new_tokens=12, seed=[2])[0]
    assert not np.array_equal(a, b)


def test_preempted_requests_recompute_to_the_same_tokens(model, prompts, alone):
    # 7 blocks of 16 tokens cannot hold the four sequences (up to 40 + 12 tokens each) at once
    eng = Engine(model, kv_blocks=7, token_budget=24)
    out = eng.generate(prompts, max_new_tokens=12, seed=[10, 11, 12, 13])
    assert sum(eng.req.preemptions) >= 1
    for a, b in zip(alone, out):
        assert np.array_equal(a, b)
    assert eng.cache.n_free == eng.cache.n_blocks  # every block came back


def test_greedy_generation_follows_the_reference(model, prompts):
    out = Engine(model).generate(prompts[1:2], max_new_tokens=6, temperature=0.0)[0]
    toks = list(prompts[1])
    for t in out:
        assert t == int(np.argmax(llama_forward_ref(model, np.array(toks))[-1]))
        toks.append(t)


def test_bad_requests(model, prompts):
    eng = Engine(model)
    with pytest.raises(ValueError, match="max_new_tokens"):
        eng.generate(prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_position"):
        eng.generate([np.zeros(250, np.int64)], max_new_tokens=10)
    with pytest.raises(ValueError, match="vocabulary"):
        eng.generate([np.array([CFG.vocab_size])], max_new_tokens=1)
    with pytest.raises(ValueError, match="top_p"):
        eng.generate(prompts, max_new_tokens=2, top_p=1.5)
    with pytest.raises(ValueError, match="KV cache"):
        Engine(model, kv_blocks=2).generate([np.zeros(40, np.int64)], max_new_tokens=1)
    with pytest.raises(ValueError, match="block_size"):
        Engine(model, block_size=8)
    with pytest.raises(ValueError, match="disaggregated"):
        Engine(model, scheduler="disaggregated")
    with pytest.raises(ValueError, match="unknown engine model"):
        get_engine_model("nope")


def test_serve_measures_a_workload(model):
    w = poisson_workload(50.0, 6, prompt_len=20, output_len=4, seed=0)
    r = Engine(model, scheduler="chunked").serve(w)
    assert isinstance(r, ServingResult)
    req = r.requests
    assert req["finished"].all()
    assert (req["first_token"] >= req["arrival"]).all() and (req["finish"] >= req["first_token"]).all()
    assert [len(t) for t in r.token_times] == w.output_tokens.tolist()
    assert r.latency_table()["metric"].tolist() == ["TTFT", "TPOT", "ITL", "E2E", "queueing"]
    assert int(r.timeline["prefill_tokens"].sum()) == int(w.prompt_tokens.sum())


def test_cli_engine_run_prints_the_latency_table(capsys):
    from scalelab.cli.cli import main

    assert main(["engine", "run", "--model", "tiny", "--qps", "20", "--duration", "0.3", "--prompt", "16",
                 "--output", "3"]) == 0
    out = capsys.readouterr().out
    assert "measured (live engine" in out and "TTFT" in out and "finished 6/6" in out
    assert main(["engine", "run", "--qps", "0"]) == 2
    assert main(["engine", "run", "--model", "gpt-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "unknown engine model 'gpt-5'" in err


def test_moe_model_through_the_engine_follows_the_reference():
    cfg = LlamaConfig(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48, vocab_size=61, max_position=128,
                      n_experts=4, experts_per_token=2)
    m = LlamaModel.random(cfg, seed=2)
    prompts = [np.arange(9) % 61, (np.arange(20) * 3) % 61]
    out = Engine(m, token_budget=8).generate(prompts, max_new_tokens=5, temperature=0.0)
    for p, o in zip(prompts, out):
        toks = list(p)
        for t in o:
            assert t == int(np.argmax(llama_forward_ref(m, np.array(toks))[-1]))
            toks.append(t)


def test_serve_under_memory_pressure_preempts_and_finishes(model):
    w = poisson_workload(200.0, 5, prompt_len=30, output_len=20, seed=1)
    r = Engine(model, kv_blocks=6, token_budget=16).serve(w)
    assert r.requests["finished"].all()
    assert r.summary()["preemptions"] >= 1
    assert [len(t) for t in r.token_times] == w.output_tokens.tolist()


def test_compare_latencies_puts_prediction_beside_measurement(model):
    from scalelab.simulations.serving import simulate
    from scalelab.simulations.serving.live import compare_latencies

    w = poisson_workload(50.0, 4, prompt_len=12, output_len=3, seed=2)
    measured = Engine(model).serve(w)
    predicted = simulate("llama-3-8b", "h100-sxm", w)
    t = compare_latencies(measured, predicted)
    assert t["metric"].tolist() == ["TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"]
    np.testing.assert_allclose(t["measured_ms"], [measured.summary()[k] * 1e3 for k in
                                                  ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99")])
    np.testing.assert_allclose(t["predicted/measured"], t["predicted_ms"] / t["measured_ms"])
