"""Tests for kernels/moe.py: every kernel against its NumPy reference on many
shapes (hypothesis + explicit degenerate cases), the routing/dispatch
properties, determinism across thread counts, and bad input."""

import math
import subprocess
import sys

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.kernels import moe
from scalelab.kernels._common import numba_threads

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _logits(seed, T, E, dtype=np.float32, scale=2.0):
    return (np.random.default_rng(seed).standard_normal((T, E)) * scale).astype(dtype)


def _has_near_tie(v, tol):
    v = np.sort(np.asarray(v, np.float64))
    v = v[np.isfinite(v)]
    return v.size > 1 and np.min(np.diff(v)) <= tol


def _selection_key(logits, scoring, bias):
    """The per-expert score the reference selects on (float64)."""
    l = logits.astype(np.float64)
    if scoring == "softmax":
        return l
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-l))
    return s + (0.0 if bias is None else bias.astype(np.float64))


def assert_route_matches(logits, k, tol_tie=1e-5, **opts):
    """route == route_ref, except rows whose selection sits on a near tie.

    The fast sigmoid path uses a float32 polynomial exp and the reference
    float64 np.exp, so two scores within a few ulp may legitimately order
    differently; such rows must show a near tie in the expert or group scores.
    """
    w, e = moe.route(logits, k, **opts)
    w_ref, e_ref = moe.route_ref(logits, k, **opts)
    assert w.dtype == np.float32 and e.dtype == np.int32
    assert w.shape == e.shape == (logits.shape[0], k)
    assert np.all(np.isfinite(w))
    key = _selection_key(logits, opts.get("scoring", "softmax"), opts.get("bias"))
    same = np.all(e == e_ref, axis=1)
    G = opts.get("n_groups", 1)
    for t in np.flatnonzero(~same):
        row = key[t]
        gs = np.sort(row.reshape(G, -1), axis=1)[:, -2:].sum(axis=1)
        assert _has_near_tie(row, tol_tie) or _has_near_tie(gs, tol_tie), (
            f"row {t}: experts {e[t]} vs reference {e_ref[t]} without a near tie")
    assert (~same).sum() <= max(1, 0.05 * same.size)
    np.testing.assert_allclose(w[same], w_ref[same], rtol=2e-6, atol=2e-7)
    return w, e


# (parallel driver, one-thread twin) of every kernel in kernels/moe.py
_DRIVERS = [
    ("_route_softmax_par", "_route_softmax_ser"),
    ("_route_sigmoid_par", "_route_sigmoid_ser"),
    ("_dispatch_kernel", "_dispatch_serial"),
    ("_permute_par", "_permute_ser"),
    ("_unpermute_par", "_unpermute_ser"),
    ("_softmax_stats_par", "_softmax_stats_ser"),
    ("_softmax_rows_par", "_softmax_rows_ser"),
    ("_expert_choice_par", "_expert_choice_ser"),
    ("_silu_mul_par", "_silu_mul_ser"),
]
_THRESHOLDS = ("_LOGITS_PARALLEL_MIN", "_DISPATCH_PARALLEL_MIN", "_COPY_PARALLEL_MIN_BYTES",
               "_SILU_PARALLEL_MIN")


def force_path(monkeypatch, path):
    """Make every public function take the ``path`` ("parallel" or "serial") drivers.

    The thresholds are set to 0 (always parallel) or beyond any test size
    (always serial), and the other path's drivers are replaced by a function
    that fails, so a test proves which code actually ran.
    """
    assert path in ("parallel", "serial")
    for name in _THRESHOLDS:
        monkeypatch.setattr(moe, name, 0 if path == "parallel" else 1 << 62)

    def banned(*args):
        raise AssertionError(f"a {'serial' if path == 'parallel' else 'parallel'} driver ran "
                             f"while forcing the {path} path")

    for par, ser in _DRIVERS:
        monkeypatch.setattr(moe, ser if path == "parallel" else par, banned)


# ----------------------------------------------------------------------------
# route: softmax
# ----------------------------------------------------------------------------

@given(T=st.integers(0, 70), E=st.integers(1, 40), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), renorm=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_route_softmax_matches_reference(T, E, data, dtype, renorm, seed):
    k = data.draw(st.integers(1, E))
    assert_route_matches(_logits(seed, T, E, dtype), k, renormalize=renorm)


def test_route_softmax_weights_are_renormalised_topk_probabilities(rng):
    l = _logits(1, 50, 16, np.float64)
    w, e = moe.route(l, 3)
    p = np.exp(l - l.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top = np.take_along_axis(p, e, 1)
    np.testing.assert_allclose(w, top / top.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    assert np.all(np.diff(top, axis=1) <= 0)  # descending
    w_raw, e_raw = moe.route(l, 3, renormalize=False)
    np.testing.assert_array_equal(e_raw, e)
    np.testing.assert_allclose(w_raw, top, rtol=1e-6)


def test_route_ties_go_to_lowest_expert_id():
    T, E, k = 3, 8, 3
    l = np.zeros((T, E), np.float32)
    l[1, [2, 5, 6]] = 1.0  # three-way tie at the top
    l[2, [7, 3]] = 2.0
    l[2, [1, 4, 6]] = 1.0  # tie for the third slot
    w, e = moe.route(l, k)
    np.testing.assert_array_equal(e, [[0, 1, 2], [2, 5, 6], [3, 7, 1]])
    np.testing.assert_allclose(w[0], 1 / 3, rtol=1e-6)
    _, e_ref = moe.route_ref(l, k)
    np.testing.assert_array_equal(e, e_ref)
    ws, es = moe.route(l, k, scoring="sigmoid", n_groups=4, topk_groups=4)
    np.testing.assert_array_equal(es[0], [0, 1, 2])


def test_route_masked_logits_never_produce_nan():
    l = np.array([[-np.inf, 0.5, -np.inf, 1.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf],
                  [-np.inf, -np.inf, 3.0, -np.inf]], np.float32)
    w, e = moe.route(l, 2)
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(e, [[3, 1], [0, 1], [2, 0]])
    np.testing.assert_allclose(w[1], 0.0)  # fully masked: a token with no route
    np.testing.assert_allclose(w[2], [1.0, 0.0])
    w_ref, e_ref = moe.route_ref(l, 2)
    np.testing.assert_array_equal(e, e_ref)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-7)


def test_route_T0_T1_and_k_equals_E():
    w, e = moe.route(np.zeros((0, 5), np.float32), 2)
    assert w.shape == e.shape == (0, 2)
    l = _logits(3, 1, 6)
    w, e = moe.route(l, 6)
    np.testing.assert_array_equal(np.sort(e[0]), np.arange(6))
    np.testing.assert_array_equal(e[0], np.argsort(-l[0], kind="stable"))
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert_route_matches(_logits(4, 9, 6), 6, scoring="sigmoid", n_groups=3, topk_groups=3)


# ----------------------------------------------------------------------------
# route: sigmoid / DeepSeek-V3 group-limited
# ----------------------------------------------------------------------------

@st.composite
def _grouped_case(draw):
    G = draw(st.integers(1, 8))
    gsz = draw(st.integers(1, 8))
    kg = draw(st.integers(1, G))
    k = draw(st.integers(1, kg * gsz))
    return G, gsz, kg, k


@given(T=st.integers(0, 60), case=_grouped_case(), use_bias=st.booleans(),
       renorm=st.booleans(), scale=st.sampled_from([1.0, 2.5]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_route_sigmoid_grouped_matches_reference(T, case, use_bias, renorm, scale, dtype, seed):
    G, gsz, kg, k = case
    E = G * gsz
    rng = np.random.default_rng(seed)
    l = _logits(seed, T, E, dtype)
    bias = (rng.standard_normal(E) * 0.5).astype(np.float32) if use_bias else None
    w, e = assert_route_matches(l, k, scoring="sigmoid", bias=bias, n_groups=G,
                                topk_groups=kg, renormalize=renorm, scale=scale)
    # every chosen expert lies in one of the kg eligible groups
    for t in range(T):
        assert len(set(e[t] // gsz)) <= kg
    if renorm and T:
        np.testing.assert_allclose(w.sum(1), scale, rtol=1e-5)


def test_sigmoid_weights_are_unbiased_scores():
    l = np.array([[0.0, 1.0, -1.0, 2.0]], np.float32)
    bias = np.array([5.0, 0.0, 0.0, -5.0], np.float32)  # lifts expert 0, buries expert 3
    w, e = moe.route(l, 2, scoring="sigmoid", bias=bias, scale=2.0)
    np.testing.assert_array_equal(e, [[0, 1]])
    s = 1 / (1 + np.exp(-np.array([0.0, 1.0])))
    np.testing.assert_allclose(w[0], 2.0 * s / s.sum(), rtol=1e-6)
    w_raw, _ = moe.route(l, 2, scoring="sigmoid", bias=bias, renormalize=False)
    np.testing.assert_allclose(w_raw[0], s, rtol=1e-6)


@pytest.mark.parametrize("impl", [moe.route, moe.route_ref])
def test_group_exclusion_holds_with_negative_biases(impl):
    # E=8 in 4 groups of 2, one group kept. Biased scores:
    #   group 0: expert 0 = s+0.9-ish high, expert 1 very negative -> group sum low
    #   group 1: two moderately negative experts -> best group sum, the only eligible group
    # Expert 0 has the highest biased score yet sits in an excluded group; an
    # implementation that masks excluded experts with 0 would pick it.
    l = np.zeros((2, 8), np.float32)  # every sigmoid score is 0.5
    bias = np.array([0.4, -6.0, -1.6, -1.5, -9.0, -9.0, -8.0, -8.0], np.float32)
    w, e = impl(l, 2, scoring="sigmoid", bias=bias, n_groups=4, topk_groups=1)
    np.testing.assert_array_equal(e, [[3, 2], [3, 2]])
    np.testing.assert_allclose(w, 0.5)
    # k=1: still only from the eligible group, whatever expert 0's score
    _, e1 = impl(l, 1, scoring="sigmoid", bias=bias, n_groups=4, topk_groups=1)
    np.testing.assert_array_equal(e1, [[3], [3]])


def test_sigmoid_extreme_logits_are_finite():
    l = np.array([[-np.inf, -200.0, -80.0, 0.0, 80.0, 200.0, np.inf, 1e30]], np.float32)
    w, e = moe.route(l, 8, scoring="sigmoid", renormalize=False)
    s = dict(zip(e[0].tolist(), w[0].tolist()))
    assert np.all(np.isfinite(w))
    assert s[4] == s[5] == s[6] == s[7] == 1.0  # sigmoid(80) rounds to 1 in float32
    assert s[3] == pytest.approx(0.5, rel=1e-7)
    assert 0.0 <= s[0] < 1e-37 and 0.0 <= s[1] < 1e-37
    np.testing.assert_array_equal(e[0][:4], [4, 5, 6, 7])  # ties at 1.0: lowest id first


def test_fast_sigmoid_accuracy():
    x = np.linspace(-30, 30, 20001).astype(np.float32)[None, :]
    w, e = moe.route(x, x.shape[1], scoring="sigmoid", renormalize=False)
    got = np.empty(x.shape[1], np.float64)
    got[e[0]] = w[0]
    ref = 1 / (1 + np.exp(-x[0].astype(np.float64)))
    assert np.max(np.abs(got / ref - 1)) < 5e-7  # a few float32 ulp


# ----------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------

def _random_experts(seed, T, k, E, skew=False):
    rng = np.random.default_rng(seed)
    if T == 0:
        return np.zeros((0, k), np.int64)
    p = None
    if skew:
        p = rng.dirichlet(np.full(E, 0.3))
    return np.stack([rng.choice(E, size=k, replace=False, p=p) for _ in range(T)]).reshape(T, k) \
        if k <= E else rng.integers(0, E, (T, k))


@given(T=st.integers(0, 80), E=st.integers(1, 20), data=st.data(), skew=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_dispatch_matches_reference_and_properties(T, E, data, skew, seed):
    k = data.draw(st.integers(1, E))
    cap = data.draw(st.one_of(st.none(), st.integers(0, 2 * T * k // E + 2)))
    experts = _random_experts(seed, T, k, E, skew)
    D = moe.dispatch(experts, E, capacity=cap)
    R = moe.dispatch_ref(experts, E, capacity=cap)
    for f in ("order", "counts", "offsets", "position", "demand"):
        np.testing.assert_array_equal(getattr(D, f), getattr(R, f), err_msg=f)
    assert D.counts.sum() == T * k - D.dropped.sum()
    assert np.all(np.diff(D.offsets) >= 0) and D.offsets[0] == 0 and D.offsets[-1] == D.n_kept
    np.testing.assert_array_equal(D.demand, np.bincount(experts.ravel(), minlength=E))
    flat = experts.ravel()
    for e in range(E):
        rows = D.order[D.offsets[e]:D.offsets[e + 1]]
        assert np.all(flat[rows] == e)
        assert np.all(np.diff(rows) > 0)  # ascending token (and slot) order
        dropped = np.flatnonzero((flat == e) & D.dropped.ravel())
        if dropped.size and rows.size:
            assert dropped.min() > rows.max()  # overflow drops the later tokens
        if cap is not None:
            assert rows.size == min(cap, D.demand[e])
    kept = ~D.dropped
    np.testing.assert_array_equal(D.order[D.position[kept]], np.flatnonzero(kept.ravel()))


def test_capacity_overflow_drops_later_tokens():
    experts = np.array([[0, 1], [0, 2], [0, 1], [3, 0]], np.int32)
    D = moe.dispatch(experts, 4, capacity=2)
    np.testing.assert_array_equal(D.dropped, [[False, False], [False, False],
                                              [True, False], [False, True]])
    np.testing.assert_array_equal(D.counts, [2, 2, 1, 1])
    np.testing.assert_array_equal(D.demand, [4, 2, 1, 1])
    np.testing.assert_array_equal(D.order, [0, 2, 1, 5, 3, 6])
    assert moe.dispatch(experts, 4, capacity=0).n_kept == 0


def test_dispatch_empty_experts_and_T0():
    D = moe.dispatch(np.full((5, 1), 3), 6)
    np.testing.assert_array_equal(D.counts, [0, 0, 0, 5, 0, 0])
    np.testing.assert_array_equal(D.offsets, [0, 0, 0, 0, 5, 5, 5])
    D0 = moe.dispatch(np.zeros((0, 2), np.int64), 4, capacity=3)
    assert D0.n_kept == 0 and D0.offsets.tolist() == [0] * 5


def test_capacity_from_factor():
    assert moe.capacity_from_factor(8192, 2, 64, 1.25) == 320
    assert moe.capacity_from_factor(10, 1, 3, 1.0) == 4  # ceil(3.33)
    assert moe.capacity_from_factor(100, 1, 1, 1.1) == 110  # not 111 from 1-ulp overshoot
    assert moe.capacity_from_factor(0, 2, 8, 2.0) == 0
    assert moe.capacity_from_factor(7, 2, 4, 0.5) == 2  # ceil(1.75)


# ----------------------------------------------------------------------------
# permute / unpermute
# ----------------------------------------------------------------------------

@given(T=st.integers(0, 40), E=st.integers(1, 10), d=st.integers(1, 70), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_permute_unpermute_match_reference(T, E, d, data, dtype, seed):
    k = data.draw(st.integers(1, E))
    cap = data.draw(st.one_of(st.none(), st.integers(0, T * k // E + 2)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, d)).astype(dtype)
    w, e = moe.route(_logits(seed, T, E), k)
    D = moe.dispatch(e, E, capacity=cap)
    xs = moe.permute(x, D)
    np.testing.assert_array_equal(xs, moe.permute_ref(x, D))
    ys = rng.standard_normal(xs.shape).astype(dtype)
    y = moe.unpermute(ys, D, w)
    assert y.dtype == dtype and y.shape == (T, d)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(y, moe.unpermute_ref(ys, D, w), rtol=tol, atol=tol)
    # identity experts: y = x * (sum of the token's kept weights)
    y_id = moe.unpermute(xs, D, w)
    kept_w = np.where(D.dropped, 0.0, w.astype(np.float64)).sum(axis=1)
    np.testing.assert_allclose(y_id, x * kept_w[:, None], rtol=tol, atol=tol)


def test_permute_out_argument_is_used():
    x = _logits(5, 12, 16)
    w, e = moe.route(_logits(6, 12, 4), 2)
    D = moe.dispatch(e, 4)
    buf = np.empty((D.n_kept, 16), np.float32)
    assert moe.permute(x, D, out=buf) is buf
    ybuf = np.empty((12, 16), np.float32)
    assert moe.unpermute(buf, D, w, out=ybuf) is ybuf
    with pytest.raises(ValueError, match="out"):
        moe.permute(x, D, out=np.empty((D.n_kept, 15), np.float32))


# ----------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------

@given(T=st.integers(0, 70), E=st.integers(1, 24), data=st.data(), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_losses_match_reference(T, E, data, seed, dtype):
    k = data.draw(st.integers(1, E))
    l = _logits(seed, T, E, dtype, scale=3.0)
    _, e = moe.route(l, k)
    assert moe.load_balancing_loss(l, e) == pytest.approx(moe.load_balancing_loss_ref(l, e), rel=1e-12, abs=1e-12)
    assert moe.router_z_loss(l) == pytest.approx(moe.router_z_loss_ref(l), rel=1e-12, abs=1e-12)


def test_balancing_loss_uniform_is_one_and_collapsed_is_E():
    E, T = 8, 64
    uniform = np.zeros((T, E), np.float32)
    experts = (np.arange(T) % E)[:, None]
    assert moe.load_balancing_loss(uniform, experts) == pytest.approx(1.0, rel=1e-12)
    collapsed = np.zeros((T, E), np.float32)
    collapsed[:, 0] = 200.0  # P_0 = 1 to float64 precision
    _, e = moe.route(collapsed, 1)
    assert np.all(e == 0)
    assert moe.load_balancing_loss(collapsed, e) == pytest.approx(E, rel=1e-12)


@pytest.mark.parametrize("E", [1, 2, 8, 256])
def test_z_loss_of_zero_logits(E):
    assert moe.router_z_loss(np.zeros((5, E), np.float32)) == pytest.approx(math.log(E) ** 2, rel=1e-12, abs=1e-15)


def test_losses_with_masked_rows_and_T0():
    l = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)
    assert moe.router_z_loss(l) == 0.0  # masked row adds 0, the other has lse = 0
    assert moe.load_balancing_loss(l, np.array([[0], [0]])) == pytest.approx(
        moe.load_balancing_loss_ref(l, np.array([[0], [0]])))
    assert moe.router_z_loss(np.zeros((0, 4), np.float32)) == 0.0
    assert moe.load_balancing_loss(np.zeros((0, 4)), np.zeros((0, 2), int)) == 0.0


# ----------------------------------------------------------------------------
# expert choice
# ----------------------------------------------------------------------------

@given(T=st.integers(0, 60), E=st.integers(1, 12), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_expert_choice_matches_reference(T, E, data, seed):
    C = data.draw(st.integers(0, T))
    l = _logits(seed, T, E)
    tok, w = moe.expert_choice(l, C)
    tok_ref, w_ref = moe.expert_choice_ref(l, C)
    assert tok.shape == w.shape == (E, C) and tok.dtype == np.int32 and w.dtype == np.float32
    np.testing.assert_array_equal(tok, tok_ref)
    np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-12)
    assert np.all(np.diff(w, axis=1) <= 0)


def test_expert_choice_ties_lowest_token_and_multiple_experts():
    l = np.zeros((5, 2), np.float32)
    l[3] = [1.0, 0.0]  # token 3 prefers expert 0
    tok, w = moe.expert_choice(l, 3)
    np.testing.assert_array_equal(tok, [[3, 0, 1], [0, 1, 2]])
    # tokens 0 and 1 are taken by both experts; token 4 by none
    assert set(tok[0]) & set(tok[1]) == {0, 1} and 4 not in tok


# ----------------------------------------------------------------------------
# SwiGLU and the MoE layer
# ----------------------------------------------------------------------------

def _moe_weights(seed, d, E, F, dtype=np.float32):
    rng = np.random.default_rng(seed)
    router_w = (rng.standard_normal((d, E)) / np.sqrt(d)).astype(dtype)
    w1 = (rng.standard_normal((E, d, F)) / np.sqrt(d)).astype(dtype)
    w3 = (rng.standard_normal((E, d, F)) / np.sqrt(d)).astype(dtype)
    w2 = (rng.standard_normal((E, F, d)) / np.sqrt(F)).astype(dtype)
    return router_w, w1, w3, w2


def test_swiglu_ffn_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 12))
    w1, w3, w2 = rng.standard_normal((12, 9)), rng.standard_normal((12, 9)), rng.standard_normal((9, 12))
    h = x @ w1
    np.testing.assert_allclose(moe.swiglu_ffn(x, w1, w3, w2), (h / (1 + np.exp(-h)) * (x @ w3)) @ w2, rtol=1e-12)


@settings(max_examples=15)
@given(T=st.integers(0, 40), E=st.integers(1, 6), d=st.integers(1, 24), F=st.integers(1, 24),
       data=st.data(), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**31 - 1))
def test_moe_layer_matches_dense_reference(T, E, d, F, data, dtype, seed):
    k = data.draw(st.integers(1, E))
    cap = data.draw(st.one_of(st.none(), st.integers(0, T)))
    x = np.random.default_rng(seed).standard_normal((T, d)).astype(dtype)
    rw, w1, w3, w2 = _moe_weights(seed + 1, d, E, F, dtype)
    y = moe.moe_layer(x, rw, w1, w3, w2, k, capacity=cap)
    y_ref = moe.moe_layer_ref(x, rw, w1, w3, w2, k, capacity=cap)
    assert y.shape == (T, d) and y.dtype == dtype
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)


def test_moe_layer_sigmoid_grouped_and_top_k_equals_E():
    x = np.random.default_rng(0).standard_normal((33, 16)).astype(np.float32)
    rw, w1, w3, w2 = _moe_weights(1, 16, 8, 12)
    opts = dict(scoring="sigmoid", bias=np.linspace(-0.2, 0.2, 8), n_groups=4, topk_groups=2, scale=2.5)
    np.testing.assert_allclose(moe.moe_layer(x, rw, w1, w3, w2, 3, **opts),
                               moe.moe_layer_ref(x, rw, w1, w3, w2, 3, **opts), rtol=2e-5, atol=2e-5)
    # k = E: every expert runs on every token, weights sum to 1 -> a softmax-weighted dense mixture
    np.testing.assert_allclose(moe.moe_layer(x, rw, w1, w3, w2, 8),
                               moe.moe_layer_ref(x, rw, w1, w3, w2, 8), rtol=2e-5, atol=2e-5)


def test_moe_layer_single_expert_is_dense_swiglu():
    x = np.random.default_rng(2).standard_normal((10, 8))
    rw, w1, w3, w2 = _moe_weights(3, 8, 1, 5, np.float64)
    np.testing.assert_allclose(moe.moe_layer(x, rw, w1, w3, w2, 1),
                               moe.swiglu_ffn(x, w1[0], w3[0], w2[0]), rtol=1e-12)


# ----------------------------------------------------------------------------
# determinism across thread counts
# ----------------------------------------------------------------------------

@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_identical_results_with_1_and_2_threads(monkeypatch):
    # these sizes are below the serial thresholds: force the parallel drivers
    force_path(monkeypatch, "parallel")
    T, E, k, d = 1000, 16, 4, 33
    l = _logits(7, T, E)
    x = np.random.default_rng(8).standard_normal((T, d)).astype(np.float32)
    rw, w1, w3, w2 = _moe_weights(9, d, E, 20)
    bias = np.linspace(-0.3, 0.3, E).astype(np.float32)

    def run():
        w, e = moe.route(l, k)
        ws, es = moe.route(l, k, scoring="sigmoid", bias=bias, n_groups=4, topk_groups=2)
        D = moe.dispatch(e, E, capacity=200)
        xs = moe.permute(x, D)
        y = moe.unpermute(xs * 1.5, D, w)
        tok, wc = moe.expert_choice(l, 100)
        return (w, e, ws, es, D.order, D.position, xs, y, tok, wc,
                np.float64(moe.load_balancing_loss(l, e)), np.float64(moe.router_z_loss(l)),
                moe.moe_layer(x, rw, w1, w3, w2, k, capacity=300))

    with numba_threads(1):
        one = run()
    with numba_threads(2):
        two = run()
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(moe.moe_layer(x, rw, w1, w3, w2, k, threads=1),
                                  moe.moe_layer(x, rw, w1, w3, w2, k, threads=2))


def test_routing_does_not_depend_on_batch_composition():
    l = _logits(10, 300, 32)
    w, e = moe.route(l, 4, scoring="sigmoid", n_groups=4, topk_groups=2)
    w2, e2 = moe.route(l[137:211], 4, scoring="sigmoid", n_groups=4, topk_groups=2)
    np.testing.assert_array_equal(e[137:211], e2)
    np.testing.assert_array_equal(w[137:211], w2)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

_L = np.zeros((4, 8), np.float32)
_E = np.zeros((4, 2), np.int32)
_D = moe.dispatch(_E, 8)
_X = np.zeros((4, 6), np.float32)
_RW, _W1, _W3, _W2 = _moe_weights(0, 6, 8, 5)
_NAN = np.where(np.eye(4, 8, dtype=bool), np.nan, 0.0).astype(np.float32)
_POSINF = np.where(np.eye(4, 8, dtype=bool), np.inf, 0.0).astype(np.float32)

_BAD = [
    ("top_k 0", lambda f: f(_L, 0), ValueError, "top_k"),
    ("top_k > E", lambda f: f(_L, 9), ValueError, "top_k"),
    ("top_k float", lambda f: f(_L, 2.0), TypeError, "top_k"),
    ("top_k bool", lambda f: f(_L, True), TypeError, "top_k"),
    ("logits rank", lambda f: f(np.zeros(8, np.float32), 2), ValueError, "router_logits"),
    ("logits int", lambda f: f(np.zeros((4, 8), np.int32), 2), TypeError, "router_logits"),
    ("logits no experts", lambda f: f(np.zeros((4, 0), np.float32), 1), ValueError, "router_logits"),
    ("logits NaN", lambda f: f(_NAN, 2), ValueError, "router_logits"),
    ("logits NaN sigmoid", lambda f: f(_NAN, 2, scoring="sigmoid"), ValueError, "router_logits"),
    ("logits +inf softmax", lambda f: f(_POSINF, 2), ValueError, "router_logits"),
    ("scoring", lambda f: f(_L, 2, scoring="relu"), ValueError, "scoring"),
    ("bias shape", lambda f: f(_L, 2, scoring="sigmoid", bias=np.zeros(7)), ValueError, "bias"),
    ("bias 2d", lambda f: f(_L, 2, scoring="sigmoid", bias=np.zeros((1, 8))), ValueError, "bias"),
    ("bias NaN", lambda f: f(_L, 2, scoring="sigmoid", bias=np.full(8, np.nan)), ValueError, "bias"),
    ("bias softmax", lambda f: f(_L, 2, bias=np.zeros(8)), ValueError, "bias"),
    ("n_groups divides", lambda f: f(_L, 2, scoring="sigmoid", n_groups=3), ValueError, "n_groups"),
    ("n_groups 0", lambda f: f(_L, 2, scoring="sigmoid", n_groups=0), ValueError, "n_groups"),
    ("n_groups softmax", lambda f: f(_L, 2, n_groups=2, topk_groups=2), ValueError, "n_groups"),
    ("topk_groups > n_groups", lambda f: f(_L, 2, scoring="sigmoid", n_groups=2, topk_groups=3),
     ValueError, "topk_groups"),
    ("topk_groups 0", lambda f: f(_L, 2, scoring="sigmoid", n_groups=2, topk_groups=0), ValueError, "topk_groups"),
    ("top_k > eligible", lambda f: f(_L, 3, scoring="sigmoid", n_groups=4, topk_groups=1), ValueError, "top_k"),
    ("scale inf", lambda f: f(_L, 2, scoring="sigmoid", scale=np.inf), ValueError, "scale"),
    ("scale str", lambda f: f(_L, 2, scoring="sigmoid", scale="2"), TypeError, "scale"),
    ("renormalize", lambda f: f(_L, 2, renormalize=1), TypeError, "renormalize"),
]


@pytest.mark.parametrize("impl", [moe.route, moe.route_ref], ids=["route", "route_ref"])
@pytest.mark.parametrize("case", _BAD, ids=[c[0] for c in _BAD])
def test_route_bad_input(impl, case):
    _, call, exc, name = case
    with pytest.raises(exc, match=name):
        call(impl)


@pytest.mark.parametrize("impl", [moe.dispatch, moe.dispatch_ref], ids=["dispatch", "dispatch_ref"])
@pytest.mark.parametrize("call, exc, name", [
    (lambda f: f(np.array([[0, 8]]), 8), ValueError, "experts"),
    (lambda f: f(np.array([[-1, 0]]), 8), ValueError, "experts"),
    (lambda f: f(np.array([0, 1]), 8), ValueError, "experts"),
    (lambda f: f(np.array([[0.0, 1.0]]), 8), TypeError, "experts"),
    (lambda f: f(_E, 8, capacity=-1), ValueError, "capacity"),
    (lambda f: f(_E, 8, capacity=1.5), TypeError, "capacity"),
    (lambda f: f(_E, 0), ValueError, "n_experts"),
])
def test_dispatch_bad_input(impl, call, exc, name):
    with pytest.raises(exc, match=name):
        call(impl)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: moe.permute(np.zeros((5, 6), np.float32), _D), ValueError, "x"),
    (lambda: moe.permute(_X, "nope"), TypeError, "dispatch"),
    (lambda: moe.permute(_X.astype(int), _D), TypeError, "x"),
    (lambda: moe.unpermute(np.zeros((7, 6), np.float32), _D, np.ones((4, 2))), ValueError, "y_sorted"),
    (lambda: moe.unpermute(np.zeros((8, 6), np.float32), _D, np.ones((4, 3))), ValueError, "weights"),
    (lambda: moe.unpermute(np.zeros((8, 6), np.float32), _D, np.ones((4, 2), int)), TypeError, "weights"),
    (lambda: moe.capacity_from_factor(10, 2, 4, 0.0), ValueError, "factor"),
    (lambda: moe.capacity_from_factor(10, 0, 4, 1.0), ValueError, "k"),
    (lambda: moe.capacity_from_factor(-1, 2, 4, 1.0), ValueError, "T"),
    (lambda: moe.capacity_from_factor(10, 2, 4, "1"), TypeError, "factor"),
    (lambda: moe.load_balancing_loss(_L, np.zeros((3, 2), int)), ValueError, "experts"),
    (lambda: moe.load_balancing_loss(_L, np.full((4, 2), 8)), ValueError, "experts"),
    (lambda: moe.load_balancing_loss(_NAN, _E), ValueError, "router_logits"),
    (lambda: moe.router_z_loss(_NAN), ValueError, "router_logits"),
    (lambda: moe.router_z_loss(np.zeros(3)), ValueError, "router_logits"),
    (lambda: moe.expert_choice(_L, 5), ValueError, "capacity"),
    (lambda: moe.expert_choice(_L, -1), ValueError, "capacity"),
    (lambda: moe.expert_choice(_NAN, 1), ValueError, "router_logits"),
    (lambda: moe.moe_layer(_X, _RW[:5], _W1, _W3, _W2, 2), ValueError, "router_w"),
    (lambda: moe.moe_layer(_X, _RW, _W1[:, :5], _W3, _W2, 2), ValueError, "w1"),
    (lambda: moe.moe_layer(_X, _RW, _W1, _W3[:, :, :4], _W2, 2), ValueError, "w3"),
    (lambda: moe.moe_layer(_X, _RW, _W1, _W3, _W2[:7], 2), ValueError, "w2"),
    (lambda: moe.moe_layer(_X, _RW, _W1, _W3, _W2.astype(np.float64), 2), TypeError, "w2"),
    (lambda: moe.moe_layer(_X, _RW, _W1, _W3, _W2, 9), ValueError, "top_k"),
    (lambda: moe.moe_layer(_X, _RW, _W1, _W3, _W2, 2, threads=0), ValueError, "threads"),
    (lambda: moe.moe_layer_ref(_X, _RW, _W1, _W3, _W2[:, :4], 2), ValueError, "w2"),
    (lambda: moe.swiglu_ffn(_X, _W1[0], _W3[0], _W2[0].T), ValueError, "w2"),
])
def test_other_bad_input(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# ----------------------------------------------------------------------------
# a Dispatch carries indices: frozen, and validated wherever it is used
# ----------------------------------------------------------------------------

def _hand_built(D, **fields):
    """A Dispatch like ``D`` with some fields replaced (writable copies, as a user would build)."""
    kw = {f: np.array(getattr(D, f)) for f in ("order", "counts", "offsets", "position", "demand")}
    kw.update(fields)
    return moe.Dispatch(capacity=D.capacity, **kw)


@pytest.mark.parametrize("impl", [moe.dispatch, moe.dispatch_ref], ids=["dispatch", "dispatch_ref"])
def test_dispatch_arrays_are_read_only(impl):
    D = impl(np.array([[0], [1]]), 4)
    for f in ("order", "counts", "offsets", "position", "demand"):
        a = getattr(D, f)
        assert not a.flags.writeable, f
        with pytest.raises(ValueError, match="read-only"):
            a[...] = 3
    # a hand-built Dispatch keeps a private frozen copy: the caller's array stays its own
    order = np.array(D.order)
    H = _hand_built(D, order=order)
    order[1] = 0
    assert H.order.tolist() == [0, 1] and not H.order.flags.writeable


@pytest.mark.parametrize("field, value, name", [
    ("order", np.array([0, 3], np.int32), "order"),
    ("order", np.array([0, 10**6], np.int32), "order"),
    ("order", np.array([-1, 1], np.int32), "order"),
    ("position", np.array([[0], [5]], np.int32), "position"),
    ("position", np.array([[0], [-2]], np.int32), "position"),
    ("offsets", np.array([0, 1, 2, 2, 3], np.int64), "offsets"),
    ("counts", np.array([1, 1, 0], np.int64), "offsets"),
    ("order", np.array([0, 1], np.int64), "order"),
    ("position", [[0], [1]], "position"),
])
def test_hand_built_dispatch_is_validated(field, value, name):
    D = moe.dispatch(np.array([[0], [1]]), 4)
    with pytest.raises((ValueError, TypeError), match=name):
        _hand_built(D, **{field: value})


_OOB_SCRIPT = """
import numpy as np
from scalelab.kernels import moe
x, w = np.ones((2, 8), np.float32), np.ones((2, 1), np.float32)
cases = (("order", np.array([0, 10**6], np.int32), (moe.permute, moe.permute_ref), (x,)),
         ("order", np.array([0, 3], np.int32), (moe.permute, moe.permute_ref), (x,)),
         ("position", np.array([[0], [10**6]], np.int32), (moe.unpermute, moe.unpermute_ref), (x, w)))
for field, bad, funcs, args in cases:
    for f in funcs:
        D = moe.dispatch(np.array([[0], [1]]), 4)
        # changed behind its back (frozen dataclass bypassed): the kernels must still refuse
        object.__setattr__(D, field, bad)
        try:
            f(args[0], D, *args[1:])
        except ValueError as err:
            assert field in str(err), err
        else:
            raise SystemExit(f"{f.__name__} accepted {field}={bad.tolist()}")
print("ok")
"""


def test_modified_dispatch_indices_raise_in_a_subprocess():
    # out-of-range indices used to read outside x (and segfault for 10**6):
    # run in a child so a crash fails this test instead of killing pytest
    r = subprocess.run([sys.executable, "-c", _OOB_SCRIPT], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-2000:])


@pytest.mark.parametrize("call, name", [
    (lambda: moe.dispatch(np.array([[0], [1]]), 4, capacity=2**70), "capacity"),
    (lambda: moe.dispatch(np.array([[0], [1]]), 2**64), "n_experts"),
    (lambda: moe.capacity_from_factor(100, 2, 8, 1e308), "factor"),
    (lambda: moe.capacity_from_factor(2**70, 2, 8, 1.0), "T"),
    (lambda: moe.expert_choice(_L, 2**64), "capacity"),
])
def test_huge_integers_are_value_errors_not_overflow(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_capacity_from_factor_tiny_factor_rounds_up():
    assert moe.capacity_from_factor(10, 1, 1, 1e-12) == 1  # ceil of a positive capacity is >= 1
    assert moe.capacity_from_factor(10, 1, 1, 1e-300) == 1


def test_dispatch_parallel_path_matches_reference():
    # T*k above the serial threshold exercises the parallel kernel
    T, k, E = 9000, 4, 64
    assert T * k >= moe._DISPATCH_PARALLEL_MIN
    _, e = moe.route(_logits(11, T, E), k)
    for cap in (None, 500):
        D, R = moe.dispatch(e, E, capacity=cap), moe.dispatch_ref(e, E, capacity=cap)
        for f in ("order", "counts", "offsets", "position", "demand"):
            np.testing.assert_array_equal(getattr(D, f), getattr(R, f), err_msg=f)


# ----------------------------------------------------------------------------
# serial twins vs parallel drivers
# ----------------------------------------------------------------------------

def _run_everything(T, E, k, d, dtype, seed):
    """Every public kernel on one random problem (masked rows included); a tuple of arrays."""
    l = _logits(seed, T, E, dtype)
    if T > 2:
        l[1] = -np.inf  # a fully masked token
        l[2, : E // 2] = -np.inf  # a partly masked token
    x = np.random.default_rng(seed + 1).standard_normal((T, d)).astype(dtype)
    rw, w1, w3, w2 = _moe_weights(seed + 2, d, E, 7, dtype)
    bias = np.linspace(-0.3, 0.3, E).astype(np.float32)
    G = 4 if E % 4 == 0 else 1
    kg = min(G, max(2, -(-k // (E // G))))  # enough eligible groups for top_k
    w, e = moe.route(l, k)
    wr, er = moe.route(l, k, renormalize=False)
    ws, es = moe.route(np.nan_to_num(l, neginf=-30.0), k, scoring="sigmoid", bias=bias,
                       n_groups=G, topk_groups=kg, scale=2.5)
    out = [w, e, wr, er, ws, es]
    for cap in (None, max(1, T * k // (2 * E))):
        D = moe.dispatch(e, E, capacity=cap)
        xs = moe.permute(x, D)
        y = moe.unpermute(xs * dtype(1.5), D, w)
        out += [D.order, D.position, D.counts, D.offsets, D.demand, xs, y]
    tok, wc = moe.expert_choice(l, min(T, 5))
    out += [tok, wc, np.float64(moe.load_balancing_loss(l, e)), np.float64(moe.router_z_loss(l)),
            moe.swiglu_ffn(x, w1[0], w3[0], w2[0]),
            moe.moe_layer(x, rw, w1, w3, w2, k, capacity=max(1, T // 2))]
    return out


@pytest.mark.parametrize("T, E, k, d, dtype", [
    (0, 4, 1, 3, np.float32),
    (1, 1, 1, 1, np.float32),
    (3, 8, 8, 5, np.float64),      # k = E
    (65, 16, 4, 9, np.float32),    # one row past a block
    (300, 64, 2, 40, np.float32),
    (513, 32, 3, 17, np.float64),
])
def test_serial_and_parallel_paths_are_bitwise_identical(monkeypatch, T, E, k, d, dtype):
    with monkeypatch.context() as m:
        force_path(m, "serial")
        serial = _run_everything(T, E, k, d, dtype, seed=T + E)
    with monkeypatch.context() as m:
        force_path(m, "parallel")
        parallel = _run_everything(T, E, k, d, dtype, seed=T + E)
        if numba.config.NUMBA_NUM_THREADS >= 2:
            with numba_threads(2):
                parallel2 = _run_everything(T, E, k, d, dtype, seed=T + E)
        else:
            parallel2 = parallel
    assert len(serial) == len(parallel) == len(parallel2)
    for i, (a, b, c) in enumerate(zip(serial, parallel, parallel2)):
        assert a.dtype == b.dtype and a.shape == b.shape, i
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
        np.testing.assert_array_equal(a, c, err_msg=f"output {i}")


def test_thresholds_select_the_drivers(monkeypatch):
    # default thresholds: a T=512 problem runs serial, a large one parallel
    calls = []
    for par, ser in _DRIVERS:
        for name in (par, ser):
            fn = getattr(moe, name)
            monkeypatch.setattr(moe, name, lambda *a, _f=fn, _n=name: (calls.append(_n), _f(*a))[1])
    small = _logits(3, 512, 8)
    w, e = moe.route(small, 2)
    D = moe.dispatch(e, 8)
    x = np.zeros((512, 4096), np.float32)
    moe.unpermute(moe.permute(x, D), D, w)
    assert calls == ["_route_softmax_ser", "_dispatch_serial", "_permute_ser", "_unpermute_ser"]
    calls.clear()
    big = _logits(4, moe._LOGITS_PARALLEL_MIN // 64, 64)
    w, e = moe.route(big, 8)
    assert e.size >= moe._DISPATCH_PARALLEL_MIN
    moe.dispatch(e, 64)
    assert calls == ["_route_softmax_par", "_dispatch_kernel"]


def test_silu_mul_in_place_matches_formula_and_names_bad_input():
    rng = np.random.default_rng(4)
    for dt in (np.float32, np.float64):
        h, g = rng.standard_normal((5, 37)).astype(dt), rng.standard_normal((5, 37)).astype(dt)
        want = h.astype(np.float64) / (1 + np.exp(-h.astype(np.float64))) * g
        got = h.copy()
        moe.silu_mul(got, g)
        np.testing.assert_allclose(got, want, rtol=10 * np.finfo(dt).eps, atol=10 * np.finfo(dt).tiny)
        one = h[2:3].copy()
        moe.silu_mul(one, g[2:3])
        np.testing.assert_array_equal(one[0], got[2])  # a row alone: same bits
    h = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="g must match"):
        moe.silu_mul(h, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="h must be C-contiguous"):
        moe.silu_mul(np.ones((3, 2), np.float32).T, h)
    with pytest.raises(TypeError, match="h must have dtype"):
        moe.silu_mul(h.astype(np.int32), h)
    ro = h.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="h must be writeable"):
        moe.silu_mul(ro, h)
