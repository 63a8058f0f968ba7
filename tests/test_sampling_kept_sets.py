"""Which tokens survive the filters: exact agreement with the reference, and with transformers.

The earlier property tests drew temperatures from a handful of values, most of
them powers of two (for which the float32 and float64 quotients of a float32
logit agree), and let hypothesis run 40 examples. A kernel that divided the
k-th largest logit by the temperature in float64 while dividing every other
token in float32 passed them all, yet dropped the k-th token at T = 0.7. The
strategies here draw continuous temperatures, both dtypes, vocabularies from 1
to 300,000 tokens, every k, top-p and min-p, ties and one-ulp near-ties, and
run thousands of examples.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from scalelab.kernels import sampling as S

DTYPES = [np.float32, np.float64]


def _make_logits(seed, B, V, dtype, kind, scale):
    """(B, V) logits of one of several shapes; every row has a finite maximum."""
    rng = np.random.default_rng(seed)
    if kind == "zipf":
        ranks = rng.permuted(np.tile(np.arange(1, V + 1, dtype=np.float64), (B, 1)), axis=1)
        x = -scale * np.log(ranks)
    else:
        x = rng.standard_normal((B, V)) * scale
    if kind == "ties":
        x = np.round(x)
    x = x.astype(dtype)
    if kind == "near_ties":  # runs of values one ulp apart
        base = np.round(x * 2) / 2
        steps = rng.integers(-2, 3, size=x.shape)
        x = base.copy()
        for s in (-2, -1, 1, 2):
            sel = steps == s
            x[sel] = np.nextafter(x[sel], np.inf if s > 0 else -np.inf)
            if abs(s) == 2:
                x[sel] = np.nextafter(x[sel], np.inf if s > 0 else -np.inf)
    if kind == "masked":
        x[rng.random((B, V)) < 0.3] = -np.inf
        x[:, rng.integers(V)] = 0.5
    return x


@st.composite
def _configs(draw, v_max):
    dtype = draw(st.sampled_from(DTYPES))
    V = draw(st.integers(1, v_max))
    B = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["normal", "ties", "near_ties", "zipf", "masked"]))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0, 10.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    t = draw(st.floats(0.05, 5.0))
    k = draw(st.one_of(st.just(0), st.integers(1, min(V, 50)), st.integers(0, V)))
    p = draw(st.one_of(st.just(1.0), st.floats(1e-3, 1.0)))
    mp = draw(st.one_of(st.just(0.0), st.floats(0.0, 1.0)))
    x = _make_logits(seed, B, V, dtype, kind, scale)
    return x, dict(temperature=t, top_k=k, top_p=p, min_p=mp)


def _assert_kept_and_drawn(x, kw, seed):
    got = S.filter_logits(x, **kw)
    want = S.filter_logits_ref(x, **kw)
    assert got.dtype == x.dtype
    # same kept set, and the kept tokens carry exactly the reference's scaled logits
    np.testing.assert_array_equal(got, want)
    kept = np.isfinite(got)
    assert kept.any(axis=-1).all(), "a row kept no token"
    k = kw["top_k"]
    if 0 < k < x.shape[-1] and kw["top_p"] == 1.0 and kw["min_p"] == 0.0:
        n_fin = np.isfinite(x).sum(axis=-1)
        assert (kept.sum(axis=-1) >= np.minimum(k, n_fin)).all(), "top-k kept fewer than k tokens"
    B, V = x.shape
    tok, lp = S.sample(x, seed=np.arange(seed, seed + B), return_logprobs=True, **kw)
    assert tok.dtype == np.int64 and ((tok >= 0) & (tok < V)).all(), tok
    assert kept[np.arange(B), tok].all(), "drew a token the filters removed"
    assert np.isfinite(lp).all() and (lp <= 0).all(), lp
    np.testing.assert_allclose(lp, S.logprobs_ref(x, tok, **kw), rtol=1e-10, atol=1e-10)


@settings(max_examples=2500)
@given(cfg=_configs(v_max=4096), seed=st.integers(0, 2**40))
def test_kept_sets_equal_reference_at_any_temperature(cfg, seed):
    x, kw = cfg
    _assert_kept_and_drawn(x, kw, seed)


@settings(max_examples=30)
@given(cfg=_configs(v_max=300_000), seed=st.integers(0, 2**40))
def test_kept_sets_equal_reference_large_vocabularies(cfg, seed):
    x, kw = cfg
    _assert_kept_and_drawn(x, kw, seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_top_k_at_non_power_of_two_temperatures(dtype):
    # The reported case: 8 x 1,000 standard-normal logits.
    x = np.random.default_rng(0).standard_normal((8, 1000)).astype(dtype)
    for t in [0.1, 0.3, 0.6, 0.7, 0.8, 0.9, 1.1, 1.3, 0.5, 1.0, 2.0]:
        for k in [1, 2, 5, 40]:
            got = S.filter_logits(x, temperature=t, top_k=k)
            np.testing.assert_array_equal(got, S.filter_logits_ref(x, temperature=t, top_k=k))
            assert (np.isfinite(got).sum(axis=1) == k).all()  # no ties in standard-normal draws


def test_sample_with_top_k_one_and_top_p_returns_the_argmax():
    x = np.random.default_rng(5).standard_normal((4, 1000)).astype(np.float32)
    tok, lp = S.sample(x, temperature=0.7, top_k=1, top_p=0.5, seed=np.arange(4), return_logprobs=True)
    np.testing.assert_array_equal(tok, np.argmax(x, axis=1))
    np.testing.assert_array_equal(lp, np.zeros(4))


def test_temperature_that_overflows_float32_logits_is_rejected():
    # (every finite float64 temperature is representable for float64 logits)
    x = np.zeros((2, 8), dtype=np.float32)
    big = float(np.finfo(np.float32).max) * 2
    for fn in (S.filter_logits, S.sample, S.filter_logits_ref, S.sample_ref):
        with pytest.raises(ValueError, match="temperature must be 0 or a positive number representable"):
            fn(x, temperature=big)


# --------------------------------------------------------------------------- #
# Independent oracle: Hugging Face transformers' logits warpers (optional peer).
# --------------------------------------------------------------------------- #

def _hf_kept(x32, t, k, p, mp):
    """Kept mask of transformers' Temperature -> TopK -> TopP -> MinP warpers (float32, torch)."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("transformers")
    scores = torch.from_numpy(x32.copy())
    warpers = [tf.TemperatureLogitsWarper(t)]
    if k:
        warpers.append(tf.TopKLogitsWarper(k))
    if p < 1.0:
        warpers.append(tf.TopPLogitsWarper(p))
    if mp > 0.0:
        warpers.append(tf.MinPLogitsWarper(mp))
    ids = torch.zeros((x32.shape[0], 1), dtype=torch.long)
    for w in warpers:
        scores = w(ids, scores)
    return torch.isfinite(scores).numpy()


def _top_p_boundary_within_float32(x, t, k, p, row, tokens):
    """True when every token in ``tokens`` sits where float32 rounding can move the top-p cut.

    transformers forms the cumulative mass in float32 (from the least probable
    token up), we and our reference in float64: tokens whose float64
    cumulative mass lies within float32 rounding of ``1 - top_p`` may fall on
    either side.
    """
    xs = x[row].astype(np.float64) / np.float64(np.float32(t))
    if k:
        kth = np.sort(xs)[::-1][k - 1]
        xs = np.where(xs >= kth, xs, -np.inf)
    e = np.exp(xs - xs.max())
    pr = e / e.sum()
    order = np.argsort(pr, kind="stable")  # ascending, as transformers sorts
    cum = np.cumsum(pr[order])
    pos = np.empty_like(order)
    pos[order] = np.arange(order.size)
    tol = 1e-5 + 4 * np.finfo(np.float32).eps * np.sqrt(x.shape[1])
    return all(abs(cum[pos[j]] - (1 - p)) <= tol for j in tokens)


def _untied_row(rng, V, scale):
    """V distinct float32 standard-normal logits (float32 draws of 32,000 normals do tie)."""
    while True:
        u = np.unique((rng.standard_normal(V + V // 4 + 8) * scale).astype(np.float32))
        if u.size >= V:
            return rng.permutation(rng.choice(u, V, replace=False))


def test_kept_sets_equal_transformers_warpers():
    pytest.importorskip("transformers")
    rng = np.random.default_rng(2024)
    n_configs, boundary_rounding = 1000, 0
    for c in range(n_configs):
        V = int(rng.choice([50, 1000, 32000]))
        t = float(rng.choice([0.7, 1.0, 1.3]) if c % 2 else rng.uniform(0.05, 5.0))
        k = int(rng.choice([0, 1, 5, 50]))
        p = float(rng.choice([1.0, 0.5, 0.9]))
        mp = float(rng.choice([0.0, 0.05]))
        x = np.stack([_untied_row(rng, V, float(rng.choice([1.0, 3.0]))) for _ in range(2)])
        ours = np.isfinite(S.filter_logits(x, temperature=t, top_k=k, top_p=p, min_p=mp))
        hf = _hf_kept(x, t, k, p, mp)
        for r in range(2):
            diff = np.nonzero(ours[r] != hf[r])[0]
            if diff.size == 0:
                continue
            # The one difference we accept: float32 cumulative sums at the top-p cut.
            assert p < 1.0 and _top_p_boundary_within_float32(x, t, k, p, r, diff), (
                f"config {c} row {r}: V={V} T={t} k={k} p={p} min_p={mp}: tokens {diff[:10]} differ")
            boundary_rounding += 1
    # float32 rounding at the cut is rare; a large count would mean a real disagreement
    print(f"{boundary_rounding} rows differ only by float32 rounding at the top-p cut")
    assert boundary_rounding <= n_configs * 2 // 100, boundary_rounding
