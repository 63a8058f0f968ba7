"""kernels/linear.py: the batch-invariant ``x @ W`` against its float64 reference, bit for bit across
row subsets, batch sizes, thread counts and SIMD widths, and its bad-input errors."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from scalelab.kernels._common import numba_threads
from scalelab.kernels._tiles import TILE_ROWS, mm_tile_for
from scalelab.kernels.linear import K_BLOCK, PackedWeight, linear, linear_ref, pack_weight

DTYPES = (np.float32, np.float64)


def _data(M, K, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)).astype(dtype)  # (M, K)
    w = rng.standard_normal((K, N)).astype(dtype)  # (K, N)
    return x, w


def _check_close(y, x, w):
    """Within the float dot-product bound: |y - x@w| <= K * eps * (|x| @ |w|) (+ a few ulp of zero)."""
    ref = linear_ref(x, w)  # (M, N) float64
    K = x.shape[1]
    eps = np.finfo(y.dtype).eps
    bound = K * eps * (np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))) + np.finfo(y.dtype).tiny
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= bound), float(np.max(err / bound))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", [
    (1, 1, 1), (1, 7, 3), (2, 5, 16), (3, 64, 17), (4, 256, 16), (5, 257, 33), (1, 513, 40),
    (17, 300, 15), (64, 128, 64), (65, 520, 31), (8, 1024, 130), (130, 96, 7),
])
def test_matches_reference(M, K, N, dtype):
    x, w = _data(M, K, N, dtype, seed=M * 1000 + K + N)
    pw = pack_weight(w)
    y = linear(x, pw)
    assert y.shape == (M, N) and y.dtype == dtype and y.flags.c_contiguous
    _check_close(y, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_dimensions(dtype):
    for M, K, N in ((0, 5, 3), (3, 0, 4), (2, 6, 0), (0, 0, 0)):
        x, w = _data(M, K, N, dtype)
        y = linear(x, pack_weight(w))
        assert y.shape == (M, N) and y.dtype == dtype
        np.testing.assert_array_equal(y, np.zeros((M, N), dtype))


def test_pack_round_trip_and_attributes():
    for K, N in ((3, 1), (5, 16), (7, 17), (9, 40)):
        w = _data(1, K, N, np.float32)[1]
        pw = pack_weight(w)
        assert pw.shape == (K, N) and pw.size == K * N and pw.dtype == np.float32
        assert pw.panels.shape == (-(-N // pw.width), K, pw.width)
        np.testing.assert_array_equal(pw.unpack(), w)
        np.testing.assert_array_equal(pw.panels.transpose(1, 0, 2).reshape(K, -1)[:, N:], 0)  # padding
    assert "PackedWeight(shape=(9, 40)" in repr(pw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_are_bitwise_independent_of_the_batch(dtype):
    """A row's result is the same bits alone, in any subset, beside any other rows, in any order."""
    rng = np.random.default_rng(7)
    K, N = 2 * K_BLOCK + 37, 53
    x, w = _data(23, K, N, dtype, seed=3)
    pw = pack_weight(w)
    full = linear(x, pw)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(linear(x[i:i + 1], pw)[0], full[i])
    for _ in range(20):
        rows = rng.choice(x.shape[0], size=int(rng.integers(1, x.shape[0] + 1)), replace=False)
        others = rng.standard_normal((int(rng.integers(0, 9)), K)).astype(dtype) * 1e3
        batch = np.concatenate([others, x[rows]])[rng.permutation(len(others) + len(rows))]
        got = linear(batch, pw)
        for i in rows:
            where = np.flatnonzero((batch == x[i]).all(axis=1))[0]
            np.testing.assert_array_equal(got[where], full[i])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_independent_of_thread_count_and_strides(dtype):
    x, w = _data(70, 700, 90, dtype, seed=11)
    pw = pack_weight(w)
    results = []
    for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        with numba_threads(n):
            results.append(linear(x, pw))
    xt = np.asfortranarray(x)
    results.append(linear(xt, pw))
    results.append(linear(np.repeat(x, 2, axis=1)[:, ::2], pw))  # a strided view of the same values
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def _chain_kernel(vector_bytes):
    """The summation order the module docstring states, with the register tile of another width."""
    store, add = mm_tile_for(False, vector_bytes), mm_tile_for(True, vector_bytes)

    @njit
    def run(xb, B, y, K, ones):  # xb (nkb, 4, KC); B (K, width); y (4, width)
        KC = xb.shape[2]
        for kbi in range(xb.shape[0]):
            kb = kbi * KC
            kk = min(KC, K - kb)
            if kbi == 0:
                store(xb[kbi], 0, B, kb, 0, y, 0, kk)
            else:
                add(xb[kbi], 0, B, kb, 0, y, 0, kk, ones)
    return run


@pytest.mark.parametrize("vector_bytes", [16, 32, 64])
def test_same_bits_at_every_simd_width(vector_bytes):
    """Lanes own columns, so a 128-, 256- or 512-bit tile computes the same bits as the host's."""
    dtype = np.float32
    K = K_BLOCK + 100
    width = 2 * vector_bytes // 4
    x, w = _data(TILE_ROWS, K, width, dtype, seed=vector_bytes)
    nkb = -(-K // K_BLOCK)
    xb = np.zeros((nkb, TILE_ROWS, K_BLOCK), dtype)
    for kbi in range(nkb):
        part = x[:, kbi * K_BLOCK:(kbi + 1) * K_BLOCK]
        xb[kbi, :, :part.shape[1]] = part
    y = np.empty((TILE_ROWS, width), dtype)
    _chain_kernel(vector_bytes)(xb, np.ascontiguousarray(w), y, K, np.ones(TILE_ROWS, dtype))
    np.testing.assert_array_equal(y, linear(x, pack_weight(w)))


@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 12), K=st.integers(1, 600), N=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_random_shapes_match_reference_and_single_rows(M, K, N, seed):
    x, w = _data(M, K, N, np.float32, seed=seed)
    pw = pack_weight(w)
    y = linear(x, pw)
    _check_close(y, x, w)
    np.testing.assert_array_equal(linear(x[-1:], pw)[0], y[-1])


def test_non_finite_values_propagate_like_a_matrix_product():
    x, w = _data(4, 10, 5, np.float32)
    x[1, 3] = np.nan
    x[2, 4] = np.inf
    y = linear(x, pack_weight(w))
    assert np.isnan(y[1]).all() and not np.isfinite(y[2]).any()
    assert np.isfinite(y[[0, 3]]).all()


def test_bad_input_is_named():
    x, w = _data(3, 8, 5, np.float32)
    pw = pack_weight(w)
    with pytest.raises(TypeError, match="w must be a PackedWeight"):
        linear(x, w)
    with pytest.raises(TypeError, match="x must have the weight's dtype float32"):
        linear(x.astype(np.float64), pw)
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        linear(x.astype(np.int32), pw)
    with pytest.raises(ValueError, match=r"x must have shape \(M, 8\)"):
        linear(x[:, :7], pw)
    with pytest.raises(ValueError, match="x must have rank 2"):
        linear(x[0], pw)
    with pytest.raises(ValueError, match="w must have rank 2"):
        pack_weight(w[0])
    with pytest.raises(TypeError, match="w must have dtype"):
        pack_weight(w.astype(np.float16))
    with pytest.raises(ValueError, match=r"x must have shape \(M, 8\)"):
        linear_ref(x[:, :7], w)
    assert isinstance(pw, PackedWeight)
