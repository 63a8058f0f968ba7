"""The LLVM-IR primitives under the kernels, checked against NumPy directly.

kernels/_tiles.py (register-tile matmul) and kernels/_vecmath.py (max and
NaN/+inf count) are also covered through every attention and sampling test;
these tests pin them down on their own, including offsets, odd sizes and
non-finite values, so a failure points at the primitive and not the kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from scalelab.kernels._vecmath import VECTOR_BYTES, max_and_bad, vector_bytes_for
from scalelab.kernels._tiles import (TILE_ROW_BYTES, TILE_ROWS, dot_tile_nt_for, mm_tile_for, mm_tile_rescale_add,
                                     mm_tile_store, row_max_for)


@njit(cache=True)
def _store(A, i, B, kb, jb, C, jc, K):
    mm_tile_store(A, i, B, kb, jb, C, jc, K)


@njit(cache=True)
def _rescale_add(A, i, B, kb, jb, C, jc, K, alpha):
    mm_tile_rescale_add(A, i, B, kb, jb, C, jc, K, alpha)


@njit(cache=True)
def _max_bad(a, lo, hi):
    return max_and_bad(a[lo:hi])


def _width(dtype):
    return TILE_ROW_BYTES // np.dtype(dtype).itemsize


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(deadline=None)
@given(data=st.data())
def test_tile_products_match_numpy(dtype, data):
    W = _width(dtype)
    K = data.draw(st.integers(0, 70), label="K")
    M = data.draw(st.integers(TILE_ROWS, 12), label="M")
    N = data.draw(st.integers(W, 3 * W), label="N")
    i = data.draw(st.integers(0, M - TILE_ROWS), label="i")
    kb = data.draw(st.integers(0, 5), label="kb")
    jb = data.draw(st.integers(0, N - W), label="jb")
    jc = data.draw(st.integers(0, N - W), label="jc")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    A = rng.standard_normal((M, K + 3)).astype(dtype)  # (M, K') row stride != K
    B = rng.standard_normal((kb + K, N)).astype(dtype)  # (kb + K, N)
    C0 = rng.standard_normal((M, N)).astype(dtype)  # (M, N)
    alpha = rng.uniform(0, 1, M).astype(dtype)  # (M,)
    prod = A[i:i + TILE_ROWS, :K].astype(np.float64) @ B[kb:kb + K, jb:jb + W].astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5 * max(K, 1)) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12 * max(K, 1))

    C = C0.copy()
    _store(A, i, B, kb, jb, C, jc, K)
    want = C0.astype(np.float64).copy()
    want[i:i + TILE_ROWS, jc:jc + W] = prod
    np.testing.assert_allclose(C, want, **tol)  # and nothing outside the tile was touched

    C = C0.copy()
    _rescale_add(A, i, B, kb, jb, C, jc, K, alpha)
    want = C0.astype(np.float64).copy()
    want[i:i + TILE_ROWS, jc:jc + W] = alpha[i:i + TILE_ROWS, None] * want[i:i + TILE_ROWS, jc:jc + W] + prod
    np.testing.assert_allclose(C, want, **tol)


def test_tile_rejects_mixed_dtypes_and_non_contiguous_arrays():
    a32 = np.zeros((4, 4), np.float32)
    a64 = np.zeros((4, 16), np.float64)
    with pytest.raises(Exception, match="(?i)typing|no implementation|invalid use"):
        _store(a32, 0, a64, 0, 0, a64, 0, 4)
    with pytest.raises(Exception, match="(?i)typing|no implementation|invalid use"):
        _store(a32, 0, np.zeros((4, 32), np.float32)[:, ::2], 0, 0, np.zeros((4, 16), np.float32), 0, 4)


def _expected_max_bad(a):
    finite_or_inf = a[~np.isnan(a)]
    m = finite_or_inf.max() if finite_or_inf.size else -np.inf
    return m, int(np.sum(np.isnan(a) | (a == np.inf)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 31, 32, 33, 63, 64, 65, 1000, 100_003])
@pytest.mark.parametrize("case", ["plain", "neg_inf_runs", "nan", "pos_inf", "all_neg_inf"])
def test_max_and_bad_matches_numpy(dtype, n, case):
    rng = np.random.default_rng(n)
    a = (rng.standard_normal(n) * 5).astype(dtype)
    if n and case == "neg_inf_runs":
        a[: n // 2] = -np.inf
        a[rng.integers(0, n, max(1, n // 7))] = -np.inf
    elif n and case == "nan":
        a[rng.integers(0, n, 3)] = np.nan
    elif n and case == "pos_inf":
        a[n - 1] = np.inf  # in the scalar tail for most n
        a[0] = np.inf
    elif case == "all_neg_inf":
        a[:] = -np.inf
    m, bad = _max_bad(a, 0, n)
    em, eb = _expected_max_bad(a)
    assert bad == eb
    assert m == em


def test_max_and_bad_on_a_sub_range():
    a = np.arange(100, dtype=np.float32)
    a[0] = 1e9
    a[99] = np.nan
    assert _max_bad(a, 1, 99) == (98.0, 0)
    assert _max_bad(a, 50, 100) == (98.0, 1)


# ------------------------------------------------------------------ dot products in a fixed lane order

_DOT_CALLERS = {}


def _dot_caller(rows, cols, vector_bytes):
    """A jitted caller of the dot-product block at any vector width (compiled once per test run)."""
    key = (rows, cols, vector_bytes)
    if key not in _DOT_CALLERS:
        dot = dot_tile_nt_for(rows, cols, vector_bytes)

        @njit
        def call(A, ia, B, rb, rstride, C, ic, jc, K):
            dot(A, ia, B, rb, rstride, C, ic, jc, K)

        _DOT_CALLERS[key] = call
    return _DOT_CALLERS[key]


def _lane_order_sum(b, lanes):
    """The documented order in float32 NumPy: lanes k mod W, a halving tree, then the tail in order."""
    kv = b.size - b.size % lanes
    acc = np.zeros(lanes, np.float32)
    for k0 in range(0, kv, lanes):
        acc = acc + b[k0:k0 + lanes]
    while acc.size > 1:
        acc = acc[:acc.size // 2] + acc[acc.size // 2:]
    s = acc[0]
    for k in range(kv, b.size):
        s = np.float32(s + b[k])
    return s


def test_vector_width_follows_the_cpu_features():
    assert vector_bytes_for({"sse2", "avx", "avx2", "fma", "avx512f"}) == 64
    assert vector_bytes_for({"sse2", "avx", "avx2", "fma"}) == 32
    assert vector_bytes_for({"sse2", "sse4.2"}) == 16
    assert vector_bytes_for(set()) == 16
    assert VECTOR_BYTES in (16, 32, 64)


# Every width on every machine: a 64-byte vector is split into the registers an AVX2 CPU has.
@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
@pytest.mark.parametrize("rows, cols", [(2, 4), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dot_tile_matches_numpy_at_every_width(vector_bytes, rows, cols, dtype):
    call = _dot_caller(rows, cols, vector_bytes)
    lanes = vector_bytes // np.dtype(dtype).itemsize
    rng = np.random.default_rng(vector_bytes + rows)
    for K in sorted({0, 1, lanes - 1, lanes, lanes + 1, 3 * lanes + 5, 70, 128}):
        ia, rb, rstride, ic, jc = 1, 2, 3, 1, 2
        A = rng.standard_normal((ia + rows + 1, K + 5)).astype(dtype)  # (M, K') row stride != K
        B = rng.standard_normal((rb + rstride * cols + 2, K + 3)).astype(dtype)
        C0 = rng.standard_normal((ic + rows + 1, jc + cols + 1)).astype(dtype)
        C = C0.copy()
        call(A, ia, B, rb, rstride, C, ic, jc, K)
        want = C0.astype(np.float64)
        want[ic:ic + rows, jc:jc + cols] = (A[ia:ia + rows, :K].astype(np.float64)
                                            @ B[rb:rb + rstride * cols:rstride, :K].astype(np.float64).T)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(C, want, rtol=tol, atol=tol * max(K, 1))  # nothing else touched


@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
def test_dot_tile_sums_in_the_documented_order(vector_bytes):
    """With A = 1 every fused multiply-add is one float32 addition, so the order shows bit for bit."""
    call = _dot_caller(1, 1, vector_bytes)
    lanes = vector_bytes // 4
    rng = np.random.default_rng(11)
    for K in (lanes * 7 + 3, 128, 5):
        b = (rng.standard_normal(K) * 10.0 ** rng.integers(-4, 5, K)).astype(np.float32)  # order-sensitive
        C = np.zeros((1, 1), np.float32)
        call(np.ones((1, K), np.float32), 0, b[None, :].copy(), 0, 1, C, 0, 0, K)
        assert C[0, 0] == _lane_order_sum(b, lanes)


@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
def test_tile_products_at_every_width(vector_bytes):
    store, rescale_add = mm_tile_for(False, vector_bytes), mm_tile_for(True, vector_bytes)

    @njit
    def both(A, i, B, kb, jb, C, D, jc, K, alpha):
        store(A, i, B, kb, jb, C, jc, K)
        rescale_add(A, i, B, kb, jb, D, jc, K, alpha)

    rng = np.random.default_rng(vector_bytes)
    for dtype in (np.float32, np.float64):
        W = 2 * vector_bytes // np.dtype(dtype).itemsize
        for K in (0, 1, 7, 33):
            A = rng.standard_normal((TILE_ROWS + 2, K + 3)).astype(dtype)  # (M, K')
            B = rng.standard_normal((K + 1, W + 3)).astype(dtype)  # (kb + K, N)
            C0 = rng.standard_normal((TILE_ROWS + 2, W + 2)).astype(dtype)  # (M, N)
            alpha = rng.uniform(0, 1, TILE_ROWS + 2).astype(dtype)
            C, D = C0.copy(), C0.copy()
            both(A, 1, B, 1, 2, C, D, 1, K, alpha)
            prod = A[1:1 + TILE_ROWS, :K].astype(np.float64) @ B[1:1 + K, 2:2 + W].astype(np.float64)
            tol = dict(rtol=1e-5, atol=1e-5 * max(K, 1)) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
            want = C0.astype(np.float64)
            want[1:1 + TILE_ROWS, 1:1 + W] = prod
            np.testing.assert_allclose(C, want, **tol)
            want[1:1 + TILE_ROWS, 1:1 + W] = alpha[1:1 + TILE_ROWS, None] * C0[1:1 + TILE_ROWS, 1:1 + W] + prod
            np.testing.assert_allclose(D, want, **tol)


@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_matches_numpy_at_every_width(vector_bytes, dtype):
    """max(init, row) on every length around the unrolled step; -inf orders normally, NaN never wins."""
    row_max = row_max_for(vector_bytes)

    @njit
    def call(S, r, n, init):
        return row_max(S, r, n, init)

    lanes = vector_bytes // np.dtype(dtype).itemsize
    rng = np.random.default_rng(vector_bytes)
    for n in sorted({0, 1, lanes - 1, lanes, 2 * lanes - 1, 2 * lanes, 2 * lanes + 1, 5 * lanes + 3, 256}):
        S = rng.standard_normal((3, n + 4)).astype(dtype)  # (rows, n') row stride != n
        S[1, rng.integers(0, n + 4, (n + 4) // 3)] = -np.inf
        want = np.max(S[1, :n], initial=-np.inf)
        assert call(S, 1, n, dtype(-np.inf)) == want
        assert call(S, 1, n, dtype(0.5)) == max(want, 0.5)
        if n:
            S[1, n - 1] = np.nan  # in the scalar tail or the last vector
            S[1, 0] = np.nan
            assert call(S, 1, n, dtype(-np.inf)) == np.nanmax(np.r_[S[1, :n], -np.inf])
    S = np.full((1, 40), -np.inf, dtype)
    assert call(S, 0, 40, dtype(-np.inf)) == -np.inf  # a fully masked row stays -inf
