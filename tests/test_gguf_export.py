"""GGUF export: the rotary row order, bad input, and llama.cpp's logits against our forward."""

import numpy as np
import pytest

from scalelab.kernels.gguf_export import gguf_tensors, rope_rows_to_interleaved, write_gguf
from scalelab.kernels.model import LlamaConfig, LlamaModel, rope_tables

CONFIGS = {
    "tiny": LlamaConfig(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=512,
                        max_position=4096),
    # GQA 4:1, head_dim != d_model / n_heads, tied embeddings, Llama 3's rope base and eps
    "gqa": LlamaConfig(n_layers=3, d_model=48, n_heads=4, n_kv_heads=1, d_ff=80, vocab_size=67, head_dim=16,
                       max_position=256, tie_embeddings=True, rope_theta=500000.0, norm_eps=1e-5),
}
RTOL = 2e-5  # max |error| / max |logit|: float32 level (measured ~5e-7); the sides sum in different orders


def _rope_adjacent(x, pos, theta):
    """x (T, H, D) rotated with llama.cpp's pairing: dims (2j, 2j + 1) by angle pos * theta**(-2j/D)."""
    D = x.shape[-1]
    ang = pos[:, None] * theta ** (-np.arange(0, D, 2) / D)  # (T, D/2)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]  # (T, 1, D/2)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def _rope_half(x, pos, theta):
    """x (T, H, D) rotated with Hugging Face's pairing (j, j + D/2), from the model's own tables."""
    cos, sin = rope_tables(pos, x.shape[-1], theta)  # (T, D)
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos[:, None] + rot * sin[:, None]


@pytest.mark.parametrize("H, D", [(1, 2), (3, 8), (4, 64)])
def test_permuted_rows_give_the_same_scores_under_adjacent_rope(H, D):
    """q.k after rotate-half rope on HF rows == q.k after adjacent-pair rope on permuted rows."""
    rng = np.random.default_rng(H * D)
    d_in, T = 5, 7
    wq, wk = rng.standard_normal((H * D, d_in)), rng.standard_normal((H * D, d_in))
    x = rng.standard_normal((T, d_in))
    pos = np.arange(T) * 37.0
    hf = [_rope_half((x @ w.T).reshape(T, H, D), pos, 1e4) for w in (wq, wk)]
    cpp = [_rope_adjacent((x @ rope_rows_to_interleaved(w, H).T).reshape(T, H, D), pos, 1e4) for w in (wq, wk)]
    np.testing.assert_allclose(np.einsum("thd,shd->hts", *cpp), np.einsum("thd,shd->hts", *hf), rtol=1e-10, atol=1e-10)
    # and the permutation is not the identity (it would be for D = 2 only)
    assert D == 2 or not np.array_equal(rope_rows_to_interleaved(wq, H), wq)


def test_permutation_moves_row_j_to_2j():
    w = np.arange(8, dtype=np.float32)[:, None]  # 1 head, D = 8
    np.testing.assert_array_equal(rope_rows_to_interleaved(w, 1)[:, 0], [0, 4, 1, 5, 2, 6, 3, 7])


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="LlamaModel"):
        write_gguf("model", tmp_path / "m.gguf")
    moe = LlamaModel.random(LlamaConfig(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, d_ff=24, vocab_size=10,
                                        n_experts=2), seed=0)
    with pytest.raises(ValueError, match="dense"):
        write_gguf(moe, tmp_path / "m.gguf")
    small = LlamaModel.random(LlamaConfig(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, d_ff=24, vocab_size=2),
                              seed=0)
    with pytest.raises(ValueError, match="vocab_size"):
        write_gguf(small, tmp_path / "m.gguf")
    with pytest.raises(ValueError, match="n_heads"):
        rope_rows_to_interleaved(np.zeros((6, 3)), 2)
    assert not (tmp_path / "m.gguf").exists()


def test_gguf_file_round_trip(tmp_path):
    """The file holds every tensor under its GGUF name, shape and bytes; the metadata is llama's."""
    gguf = pytest.importorskip("gguf")
    m = LlamaModel.random(CONFIGS["gqa"], seed=1)
    path = write_gguf(m, tmp_path / "m.gguf")
    r = gguf.GGUFReader(str(path))
    got = {t.name: np.asarray(t.data) for t in r.tensors}
    want = dict(gguf_tensors(m))
    assert sorted(got) == sorted(want) and "output.weight" not in got  # tied: llama.cpp reuses token_embd
    for name, w in want.items():
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name].reshape(w.shape), w, err_msg=name)
    field = r.fields["llama.attention.head_count_kv"]
    assert int(field.parts[field.data[0]][0]) == 1
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 67


def _llamacpp_logits(model, path, toks, n_prompt):
    """llama.cpp's logits (L, V) for ``toks``: ``n_prompt`` tokens in one batch, then one at a time."""
    from scalelab.kernels.gguf_export import open_in_llamacpp

    llm = open_in_llamacpp(write_gguf(model, path), n_ctx=64, n_threads=2, n_batch=64, logits_all=True)
    assert llm.n_vocab() == model.config.vocab_size
    llm.eval(toks[:n_prompt].tolist())  # one prompt batch
    for t in toks[n_prompt:]:  # then decode steps through its KV cache
        llm.eval([int(t)])
    out = np.array(llm.scores[:len(toks)])
    llm.close()
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_llamacpp_logits_match_our_forward(tmp_path, monkeypatch, name):
    """llama.cpp on our GGUF gives our float32 logits: a 34-token prompt, then 6 decode steps."""
    pytest.importorskip("gguf")
    pytest.importorskip("llama_cpp")
    import scalelab.kernels.gguf_export as gx

    c = CONFIGS[name]
    m = LlamaModel.random(c, seed=2)
    toks = np.random.default_rng(5).integers(0, c.vocab_size, 40)
    ours = m.forward(toks)  # (40, V) float32
    theirs = _llamacpp_logits(m, tmp_path / "m.gguf", toks, 34)
    rel = np.abs(theirs - ours).max() / np.abs(ours).max()
    assert rel < RTOL, f"max relative logit difference {rel:.2e}"
    # without the row permutation llama.cpp pairs the wrong dimensions: far beyond float32 noise
    monkeypatch.setattr(gx, "rope_rows_to_interleaved", lambda w, h: np.ascontiguousarray(w))
    unpermuted = _llamacpp_logits(m, tmp_path / "unpermuted.gguf", toks, 34)
    assert np.abs(unpermuted - ours).max() / np.abs(ours).max() > 100 * RTOL
