"""The float32 NumPy peers compute what the float64 references compute."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.kernels import attention as A
from scalelab.kernels import moe as M
from scalelab.kernels import peers as P
from scalelab.kernels import sampling as S


def _tol(dtype):
    return dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, Hq, Hkv, Lq, Lk, D, Dv", [
    (1, 1, 1, 1, 1, 4, 4), (2, 4, 2, 7, 7, 8, 8), (1, 8, 1, 5, 12, 16, 8), (2, 6, 3, 33, 33, 32, 32),
    (1, 2, 2, 64, 64, 64, 64),
])
def test_prefill_peer_matches_reference(dtype, B, Hq, Hkv, Lq, Lk, D, Dv):
    rng = np.random.default_rng(Lq * 31 + Lk)
    q = rng.standard_normal((B, Hq, Lq, D)).astype(dtype)  # (B, Hq, Lq, D)
    k = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)  # (B, Hkv, Lk, D)
    v = rng.standard_normal((B, Hkv, Lk, Dv)).astype(dtype)  # (B, Hkv, Lk, Dv)
    got = P.prefill_attention(q, k, v)
    assert got.dtype == dtype and got.shape == (B, Hq, Lq, Dv)
    np.testing.assert_allclose(got, A.attention_ref(q, k, v, causal=True), **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, Hq, Hkv, L, D, lengths", [
    (1, 1, 1, 1, 4, [1]), (3, 4, 2, 17, 8, [17, 1, 9]), (2, 8, 1, 40, 32, [0, 40]), (4, 4, 4, 64, 64, [64] * 4),
])
def test_decode_peer_matches_reference(dtype, B, Hq, Hkv, L, D, lengths):
    rng = np.random.default_rng(L + B)
    q = rng.standard_normal((B, Hq, D)).astype(dtype)  # (B, Hq, D)
    kc = rng.standard_normal((B, Hkv, L, D)).astype(dtype)  # (B, Hkv, L, D)
    vc = rng.standard_normal((B, Hkv, L, D)).astype(dtype)  # (B, Hkv, L, D)
    n = np.array(lengths, dtype=np.int64)
    got = P.decode_attention(q, kc, vc, n)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, A.decode_attention_ref(q, kc, vc, n), **_tol(dtype))


def _logits(B, V, dtype, seed=0):
    # distinct values: no ties at the k-th entry, where argpartition may pick another id
    rng = np.random.default_rng(seed)
    return (rng.permutation(B * V).reshape(B, V) / (B * V) * 12.0 - 6.0).astype(dtype)  # (B, V)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, V, k", [(1, 1, 1), (1, 10, 10), (3, 100, 7), (2, 5000, 50)])
def test_top_k_peer_matches_reference(dtype, B, V, k):
    x = _logits(B, V, dtype, seed=V)
    vals, idx = P.top_k(x, k)
    rvals, ridx = S.top_k_ref(x, k)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(vals, rvals)
    v1, i1 = P.top_k(x[0], k)
    np.testing.assert_array_equal(i1, ridx[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, V, temperature, top_k, top_p", [
    (1, 1, 1.0, 0, 0.9), (2, 50, 0.7, 0, 0.9), (3, 1000, 1.3, 50, 0.9), (2, 1000, 0.7, 10, 1.0),
    (4, 32000, 0.7, 0, 0.5), (1, 200, 1.0, 0, 1e-6),
])
def test_filter_peer_keeps_the_reference_set(dtype, B, V, temperature, top_k, top_p):
    x = _logits(B, V, dtype, seed=V + 1)
    got = P.filter_logits(x, temperature=temperature, top_k=top_k, top_p=top_p)
    ref = S.filter_logits_ref(x, temperature=temperature, top_k=top_k, top_p=top_p)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], rtol=1e-6)


def test_sample_peer_draws_from_the_reference_distribution():
    x = _logits(1, 12, np.float32, seed=3)[0]
    kw = dict(temperature=0.8, top_p=0.9)
    f = S.filter_logits_ref(x, **kw).astype(np.float64)
    p = np.exp(f - f.max())
    p /= p.sum()
    draws = np.array([P.sample(x, seed=s, **kw) for s in range(4000)])
    assert np.all(p[draws] > 0)  # never a filtered token
    freq = np.bincount(draws, minlength=x.size) / draws.size
    np.testing.assert_allclose(freq, p, atol=0.03)
    batch = P.sample(np.stack([x] * 5), seed=7, **kw)
    assert batch.shape == (5,) and np.all(p[batch] > 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T, E, k", [(1, 1, 1), (5, 8, 2), (64, 64, 2), (33, 16, 16)])
def test_moe_peers_match_references(dtype, T, E, k):
    rng = np.random.default_rng(T * E + k)
    logits = _logits(T, E, dtype, seed=E)
    w, e = P.route(logits, k)
    rw, re_ = M.route_ref(logits, k)
    np.testing.assert_array_equal(e, re_)
    np.testing.assert_allclose(w, rw, **_tol(rw.dtype))  # route_ref returns weights in float32
    order, counts = P.dispatch(re_, E)
    D = M.dispatch_ref(re_, E)
    np.testing.assert_array_equal(order, D.order)
    np.testing.assert_array_equal(counts, np.bincount(re_.ravel(), minlength=E))
    x = rng.standard_normal((T, 24)).astype(dtype)  # (T, d)
    xs = P.permute(x, order, k)
    np.testing.assert_array_equal(xs, M.permute_ref(x, D))
    ys = (xs * 2).astype(dtype)  # (n, d) stand-in for the experts' outputs
    np.testing.assert_allclose(P.unpermute(ys, order, rw.astype(dtype)), M.unpermute_ref(ys, D, rw), **_tol(dtype))
