"""The Llama decoder: cached path against the float64 reference, chunking, safetensors, bad input."""

import numpy as np
import pytest

from scalelab.kernels.model import (
    LlamaConfig, LlamaModel, PagedKVCache, SeqChunk, WeightError, hf_tensor_shapes, llama_forward_ref,
)
from scalelab.simulations.inference import ModelConfig

CONFIGS = {
    "mha": LlamaConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=4, d_ff=96, vocab_size=101, max_position=128),
    "gqa": LlamaConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=101, max_position=128,
                       rope_theta=500000.0, norm_eps=1e-5),
    "mqa": LlamaConfig(n_layers=3, d_model=48, n_heads=3, n_kv_heads=1, d_ff=64, vocab_size=101, max_position=128,
                       head_dim=32, tie_embeddings=True),
    "moe": LlamaConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=101, max_position=128,
                       n_experts=4, experts_per_token=2, d_ff_expert=48, n_dense_layers=1),
}
RTOL = 2e-5  # max |error| / max |reference logit|: float32 level over a few layers


def _rel(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decode_matches_reference(name):
    """Prefill 9 tokens, then 32 decode steps, each step's logits against the whole-sequence reference."""
    c = CONFIGS[name]
    m = LlamaModel.random(c, seed=3)
    rng = np.random.default_rng(0)
    toks = list(rng.integers(0, c.vocab_size, 9))
    cache = PagedKVCache(c, n_blocks=8, block_size=16)
    blocks = cache.allocate(3)  # 48 tokens
    got = [m.forward_cached(cache, [SeqChunk(np.array(toks), 0, blocks)])[0]]
    for _ in range(32):
        toks.append(int(np.argmax(got[-1])))
        got.append(m.forward_cached(cache, [SeqChunk(np.array(toks[-1:]), len(toks) - 1, blocks)])[0])
    ref = llama_forward_ref(m, np.array(toks))  # (41, V)
    got = np.array(got)  # (33, V)
    assert got.dtype == np.float32
    assert np.abs(ref).max() > 0.3  # activations O(1): the comparison is not against near-zeros
    assert _rel(got, ref[8:]) < RTOL
    assert _rel(m.forward(np.array(toks)), ref) < RTOL


def test_chunked_prefill_equals_whole_prefill_and_batches_mix():
    c = CONFIGS["gqa"]
    m = LlamaModel.random(c, seed=1)
    rng = np.random.default_rng(1)
    t = rng.integers(0, c.vocab_size, 45)
    cache = PagedKVCache(c, n_blocks=16, block_size=16)
    whole, pieces, other = cache.allocate(3), cache.allocate(3), cache.allocate(1)
    a = m.forward_cached(cache, [SeqChunk(t, 0, whole)])[0]
    # chunks of 7, 16 and 22 tokens; the last shares its batch with another sequence's decode
    m.forward_cached(cache, [SeqChunk(t[:7], 0, pieces)])
    m.forward_cached(cache, [SeqChunk(t[7:23], 7, pieces), SeqChunk(t[:3], 0, other)])
    b = m.forward_cached(cache, [SeqChunk(t[3:4], 3, other), SeqChunk(t[23:], 23, pieces)])
    np.testing.assert_array_equal(b[1], a)  # the same bits (kernels/model.py, "Determinism")
    np.testing.assert_allclose(b[0], llama_forward_ref(m, t[:4])[-1], rtol=0, atol=2e-5 * np.abs(a).max())


def _steps_of(m, c, prompt, n_steps, mates, threads):
    """Logits of one sequence (prefill ``prompt``, then ``n_steps`` greedy decode steps), each step
    batched with ``mates(step)``: extra sequences' chunks, prefills and decodes of other lengths."""
    import numba

    from scalelab.kernels._common import numba_threads

    cache = PagedKVCache(c, n_blocks=40, block_size=16)
    mine = cache.allocate(2)
    others = [cache.allocate(2) for _ in range(4)]
    toks = list(prompt)
    out = []
    with numba_threads(min(threads, numba.config.NUMBA_NUM_THREADS)):
        for step in range(n_steps + 1):
            chunk = SeqChunk(np.array(toks if step == 0 else toks[-1:]), 0 if step == 0 else len(toks) - 1, mine)
            extra = [SeqChunk(t, start, others[j]) for j, (t, start) in enumerate(mates(step))]
            batch = extra[:1] + [chunk] + extra[1:]
            logits = m.forward_cached(cache, batch)[1 if extra else 0]
            out.append(logits)
            toks.append(int(np.argmax(logits)))
    return np.array(out)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batch_mates_and_threads_do_not_change_a_sequences_logits_bitwise(name):
    """A sequence's logits are the same bits alone, at 1 or 2 threads, or beside other sequences'
    prefills and decodes (the determinism rule of kernels/model.py; MoE experts see other tokens)."""
    c = CONFIGS[name]
    m = LlamaModel.random(c, seed=5)
    rng = np.random.default_rng(2)
    prompt = rng.integers(0, c.vocab_size, 11)
    other_prompts = [rng.integers(0, c.vocab_size, n) for n in (5, 13, 3, 8)]

    def crowd(step):  # a new prefill each step for a while, and decodes of the earlier ones
        mates = []
        for j, t in enumerate(other_prompts):
            if step == j:
                mates.append((t, 0))
            elif step > j:
                mates.append((rng_tok(j, step), t.size + step - j - 1))
        return mates

    def rng_tok(j, step):
        return np.array([(7 * j + 3 * step) % c.vocab_size])

    alone = _steps_of(m, c, prompt, 6, lambda step: [], threads=1)
    for threads in (1, 2):
        crowded = _steps_of(m, c, prompt, 6, crowd, threads=threads)
        np.testing.assert_array_equal(crowded, alone)
    np.testing.assert_array_equal(_steps_of(m, c, prompt, 6, lambda step: [], threads=2), alone)


def test_model_config_converts_and_presets_keep_defaults():
    mc = ModelConfig(name="t", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48, vocab_size=50,
                     rope_theta=1e4, norm_eps=1e-5, max_position=64)
    c = LlamaConfig.from_config(mc)
    assert (c.n_kv_heads, c.qk_dim, c.norm_eps, c.max_position) == (1, 16, 1e-5, 64)
    default = ModelConfig(name="d", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48, vocab_size=50)
    assert (default.rope_theta, default.norm_eps, default.tie_embeddings, default.max_position) == (
        10000.0, 1e-6, False, 2048)
    with pytest.raises(ValueError, match="rope_theta"):
        ModelConfig(name="d", n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48, vocab_size=50,
                    rope_theta=0.0)
    with pytest.raises(ValueError, match="kv_latent_dim"):
        LlamaConfig.from_config(ModelConfig(name="mla", n_layers=1, d_model=32, n_heads=2, n_kv_heads=2, d_ff=48,
                                            vocab_size=50, kv_latent_dim=16))


def _matmul_weights_one_token_uses(m):
    """Count the weights a token multiplies by off the model's own arrays (LM head included)."""
    total = m.lm_head.size
    for L in m.layers:
        total += L["wqkv"].size + L["wo"].size
        if "router" in L:
            total += L["router"].size + m.config.experts_per_token * (L["w1"][0].size + L["w3"][0].size
                                                                      + L["w2"][0].size)
        else:
            total += L["w1"].size + L["w3"].size + L["w2"].size
    return total


MORE_SHAPES = {
    "moe-all-layers": LlamaConfig(n_layers=3, d_model=32, n_heads=2, n_kv_heads=1, d_ff=40, vocab_size=77,
                                  n_experts=8, experts_per_token=3, max_position=64),
    "moe-top1-tied": LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=4, d_ff=40, vocab_size=77,
                                 n_experts=3, experts_per_token=1, d_ff_expert=24, tie_embeddings=True,
                                 max_position=64),
}


@pytest.mark.parametrize("name", sorted(CONFIGS) + sorted(MORE_SHAPES))
def test_engine_flops_agree_with_cost_model_and_weights(name):
    """``step_flops`` and ``ModelConfig.flops_per_token`` count one token alike; both match the arrays."""
    c = {**CONFIGS, **MORE_SHAPES}[name]
    m = LlamaModel.random(c, seed=0)
    mc = ModelConfig(name=name, **{f: getattr(c, f) for f in c.__dataclass_fields__})
    assert mc.matmul_params_active() == _matmul_weights_one_token_uses(m)
    for start in (0, 7, 40):
        one = m.step_flops([SeqChunk(np.zeros(1, np.int64), start, np.zeros(0, np.int64))])
        assert one == mc.flops_per_token(start + 1)


def test_rope_is_rotate_half():
    """Position p rotates the pair (i, i + D/2) by p * theta^(-2i/D): checked on a unit vector."""
    from scalelab.kernels.model import _rope, rope_tables

    D, theta, p = 8, 100.0, 3
    cos, sin = rope_tables(np.array([p]), D, theta)
    x = np.zeros((1, 1, D))
    x[0, 0, 1] = 1.0  # pair (1, 5)
    y = _rope(x, cos, sin)[0, 0]
    ang = p * theta ** (-2 * 1 / D)
    np.testing.assert_allclose(y[[1, 5]], [np.cos(ang), np.sin(ang)], atol=1e-15)
    assert np.count_nonzero(y) == 2


@pytest.mark.parametrize("name", ["gqa", "moe", "mqa"])
def test_safetensors_round_trip(tmp_path, name):
    c = CONFIGS[name]
    m = LlamaModel.random(c, seed=5)
    path = tmp_path / "w.safetensors"
    m.to_safetensors(path)
    m2 = LlamaModel.from_safetensors(path, c)
    s1, s2 = m.hf_state(), m2.hf_state()
    assert set(s1) == set(s2) == set(hf_tensor_shapes(c))
    for k in s1:
        assert np.array_equal(s1[k], s2[k]), k
    t = np.arange(10) % c.vocab_size
    assert np.array_equal(m.forward(t), m2.forward(t))


def test_safetensors_missing_or_misshaped_tensor_is_named(tmp_path):
    from safetensors.numpy import save_file

    c = CONFIGS["gqa"]
    state = LlamaModel.random(c, seed=0).hf_state()
    missing = dict(state)
    del missing["model.layers.1.mlp.up_proj.weight"]
    save_file(missing, str(tmp_path / "a.safetensors"))
    with pytest.raises(WeightError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\.weight'"):
        LlamaModel.from_safetensors(tmp_path / "a.safetensors", c)
    bad = dict(state)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 32), np.float32)
    save_file(bad, str(tmp_path / "b.safetensors"))
    with pytest.raises(WeightError, match=r"k_proj\.weight' has shape \(64, 32\), expected \(32, 64\)"):
        LlamaModel.from_safetensors(tmp_path / "b.safetensors", c)
    with pytest.raises(FileNotFoundError):
        LlamaModel.from_safetensors(tmp_path / "none.safetensors", c)


def test_bad_tokens_and_positions():
    c = CONFIGS["gqa"]
    m = LlamaModel.random(c, seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.forward(np.array([1, c.vocab_size]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        m.forward(np.array([-1]))
    with pytest.raises(ValueError, match="max_position"):
        m.forward(np.zeros(c.max_position + 1, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        m.forward(np.array([0.5]))
    with pytest.raises(ValueError, match="at least one"):
        m.forward(np.zeros(0, dtype=np.int64))
    cache = PagedKVCache(c, n_blocks=4)
    b = cache.allocate(1)
    with pytest.raises(ValueError, match="covers 16 tokens, 17 needed"):
        m.forward_cached(cache, [SeqChunk(np.zeros(17, np.int64), 0, b)])
    with pytest.raises(ValueError, match="not allocated"):
        m.forward_cached(cache, [SeqChunk(np.zeros(3, np.int64), 0, np.array([3]))])
    with pytest.raises(MemoryError):
        cache.allocate(4)


def test_random_weights_are_seeded():
    c = CONFIGS["mqa"]
    a, b = LlamaModel.random(c, seed=7).hf_state(), LlamaModel.random(c, seed=7).hf_state()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="seed"):
        LlamaModel.random(c, seed=-1)


@pytest.mark.parametrize("name", ["gqa", "mqa"])
def test_logits_match_hugging_face_transformers(tmp_path, name):
    """The same safetensors file in ``transformers.LlamaForCausalLM`` (skipped when it is not installed)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    m = LlamaModel.random(CONFIGS[name], seed=3)
    m.to_hf_directory(tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    t = np.arange(37) * 7 % CONFIGS[name].vocab_size
    with torch.no_grad():
        theirs = hf(torch.from_numpy(t)[None]).logits[0].numpy()
    ours = m.forward(t)
    assert _rel(ours, theirs) < RTOL


def test_hf_config_names_the_shape(tmp_path):
    m = LlamaModel.random(CONFIGS["mqa"], seed=0)
    cfg = m.hf_config()
    assert (cfg["num_key_value_heads"], cfg["head_dim"], cfg["tie_word_embeddings"]) == (1, 32, True)
    assert (m.to_hf_directory(tmp_path) / "config.json").is_file()
    with pytest.raises(ValueError, match="dense"):
        LlamaModel.random(CONFIGS["moe"], seed=0).hf_config()
