"""Sampling kernels against their NumPy references (kernels/sampling.py)."""

import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import stats

from scalelab.kernels import sampling as S
from scalelab.kernels._common import numba_threads

DTYPES = [np.float32, np.float64]
# Multi-block rows (V > BLOCK) exercise the block merge and the in-row parallel path.
V_BIG = S.BLOCK * 2 + 1234


def _logits(rng, B, V, dtype=np.float32, scale=3.0):
    return (rng.standard_normal((B, V)) * scale).astype(dtype)


def _check_filter(x, **kw):
    got = S.filter_logits(x, **kw)
    want = S.filter_logits_ref(x, **kw)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, want)
    return got


def _check_sample(x, seed, **kw):
    tok, lp = S.sample(x, seed=seed, return_logprobs=True, **kw)
    f = S.filter_logits_ref(x, **kw)
    f2 = f[None] if f.ndim == 1 else f
    tok2 = np.atleast_1d(tok)
    # the drawn token survived the filter, and its log-probability matches
    assert np.all(np.isfinite(np.take_along_axis(f2, tok2[:, None], axis=1)))
    want = S.logprobs_ref(x, tok, **kw)
    np.testing.assert_allclose(lp, want, rtol=1e-10, atol=1e-10)
    assert np.all(np.asarray(lp) <= 1e-12)
    return tok, lp


# --------------------------------------------------------------------------- #
# filter_logits / sample against the references
# --------------------------------------------------------------------------- #

PARAMS = [
    dict(),
    dict(temperature=0.7, top_p=0.9),
    dict(top_k=1),
    dict(top_k=7),
    dict(top_k=50, top_p=0.5),
    dict(top_p=1e-9),
    dict(top_p=0.999),
    dict(min_p=0.05),
    dict(min_p=1.0),
    dict(temperature=1e-6),
    dict(temperature=100.0, top_p=0.95),
    dict(temperature=0.0),
    dict(temperature=0.5, top_k=10, top_p=0.8, min_p=0.02),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 1000), (2, V_BIG)])
@pytest.mark.parametrize("kw", PARAMS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "plain")
def test_filter_and_sample_match_reference(shape, dtype, kw):
    rng = np.random.default_rng(zlib.crc32(repr((shape, sorted(kw.items()))).encode()))
    x = _logits(rng, *shape, dtype)
    _check_filter(x, **kw)
    _check_sample(x, np.arange(shape[0]), **kw)


@given(
    B=st.integers(1, 4),
    V=st.integers(1, 300),
    scale=st.sampled_from([0.01, 1.0, 5.0, 50.0]),
    t=st.sampled_from([0.0, 1e-3, 0.5, 1.0, 3.0]),
    k=st.integers(-1, 40),
    p=st.sampled_from([1e-6, 0.3, 0.9, 0.999, 1.0]),
    mp=st.sampled_from([0.0, 0.01, 0.5]),
    quant=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_filter_property(B, V, scale, t, k, p, mp, quant, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, V)) * scale
    if quant:  # heavy ties
        x = np.round(x)
    x = x.astype(np.float32)
    x[rng.random((B, V)) < 0.2] = -np.inf
    x[:, rng.integers(V)] = 1.0  # at least one finite logit per row
    kw = dict(temperature=t, top_k=k, top_p=p, min_p=mp)
    _check_filter(x, **kw)
    _check_sample(x, rng.integers(0, 2**63, B), **kw)


def test_adversarial_rows():
    V = 64
    rows = []
    r = np.zeros(V)
    rows.append(r.copy())  # all tied
    r = np.full(V, -np.inf)
    r[17] = 3.0
    rows.append(r.copy())  # a single finite token
    r = np.arange(V, dtype=float) % 4  # ties at the k-th value
    rows.append(r.copy())
    r = np.zeros(V)
    r[:40] = -np.inf  # a run of -inf
    r[50:] = 1.0
    rows.append(r.copy())
    r = np.full(V, -1e30)
    r[3] = 1e30  # extreme but finite
    rows.append(r.copy())
    x = np.array(rows)
    for dtype in DTYPES:
        xd = x.astype(dtype)
        for kw in [dict(top_k=5), dict(top_k=3, top_p=0.5), dict(top_p=0.5), dict(top_p=0.25),
                   dict(min_p=1.0), dict(temperature=1e-6, top_p=0.3), dict(temperature=100.0),
                   dict(temperature=0.0)]:
            _check_filter(xd, **kw)
            _check_sample(xd, np.arange(len(rows)), **kw)


def test_top_k_keeps_ties_at_kth_value():
    x = np.array([[5.0, 3.0, 3.0, 3.0, 1.0]], dtype=np.float32)
    f = S.filter_logits(x, top_k=2)
    assert np.isfinite(f).sum() == 4  # 5 and all three 3s


def test_top_p_ties_follow_lower_id_first():
    x = np.zeros((1, 4), dtype=np.float64)  # each token has p = 0.25 exactly
    f = S.filter_logits(x, top_p=0.5)
    np.testing.assert_array_equal(np.isfinite(f[0]), [True, True, False, False])
    f = S.filter_logits(x, top_p=0.5 + 1e-12)
    np.testing.assert_array_equal(np.isfinite(f[0]), [True, True, True, False])


def test_mixed_per_row_parameters():
    rng = np.random.default_rng(3)
    x = _logits(rng, 6, 500)
    kw = dict(temperature=np.array([0.0, 0.5, 1.0, 2.0, 1e-6, 1.0]),
              top_k=np.array([0, 5, 500, 20, 3, -4]),
              top_p=np.array([1.0, 0.9, 0.5, 1.0, 0.1, 0.999]),
              min_p=np.array([0.0, 0.0, 0.1, 0.2, 0.0, 0.5]))
    _check_filter(x, **kw)
    _check_sample(x, np.arange(6), **kw)
    for r in range(6):  # each row equals that row filtered alone
        one = {k: v[r] for k, v in kw.items()}
        np.testing.assert_array_equal(S.filter_logits(x[r], **one), S.filter_logits(x, **kw)[r])


def test_one_dimensional_input_and_v1():
    x = np.array([0.3, 2.0, -1.0], dtype=np.float32)
    tok, lp = S.sample(x, seed=1, return_logprobs=True, temperature=0.0)
    assert tok == 1 and lp == 0.0 and np.ndim(tok) == 0
    f = S.filter_logits(x, top_k=1)
    np.testing.assert_array_equal(np.isfinite(f), [False, True, False])
    one = np.array([[4.0]])
    assert S.sample(one, seed=0)[0] == 0
    np.testing.assert_array_equal(S.filter_logits(one, top_p=0.01, min_p=1.0, temperature=3.0), one / 3.0)
    v, i = S.top_k(one, 1)
    assert v[0, 0] == 4.0 and i[0, 0] == 0


def test_greedy_rows_are_argmax_lowest_id():
    rng = np.random.default_rng(5)
    x = np.round(_logits(rng, 20, 300))  # many ties at the maximum
    tok = S.sample(x, temperature=0.0, seed=np.arange(20))
    np.testing.assert_array_equal(tok, np.argmax(x, axis=1))
    # greedy consumes no randomness: the seed does not matter
    np.testing.assert_array_equal(tok, S.sample(x, temperature=0.0))


# --------------------------------------------------------------------------- #
# top_k
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,V,k", [(1, 1, 1), (3, 10, 10), (4, 1000, 50), (2, V_BIG, 50),
                                    (1, V_BIG, 300), (33, 2000, 7)])
def test_top_k_matches_reference(B, V, k, dtype):
    rng = np.random.default_rng(V + k)
    x = np.round(_logits(rng, B, V, dtype))  # ties everywhere
    x[:, 1::7] = -np.inf  # runs of -inf (column 0 stays finite)
    v, i = S.top_k(x, k)
    vr, ir = S.top_k_ref(x, k)
    np.testing.assert_array_equal(v, vr)
    np.testing.assert_array_equal(i, ir)
    assert v.dtype == x.dtype and i.dtype == np.int64


def test_top_k_few_finite_values():
    x = np.full((2, 100), -np.inf, dtype=np.float32)
    x[0, 40] = 1.0
    x[1, [5, 90]] = 2.0
    v, i = S.top_k(x, 3)
    vr, ir = S.top_k_ref(x, 3)
    np.testing.assert_array_equal(v, vr)
    np.testing.assert_array_equal(i, ir)


# --------------------------------------------------------------------------- #
# Distribution and determinism
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_p=0.9), dict(top_k=8, min_p=0.01),
                                dict(temperature=1.5)])
def test_draws_follow_filtered_distribution(kw):
    """Chi-square goodness of fit of 1e5 seeded draws (p > 1e-4 expected)."""
    rng = np.random.default_rng(11)
    V, n = 40, 100_000
    row = (rng.standard_normal(V) * 1.5).astype(np.float32)
    x = np.broadcast_to(row, (n, V)).copy()
    tok = S.sample(x, seed=np.arange(n), **kw)
    f = S.filter_logits_ref(row, **kw).astype(np.float64)
    p = np.exp(f - f.max())
    p /= p.sum()
    kept = p > 0
    assert np.all(kept[tok])  # never a filtered token
    counts = np.bincount(tok, minlength=V)[kept]
    res = stats.chisquare(counts, p[kept] * n)
    assert res.pvalue > 1e-4, res


def test_seed_reproducibility_and_fresh_entropy():
    rng = np.random.default_rng(2)
    x = _logits(rng, 8, 3000, scale=0.3)  # flat: draws vary a lot
    a = S.sample(x, seed=np.arange(8), top_p=0.95)
    b = S.sample(x, seed=np.arange(8), top_p=0.95)
    np.testing.assert_array_equal(a, b)
    c = S.sample(x, seed=np.arange(8) + 100, top_p=0.95)
    assert not np.array_equal(a, c)
    draws = {tuple(S.sample(x, top_p=0.95)) for _ in range(3)}
    assert len(draws) > 1
    # a scalar seed applies to every row
    same = np.broadcast_to(x[0], (4, 3000)).copy()
    assert len(set(S.sample(same, seed=7).tolist())) == 1


@pytest.mark.parametrize("V", [500, V_BIG])
def test_row_result_independent_of_neighbours_order_and_threads(V):
    rng = np.random.default_rng(V)
    B = 5
    x = _logits(rng, B, V, scale=1.0)
    seeds = rng.integers(0, 2**63, B)
    kw = dict(temperature=np.linspace(0.5, 1.5, B), top_p=0.9, top_k=np.array([0, 50, 0, 7, 0]),
              min_p=np.array([0.0, 0.0, 0.01, 0.0, 0.0]))
    results = []
    for threads in (1, 2):
        with numba_threads(threads):
            full = S.sample(x, seed=seeds, return_logprobs=True, **kw)
            perm = rng.permutation(B)
            shuffled = S.sample(x[perm], seed=seeds[perm], return_logprobs=True,
                                **{k: (v[perm] if np.ndim(v) else v) for k, v in kw.items()})
            np.testing.assert_array_equal(full[0][perm], shuffled[0])
            np.testing.assert_array_equal(full[1][perm], shuffled[1])
            alone = [S.sample(x[r], seed=int(seeds[r]), return_logprobs=True,
                              **{k: (v[r] if np.ndim(v) else v) for k, v in kw.items()})
                     for r in range(B)]
            np.testing.assert_array_equal(full[0], [a[0] for a in alone])
            np.testing.assert_array_equal(full[1], [a[1] for a in alone])
            filt = S.filter_logits(x, **kw)
            results.append((full, filt))
    np.testing.assert_array_equal(results[0][0][0], results[1][0][0])
    np.testing.assert_array_equal(results[0][0][1], results[1][0][1])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_row_uniform_is_a_pure_function_of_the_seed():
    u = S.row_uniform(np.arange(100_000, dtype=np.uint64))
    assert np.all((u >= 0) & (u < 1))
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    np.testing.assert_array_equal(u[5:10], S.row_uniform(np.arange(5, 10, dtype=np.uint64)))


def _row_uniform_numpy(seeds, counter):
    """The splitmix64 construction written out in NumPy: the reference for row_uniform."""
    u64 = np.uint64

    def mix(z):
        z = z ^ (z >> u64(30))
        z = z * u64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> u64(27))
        z = z * u64(0x94D049BB133111EB)
        return z ^ (z >> u64(31))

    with np.errstate(over="ignore"):
        z = np.asarray(seeds, dtype=u64) + u64(0x9E3779B97F4A7C15) * u64(counter + 1)
        z = mix(mix(z) ^ u64(0xD1B54A32D192ED03))
    return (z >> u64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def test_compiled_row_uniform_is_bit_identical_to_the_numpy_one():
    seeds = np.concatenate([np.arange(1000, dtype=np.uint64),
                            np.array([2**64 - 1, 2**63, 0x9E3779B97F4A7C15], dtype=np.uint64),
                            np.random.default_rng(3).integers(0, 2**64 - 1, 1000, dtype=np.uint64)])
    for counter in (0, 1, 7, 2**40):
        np.testing.assert_array_equal(S.row_uniform(seeds, counter), _row_uniform_numpy(seeds, counter))
    assert S.row_uniform(np.uint64(5)) == _row_uniform_numpy(5, 0)  # scalar in, scalar out


def test_reused_workspace_gives_the_same_draws_across_shapes_and_threads():
    # sample() keeps its O(V) scratch per thread between calls: alternating
    # shapes, and several Python threads at once, must not change any result.
    import threading

    rng = np.random.default_rng(11)
    cases = [(rng.standard_normal((b, v)) * 2).astype(np.float32) for b, v in ((1, 70_000), (3, 5000), (1, 300))]
    kw = dict(temperature=0.8, top_p=0.9, min_p=0.01, return_logprobs=True)
    expect = [S.sample(x, seed=np.arange(x.shape[0]), **kw) for x in cases]
    for _ in range(2):
        for x, (tok, lp) in zip(cases, expect):
            got = S.sample(x, seed=np.arange(x.shape[0]), **kw)
            np.testing.assert_array_equal(got[0], tok)
            np.testing.assert_array_equal(got[1], lp)
    import numba

    if numba.threading_layer() == "workqueue":  # not thread-safe: concurrent parallel calls abort
        return
    failures = []

    def worker(order):
        for i in order * 3:
            tok, lp = S.sample(cases[i], seed=np.arange(cases[i].shape[0]), **kw)
            if not (np.array_equal(tok, expect[i][0]) and np.array_equal(lp, expect[i][1])):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(order,)) for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# --------------------------------------------------------------------------- #
# Test-time compute
# --------------------------------------------------------------------------- #

def test_sequence_logprob_and_best_of_n():
    lp = np.array([[-0.1, -0.1, -0.1, -0.1],  # long and confident
                   [-0.5, 0.0, 0.0, 0.0],      # short (length 1), less confident
                   [-0.1, -0.1, -0.1, -9.0]])  # padding must be ignored (length 3)
    ln = np.array([4, 1, 3])
    np.testing.assert_allclose(S.sequence_logprob(lp, ln, reduce="sum"), [-0.4, -0.5, -0.3])
    np.testing.assert_allclose(S.sequence_logprob(lp, ln), [-0.1, -0.5, -0.1])
    assert S.best_of_n(lp, ln) == 0  # tie between 0 and 2: lowest index
    # the sum would have preferred the shortest candidate
    short = np.array([[-0.2, -0.2, -0.2], [-0.35, 0.0, 0.0]])
    assert np.argmax(S.sequence_logprob(short, [3, 1], reduce="sum")) == 1
    assert S.best_of_n(short, [3, 1]) == 0


@pytest.mark.parametrize("lp,ln,match", [
    (np.zeros((0, 3)), np.zeros(0, dtype=int), "N >= 1"),
    (np.zeros((2, 3)), np.array([0, 1]), r"lengths.*first bad candidate 0"),
    (np.zeros((2, 3)), np.array([1, 4]), r"lengths.*first bad candidate 1"),
    (np.zeros((2, 3)), np.array([1]), "lengths must have shape"),
    (np.array([[0.0, np.nan], [0.0, 0.0]]), np.array([1, 2]), None),
    (np.array([[-1.0, 0.0], [np.nan, 0.0]]), np.array([1, 2]), r"token_logprobs.*first bad candidate 1"),
])
def test_best_of_n_validation(lp, ln, match):
    if match is None:  # NaN in the padding is ignored
        assert S.best_of_n(lp, ln) in (0, 1)
        return
    with pytest.raises(ValueError, match=match):
        S.best_of_n(lp, ln)


def test_best_of_n_type_errors():
    with pytest.raises(TypeError, match="lengths"):
        S.best_of_n(np.zeros((2, 3)), np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="token_logprobs"):
        S.best_of_n(np.zeros((2, 3), dtype=int), np.array([1, 2]))
    with pytest.raises(ValueError, match="reduce"):
        S.sequence_logprob(np.zeros((2, 3)), np.array([1, 2]), reduce="max")


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #

def _bad_rows(value):
    x = np.zeros((4, 10), dtype=np.float32)
    x[2, 3] = value
    return x


@pytest.mark.parametrize("fn", ["filter", "sample", "top_k", "filter_ref", "top_k_ref"])
def test_bad_logits_name_argument_and_row(fn):
    call = {
        "filter": lambda x: S.filter_logits(x, top_p=0.5),
        "sample": lambda x: S.sample(x, seed=0),
        "top_k": lambda x: S.top_k(x, 3),
        "filter_ref": lambda x: S.filter_logits_ref(x),
        "top_k_ref": lambda x: S.top_k_ref(x, 3),
    }[fn]
    for v in (np.nan, np.inf):
        with pytest.raises(ValueError, match=r"logits.*NaN.*row 2"):
            call(_bad_rows(v))
    x = np.zeros((4, 10), dtype=np.float32)
    x[1] = -np.inf
    with pytest.raises(ValueError, match=r"logits row 1 has no finite logit"):
        call(x)
    with pytest.raises(ValueError, match="logits must have rank"):
        call(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="logits"):
        call(np.zeros((2, 2), dtype=np.int32))


def test_bad_parameters_name_argument():
    x = np.zeros((3, 10), dtype=np.float32)
    cases = [
        (dict(temperature=-1.0), ValueError, r"temperature.*row 0"),
        (dict(temperature=np.array([1.0, np.nan, 1.0])), ValueError, r"temperature.*row 1"),
        (dict(temperature=np.ones(2)), ValueError, r"temperature.*length 3"),
        (dict(top_p=0.0), ValueError, r"top_p.*\(0, 1\]"),
        (dict(top_p=np.array([0.5, 1.0, 1.5])), ValueError, r"top_p.*row 2"),
        (dict(min_p=-0.1), ValueError, r"min_p.*\[0, 1\]"),
        (dict(min_p=np.array([0.5, 2.0, 0.0])), ValueError, r"min_p.*row 1"),
        (dict(top_k=2.5), TypeError, "top_k"),
        (dict(top_k=np.array([1.0, 2.0, 3.0])), TypeError, "top_k"),
        (dict(top_k=np.array([1, 2])), ValueError, r"top_k.*length 3"),
        (dict(temperature="hot"), TypeError, "temperature"),
        (dict(temperature=1e-60), ValueError, "temperature"),
    ]
    for kw, exc, match in cases:
        for fn in (S.filter_logits, S.sample, S.filter_logits_ref):
            with pytest.raises(exc, match=match):
                fn(x, **kw)
    with pytest.raises(ValueError, match="seed.*length 3"):
        S.sample(x, seed=np.arange(2))
    with pytest.raises(ValueError, match="seed"):
        S.sample(x, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        S.sample(x, seed=1.5)
    with pytest.raises(TypeError, match="k must be an integer"):
        S.top_k(x, 2.0)
    with pytest.raises(ValueError, match=r"k must be in \[1, V=10\]"):
        S.top_k(x, 11)
    big = np.full((2, 4), 1e30, dtype=np.float32)
    with pytest.raises(ValueError, match=r"temperature.*row 0"):
        S.sample(big, temperature=1e-10)


def test_single_row_above_parallel_collect_threshold_matches_reference_and_threads():
    # V above scalelab.kernels.sampling._COLLECT_PAR_V takes the parallel bucket-collect
    # branch for B=1; it must agree with the reference and with one thread.
    V = S._COLLECT_PAR_V + 4099
    rng = np.random.default_rng(7)
    x = _logits(rng, 1, V, scale=3.0)[0]
    kw = dict(temperature=0.7, top_p=0.9)
    out = []
    for threads in (1, 2):
        with numba_threads(threads):
            out.append((S.sample(x, seed=11, return_logprobs=True, **kw), S.filter_logits(x, **kw)))
    assert out[0][0][0] == out[1][0][0] and out[0][0][1] == out[1][0][1]
    np.testing.assert_array_equal(out[0][1], out[1][1])
    ref = S.filter_logits_ref(x, **kw)
    np.testing.assert_array_equal(np.isfinite(out[0][1]), np.isfinite(ref))
    token, logprob = out[1][0]
    assert np.isfinite(ref[token])
    p = np.exp(ref.astype(np.float64) - ref.max())
    assert logprob == pytest.approx(np.log(p[token] / p.sum()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("seeds, exc", [
    ([-1], ValueError), (np.array([3, -2]), ValueError), (1.7, TypeError), (np.array([1.0]), TypeError),
    (True, TypeError), (2**64, ValueError), (-5, ValueError),
])
def test_row_uniform_rejects_what_sample_rejects(seeds, exc):
    with pytest.raises(exc, match="seeds"):
        S.row_uniform(seeds)


def test_per_row_top_k_beyond_int64_is_rejected_not_disabled():
    logits = np.arange(10, dtype=np.float32)[None].repeat(2, 0)
    k = np.array([2**63, 2], np.uint64)
    for fn in (S.filter_logits, S.filter_logits_ref):
        with pytest.raises(ValueError, match="top_k"):
            fn(logits, top_k=k)


@pytest.mark.parametrize("value", [2**64 - 1, 2**63, 4])
def test_sequence_logprob_names_a_huge_uint64_length_as_given(value):
    # cast to int64 first, 2**64 - 1 used to be reported as -1
    with pytest.raises(ValueError, match=rf"got {value}\)"):
        S.sequence_logprob(np.zeros((1, 3)), np.array([value], np.uint64))


def test_logprobs_ref_checks_token_ids():
    x = np.linspace(-1, 1, 10)[None, :].repeat(2, axis=0)
    np.testing.assert_allclose(S.logprobs_ref(x, [9, 0]), np.log(np.exp(x[0]) / np.exp(x[0]).sum())[[9, 0]])
    for bad, err in (([10, 0], ValueError), ([0, -1], ValueError), ([0], ValueError),
                     (np.array([2**63, 0], np.uint64), ValueError), ([0.0, 1.0], TypeError), ([True, False], TypeError)):
        with pytest.raises(err, match="tokens"):
            S.logprobs_ref(x, bad)
