"""Attention kernels against their NumPy references.

Tolerances (``|out - ref| <= atol + rtol * |ref|``, worst entry reported):

* float32: ``atol = 2e-6 * max|v|``, ``rtol = 2e-5``. The kernels accumulate
  in float32 and use a polynomial exp2 (relative error < 1e-7); the scores
  carry about ``sqrt(D) * 6e-8 * |q||k|`` rounding error, far inside this.
* float64: ``atol = 1e-12 * max|v|``, ``rtol = 1e-10`` (libm exp2, float64 sums).
* Scores near 1e4 are ill-conditioned in float32 whoever computes them (score
  spacing 1e-3): those tests check finiteness and use ``2e-3 * max|v|``.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.kernels import attention as A
from scalelab.kernels._common import numba_threads

DTYPES = [np.float32, np.float64]


def assert_close(out, ref, v, dtype):
    """atol + rtol*|ref| check scaled by the value magnitude; reports the worst entry."""
    assert out.dtype == np.dtype(dtype), (out.dtype, dtype)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert np.all(np.isfinite(out)), "kernel produced NaN/inf"
    vmax = float(np.max(np.abs(v))) if v.size else 1.0
    if np.dtype(dtype) == np.float32:
        atol, rtol = 2e-6 * max(vmax, 1.0), 2e-5
    else:
        atol, rtol = 1e-12 * max(vmax, 1.0), 1e-10
    ref64 = ref.astype(np.float64)
    err = np.abs(out.astype(np.float64) - ref64)
    bound = atol + rtol * np.abs(ref64)
    if err.size and not np.all(err <= bound):
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(
            f"max mismatch at {worst}: out={out[worst]!r} ref={ref[worst]!r} "
            f"err={err[worst]:.3e} > bound={bound[worst]:.3e}"
        )


def huge_score_atol(v, dtype):
    """Tolerance when scores are ~1e4: float32 spaces them 1e-3 apart, so each
    softmax weight may be off by ~1e-3 relative (any float32 kernel); float64 by ~2e-12."""
    rel = 2e-3 if np.dtype(dtype) == np.float32 else 1e-9
    return rel * float(np.max(np.abs(v)))


def make_qkv(rng, B, Hq, Hkv, Lq, Lk, D, Dv, dtype):
    q = rng.standard_normal((B, Hq, Lq, D)).astype(dtype)  # (B, Hq, Lq, D)
    k = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)  # (B, Hkv, Lk, D)
    v = rng.standard_normal((B, Hkv, Lk, Dv)).astype(dtype)  # (B, Hkv, Lk, Dv)
    return q, k, v


def make_paged(rng, k_cache, v_cache, lengths, page_size, garbage=np.nan, spare_pages=3):
    """Scatter a contiguous cache into shuffled pages; unused slots hold ``garbage``."""
    B, Hkv, Lmax, D = k_cache.shape
    Dv = v_cache.shape[3]
    max_blocks = -(-Lmax // page_size)
    num_pages = B * max_blocks + spare_pages
    perm = rng.permutation(num_pages)[: B * max_blocks].reshape(B, max_blocks)  # (B, max_blocks)
    k_pages = np.full((num_pages, page_size, Hkv, D), garbage, dtype=k_cache.dtype)
    v_pages = np.full((num_pages, page_size, Hkv, Dv), garbage, dtype=v_cache.dtype)
    for b in range(B):
        for blk in range(-(-int(lengths[b]) // page_size)):
            lo = blk * page_size
            hi = min(lo + page_size, int(lengths[b]))
            k_pages[perm[b, blk], : hi - lo] = k_cache[b, :, lo:hi].transpose(1, 0, 2)
            v_pages[perm[b, blk], : hi - lo] = v_cache[b, :, lo:hi].transpose(1, 0, 2)
    return k_pages, v_pages, perm


# --------------------------------------------------------------------------- prefill

@settings(max_examples=40)
@given(
    B=st.integers(1, 2),
    Hkv=st.integers(1, 3),
    group=st.integers(1, 3),
    Lq=st.sampled_from([1, 2, 63, 64, 65, 130, 257]) | st.integers(1, 300),
    Lk=st.sampled_from([1, 63, 64, 65, 127, 129, 257]) | st.integers(1, 300),
    D=st.sampled_from([64, 80, 128, 65, 8]),
    Dv=st.sampled_from([None, 33, 64]),
    causal=st.booleans(),
    window=st.none() | st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_attention_matches_reference(B, Hkv, group, Lq, Lk, D, Dv, causal, window, dtype, seed):
    rng = np.random.default_rng(seed)
    Dv = D if Dv is None else Dv
    q, k, v = make_qkv(rng, B, Hkv * group, Hkv, Lq, Lk, D, Dv, dtype)
    out = A.attention(q, k, v, causal=causal, window=window)
    ref = A.attention_ref(q, k, v, causal=causal, window=window)
    assert_close(out, ref, v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Lq,Lk,D", [(1, 1, 64), (63, 63, 64), (65, 65, 80), (257, 257, 128), (257, 100, 65),
                                    (64, 1, 64), (1, 300, 64), (200, 777, 64)])
def test_attention_explicit_shapes(rng, Lq, Lk, D, dtype):
    q, k, v = make_qkv(rng, 1, 4, 2, Lq, Lk, D, D, dtype)
    for causal in (True, False):
        assert_close(A.attention(q, k, v, causal=causal), A.attention_ref(q, k, v, causal=causal), v, dtype)


def test_gqa_uses_the_right_kv_head(rng):
    """Distinct kv heads: query head h must read kv head h // (Hq // Hkv)."""
    Hq, Hkv, L, D = 6, 3, 40, 16
    q, k, v = make_qkv(rng, 1, Hq, Hkv, L, L, D, D, np.float64)
    v += np.arange(Hkv)[None, :, None, None] * 100.0  # each kv head shifts outputs by 100 * head
    out = A.attention(q, k, v, causal=True)
    for h in range(Hq):
        expect = A.attention_ref(q[:, h:h + 1], k[:, h // 2:h // 2 + 1], v[:, h // 2:h // 2 + 1], causal=True)
        assert_close(out[:, h:h + 1], expect, v, np.float64)
        assert abs(out[0, h].mean() - 100.0 * (h // 2)) < 5.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_causal_rows_that_see_nothing_are_zero(rng, dtype):
    """Bottom-right alignment with Lq > Lk: the first Lq - Lk rows see no key."""
    Lq, Lk = 150, 70
    q, k, v = make_qkv(rng, 2, 2, 1, Lq, Lk, 64, 32, dtype)
    out = A.attention(q, k, v, causal=True)
    assert np.all(out[:, :, : Lq - Lk] == 0)
    assert np.all(np.abs(out[:, :, Lq - Lk:]).sum(-1) > 0)
    assert_close(out, A.attention_ref(q, k, v, causal=True), v, dtype)


def test_bottom_right_alignment_by_hand():
    """Lq=2, Lk=3: row 0 sees keys 0..1, row 1 sees 0..2 (not top-left 0..0 / 0..1)."""
    q = np.zeros((1, 1, 2, 4))
    k = np.zeros((1, 1, 3, 4))
    v = np.arange(3.0).reshape(1, 1, 3, 1)  # equal scores -> output = mean of visible values
    out = A.attention(q, k, v, causal=True)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.5, 1.0], rtol=1e-12)
    np.testing.assert_allclose(A.attention(q, k, v, causal=True, window=1)[0, 0, :, 0], [1.0, 2.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [1, 7, 64, 129])
def test_window_skips_fully_masked_tiles(rng, window, dtype):
    """Long sequences with a short window: the leading key tiles of late query blocks are invisible."""
    L = 3 * A.BLOCK_K + 37
    q, k, v = make_qkv(rng, 1, 2, 1, L, L, 64, 64, dtype)
    for causal in (True, False):
        out = A.attention(q, k, v, causal=causal, window=window)
        assert_close(out, A.attention_ref(q, k, v, causal=causal, window=window), v, dtype)
    # window=1 with causal: each row returns exactly its own value
    if window == 1:
        np.testing.assert_allclose(A.attention(q, k, v, causal=True, window=1)[0, 0], v[0, 0], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_huge_scores_do_not_overflow(rng, dtype, sign):
    """Scores near +-1e4: equal huge scores average V; one dominant key picks its value."""
    L, D = 100, 64
    q = np.full((1, 1, L, D), 1.0, dtype=dtype)
    k = np.full((1, 1, L, D), sign * 1e4 / np.sqrt(D), dtype=dtype)  # q.k * D**-0.5 = sign * 1e4
    v = rng.standard_normal((1, 1, L, 8)).astype(dtype)
    out = A.attention(q, k, v, causal=True)  # every score = sign * 1e4
    assert np.all(np.isfinite(out))
    expect = np.cumsum(v[0, 0].astype(np.float64), axis=0) / np.arange(1, L + 1)[:, None]
    np.testing.assert_allclose(out[0, 0], expect, atol=huge_score_atol(v, dtype))
    # one key 2e4 above the rest: softmax is one-hot on it wherever it is visible
    k2 = rng.standard_normal((1, 1, L, D)).astype(dtype)
    k2[0, 0, 10] = 2e4 / np.sqrt(D)  # score of key 10 = 2e4, the others ~N(0, 1)
    out2 = A.attention(q, k2, v, causal=False)
    assert np.all(np.isfinite(out2))
    np.testing.assert_allclose(out2[0, 0], np.broadcast_to(v[0, 0, 10], (L, 8)), rtol=1e-5, atol=1e-6)
    assert_close(out2, A.attention_ref(q, k2, v, causal=False), v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_mixed_inputs(rng, dtype):
    base = rng.standard_normal((2, 130, 4, 2 * 64)).astype(dtype)  # (B, L, H, 2D) then views
    q = base.transpose(0, 2, 1, 3)[..., ::2]  # (B, H, L, D), strided
    k = base.transpose(0, 2, 1, 3)[:, :2, :, 1::2]  # (B, 2, L, D)
    v = np.asfortranarray(rng.standard_normal((2, 2, 130, 48)).astype(dtype))
    assert not q.flags.c_contiguous and not k.flags.c_contiguous
    out = A.attention(q, k, v, causal=True, window=50)
    ref = A.attention(np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v),
                      causal=True, window=50)
    np.testing.assert_array_equal(out, ref)
    # mixed float32/float64 promotes to float64
    out64 = A.attention(q.astype(np.float32), k.astype(np.float64), v.astype(np.float32))
    assert out64.dtype == np.float64


def test_scale_argument(rng):
    q, k, v = make_qkv(rng, 1, 2, 2, 33, 40, 16, 16, np.float64)
    for scale in (0.01, 1.0, -0.5, 3):
        assert_close(A.attention(q, k, v, scale=scale), A.attention_ref(q, k, v, scale=scale), v, np.float64)
    # the default is 1/sqrt(D)
    np.testing.assert_array_equal(A.attention(q, k, v), A.attention(q, k, v, scale=0.25))


def test_empty_shapes():
    for shape_q, shape_k in [((0, 2, 5, 8), (0, 1, 5, 8)), ((1, 2, 0, 8), (1, 1, 5, 8)), ((1, 2, 5, 8), (1, 1, 0, 8))]:
        q = np.ones(shape_q, np.float32)
        k = np.ones(shape_k, np.float32)
        out = A.attention(q, k, k, causal=False)
        assert out.shape == shape_q[:3] + (8,) and np.all(out == 0)
        assert np.array_equal(out, A.attention_ref(q, k, k, causal=False))


# --------------------------------------------------------------------------- decode

@settings(max_examples=30)
@given(
    B=st.integers(1, 3),
    Hkv=st.integers(1, 3),
    group=st.sampled_from([1, 2, 3, 4]),
    Lmax=st.sampled_from([1, 63, 512, 513, 1100]) | st.integers(1, 700),
    D=st.sampled_from([64, 80, 128, 65]),
    Dv=st.sampled_from([None, 40]),
    window=st.none() | st.integers(1, 600),
    page_size=st.sampled_from([1, 3, 16]),
    dtype=st.sampled_from(DTYPES),
    data=st.data(),
)
def test_decode_and_paged_match_reference(B, Hkv, group, Lmax, D, Dv, window, page_size, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    Dv = D if Dv is None else Dv
    Hq = Hkv * group
    lengths = np.array(data.draw(st.lists(st.integers(0, Lmax), min_size=B, max_size=B)))
    q = rng.standard_normal((B, Hq, D)).astype(dtype)  # (B, Hq, D)
    kc = rng.standard_normal((B, Hkv, Lmax, D)).astype(dtype)  # (B, Hkv, Lmax, D)
    vc = rng.standard_normal((B, Hkv, Lmax, Dv)).astype(dtype)  # (B, Hkv, Lmax, Dv)
    for b in range(B):  # garbage beyond the valid length must never be read
        kc[b, :, lengths[b]:] = np.nan
        vc[b, :, lengths[b]:] = np.inf
    out = A.decode_attention(q, kc, vc, lengths, window=window)
    ref = A.decode_attention_ref(q, kc, vc, lengths, window=window)
    assert_close(out, ref, np.nan_to_num(vc, posinf=0.0), dtype)
    assert np.all(out[lengths == 0] == 0)

    kp, vp, table = make_paged(rng, kc, vc, lengths, page_size)
    pout = A.paged_decode_attention(q, kp, vp, table, lengths, window=window)
    pref = A.paged_decode_attention_ref(q, kp, vp, table, lengths, window=window)
    assert_close(pout, pref, np.nan_to_num(vc, posinf=0.0), dtype)
    assert_close(pout, out, np.nan_to_num(vc, posinf=0.0), dtype)  # paged == contiguous on the same data


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_equals_last_row_of_prefill(rng, dtype):
    """Decode at length n is the last query row of causal prefill over n keys."""
    B, Hq, Hkv, L, D = 2, 8, 2, 700, 64
    q, k, v = make_qkv(rng, B, Hq, Hkv, L, L, D, D, dtype)
    full = A.attention(q, k, v, causal=True, window=100)
    dec = A.decode_attention(q[:, :, -1], k, v, np.full(B, L), window=100)
    assert_close(dec, full[:, :, -1], v, dtype)


@settings(max_examples=40, deadline=None)
@given(L=st.integers(2, 600), D=st.sampled_from([8, 16, 64, 80]), group=st.sampled_from([1, 2]),
       window=st.sampled_from([None, 5, 100]), dtype=st.sampled_from(DTYPES), data=st.data())
def test_a_chunk_of_queries_gives_the_same_bits_as_those_rows_of_the_whole(L, D, group, window, dtype, data):
    """Rows q of a chunk (the last Lq queries against all L keys, bottom-right causal) equal the same rows
    of the whole prompt's attention bit for bit, wherever the chunk starts: the query block a row falls in
    does not change its arithmetic (what makes chunked prefill bitwise equal to whole prefill)."""
    start = data.draw(st.integers(1, L - 1))
    seed = data.draw(st.integers(0, 2**16))
    r = np.random.default_rng(seed)
    q = r.standard_normal((1, 2 * group, L, D)).astype(dtype)
    k = r.standard_normal((1, 2, L, D)).astype(dtype)
    v = r.standard_normal((1, 2, L, D)).astype(dtype)
    whole = A.attention(q, k, v, causal=True, window=window)
    part = A.attention(q[:, :, start:], k, v, causal=True, window=window)
    np.testing.assert_array_equal(part, whole[:, :, start:])


@pytest.mark.parametrize("dtype", DTYPES)
def test_paged_equals_contiguous_same_data(rng, dtype):
    B, Hq, Hkv, L, D = 3, 8, 4, 1300, 64
    q = rng.standard_normal((B, Hq, D)).astype(dtype)
    kc = rng.standard_normal((B, Hkv, L, D)).astype(dtype)
    vc = rng.standard_normal((B, Hkv, L, D)).astype(dtype)
    lengths = np.array([1300, 517, 0])
    contiguous = A.decode_attention(q, kc, vc, lengths)
    for ps in (16, 7, 1024):
        kp, vp, table = make_paged(rng, kc, vc, lengths, ps, garbage=np.nan)
        table[2] = -1  # blocks past a sequence's length are ignored (vLLM pads tables)
        paged = A.paged_decode_attention(q, kp, vp, table, lengths)
        if ps % 4 == 0:  # same blocks of four keys in the same order: same bits
            np.testing.assert_array_equal(paged, contiguous)
        else:
            assert_close(paged, contiguous, vc, dtype)


def test_paged_ignores_padding_entries_and_crosses_pages(rng):
    """Table entries past a sequence's last used block (huge, negative) are never used, also where
    the kernel looks up the next page to prefetch; a full last page and a partial one."""
    B, Hq, Hkv, L, D, ps = 2, 8, 4, 200, 64, 16
    q = rng.standard_normal((B, Hq, D)).astype(np.float32)
    kc = rng.standard_normal((B, Hkv, L, D)).astype(np.float32)
    vc = rng.standard_normal((B, Hkv, L, D)).astype(np.float32)
    lengths = np.array([160, 37])  # a full last page and a partial one
    kp, vp, table = make_paged(rng, kc, vc, lengths, ps)
    table = table.astype(np.int64)
    table[0, 10:] = 2**62
    table[1, 3:] = -(2**62)
    paged = A.paged_decode_attention(q, kp, vp, table, lengths)
    np.testing.assert_array_equal(paged, A.decode_attention(q, kc, vc, lengths))
    windowed = A.paged_decode_attention(q, kp, vp, table, lengths, window=50)  # starts mid-page
    assert_close(windowed, A.decode_attention_ref(q, kc, vc, lengths, window=50), vc, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_noncontiguous_and_huge_scores(rng, dtype):
    B, Hq, Hkv, L, D = 2, 4, 2, 300, 64
    base = rng.standard_normal((B, L, Hkv, D)).astype(dtype)
    kc = base.transpose(0, 2, 1, 3)  # (B, Hkv, L, D), non-contiguous
    vc = base.transpose(0, 2, 1, 3)[..., ::-1]
    q = np.asfortranarray(rng.standard_normal((B, Hq, D)).astype(dtype))
    lengths = np.array([300, 150], dtype=np.int32)
    assert_close(A.decode_attention(q, kc, vc, lengths), A.decode_attention_ref(q, kc, vc, lengths), vc, dtype)
    # every score 1e4: the output is the mean of the visible values, no overflow
    qh = np.ones((B, Hq, D), dtype)
    kh = np.full((B, Hkv, L, D), 1e4 / np.sqrt(D), dtype)
    out = A.decode_attention(qh, kh, vc, lengths)
    assert np.all(np.isfinite(out))
    for b in range(B):
        np.testing.assert_allclose(out[b], np.broadcast_to(vc[b, :, : lengths[b]].mean(1).repeat(2, 0), (Hq, D)),
                                   atol=huge_score_atol(vc, dtype))


# --------------------------------------------------------------------------- determinism


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_identical_results_for_one_and_two_threads(rng):
    q, k, v = make_qkv(rng, 1, 4, 2, 300, 300, 64, 64, np.float32)
    qd = rng.standard_normal((3, 8, 64)).astype(np.float32)
    kc = rng.standard_normal((3, 2, 2000, 64)).astype(np.float32)
    vc = rng.standard_normal((3, 2, 2000, 64)).astype(np.float32)
    lengths = np.array([2000, 1234, 5])
    kp, vp, table = make_paged(rng, kc, vc, lengths, 16)
    results = []
    for n in (1, 2):
        with numba_threads(n):
            results.append((A.attention(q, k, v, causal=True),
                            A.decode_attention(qd, kc, vc, lengths),
                            A.paged_decode_attention(qd, kp, vp, table, lengths)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_reused_strip_workspace_leaves_no_trace(rng):
    """The packed-strip buffer a thread keeps between calls: stale contents (here NaN) never leak in."""
    q, k, v = make_qkv(rng, 1, 2, 1, 37, 45, 24, 24, np.float32)  # Lk not a multiple of a strip
    first = A.attention(q, k, v, causal=True)
    A.attention(*make_qkv(rng, 1, 2, 2, 70, 90, 40, 40, np.float64), causal=True)  # a bigger pack, other dtype
    A._strip_workspace(1).fill(0xFF)  # every byte NaN-patterned
    np.testing.assert_array_equal(A.attention(q, k, v, causal=True), first)
    np.testing.assert_allclose(first, A.attention_ref(q, k, v, causal=True), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- napkin math


@pytest.mark.parametrize("Lq,Lk,causal,window", [(5, 5, True, None), (7, 3, True, None), (3, 9, True, 2),
                                                 (6, 6, False, 4), (4, 4, False, None), (1, 1, True, 1)])
def test_attention_flops_counts_visible_pairs(Lq, Lk, causal, window):
    i = np.arange(Lq)[:, None]
    j = np.arange(Lk)[None, :]
    hi = np.minimum(Lk - 1, i + Lk - Lq) if causal else np.full_like(i, Lk - 1)
    visible = (j <= hi) & (j >= (hi - window + 1 if window else 0))
    assert A.attention_flops(Lq, Lk, 64, 32, causal, window) == 2 * int(visible.sum()) * 96
    assert A.attention_flops(2048, 2048, 64, 64, True) == 2 * 2048 * 2049 // 2 * 128


def test_kv_bytes_read():
    assert A.kv_bytes_read([4096] * 8, 8, 128, 128, 4) == 8 * 4096 * 8 * 256 * 4
    assert A.kv_bytes_read([10, 3], 2, 4, 4, 8, window=5) == (5 + 3) * 2 * 8 * 8


# --------------------------------------------------------------------------- bad input


def _ok():
    q = np.zeros((2, 4, 5, 8), np.float32)
    k = np.zeros((2, 2, 6, 8), np.float32)
    return q, k, k.copy()


@pytest.mark.parametrize("fn", [A.attention, A.attention_ref])
def test_attention_bad_input(fn):
    q, k, v = _ok()
    cases = [
        (dict(q=q[0]), ValueError, "q must have rank 4"),
        (dict(k=k[..., None]), ValueError, "k must have rank 4"),
        (dict(v=v[0]), ValueError, "v must have rank 4"),
        (dict(k=k[:1], v=v[:1]), ValueError, "batch"),
        (dict(k=np.zeros((2, 3, 6, 8), np.float32), v=np.zeros((2, 3, 6, 8), np.float32)), ValueError, "Hq=4"),
        (dict(k=np.zeros((2, 2, 6, 7), np.float32), v=np.zeros((2, 2, 6, 7), np.float32)), ValueError, "k must have the same head dimension"),
        (dict(v=np.zeros((2, 1, 6, 8), np.float32)), ValueError, "v must match k"),
        (dict(v=np.zeros((2, 2, 5, 8), np.float32)), ValueError, "v must match k"),
        (dict(q=q.astype(np.int32)), TypeError, "q must have dtype"),
        (dict(k=k.astype(np.complex64)), TypeError, "k must have dtype"),
        (dict(v=v.astype(np.float16)), TypeError, "v must have dtype"),
        (dict(q="abc"), TypeError, "q must"),
        (dict(window=0), ValueError, "window"),
        (dict(window=-3), ValueError, "window"),
        (dict(window=2.5), TypeError, "window"),
        (dict(window=True), TypeError, "window"),
        (dict(causal="yes"), TypeError, "causal"),
        (dict(scale=float("nan")), ValueError, "scale"),
        (dict(scale="x"), TypeError, "scale"),
        (dict(q=np.zeros((2, 4, 5, 0), np.float32), k=np.zeros((2, 2, 6, 0), np.float32)), ValueError, "D >= 1"),
    ]
    for over, exc, msg in cases:
        args = dict(q=q, k=k, v=v)
        kw = {name: over.pop(name) for name in ("window", "causal", "scale") if name in over}
        args.update(over)
        with pytest.raises(exc, match=msg):
            fn(args["q"], args["k"], args["v"], **kw)


@pytest.mark.parametrize("fn", [A.decode_attention, A.decode_attention_ref])
def test_decode_bad_input(fn):
    q = np.zeros((2, 4, 8), np.float32)
    kc = np.zeros((2, 2, 10, 8), np.float32)
    lengths = np.array([3, 10])
    cases = [
        (dict(q=q[..., None]), ValueError, "q must have rank 3"),
        (dict(k_cache=kc[0]), ValueError, "k_cache must have rank 4"),
        (dict(k_cache=kc[:1], v_cache=kc[:1]), ValueError, "batch"),
        (dict(k_cache=np.zeros((2, 3, 10, 8), np.float32), v_cache=np.zeros((2, 3, 10, 8), np.float32)), ValueError, "Hq=4"),
        (dict(k_cache=np.zeros((2, 2, 10, 9), np.float32)), ValueError, "k_cache must have the same head dimension"),
        (dict(v_cache=np.zeros((2, 2, 9, 8), np.float32)), ValueError, "v_cache must match"),
        (dict(lengths=np.array([3, 11])), ValueError, r"lengths must lie in \[0, 10\]"),
        (dict(lengths=np.array([-1, 2])), ValueError, "lengths must lie"),
        (dict(lengths=np.array([3])), ValueError, "lengths must have shape"),
        (dict(lengths=np.array([3.0, 2.0])), TypeError, "lengths must have an integer dtype"),
        (dict(lengths=np.array([True, False])), TypeError, "lengths"),
        (dict(q=q.astype(np.int64)), TypeError, "q must have dtype"),
        (dict(v_cache=kc.astype(np.complex128)), TypeError, "v_cache must have dtype"),
        (dict(window=0), ValueError, "window"),
    ]
    for over, exc, msg in cases:
        args = dict(q=q, k_cache=kc, v_cache=kc, lengths=lengths)
        kw = {"window": over.pop("window")} if "window" in over else {}
        args.update(over)
        with pytest.raises(exc, match=msg):
            fn(args["q"], args["k_cache"], args["v_cache"], args["lengths"], **kw)


@pytest.mark.parametrize("fn", [A.paged_decode_attention, A.paged_decode_attention_ref])
def test_paged_bad_input(fn):
    q = np.zeros((2, 4, 8), np.float32)
    kp = np.zeros((5, 4, 2, 8), np.float32)  # (num_pages, page_size, Hkv, D)
    table = np.array([[0, 1], [2, 3]])
    lengths = np.array([5, 8])
    cases = [
        (dict(k_pages=kp[0]), ValueError, "k_pages must have rank 4"),
        (dict(v_pages=np.zeros((5, 3, 2, 8), np.float32)), ValueError, "v_pages must match"),
        (dict(k_pages=np.zeros((5, 4, 2, 6), np.float32)), ValueError, "k_pages must have the same head dimension"),
        (dict(k_pages=np.zeros((5, 4, 3, 8), np.float32), v_pages=np.zeros((5, 4, 3, 8), np.float32)), ValueError, "Hq=4"),
        (dict(block_table=np.array([[0, 5], [2, 3]])), ValueError, r"page ids must lie in \[0, 5\)"),
        (dict(block_table=np.array([[0, -1], [2, 3]])), ValueError, "page ids"),
        (dict(block_table=table[:1]), ValueError, "block_table must have shape"),
        (dict(block_table=table.astype(np.float64)), TypeError, "block_table must have an integer dtype"),
        (dict(block_table=table[0]), ValueError, "block_table must have rank 2"),
        (dict(lengths=np.array([5, 9])), ValueError, r"lengths must lie in \[0, 8\]"),
        (dict(q=q.astype(np.complex64)), TypeError, "q must have dtype"),
        (dict(window=0), ValueError, "window"),
    ]
    for over, exc, msg in cases:
        args = dict(q=q, k_pages=kp, v_pages=kp, block_table=table, lengths=lengths)
        kw = {"window": over.pop("window")} if "window" in over else {}
        args.update(over)
        with pytest.raises(exc, match=msg):
            fn(args["q"], args["k_pages"], args["v_pages"], args["block_table"], args["lengths"], **kw)
    # an unused block may hold any id (here -1): no error
    fn(q, kp, kp, np.array([[0, -1], [2, 3]]), np.array([4, 8]))


# --------------------------------------------------------------------------- non-finite and extreme inputs

def _nan_at(a, idx, value=np.nan):
    a = a.copy()
    a[idx] = value
    return a


@pytest.mark.parametrize("fn", [A.attention, A.attention_ref])
@pytest.mark.parametrize("name, idx, value", [
    ("q", (0, 1, 2, 3), np.nan), ("k", (0, 0, 4, 0), np.nan), ("v", (0, 0, 5, 7), np.inf),
    ("k", (0, 0, 5, 2), -np.inf),
    ("v", (0, 0, 5, 1), np.nan),  # key 5 is invisible to query 0 (causal) yet still rejected: one rule
])
def test_prefill_rejects_non_finite_inputs(fn, name, idx, value):
    rng = np.random.default_rng(3)
    args = dict(q=rng.standard_normal((1, 2, 6, 8)).astype(np.float32),
                k=rng.standard_normal((1, 1, 6, 8)).astype(np.float32),
                v=rng.standard_normal((1, 1, 6, 8)).astype(np.float32))
    args[name] = _nan_at(args[name], idx, value)
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        fn(args["q"], args["k"], args["v"], causal=True)


@pytest.mark.parametrize("paged", [False, True])
def test_decode_rejects_non_finite_visible_keys_only(paged):
    rng = np.random.default_rng(4)
    q = rng.standard_normal((2, 2, 8)).astype(np.float32)
    kc = rng.standard_normal((2, 1, 12, 8)).astype(np.float32)
    vc = rng.standard_normal((2, 1, 12, 8)).astype(np.float32)
    lengths = np.array([7, 12])
    kc[0, :, 7:] = np.nan  # beyond lengths[0]: never read, accepted
    call = A.decode_attention
    if paged:
        kp, vp, table = make_paged(rng, kc, vc, lengths, 4, garbage=np.nan)
        def call(q, k, v, lengths):
            return A.paged_decode_attention(q, kp if k is kc else k, vp, table, lengths)
    out = call(q, kc, vc, lengths)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"must be finite"):
        call(_nan_at(q, (1, 0, 3)), kc, vc, lengths)
    if not paged:
        with pytest.raises(ValueError, match=r"k_cache must be finite"):
            call(q, _nan_at(kc, (1, 0, 11, 0)), vc, lengths)
    else:
        bad = _nan_at(kp, (table[1, 2], 3, 0, 0))  # slot 11 of sequence 1
        with pytest.raises(ValueError, match=r"k_pages must be finite"):
            A.paged_decode_attention(q, bad, vp, table, lengths)


# The decode kernel finds bad cache slots in its own pass; these are the cases
# a check of the output alone would miss or misname.
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("which, slot, value, window", [
    ("k", 5, -np.inf, None),  # score -inf: weight 0, the output alone stays finite
    ("k", 5, np.inf, None),
    ("v", 9, np.inf, None),
    ("v", 0, np.nan, 4),  # below lengths but outside the window: never read by the kernel
    ("k", 1, np.nan, 4),
    ("v", 11, np.nan, 4),  # inside the window
])
def test_decode_names_every_bad_slot_without_a_separate_pass(paged, which, slot, value, window):
    rng = np.random.default_rng(8)
    q = rng.standard_normal((2, 4, 8)).astype(np.float32)
    kc = rng.standard_normal((2, 2, 12, 8)).astype(np.float32)
    vc = rng.standard_normal((2, 2, 12, 8)).astype(np.float32)
    lengths = np.array([7, 12])
    (kc if which == "k" else vc)[1, 1, slot, 3] = value
    if paged:
        kp, vp, table = make_paged(rng, kc, vc, lengths, 4)
        calls = (lambda: A.paged_decode_attention(q, kp, vp, table, lengths, window=window),
                 lambda: A.paged_decode_attention_ref(q, kp, vp, table, lengths, window=window))
        name = f"{which}_pages"
    else:
        calls = (lambda: A.decode_attention(q, kc, vc, lengths, window=window),
                 lambda: A.decode_attention_ref(q, kc, vc, lengths, window=window))
        name = f"{which}_cache"
    for call in calls:
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            call()


@pytest.mark.parametrize("call, name", [
    (lambda q, k: A.attention(q, k, k, window=2**63), "window"),
    (lambda q, k: A.attention_ref(q, k, k, window=2**64), "window"),
    (lambda q, k: A.attention(q, k, k, scale=1e39), "scale"),
    (lambda q, k: A.attention(q, k, k, scale=-3e38), "scale"),
    (lambda q, k: A.decode_attention(q[:, :, 0], k, k, np.array([3], np.uint64) << np.uint64(63)), "lengths"),
])
def test_extreme_scalars_are_value_errors(call, name):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((1, 2, 3, 8)).astype(np.float32)
    k = rng.standard_normal((1, 1, 3, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=name):
        call(q, k)


def test_huge_window_is_no_window_and_float64_takes_a_large_scale():
    rng = np.random.default_rng(6)
    q = rng.standard_normal((1, 2, 9, 8)).astype(np.float32)
    k = rng.standard_normal((1, 1, 9, 8)).astype(np.float32)
    np.testing.assert_array_equal(A.attention(q, k, k, window=2**62), A.attention(q, k, k))
    q64, k64 = q.astype(np.float64) * 1e-20, k.astype(np.float64) * 1e-20
    out = A.attention(q64, k64, k64, scale=1e39)  # fine in float64: scores are O(10)
    assert_close(out, A.attention_ref(q64, k64, k64, scale=1e39), k64, np.float64)
