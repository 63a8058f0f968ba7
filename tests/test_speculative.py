"""speculative_verify: emitted tokens follow the target, acceptance length, determinism, bad input."""

import numpy as np
import pytest
from scipy.stats import chisquare

from scalelab.kernels.speculative import speculative_verify, speculative_verify_ref

V = 6
N = 20000  # trials (rows of one batch, one seed each)


def _pairs():
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    yield "close", p, np.array([0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    yield "uniform draft", p, np.full(V, 1 / V)
    yield "disjoint supports", np.array([0.5, 0.5, 0, 0, 0, 0]), np.array([0, 0, 0.25, 0.25, 0.25, 0.25])
    yield "draft misses target mass", np.array([0.1, 0.2, 0.3, 0.4, 0, 0]), np.array([0.7, 0.1, 0.1, 0.1, 0, 0])


def _trial(p, q, k, seed=0):
    rng = np.random.default_rng(seed)
    qs = np.broadcast_to(q, (N, k, V)).copy()
    ps = np.broadcast_to(p, (N, k + 1, V)).copy()
    x = rng.choice(V, size=(N, k), p=q)
    n, toks = speculative_verify(qs, ps, x, np.arange(N))
    return n, toks


def _chi2_p(tokens, p):
    counts = np.bincount(tokens, minlength=V)
    keep = p > 0
    assert counts[~keep].sum() == 0  # never a token the target excludes
    return chisquare(counts[keep], p[keep] * counts.sum()).pvalue


@pytest.mark.parametrize("name,p,q", list(_pairs()), ids=[n for n, *_ in _pairs()])
def test_emitted_tokens_follow_the_target(name, p, q):
    n, toks = _trial(p, q, k=2)
    assert _chi2_p(toks[:, 0], p) > 1e-3
    # a second token exists when the first was accepted; drafts are independent, so it follows p too
    second = toks[n >= 1, 1]
    if second.size > 500:
        assert _chi2_p(second, p) > 1e-3
    last = toks[np.arange(N), n]
    assert (last >= 0).all()
    assert (toks[np.arange(3)[None, :] > n[:, None]] == -1).all()


def test_the_test_can_fail():
    """Emitting the draft token unconditionally would follow q, and the chi-square sees it."""
    p, q = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]), np.full(V, 1 / V)
    x = np.random.default_rng(0).choice(V, size=N, p=q)
    assert _chi2_p(x, p) < 1e-6


def test_draft_equal_to_target_accepts_everything():
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    n, toks = _trial(p, p, k=4)
    assert (n == 4).all()
    assert (toks >= 0).all()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_mean_accepted_length(k):
    p, q = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]), np.array([0.3, 0.3, 0.2, 0.1, 0.05, 0.05])
    a = np.minimum(p, q).sum()  # acceptance rate per position (Leviathan et al. 2023, Definition 3.1)
    n, _ = _trial(p, q, k=k)
    emitted = n + 1
    expected = (1 - a ** (k + 1)) / (1 - a)  # Leviathan et al. 2023, Equation (1)
    assert abs(emitted.mean() - expected) < 4 * emitted.std() / np.sqrt(N)
    assert abs((n > 0).mean() - a) < 4 * np.sqrt(a * (1 - a) / N)  # the measured a


def test_kernel_matches_reference_and_rows_are_batch_independent():
    rng = np.random.default_rng(3)
    B, k, Vb = 64, 3, 50
    q = rng.dirichlet(np.full(Vb, 0.3), size=(B, k))
    p = rng.dirichlet(np.full(Vb, 0.3), size=(B, k + 1))
    p[:8, :k] = q[:8]  # some rows with draft == target
    x = np.array([[rng.choice(Vb, p=q[b, i]) for i in range(k)] for b in range(B)])
    seeds = rng.integers(0, 2**62, B)
    n, t = speculative_verify(q, p, x, seeds)
    nr, tr = speculative_verify_ref(q, p, x, seeds)
    assert np.array_equal(n, nr) and np.array_equal(t, tr)
    for b in (0, 17, 63):
        n1, t1 = speculative_verify(q[b:b + 1], p[b:b + 1], x[b:b + 1], seeds[b:b + 1])
        assert n1[0] == n[b] and np.array_equal(t1[0], t[b])
    assert (t[np.arange(k + 1)[None, :] > n[:, None]] == -1).all()
    n32, t32 = speculative_verify(q.astype(np.float32) / q.astype(np.float32).sum(-1, keepdims=True),
                                  p.astype(np.float32) / p.astype(np.float32).sum(-1, keepdims=True), x, seeds)
    assert n32.shape == (B,)


def test_degenerate_shapes():
    n, t = speculative_verify(np.zeros((0, 2, 3)), np.zeros((0, 3, 3)), np.zeros((0, 2), np.int64), 0)
    assert n.shape == (0,) and t.shape == (0, 3)
    p = np.array([[[0.0, 1.0, 0.0]]])
    n, t = speculative_verify(np.zeros((1, 0, 3)), p, np.zeros((1, 0), np.int64), 0)
    assert n[0] == 0 and t[0, 0] == 1


def test_bad_input():
    q, p, x = np.full((1, 2, 3), 1 / 3), np.full((1, 3, 3), 1 / 3), np.zeros((1, 2), np.int64)
    with pytest.raises(ValueError, match="target_probs must have shape"):
        speculative_verify(q, p[:, :2], x, 0)
    with pytest.raises(ValueError, match=r"draft_tokens must lie in \[0, 3\)"):
        speculative_verify(q, p, x + 3, 0)
    with pytest.raises(ValueError, match="sum to 1"):
        speculative_verify(q * 2, p, x, 0)
    with pytest.raises(ValueError, match="finite"):
        speculative_verify(np.full((1, 2, 3), np.nan), p, x, 0)
    with pytest.raises(TypeError, match="share a dtype"):
        speculative_verify(q.astype(np.float32), p, x, 0)
    with pytest.raises(TypeError, match="integer"):
        speculative_verify(q, p, x.astype(bool), 0)


def _models():
    from scalelab.kernels.model import LlamaConfig, LlamaModel

    cfg = LlamaConfig(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, d_ff=48, vocab_size=53, max_position=256)
    target = LlamaModel.random(cfg, seed=0)
    state = target.hf_state()
    rng = np.random.default_rng(1)
    # the draft: the target's weights perturbed (the perturbation sets how often drafts are accepted)
    noisy = {k: v + 0.3 * v.std() * rng.standard_normal(v.shape).astype(np.float32) for k, v in state.items()}
    return target, LlamaModel(cfg, noisy)


def test_speculative_generate_greedy_equals_target_greedy():
    from scalelab.kernels.model import llama_forward_ref
    from scalelab.kernels.speculative import speculative_generate

    target, draft = _models()
    prompt = np.arange(7) * 5 % 53
    out = speculative_generate(target, draft, prompt, k=3, max_new_tokens=12, temperature=0.0)
    toks = list(prompt)
    for t in out.tokens:
        assert t == int(np.argmax(llama_forward_ref(target, np.array(toks))[-1]))
        toks.append(t)
    assert out.accepted.size < 12  # some drafts were accepted: fewer target steps than tokens
    same = speculative_generate(target, target, prompt, k=3, max_new_tokens=12, temperature=0.0)
    assert np.array_equal(same.tokens, out.tokens) and (same.accepted == 3).all()


def test_speculative_generate_is_seeded_and_validates():
    from scalelab.kernels.speculative import speculative_generate

    target, draft = _models()
    prompt = np.arange(5)
    a = speculative_generate(target, draft, prompt, k=2, max_new_tokens=10, seed=3)
    b = speculative_generate(target, draft, prompt, k=2, max_new_tokens=10, seed=3)
    assert np.array_equal(a.tokens, b.tokens) and a.tokens.shape == (10,)
    with pytest.raises(ValueError, match="k must be"):
        speculative_generate(target, draft, prompt, k=0, max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(target, draft, prompt, k=2, max_new_tokens=0)
    with pytest.raises(ValueError, match="max_position"):
        speculative_generate(target, draft, np.zeros(250, np.int64), k=2, max_new_tokens=10)
