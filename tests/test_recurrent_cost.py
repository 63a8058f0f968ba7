"""Cost model of recurrent (Mamba, RWKV-6) and hybrid (Jamba) models against hand calculations and Jamba's Table 1."""

import numpy as np
import pytest

from scalelab.simulations.inference import (
    MODELS,
    ModelConfig,
    decode_cost,
    kv_cache_bytes,
    max_batch,
    prefill_cost,
    roofline_table,
    state_bytes_per_sequence,
    weight_bytes,
)

GIB = 2**30


@pytest.mark.parametrize("key, total_b, active_b, kv_gb", [
    ("llama-2-7b", 6.7, 6.7, 128),
    ("mistral-7b", 7.2, 7.2, 32),
    ("mixtral-8x7b", 46.7, 12.9, 32),
    ("jamba-v0.1", 52, 12, 4),
])
def test_jamba_table1_kv_cache_at_256k(key, total_b, active_b, kv_gb):
    # Lieber et al. 2024, 'Jamba', Table 1: available / active parameters and KV cache
    # at 256K context in 16-bit; "GB" there is 2**30 bytes (Llama-2: 32 layers x 2 x 4096 x 2 B x 2**18 = 128 GiB).
    # Parameters are stated to 0.1B (12B and 52B for Jamba, so 5% there).
    m = MODELS[key]
    assert kv_cache_bytes(m, batch=1, seq_len=256 * 1024, dtype_bytes=2) / GIB == pytest.approx(kv_gb, rel=1e-9)
    tol = 0.05 if key == "jamba-v0.1" else 0.01
    assert m.params_total / 1e9 == pytest.approx(total_b, rel=tol)
    assert m.params_active / 1e9 == pytest.approx(active_b, rel=tol)


def test_state_bytes_by_hand():
    # Mamba-2.8B: 64 layers x d_inner 5120 x (d_state 16 + conv 4) numbers, 2 bytes each
    assert state_bytes_per_sequence("mamba-2.8b") == 64 * 5120 * (16 + 4) * 2
    # RWKV-6 7B: 32 layers x (64 heads x 64^2 WKV state + two 4096 token-shift vectors)
    assert state_bytes_per_sequence("rwkv-6-7b", dtype_bytes=4) == 32 * (64 * 64 * 64 + 2 * 4096) * 4
    # Jamba: 28 Mamba layers x 8192 x (16 + 4); its 4 attention layers hold the KV cache
    assert state_bytes_per_sequence("jamba-v0.1") == 28 * 8192 * 20 * 2
    assert state_bytes_per_sequence("llama-3-8b") == 0
    assert kv_cache_bytes("mamba-2.8b", batch=3, seq_len=10_000) == 0
    assert kv_cache_bytes("jamba-v0.1", batch=1, seq_len=1) == 4 * 8 * 128 * 2 * 2


def test_mamba_params_by_hand():
    # Gu & Dao 2023 name this model 2.8B; the Mamba block by hand (in_proj, conv + bias, x_proj, dt_proj + bias,
    # A, D, out_proj), 64 layers + one RMSNorm each + the final norm + tied embeddings
    d, di, n, r = 2560, 5120, 16, 160
    layer = d * 2 * di + di * 4 + di + di * (r + 2 * n) + r * di + di + di * n + di + di * d
    m = MODELS["mamba-2.8b"]
    assert m.params_total == 64 * (layer + d) + 50280 * d + d
    assert m.params_total / 1e9 == pytest.approx(2.8, rel=0.02)


@pytest.mark.parametrize("key", ["mamba-2.8b", "rwkv-6-7b"])
def test_recurrent_decode_time_independent_of_context(key):
    t = [decode_cost(key, "h100", batch=4, context_len=c) for c in (1, 1000, 100_000, 1_000_000)]
    assert all(x.time_s == t[0].time_s and x.bytes == t[0].bytes and x.flops == t[0].flops for x in t)
    assert t[0].kv_cache_bytes == 0


def test_jamba_decode_grows_only_through_attention_layers():
    m = MODELS["jamba-v0.1"]
    lo, hi = (roofline_table(m, "h100", "decode", 2, c).set_index("op") for c in (1000, 101_000))
    grew = (hi["bytes"] - lo["bytes"])[lambda s: s != 0]
    assert set(grew.index) == {"attn_scores", "attn_context"}
    # the growth is exactly the extra K and V the 4 attention layers read: 2 seqs x 100k tokens x 8 heads x 128 x 2 B
    assert grew.sum() == 4 * 2 * 100_000 * 8 * (128 + 128) * 2
    # a dense transformer of the same attention shape grows 8x faster (all 32 layers attend)
    dense = ModelConfig(name="dense", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336,
                        vocab_size=65536)
    g_dense = (decode_cost(dense, "h100", batch=2, context_len=101_000).bytes
               - decode_cost(dense, "h100", batch=2, context_len=1000).bytes)
    assert g_dense == pytest.approx(8 * grew.sum())


@pytest.mark.parametrize("key", ["mamba-2.8b", "rwkv-6-7b"])
def test_recurrent_prefill_linear_in_length(key):
    f = [prefill_cost(key, "h100", batch=1, prompt_len=n).flops for n in (1000, 2000, 4000)]
    # linear: equal increments (the LM head on the last token is the constant)
    assert f[2] - f[1] == pytest.approx(2 * (f[1] - f[0]), rel=1e-12)


def test_decode_reads_state_once_each_way():
    m = MODELS["mamba-2.8b"]
    df = roofline_table(m, "h100", "decode", 8, 500).set_index("op")
    scan_in_out = 8 * (3 * 5120 + 2 * 16) + 2 * 8 * 5120 * 16  # activations + state read and written
    assert df.loc["mamba_scan", "bytes"] == 64 * scan_in_out * 2


def test_max_batch_counts_state():
    # Mamba 2.8B on an 80 GiB H100: weights stay, every sequence costs its state only, whatever its length
    free = 80 * GIB - weight_bytes("mamba-2.8b")
    n = max_batch("mamba-2.8b", "h100", 1)
    assert n == int(free // state_bytes_per_sequence("mamba-2.8b"))
    assert max_batch("mamba-2.8b", "h100", 1_000_000) == n
    assert max_batch("llama-3-8b", "h100", 1_000_000) == 0


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(layer_pattern="AAX"), ValueError, "layer_pattern"),
    (dict(layer_pattern="AM"), ValueError, "layer_pattern"),
    (dict(layer_pattern=["A", "A", "A"]), TypeError, "layer_pattern"),
    (dict(layer_pattern="RRR", rwkv_head_size=48), ValueError, "rwkv_head_size"),
    (dict(moe_every=0), ValueError, "moe_every"),
    (dict(ssm_d_state=0), ValueError, "ssm_d_state"),
    (dict(d_ff=-1), ValueError, "d_ff"),
])
def test_bad_pattern_configs(kwargs, err, match):
    base = dict(name="x", n_layers=3, d_model=64, n_heads=8, n_kv_heads=2, d_ff=128, vocab_size=100)
    with pytest.raises(err, match=match):
        ModelConfig(**{**base, **kwargs})


def test_empty_pattern_is_all_attention():
    base = dict(name="x", n_layers=3, d_model=64, n_heads=8, n_kv_heads=2, d_ff=128, vocab_size=100)
    a, b = ModelConfig(**base), ModelConfig(**base, layer_pattern="AAA")
    assert a.params_total == b.params_total
    np.testing.assert_array_equal(roofline_table(a, "h100", "decode", 2, 77)["bytes"],
                                  roofline_table(b, "h100", "decode", 2, 77)["bytes"])


def test_beyond_attention_section_builds():
    from scalelab.report.section import FigureItem, SectionContext, TableItem
    from scalelab.report.sections import recurrent as section

    sec = section.build(SectionContext(quick=True))
    figs = [i for i in sec.items if isinstance(i, FigureItem)]
    assert {f.name for f in figs} == {"memory_per_sequence", "decode_time"}
    sweep = figs[0].data
    mamba = sweep[sweep["model"] == MODELS["mamba-2.8b"].name]
    assert mamba["memory_GiB"].nunique() == 1 and mamba["decode_ms"].nunique() == 1
    llama = sweep[sweep["model"] == MODELS["llama-3-8b"].name].sort_values("context")
    assert llama["decode_ms"].is_monotonic_increasing and llama["memory_GiB"].iloc[-1] == 128.0
    table = next(i for i in sec.items if isinstance(i, TableItem)).table
    np.testing.assert_allclose(table["kv_cache_256K_GiB_model"], table["kv_cache_256K_GB_Table1"])
