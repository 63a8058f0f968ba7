"""Mamba selective scan and RWKV-6 WKV kernels against their step-by-step float64 references."""

import numpy as np
import pytest
from numba import njit

from scalelab.kernels._common import numba_threads
from scalelab.kernels._vecmath import EXP2_F32_COEFFS, exp2_nonpositive, exp2_nonpositive_with
from scalelab.kernels.recurrent import (
    RWKV_CHUNK,
    SCAN_CHUNK,
    mamba_scan,
    mamba_scan_ref,
    mamba_step,
    mamba_step_ref,
    rwkv_step,
    rwkv_step_ref,
    rwkv_wkv,
    rwkv_wkv_loop,
    rwkv_wkv_ref,
    mamba_scan_bytes,
    rwkv_wkv_flops,
)

#: Error bound, relative to max |reference|: float32 kernels measure ~3e-7 on these shapes
#: (sums of at most N, K or RWKV_CHUNK terms per step, decays <= 1 so state errors do not grow).
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _close(got, want, dtype):
    scale = max(float(np.abs(want).max()), 1e-30) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) if want.size else 0.0
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} > {TOL[dtype]:.0e} * {scale:.3g}"


def mamba_inputs(nb, L, d, n, dtype=np.float32, seed=0, delta_scale=1.0, a_scale=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((nb, L, d)).astype(dtype)  # (B, L, D)
    delta = (np.log1p(np.exp(rng.standard_normal((nb, L, d)))) * delta_scale).astype(dtype)  # softplus
    A = (-np.exp(rng.standard_normal((d, n))) * a_scale).astype(dtype)  # (D, N)
    B = rng.standard_normal((nb, L, n)).astype(dtype)
    C = rng.standard_normal((nb, L, n)).astype(dtype)
    D = rng.standard_normal(d).astype(dtype)
    return x, delta, A, B, C, D


def rwkv_inputs(nb, L, H, K, V, dtype=np.float32, seed=0, w=None):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((nb, L, H, K)).astype(dtype)
    k = (rng.standard_normal((nb, L, H, K)) / np.sqrt(K)).astype(dtype)
    v = rng.standard_normal((nb, L, H, V)).astype(dtype)
    if w is None:  # RWKV-6's exp(-exp(.)) parametrisation
        w = np.exp(-np.exp(rng.standard_normal((nb, L, H, K)) - 1.0))
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), (nb, L, H, K)).astype(dtype)
    u = rng.standard_normal((H, K)).astype(dtype)
    return r, k, v, w, u


# D=300: blocks of 32 channels, the last one partial; D <= 127: 16-channel blocks, sequence split by default
MAMBA_SHAPES = [(1, 1, 1, 1), (2, 37, 5, 3), (1, 600, 20, 16), (3, 50, 33, 4), (1, 300, 129, 16), (2, 40, 300, 4),
                (2, 0, 4, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", MAMBA_SHAPES)
@pytest.mark.parametrize("chunk", [None, 7, SCAN_CHUNK])
def test_mamba_scan_matches_reference(shape, dtype, chunk):
    args = mamba_inputs(*shape, dtype=dtype)
    state0 = np.random.default_rng(1).standard_normal((shape[0], shape[2], shape[3])).astype(dtype)
    y_ref, s_ref = mamba_scan_ref(*args, state=state0)
    keep = state0.copy()
    y, s = mamba_scan(*args, state=state0, chunk=chunk)
    assert y.dtype == dtype and s.dtype == dtype and y.shape == shape[:3]
    np.testing.assert_array_equal(state0, keep)  # a prefill does not modify the state it is given
    _close(y, y_ref, dtype)
    _close(s, s_ref, dtype)


@pytest.mark.parametrize("delta_scale, a_scale", [(1e-6, 1.0), (50.0, 20.0), (1e3, 1e3)])
def test_mamba_extreme_decays(delta_scale, a_scale):
    # exp(delta A) from ~1 (memory over the whole sequence) to underflow (forget at once)
    args = mamba_inputs(1, 700, 9, 16, delta_scale=delta_scale, a_scale=a_scale)
    y_ref, s_ref = mamba_scan_ref(*args)
    for chunk in (None, 64):
        y, s = mamba_scan(*args, chunk=chunk)
        assert np.isfinite(y).all() and np.isfinite(s).all()
        _close(y, y_ref, np.float32)
        _close(s, s_ref, np.float32)


def test_mamba_prefill_then_steps_equals_long_prefill():
    x, delta, A, B, C, D = mamba_inputs(2, 45, 40, 8, dtype=np.float64)
    y_all, s_all = mamba_scan(x, delta, A, B, C, D)
    y, state = mamba_scan(x[:, :40], delta[:, :40], A, B[:, :40], C[:, :40], D)
    state_ref = state.copy()
    for t in range(40, 45):
        yt = mamba_step(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state)
        yr = mamba_step_ref(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state_ref)
        _close(yt, yr, np.float64)
        # 40 channels = 3 blocks < SPLIT_BELOW_BLOCKS, so the prefill was chunked: equal to rounding
        _close(yt, y_all[:, t], np.float64)
    _close(state, s_all, np.float64)


def test_mamba_unsplit_prefill_and_steps_agree_bitwise():
    x, delta, A, B, C, D = mamba_inputs(1, 12, 160, 4)  # 10 channel blocks: the sequence is not split
    y_all, s_all = mamba_scan(x, delta, A, B, C, D)
    _, state = mamba_scan(x[:, :10], delta[:, :10], A, B[:, :10], C[:, :10], D)
    for t in range(10, 12):
        np.testing.assert_array_equal(mamba_step(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state), y_all[:, t])
    np.testing.assert_array_equal(state, s_all)


@pytest.mark.parametrize("chunk", [None, 16])
@pytest.mark.parametrize("d", [24, 300])
def test_mamba_thread_count_and_batch_composition_bitwise(chunk, d):
    args = mamba_inputs(3, 200, d, 16, seed=3)
    with numba_threads(1):
        y1, s1 = mamba_scan(*args, chunk=chunk)
    with numba_threads(2):
        y2, s2 = mamba_scan(*args, chunk=chunk)
        one = [a[1:2] if a.ndim == 3 else a for a in args]  # sequence 1 alone
        yb, sb = mamba_scan(*one, chunk=chunk)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(yb[0], y2[1])
    np.testing.assert_array_equal(sb[0], s2[1])


def _bad(args, i, value):
    out = list(args)
    out[i] = value
    return out


@pytest.mark.parametrize("fn", [mamba_scan, mamba_scan_ref])
def test_mamba_bad_input(fn):
    args = mamba_inputs(1, 5, 4, 3)
    x, delta, A, B, C, D = args
    cases = [
        (_bad(args, 2, -A), ValueError, "A must be <= 0"),
        (_bad(args, 1, -delta), ValueError, "delta must be >= 0"),
        (_bad(args, 0, np.where(x > 0, np.nan, x)), ValueError, "x must be finite"),
        (_bad(args, 3, np.full_like(B, np.inf)), ValueError, "B must be finite"),
        (_bad(args, 0, x.astype(np.int32)), TypeError, "x must have dtype"),
        (_bad(args, 4, C[:, :, :2]), ValueError, "C must have shape"),
        (_bad(args, 5, D[:3]), ValueError, "channel mismatch"),
        (_bad(args, 1, delta[:, :4]), ValueError, "delta must have the shape"),
        (_bad(args, 0, x[0]), ValueError, "x must have rank 3"),
    ]
    for bad, err, msg in cases:
        with pytest.raises(err, match=msg):
            fn(*bad)
    with pytest.raises(ValueError, match="state must have shape"):
        fn(*args, state=np.zeros((1, 4, 2), np.float32))
    with pytest.raises(ValueError, match="state must be finite"):
        fn(*args, state=np.full((1, 4, 3), np.nan, np.float32))


def test_mamba_step_state_must_match():
    x, delta, A, B, C, D = mamba_inputs(2, 1, 4, 3)
    one = (x[:, 0], delta[:, 0], A, B[:, 0], C[:, 0], D)
    with pytest.raises(TypeError, match="promoted input dtype"):
        mamba_step(*one, np.zeros((2, 4, 3), np.float64))
    with pytest.raises(TypeError, match="state must be a numpy array"):
        mamba_step(*one, None)
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        mamba_step(*one, np.zeros((2, 3, 4), np.float32).transpose(0, 2, 1))


RWKV_SHAPES = [(1, 1, 1, 1, 1), (2, 37, 3, 5, 7), (1, 100, 2, 64, 64), (2, RWKV_CHUNK, 1, 16, 32),
               (1, 1000, 1, 8, 8), (1, 0, 2, 4, 4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", RWKV_SHAPES)
@pytest.mark.parametrize("fn", [rwkv_wkv, rwkv_wkv_loop])
def test_rwkv_matches_reference(fn, shape, dtype):
    args = rwkv_inputs(*shape, dtype=dtype)
    nb, _, H, K, V = shape
    state0 = np.random.default_rng(2).standard_normal((nb, H, K, V)).astype(dtype)
    keep = state0.copy()
    y_ref, s_ref = rwkv_wkv_ref(*args, state=state0)
    y, s = fn(*args, state=state0)
    assert y.dtype == dtype and y.shape == shape[:3] + (V,) and s.shape == (nb, H, K, V)
    np.testing.assert_array_equal(state0, keep)
    _close(y, y_ref, dtype)
    _close(s, s_ref, dtype)


@pytest.mark.parametrize("w", [0.0, 1e-30, 1e-6, 0.999999, 1.0])
def test_rwkv_extreme_decays(w):
    # 1e-6 over a 16-token chunk is 1e-96: a cumulative-product-and-divide form would give 0/0 here
    args = rwkv_inputs(1, 77, 2, 16, 16, w=w)
    y_ref, s_ref = rwkv_wkv_ref(*args)
    y, s = rwkv_wkv(*args)
    assert np.isfinite(y).all() and np.isfinite(s).all()
    _close(y, y_ref, np.float32)
    _close(s, s_ref, np.float32)


def test_rwkv_prefill_then_steps_equals_long_prefill():
    r, k, v, w, u = rwkv_inputs(2, 40, 3, 8, 8, dtype=np.float64)
    y_all, s_all = rwkv_wkv(r, k, v, w, u)
    _, state = rwkv_wkv(r[:, :35], k[:, :35], v[:, :35], w[:, :35], u)
    state_ref = state.copy()
    for t in range(35, 40):
        yt = rwkv_step(r[:, t], k[:, t], v[:, t], w[:, t], u, state)
        _close(yt, rwkv_step_ref(r[:, t], k[:, t], v[:, t], w[:, t], u, state_ref), np.float64)
        _close(yt, y_all[:, t], np.float64)
    _close(state, s_all, np.float64)


@pytest.mark.parametrize("fn", [rwkv_wkv, rwkv_wkv_loop])
def test_rwkv_thread_count_and_batch_composition_bitwise(fn):
    args = rwkv_inputs(3, 70, 3, 16, 16, seed=5)
    with numba_threads(1):
        y1, s1 = fn(*args)
    with numba_threads(2):
        y2, s2 = fn(*args)
        yb, sb = fn(*[a[1:2] if a.ndim == 4 else a for a in args])
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(yb[0], y2[1])
    np.testing.assert_array_equal(sb[0], s2[1])


def test_rwkv_head_grouping_does_not_change_the_bits(monkeypatch):
    """Heads per work item (whole groups, a partial last group, one head each) only reorder whole heads."""
    import scalelab.kernels.recurrent as rec

    args = rwkv_inputs(2, 2 * RWKV_CHUNK + 5, 7, 16, 24, seed=11)
    state0 = np.random.default_rng(3).standard_normal((2, 7, 16, 24)).astype(np.float32)
    outs = []
    for group in (1, 3, 4, 7, 9):
        monkeypatch.setattr(rec, "RWKV_HEADS", group)
        outs.append(rwkv_wkv(*args, state=state0))
    for y, s in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(s, outs[0][1])
    y_ref, s_ref = rwkv_wkv_ref(*args, state=state0)
    _close(outs[0][0], y_ref, np.float32)
    _close(outs[0][1], s_ref, np.float32)


@pytest.mark.parametrize("fn", [rwkv_wkv, rwkv_wkv_ref])
def test_rwkv_bad_input(fn):
    args = rwkv_inputs(1, 5, 2, 4, 3)
    r, k, v, w, u = args
    cases = [
        (_bad(args, 3, w * 2.0), ValueError, r"w must be in \[0, 1\]"),
        (_bad(args, 3, -w), ValueError, r"w must be in \[0, 1\]"),
        (_bad(args, 3, np.where(w > 0.5, np.nan, w)), ValueError, "w must be finite"),
        (_bad(args, 0, np.full_like(r, np.inf)), ValueError, "r must be finite"),
        (_bad(args, 2, v.astype(np.int64)), TypeError, "v must have dtype"),
        (_bad(args, 1, k[..., :3]), ValueError, "k must have the shape of r"),
        (_bad(args, 2, v[:, :4]), ValueError, "v must match r"),
        (_bad(args, 4, u[:1]), ValueError, "u must have shape"),
    ]
    for bad, err, msg in cases:
        with pytest.raises(err, match=msg):
            fn(*bad)
    with pytest.raises(ValueError, match="state must have shape"):
        fn(*args, state=np.zeros((1, 2, 4, 4), np.float32))


def test_rwkv_step_state_must_match():
    r, k, v, w, u = rwkv_inputs(1, 1, 2, 4, 3)
    with pytest.raises(TypeError, match="promoted input dtype"):
        rwkv_step(r[:, 0], k[:, 0], v[:, 0], w[:, 0], u, np.zeros((1, 2, 4, 3), np.float64))


@njit(cache=True)
def _exp2_both(v, k):
    a, b = np.empty_like(v), np.empty_like(v)
    for i in range(v.size):
        a[i] = exp2_nonpositive(v[i])
        b[i] = exp2_nonpositive_with(v[i], k)
    return a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp2_with_passed_constants_is_bitwise_exp2_nonpositive(dtype):
    # the scan passes exp2's constants at run time (kept in registers); the bits must not move
    v = np.concatenate([-np.geomspace(1e-12, 200.0, 5001), [0.0, -0.0, -126.5, -127.0, -np.inf],
                        -np.random.default_rng(5).exponential(3.0, 3000)]).astype(dtype)
    a, b = _exp2_both(v, EXP2_F32_COEFFS)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(b, np.exp2(v.astype(np.float64)), rtol=1e-7 if dtype == np.float32 else 1e-15,
                               atol=1e-37 if dtype == np.float32 else 0)


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("where", [(0, 0, 0), (1, 36, 299), (1, 20, 150)])
def test_mamba_scan_finds_a_single_bad_value_anywhere(where, chunk):
    # the scan checks x and delta as its kernel reads them: every element, every chunk, the partial block
    args = mamba_inputs(2, 37, 300, 3)
    state = np.zeros((2, 300, 3), np.float32)
    for i, value, msg in ((0, np.nan, "x must be finite"), (0, -np.inf, "x must be finite"),
                          (1, -1e-30, "delta must be >= 0"), (1, np.inf, "delta must be"), (1, np.nan, "delta must be")):
        bad = list(args)
        bad[i] = args[i].copy()
        bad[i][where] = value
        with pytest.raises(ValueError, match=msg):
            mamba_scan(*bad, state=state, chunk=chunk)
    np.testing.assert_array_equal(state, 0)


def test_mamba_scan_chunk_is_validated_and_any_large_chunk_is_one_chunk():
    args = mamba_inputs(1, 9, 4, 3)
    y, s = mamba_scan(*args, chunk=9)
    for big in (10, 2**62, 2**63 - 1):  # past the sequence: one chunk, no overflow in the chunk count
        yb, sb = mamba_scan(*args, chunk=big)
        np.testing.assert_array_equal(yb, y)
        np.testing.assert_array_equal(sb, s)
    for bad, err in ((2**70, ValueError), (0, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(err, match="chunk"):
            mamba_scan(*args, chunk=bad)


@pytest.mark.parametrize("fn", [mamba_scan_bytes, rwkv_wkv_flops])
def test_cost_counters_reject_bad_sizes(fn):
    assert fn(2, 3, 4, 5) > 0 and fn(0, 3, 4, 5) == 0
    for i in range(4):
        for bad, err in ((-1, ValueError), ("3", TypeError), (1.5, TypeError), (True, TypeError)):
            sizes = [2, 3, 4, 5]
            sizes[i] = bad
            with pytest.raises(err):
                fn(*sizes)
    assert mamba_scan_bytes(1, 1, 1, 1, itemsize=4) == 4 * (3 + 2 + 2)
    assert rwkv_wkv_flops(1, 2, 3, 4, 5) == 5 * 2 * 3 * 4 * 5
