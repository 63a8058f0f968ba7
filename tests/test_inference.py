"""Tests of the prefill/decode roofline model against published figures.

Published figures reproduced (source, value, tolerance):
* kipply, "Transformer Inference Arithmetic" (kipp.ly, 2022): a 52B model with 64
  layers and d_model 8192 holds 2 * 2 * 64 * 8192 = 2,097,152 KV bytes per token
  in fp16 (exact); an A100 at 312 TFLOP/s and 1.5 TB/s has a ridge point of
  208 FLOPs/byte (exact), and decode stays memory-bound up to a batch of about
  that ridge (kipply's estimate ignores activations and norms; we allow +25%).
* Llama-2-7B (Touvron et al. 2023, config) KV cache at 4,096 tokens in fp16:
  2,147,483,648 bytes (exact).
* Llama-3-70B (Meta model card/config, 80 layers, 8 KV heads of 128): 327,680
  KV bytes per token in fp16 (exact).
* Mixtral 8x7B (Jiang et al. 2024, Section 2): 47B total / 13B active; the
  commonly quoted 46.7B / 12.9B reproduced within 1%.
* DeepSeek-V3 technical report: 671B total / 37B activated, within 2% (our
  active count includes the 0.93B input embedding, the report's does not).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalelab.simulations.inference import (
    HARDWARE,
    MODELS,
    Hardware,
    ModelConfig,
    attention_kernel_roofline,
    best_of_n_cost,
    decode_compute_bound_batch,
    decode_cost,
    expected_experts_touched,
    get_hardware,
    get_model,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    max_batch,
    prefill_cost,
    request_latency,
    ridge_point,
    roofline_table,
    throughput_latency_sweep,
    weight_bytes,
)

# kipply's hardware and model (Transformer Inference Arithmetic, 2022)
KIPPLY_A100 = Hardware(name="A100 (kipply)", peak_flops=312e12, bandwidth_bytes_per_s=1.5e12,
                       memory_bytes=80e9, tdp_w=400.0)
KIPPLY_52B = ModelConfig(name="kipply 52B", n_layers=64, d_model=8192, n_heads=64, n_kv_heads=64,
                         d_ff=4 * 8192, vocab_size=65536, gated_mlp=False)


# ----------------------------------------------------------------- published figures


def test_kipply_kv_bytes_per_token():
    assert kv_cache_bytes_per_token(KIPPLY_52B, dtype_bytes=2) == 2_097_152


def test_kipply_a100_ridge_point():
    assert ridge_point(KIPPLY_A100) == pytest.approx(208.0, rel=1e-12)


def test_kipply_decode_crossover_near_ridge():
    # kipply: decode is memory-bound while batch < ~208 (2*P*B FLOPs vs 2*P bytes);
    # activations and memory-bound norms push our crossover up by < 25%.
    b = decode_compute_bound_batch(KIPPLY_52B, KIPPLY_A100, context_len=1)
    assert 208 <= b <= 1.25 * 208


def test_llama2_7b_kv_cache_at_4096_tokens():
    assert kv_cache_bytes("llama-2-7b", batch=1, seq_len=4096, dtype_bytes=2) == 2_147_483_648


def test_llama3_70b_kv_bytes_per_token():
    assert kv_cache_bytes_per_token("llama-3-70b", dtype_bytes=2) == 327_680


def test_mixtral_total_and_active_params():
    m = MODELS["mixtral-8x7b"]
    assert m.params_total == pytest.approx(46.7e9, rel=0.01)
    assert m.params_active == pytest.approx(12.9e9, rel=0.01)


def test_deepseek_v3_total_and_active_params():
    m = MODELS["deepseek-v3"]
    assert m.params_total == pytest.approx(671e9, rel=0.02)
    assert m.params_active == pytest.approx(37e9, rel=0.02)


@pytest.mark.parametrize("key, billions", [("llama-2-7b", 6.74), ("llama-3-8b", 8.03), ("llama-3-70b", 70.55)])
def test_dense_param_counts_match_released_sizes(key, billions):
    # released checkpoints: 6.74B, 8.03B, 70.55B parameters (Hugging Face model cards), 0.5%
    assert MODELS[key].params_total == pytest.approx(billions * 1e9, rel=0.005)
    assert MODELS[key].params_active == MODELS[key].params_total


def test_deepseek_v3_mla_cache_is_the_latent():
    # 61 layers x (512 latent + 64 rope) x 2 bytes: MLA caches ~1/57 of what 128-head MHA would
    assert kv_cache_bytes_per_token("deepseek-v3") == 61 * 576 * 2


# ----------------------------------------------------------------- decode regimes


@pytest.mark.parametrize("hw", ["a100-80gb", "h100-sxm"])
def test_decode_memory_bound_at_batch_1_compute_bound_past_crossover(hw):
    b = decode_compute_bound_batch("llama-3-8b", hw, context_len=128)
    assert b is not None and b > 1
    assert decode_cost("llama-3-8b", hw, batch=1, context_len=128).bound == "memory"
    assert decode_cost("llama-3-8b", hw, batch=b - 1, context_len=128).bound == "memory"
    assert decode_cost("llama-3-8b", hw, batch=b, context_len=128).bound == "compute"
    assert decode_cost("llama-3-8b", hw, batch=4 * b, context_len=128).bound == "compute"


def test_decode_at_long_context_never_compute_bound():
    # KV-cache attention has intensity ~ 2 * (n_heads / n_kv_heads) / dtype_bytes = 4 FLOPs/byte for
    # Llama-3-8B, whatever the batch; at 32k tokens it dominates the step
    assert decode_compute_bound_batch("llama-3-8b", "h100-sxm", 32768) is None


def test_prefill_compute_bound_and_decode_memory_bound():
    pre = prefill_cost("llama-3-8b", "h100-sxm", batch=1, prompt_len=2048)
    dec = decode_cost("llama-3-8b", "h100-sxm", batch=1, context_len=2048)
    assert pre.bound == "compute" and dec.bound == "memory"
    assert pre.mfu > 0.8 and dec.mbu > 0.99
    # a batch-1 decode step reads every weight once: time ~ weight bytes / bandwidth
    h = get_hardware("h100-sxm")
    assert dec.time_s == pytest.approx(weight_bytes("llama-3-8b") / h.bandwidth_bytes_per_s, rel=0.05)


def test_decode_time_flat_in_batch_while_memory_bound():
    t1 = decode_cost("llama-3-8b", "h100-sxm", batch=1, context_len=128).time_s
    t8 = decode_cost("llama-3-8b", "h100-sxm", batch=8, context_len=128).time_s
    assert t8 < 1.05 * t1  # eight times the tokens for < 5% more time


def test_gqa_cuts_kv_cache_by_head_ratio():
    l8, l2 = MODELS["llama-3-8b"], MODELS["llama-2-7b"]
    assert kv_cache_bytes_per_token(l2) / kv_cache_bytes_per_token(l8) == l2.n_kv_heads / l8.n_kv_heads


# ----------------------------------------------------------------- roofline table


@pytest.mark.parametrize("key", sorted(MODELS))
@pytest.mark.parametrize("phase, seq", [("prefill", 512), ("decode", 4096)])
def test_roofline_table_is_consistent(key, phase, seq):
    df = roofline_table(key, "h100-sxm", phase, 4, seq)
    assert list(df.columns[:6]) == ["op", "layers", "flops", "bytes", "intensity", "bound"]
    h = get_hardware("h100-sxm")
    np.testing.assert_allclose(df["time_s"], np.maximum(df["flops"] / h.peak_flops, df["bytes"] / h.bandwidth_bytes_per_s))
    assert set(df["bound"]) <= {"compute", "memory"}
    cost = (prefill_cost(key, h, batch=4, prompt_len=seq) if phase == "prefill"
            else decode_cost(key, h, batch=4, context_len=seq))
    assert cost.time_s == pytest.approx(df["time_s"].sum(), rel=1e-12)
    assert cost.flops == pytest.approx(df["flops"].sum(), rel=1e-12)
    assert df["time_share"].sum() == pytest.approx(1.0)


def test_prefill_flops_match_flops_per_token_sum():
    # prefill FLOPs (minus norms/elementwise, LM head only on the last token) equal
    # sum over positions of flops_per_token(position + 1)
    m, L = MODELS["llama-2-7b"], 256
    df = roofline_table(m, "a100-80gb", "prefill", 1, L)
    matmul_ops = df[df["op"].str.endswith(("_proj", "attn_scores", "attn_context", "lm_head"))]
    lm_head = 2.0 * m.d_model * m.vocab_size
    expected = sum(m.flops_per_token(p) for p in range(1, L + 1)) - (L - 1) * lm_head
    assert matmul_ops["flops"].sum() == pytest.approx(expected, rel=1e-12)


def test_causal_prefill_counts_only_unmasked_pairs():
    m = MODELS["llama-2-7b"]
    df = roofline_table(m, "a100-80gb", "prefill", 2, 100).set_index("op")
    assert df.loc["attn_scores", "flops"] == 2 * m.n_layers * m.n_heads * m.qk_dim * 2 * (100 * 101 / 2)


# ----------------------------------------------------------------- MoE


def test_expected_experts_touched_limits_and_monte_carlo():
    assert expected_experts_touched(8, 2, 1) == pytest.approx(2.0)
    assert expected_experts_touched(8, 2, 0) == 0.0
    assert expected_experts_touched(256, 8, 10_000) == pytest.approx(256.0)
    rng = np.random.default_rng(0)
    e, k, t, trials = 64, 6, 9, 4000
    picks = rng.random((trials, t, e)).argsort(axis=2)[:, :, :k]  # k distinct experts per token
    touched = np.zeros((trials, e), dtype=bool)
    touched[np.arange(trials)[:, None, None], picks] = True
    # Monte Carlo s.e. of the mean is ~0.04 experts here; 1% of ~37 is ~9 s.e.
    assert touched.sum(axis=1).mean() == pytest.approx(expected_experts_touched(e, k, t), rel=0.01)


def test_moe_decode_weight_bytes_grow_with_distinct_experts():
    m = MODELS["mixtral-8x7b"]
    per_expert = m.expert_params() * 2 * m.n_moe_layers
    rows = {b: roofline_table(m, "h200", "decode", b, 64).set_index("op") for b in (1, 4)}
    experts_bytes = {b: r.loc["experts_gate_up", "bytes"] + r.loc["experts_down", "bytes"] for b, r in rows.items()}
    # batch 1 touches 2 experts, batch 4 touches 8 * (1 - 0.75 ** 4) = 5.47 in expectation
    assert experts_bytes[1] == pytest.approx(2 * per_expert, rel=0.01)
    assert experts_bytes[4] == pytest.approx(8 * (1 - 0.75**4) * per_expert, rel=0.01)
    # so a batch-1 step reads about the active weights, far less than all of them
    assert decode_cost(m, "h200", batch=1, context_len=64).bytes == pytest.approx(
        weight_bytes(m) * m.params_active / m.params_total, rel=0.03)


@given(st.integers(1, 64), st.integers(1, 64), st.integers(0, 5000))
def test_expected_experts_touched_bounds(e, k, t):
    k = min(k, e)
    x = expected_experts_touched(e, k, t)
    # at least one token's k experts, at most every assignment distinct (and at most E)
    assert (k if t >= 1 else 0) - 1e-9 <= x <= min(t * k, e) + 1e-9


# ----------------------------------------------------------------- memory, latency, best-of-n


def test_max_batch_fills_memory():
    h = get_hardware("a100-80gb")
    b = max_batch("llama-3-8b", h, 4096)
    w = weight_bytes("llama-3-8b")
    assert w + kv_cache_bytes("llama-3-8b", batch=b, seq_len=4096) <= h.memory_bytes
    assert w + kv_cache_bytes("llama-3-8b", batch=b + 1, seq_len=4096) > h.memory_bytes
    assert max_batch("llama-3-70b", "a100-40gb", 1) == 0  # 141 GB of weights


def test_request_latency_sums_prefill_and_decode_steps():
    r = request_latency("llama-3-8b", "h100-sxm", batch=4, prompt_len=100, gen_len=5)
    pre = prefill_cost("llama-3-8b", "h100-sxm", batch=4, prompt_len=100).time_s
    steps = [decode_cost("llama-3-8b", "h100-sxm", batch=4, context_len=100 + i).time_s for i in range(1, 5)]
    assert r.ttft_s == pytest.approx(pre)
    assert r.total_s == pytest.approx(pre + sum(steps), rel=1e-12)
    assert r.tpot_s == pytest.approx(np.mean(steps), rel=1e-12)
    assert r.throughput_tokens_per_s == pytest.approx(4 * 5 / r.total_s)


def test_throughput_latency_sweep_trades_latency_for_throughput():
    df = throughput_latency_sweep("llama-3-8b", "h100-sxm", prompt_len=512, gen_len=64, batches=[1, 4, 16, 64])
    assert list(df["batch"]) == [1, 4, 16, 64]
    assert df["throughput_tokens_per_s"].is_monotonic_increasing
    assert df["latency_s"].is_monotonic_increasing


def test_best_of_n_shares_one_prefill():
    one = best_of_n_cost("llama-3-8b", "h100-sxm", n=1, prompt_len=4096, gen_len=128)
    many = best_of_n_cost("llama-3-8b", "h100-sxm", n=16, prompt_len=4096, gen_len=128)
    assert many.prefill_s == one.prefill_s
    assert one.total_s == pytest.approx(one.independent_total_s, rel=1e-12)
    assert one.total_s == pytest.approx(one.sequential_total_s, rel=1e-12)
    # sharing saves exactly the 15 extra prefills (decode reads the same bytes either way)
    pre16 = prefill_cost("llama-3-8b", "h100-sxm", batch=16, prompt_len=4096).time_s
    assert many.independent_total_s - many.total_s == pytest.approx(pre16 - many.prefill_s, rel=1e-9)
    assert many.total_s < many.sequential_total_s / 4  # memory-bound decode: 16 samples for far less than 16x
    per_tok = kv_cache_bytes_per_token("llama-3-8b")
    assert many.kv_cache_bytes == per_tok * (4096 + 16 * 128)


# ----------------------------------------------------------------- calibration model


def test_attention_kernel_roofline_counts():
    hw = KIPPLY_A100
    c = attention_kernel_roofline(hw, batch=1, n_q_heads=8, n_kv_heads=8, q_len=512, kv_len=512, head_dim=64,
                                  causal=True, dtype_bytes=4)
    assert c["flops"] == 4 * 8 * 64 * (512 * 513 / 2)
    assert c["bytes"] == 4 * 4 * 8 * 512 * 64
    d = attention_kernel_roofline(hw, batch=8, n_q_heads=32, n_kv_heads=8, q_len=1, kv_len=4096, head_dim=128,
                                  causal=False, dtype_bytes=4)
    assert d["bound"] == "memory" and d["predicted_s"] == d["bytes"] / hw.bandwidth_bytes_per_s


def test_calibration_dataframe_structure_on_a_tiny_shape():
    pytest.importorskip("scalelab.kernels.attention")
    from scalelab.simulations.calibration import calibrate_attention_kernels

    shapes = [dict(kernel="attention", batch=1, n_q_heads=2, n_kv_heads=1, q_len=16, kv_len=16, head_dim=8, causal=True),
              dict(kernel="decode_attention", batch=2, n_q_heads=4, n_kv_heads=2, q_len=1, kv_len=32, head_dim=8,
                   causal=False)]
    df = calibrate_attention_kernels(KIPPLY_A100, shapes=shapes, repeats=1)
    assert list(df["kernel"]) == ["attention", "decode_attention"]
    for col in ("predicted_s", "measured_s", "ratio", "within_bar", "bound"):
        assert col in df.columns
    assert (df["measured_s"] > 0).all()
    np.testing.assert_allclose(df["ratio"], df["predicted_s"] / df["measured_s"])


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_layers=0), "n_layers"),
    (dict(d_model=-1), "d_model"),
    (dict(n_kv_heads=3), "divisible"),
    (dict(n_experts=2, experts_per_token=3), "experts_per_token"),
    (dict(vocab_size=0), "vocab_size"),
])
def test_model_config_rejects_bad_sizes(kwargs, match):
    base = dict(name="x", n_layers=2, d_model=64, n_heads=8, n_kv_heads=2, d_ff=128, vocab_size=100)
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**base, **kwargs})


def test_model_config_rejects_non_integer_sizes():
    with pytest.raises(TypeError, match="d_model"):
        ModelConfig(name="x", n_layers=2, d_model=64.0, n_heads=8, n_kv_heads=2, d_ff=128, vocab_size=100)


def test_unknown_presets_list_known_names():
    with pytest.raises(ValueError, match="llama-3-8b"):
        get_model("gpt-5")
    with pytest.raises(ValueError, match="h100-sxm"):
        get_hardware("tpu-v9")
    with pytest.raises(ValueError, match="known"):
        prefill_cost("nope", "h100-sxm", batch=1, prompt_len=1)


@pytest.mark.parametrize("call", [
    lambda: prefill_cost("llama-3-8b", "h100-sxm", batch=0, prompt_len=10),
    lambda: decode_cost("llama-3-8b", "h100-sxm", batch=1, context_len=-5),
    lambda: kv_cache_bytes("llama-3-8b", batch=1, seq_len=0),
    lambda: roofline_table("llama-3-8b", "h100-sxm", "train", 1, 1),
    lambda: request_latency("llama-3-8b", "h100-sxm", batch=1, prompt_len=1, gen_len=0),
    lambda: best_of_n_cost("llama-3-8b", "h100-sxm", n=0, prompt_len=1, gen_len=1),
    lambda: max_batch("llama-3-8b", "h100-sxm", 0),
    lambda: prefill_cost("llama-3-8b", "h100-sxm", batch=1, prompt_len=1, dtype_bytes=0),
    lambda: expected_experts_touched(4, 5, 1),
    lambda: Hardware(name="x", peak_flops=0, bandwidth_bytes_per_s=1, memory_bytes=1, tdp_w=1),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_names_the_argument():
    with pytest.raises(ValueError, match="context_len"):
        decode_cost("llama-3-8b", "h100-sxm", batch=1, context_len=0)
    with pytest.raises(ValueError, match="prompt_len"):
        prefill_cost("llama-3-8b", "h100-sxm", batch=1, prompt_len=-1)


def test_non_integer_batch_is_a_type_error():
    with pytest.raises(TypeError, match="batch"):
        decode_cost("llama-3-8b", "h100-sxm", batch=1.5, context_len=10)


def test_hardware_presets_and_reexport():
    assert {"a100-40gb", "a100-80gb", "h100-sxm", "h200"} <= set(HARDWARE)
    assert ridge_point("h100-sxm") == pytest.approx(989e12 / 3350e9)


# ----------------------------------------------------------------- CLI


def test_cli_prints_phase_table(capsys):
    from scalelab.cli.cli import main

    code = main(["inference", "--model", "llama-3-8b", "--hw", "h100-sxm", "--batch", "16", "--prompt", "2048",
                 "--gen", "256"])
    out = capsys.readouterr().out
    assert code == 0
    assert "prefill" in out and "decode" in out and "compute" in out and "memory" in out


def test_cli_bad_model_is_one_line_exit_2(capsys):
    from scalelab.cli.cli import main

    assert main(["inference", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "known" in err


def test_attention_roofline_agrees_with_kernel_napkin_math():
    attn = pytest.importorskip("scalelab.kernels.attention")
    for lq, lk, causal in [(512, 512, True), (7, 20, True), (1, 4096, False), (33, 33, False)]:
        c = attention_kernel_roofline(KIPPLY_A100, batch=2, n_q_heads=8, n_kv_heads=2, q_len=lq, kv_len=lk,
                                      head_dim=64, causal=causal, dtype_bytes=4)
        assert c["flops"] == 2 * 8 * attn.attention_flops(lq, lk, 64, causal=causal)
    d = attention_kernel_roofline(KIPPLY_A100, batch=8, n_q_heads=32, n_kv_heads=8, q_len=1, kv_len=4096,
                                  head_dim=128, causal=False, dtype_bytes=4)
    kv = attn.kv_bytes_read(np.full(8, 4096), 8, 128, itemsize=4)
    assert d["bytes"] == kv + 4 * 2 * 8 * 32 * 128  # plus the queries read and the outputs written


# ----------------------------------------------------------------- this CPU


def test_measure_this_cpu_builds_hardware_from_measurements():
    from scalelab.simulations import calibration as cm

    m = cm.measure_cpu(matmul_n=128, stream_bytes=8 * 2**20, repeats=1)
    for value in (m.matmul_flops_per_s, m.numba_loop_flops_per_s, m.read_bytes_per_s, m.triad_bytes_per_s):
        assert math.isfinite(value) and value > 0
    h = cm.cpu_hardware(m)
    assert isinstance(h, Hardware)
    assert h.peak_flops == m.matmul_flops_per_s and h.bandwidth_bytes_per_s == m.read_bytes_per_s
    assert cm.cpu_hardware(m, compute_ceiling="numba").peak_flops == m.numba_loop_flops_per_s
    with pytest.raises(ValueError, match="compute_ceiling"):
        cm.cpu_hardware(m, compute_ceiling="gpu")
    with pytest.raises(ValueError):
        cm.measure_matmul_flops(0)
    assert isinstance(cm.cpu_hardware(matmul_n=64, stream_bytes=2**20, repeats=1), Hardware)


# ----------------------------------------------------------------- test-time compute simulation


def test_selection_simulation_coverage_and_selectors():
    pytest.importorskip("scalelab.kernels.sampling")
    from scalelab.simulations.test_time_compute import simulate_selection

    df = simulate_selection(400, [1, 4, 16], seed=3).set_index(["selector", "N"])
    cov = df.xs("coverage (oracle picks any correct)")
    # empirical coverage tracks E[1 - (1 - p)^N] (binomial s.e. <= 0.025 at 400 problems: 3 s.e.)
    np.testing.assert_allclose(cov["accuracy"], cov["analytic"], atol=0.075)
    acc = df["accuracy"].unstack("selector")
    assert acc.loc[1].nunique() == 1  # one candidate: every selector picks it
    assert acc.loc[16, "random"] == pytest.approx(0.4, abs=0.075)  # E[p] for Beta(2, 3)
    assert acc.loc[16, "mean log-prob"] > acc.loc[16, "random"] + 0.15
    assert (acc.drop(columns="coverage (oracle picks any correct)").le(
        acc["coverage (oracle picks any correct)"] + 1e-12, axis=0)).all().all()
    with pytest.raises(ValueError):
        simulate_selection(0, [1], seed=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matmul_params_are_active_params_less_lookup_and_norms(name):
    """Two ways to count the weights a token multiplies by agree on every preset (MoE, MLA, recurrent)."""
    m = MODELS[name]
    norms = (2 if m.has_mlp else 1) * m.d_model * m.n_layers + m.d_model
    lookup = 0 if m.tie_embeddings else m.vocab_size * m.d_model
    assert m.matmul_params_active() == m.params_active - norms - lookup
