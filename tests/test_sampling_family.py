"""Sampling on the benchmark's logit-distribution family: the kept set and the draws against the reference.

The family (``asv_benchmarks.sampling.FAMILY``: normal logits at scales 0.5 to
10, Zipf logits with exponents 0.8 to 1.5, one dominant token, all equal) is
what the kernel's speed is measured on; these tests check that every member,
the degenerate ones included, gives the reference's answer, at a small V so
they run in seconds. One row spans two blocks (V > BLOCK) so the block merge
and the in-row parallel path take part.
"""

import numpy as np
import pytest
from scipy import stats

from asv_benchmarks.sampling import FAMILY, FAMILY_FILTERS, family_logits
from scalelab.kernels import sampling as S
from scalelab.kernels._common import numba_threads

V_SMALL = 3001
V_TWO_BLOCKS = S.BLOCK + 777


@pytest.mark.parametrize("dist", list(FAMILY))
@pytest.mark.parametrize("V", [V_SMALL, V_TWO_BLOCKS])
def test_family_member_matches_reference(dist, V):
    B = 2
    x = family_logits(dist, B, V, seed=V)  # (B, V) float32
    seeds = np.arange(B) + 17
    for kw in FAMILY_FILTERS.values():
        got = S.filter_logits(x, **kw)
        np.testing.assert_array_equal(got, S.filter_logits_ref(x, **kw))
        tok, lp = S.sample(x, seed=seeds, return_logprobs=True, **kw)
        assert np.all(np.isfinite(got[np.arange(B), tok]))  # never a filtered token
        np.testing.assert_allclose(lp, S.logprobs_ref(x, tok, **kw), rtol=1e-10, atol=1e-10)
        for threads in (1, 2):  # bitwise the same for any thread count and for a row alone
            with numba_threads(threads):
                t1, l1 = S.sample(x[1], seed=int(seeds[1]), return_logprobs=True, **kw)
            assert (t1, l1) == (tok[1], lp[1])


def test_equal_logits_keep_the_lowest_ids_and_draw_uniformly():
    """All-equal logits: top-p keeps exactly the first ceil(p V) ids, and draws spread evenly over them."""
    V, n = 1000, 20_000
    x = np.zeros((n, V), dtype=np.float32)
    for p in (0.5, 0.99):
        f = S.filter_logits(x[0], top_p=p)
        kept = np.isfinite(f)
        assert kept[: int(np.ceil(p * V))].all() and not kept[int(np.ceil(p * V)) + 1:].any()
        np.testing.assert_array_equal(f, S.filter_logits_ref(x[0], top_p=p))
    tok = S.sample(x, top_p=0.5, seed=np.arange(n))
    assert tok.min() >= 0 and tok.max() < 500
    counts = np.bincount(tok // 50, minlength=10)  # ten bins of 50 ids
    assert stats.chisquare(counts).pvalue > 1e-4


def test_one_dominant_token_is_the_only_one_kept_and_always_drawn():
    V = 5000
    x = family_logits("dominant", 3, V)
    top = np.argmax(x, axis=1)
    for kw in ({"top_p": 0.99}, {"top_p": 0.5}, {"min_p": 0.05}):
        f = S.filter_logits(x, **kw)
        assert (np.isfinite(f).sum(axis=1) == 1).all()
        np.testing.assert_array_equal(S.sample(x, seed=np.arange(3), **kw), top)


def _bucket_candidates(x, tt, m, tb, xlim, xc, idc):
    """NumPy: ids, float64 scaled logits and exp(-d) of the tokens ``_blk_collect`` must return."""
    xs = x / x.dtype.type(tt)  # (V,) scaled in the logits dtype
    xf = xs.astype(np.float64)
    d = m - xf
    b = np.minimum(d * S.BUCKETS_PER_NAT, S.N_REGULAR).astype(np.int64)
    ids = np.arange(x.size)
    keep = (b == tb) & (xs >= xlim) & ((xf > xc) | ((xf == xc) & (ids <= idc)))
    return ids[keep], xf[keep], np.exp(-d[keep])


@pytest.mark.parametrize("dist", ["equal", "normal0.5", "normal3", "zipf0.8", "dominant"])
def test_bucket_collection_and_streamed_draw_at_every_density(dist):
    """The bucket collection (sparse and dense chunks) returns exactly the bucket's tokens, in id
    order, and the streamed draw adds their masses in that order: its running sum and its token
    are those of a sequential cumulative sum over the collected list."""
    V = 20_000
    x = family_logits(dist, 1, V, seed=5)[0]  # (V,) float32
    tt = np.float32(0.9)
    m = float(np.float64(x.max() / tt))
    buckets = np.minimum((m - (x / tt).astype(np.float64)) * S.BUCKETS_PER_NAT, S.N_REGULAR).astype(int)
    full = np.bincount(buckets).argmax()  # the most crowded bucket: dense chunks
    xmid = float(np.sort((x / tt).astype(np.float64)[buckets == full])[np.sum(buckets == full) // 2])
    cid, cx, ce = np.empty(V, np.int64), np.empty(V), np.empty(V)
    for tb in {0, int(full), int(np.median(buckets))}:
        llo, lhi = S._bucket_l_bounds(tb, tt, m, float(x.max()))
        for xlim, xc, idc in ((-np.inf, -np.inf, V), (xmid, xmid, V // 2)):
            n = S._blk_collect(x, 0, V, tt, m, tb, llo, lhi, xlim, xc, idc, cid, cx, ce, 0)
            ids, xf, e = _bucket_candidates(x, tt, m, tb, xlim, xc, idc)
            np.testing.assert_array_equal(cid[:n], ids)
            np.testing.assert_array_equal(cx[:n], xf)
            np.testing.assert_allclose(ce[:n], e, rtol=1e-14)
            cum = np.cumsum(ce[:n])  # sequential, in id order
            nc, tok, xtok, acc = S._blk_draw(x, 0, V, tt, m, tb, llo, lhi, xlim, xc, idc, np.inf)
            assert nc == n and (n == 0 or acc == cum[-1])
            if n:
                for r in (0.0, cum[-1] * 0.37, cum[-1] * 0.999):
                    i = int(np.argmax(cum > r)) if (cum > r).any() else n - 1
                    nc, tok, xtok, _ = S._blk_draw(x, 0, V, tt, m, tb, llo, lhi, xlim, xc, idc, r)
                    assert (tok, xtok) == (cid[i], cx[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_min_p_cut_from_the_histogram_matches_the_reference_at_the_cut(dtype):
    """Sampling finds the min-p cut from the bucket masses (a scan of the buckets next to the cut);
    tokens placed a hair either side of ``max + log(min_p)`` must be kept or dropped exactly as the
    reference does, with and without a top-k threshold below or above the cut."""
    rng = np.random.default_rng(3)
    V = S.BLOCK + 501
    for min_p in (0.05, 0.3, 1e-6, 1.0):
        x = rng.standard_normal(V).astype(dtype)
        x[7] = 4.0
        edge = 4.0 + np.log(min_p)
        near = rng.choice(V, 40, replace=False)
        near = near[near != 7]
        if dtype == np.float64:  # inside the kernel's exact-test band (1e-9 nat), clear of rounding
            x[near] = edge + rng.choice([-5e-10, -1e-10, 1e-10, 5e-10], size=near.size)
        else:  # one float32 ulp either side
            e32 = np.float32(edge)
            x[near] = [np.nextafter(e32, np.float32(s)) for s in rng.choice([-np.inf, np.inf], size=near.size)]
        for kw in ({"top_p": 0.999999}, {"top_p": 0.95, "top_k": 30}, {"top_k": 5000}):
            got = S.filter_logits(x, min_p=min_p, **kw)
            np.testing.assert_array_equal(got, S.filter_logits_ref(x, min_p=min_p, **kw))
            tok, lp = S.sample(x, min_p=min_p, seed=9, return_logprobs=True, **kw)
            assert np.isfinite(got[tok])
            np.testing.assert_allclose(lp, S.logprobs_ref(x, tok, min_p=min_p, **kw), rtol=1e-10, atol=1e-10)


def _tied_row(V, n_tied, v, seed, dtype=np.float32):
    """(V,) logits: ``n_tied`` scattered tokens share the logit ``v``, the rest lie in [-8, 4], none
    within 1/4 nat of ``v`` (so ``v``'s bucket holds the tied tokens only)."""
    rng = np.random.default_rng(seed)
    o = rng.uniform(-8.0, 4.0, V)
    x = np.where(np.abs(o - v) < 0.25, o - 0.5, o).astype(dtype)
    x[rng.integers(V)] = 4.0
    x[rng.choice(V, n_tied, replace=False)] = v
    return x


@pytest.mark.parametrize("v", [4.0, 3.55, 2.0])
def test_tied_bucket_scan_makes_the_streamed_draws_and_crossing_additions(v):
    """A large bucket of one shared logit is drawn from and crossed by a running sum of one mass
    (``_tied_scan``): the same tokens and the same sums, bit for bit, as streaming the bucket
    (``_blk_draw``) and collecting and resolving it (``_blk_collect`` + ``_resolve``)."""
    V = 30_000
    x = _tied_row(V, 3 * S._TIE_MIN // 2, v, seed=int(v * 10))
    tt = np.float32(1.0)
    m = float(x.max())
    xv = float(np.float64(np.float32(v) / tt))
    tb = int(min((m - xv) * S.BUCKETS_PER_NAT, S.N_REGULAR))
    hist = np.zeros(S.NB)
    hist[tb] = np.inf  # only its size decides whether the tie is looked for
    cnt, val, xt, e = S._bucket_tie(x, hist, tt, m, m, tb, -np.inf)
    ids = np.flatnonzero(x == np.float32(v))
    assert cnt == ids.size and val == np.float32(v) and xt == xv
    assert abs(e / np.exp(xv - m) - 1) < 1e-14  # exp(-d), as the collection computes it
    llo, lhi = S._bucket_l_bounds(tb, tt, m, m)
    total = S._blk_draw(x, 0, V, tt, m, tb, llo, lhi, -np.inf, -np.inf, V, np.inf)
    for last_id, xc, idc in ((V, -np.inf, V), (int(ids[ids.size // 3]), xv, int(ids[ids.size // 3])), (-1, xv + 1, V)):
        for r in (0.0, total[3] * 0.37, total[3] * 0.999, np.inf):
            n, tok, acc = S._tied_scan(x, np.float32(v), e, last_id, r, True, -1)
            want = S._blk_draw(x, 0, V, tt, m, tb, llo, lhi, -np.inf, xc, idc, r)
            assert (n > 0) == (want[0] > 0)
            if n:
                assert (tok, acc) == (want[1], want[3]) and want[2] == xv
    cid, cx, ce = np.empty(V, np.int64), np.empty(V), np.empty(V)
    for share in (1e-9, 0.3, 0.999, 2.0):
        need = total[3] * share
        n, tok, acc = S._tied_scan(x, np.float32(v), e, V, need, False, cnt)
        nc = S._blk_collect(x, 0, V, tt, m, tb, llo, lhi, -np.inf, -np.inf, V, cid, cx, ce, 0)
        assert S._resolve(cid, cx, ce, nc, need) == (xv, tok, acc)
    # one differing token in the bucket's logit range: no tie
    y = x.copy()
    y[ids[5]] = np.nextafter(np.float32(v), np.float32(-np.inf))
    assert S._bucket_tie(y, hist, tt, m, m, tb, -np.inf)[0] == -1


@pytest.mark.parametrize("V", [5000, S.BLOCK + 777, 3 * S.BLOCK + 5])
def test_all_equal_rows_draw_floor_of_u_times_the_kept_count(V):
    """All-equal logits: every token has mass exactly 1, so the sums are exact integers and the
    drawn token must be ``floor(u * K)`` for the row's uniform ``u`` and the K ids kept (the
    lowest ones), with log-probability ``-log K``, at any thread count."""
    x = np.zeros(V, dtype=np.float32)
    seeds = [0, 1, 7, 12345, 2**40 + 3]
    u = S.row_uniform(np.array(seeds, dtype=np.uint64))
    for kw in ({"top_p": 0.5}, {"top_p": 0.99}, {"min_p": 0.05}, {"top_p": 0.95, "min_p": 0.02},
               {"top_p": 0.3, "top_k": 100}, {}):
        K = int(np.isfinite(S.filter_logits_ref(x, **kw)).sum())
        assert np.isfinite(S.filter_logits(x, **kw)[:K]).all()
        for threads in (1, 2):
            with numba_threads(threads):
                for s, us in zip(seeds, u):
                    tok, lp = S.sample(x, seed=s, return_logprobs=True, **kw)
                    assert tok == int(np.floor(us * K)), (kw, s)
                    assert lp == -np.log(K)


def test_draw_within_a_bucket_spanning_blocks_follows_the_distribution():
    """One bucket across four blocks (logits within 1/32 nat, no two equal): the draw picks a
    block from the per-block masses, then a token inside it. 6000 seeded draws binned by id
    follow the softmax (chi-square), and every draw is the same at 1 and 2 threads."""
    V = 3 * S.BLOCK + 123
    rng = np.random.default_rng(8)
    x = (rng.permutation(V) / (32.0 * V)).astype(np.float64)  # distinct, one bucket
    x[: V // 3] += 1.0  # and a second bucket holding a third of the row
    n = 6000
    p = np.exp(x - x.max())
    p /= p.sum()
    bins = np.arange(V) // 2048
    for threads in (1, 2):
        with numba_threads(threads):
            tok = np.array([S.sample(x, seed=s) for s in range(n)])
        if threads == 1:
            first = tok
        else:
            np.testing.assert_array_equal(tok, first)
    counts = np.bincount(bins[first], minlength=bins.max() + 1)
    expected = np.bincount(bins, weights=p) * n
    assert stats.chisquare(counts, expected).pvalue > 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_min_p_threshold_on_raw_logits_equals_testing_every_token(dtype):
    """``_blk_minp_range`` finds the min-p threshold from the raw logits (a vectorized minimum
    over their bit patterns, exact tests only near the cut); it must return what testing every
    token on its scaled logit returns, for logits placed on the cut, on the range bounds, at
    -inf and +-0, at extreme temperatures and over ranges that clip the cut."""
    rng = np.random.default_rng(21)
    V = 3000
    for trial in range(60):
        tt = dtype(rng.choice([1.0, 0.3, 7.0, 1e-30, 1e30]))
        min_p = float(rng.choice([1e-6, 0.02, 0.3, 0.9, 1.0]))
        x = (rng.standard_normal(V) * rng.choice([0.5, 3.0])).astype(dtype)
        x[rng.integers(V, size=5)] = -np.inf
        x[rng.integers(V, size=3)] = rng.choice([0.0, -0.0])
        lmax = x.max()
        m = float(np.float64(lmax / tt))
        if not np.isfinite(m):
            continue
        edge = (m + np.log(min_p)) * float(tt)
        near = rng.integers(V, size=20)
        x[near] = [np.nextafter(dtype(edge), dtype(s)) for s in rng.choice([-np.inf, np.inf], size=near.size)]
        x[rng.integers(V)] = lmax
        for llo, lhi in ((-np.inf, np.inf), (edge - 1.0, edge + 0.5), (float(x[near[0]]), float(x[near[1]])),
                         (edge + 0.1, np.inf), (-np.inf, edge - 0.1)):
            got = S._blk_minp_range(x, 0, V, tt, m, llo, lhi, min_p)
            want = S._blk_minp_exact(x, 0, V, tt, m, llo, lhi, min_p)
            assert got == want or (np.isnan(got) and np.isnan(want)), (trial, tt, min_p, llo, lhi, got, want)


def test_repeated_addition_in_closed_form_has_the_bits_of_the_loop():
    """``_repeat_add`` jumps a binade at a time; its count and sum must be those of ``acc += e``
    repeated, for masses of every size (1, powers of two, values whose rounding is half-way in
    some binades, tiny ones that stop moving the sum), stop values anywhere, strict or not."""

    def loop(e, kmax, r, strict):
        acc, k = 0.0, 0
        while k < kmax:
            acc += e
            k += 1
            if (acc > r) if strict else (acc >= r):
                break
        return k, acc

    rng = np.random.default_rng(4)
    masses = [1.0, 0.5, 3.0, 1.0 + 2.0**-52, 1.0 + 2.0**-30 + 2.0**-52, 0.1, 0.7, 2.0**-60,
              float(np.exp(-63.9)), *rng.uniform(0.0, 1.0, 6)]
    for e in masses:
        for kmax in (1, 2, 3, 1000, 70_001):
            total = loop(e, kmax, np.inf, True)[1]
            for r in (-1.0, 0.0, e, e * 2.5, total * 0.37, total * (1 - 1e-16), total, total * 2, np.inf,
                      float(rng.uniform(0, total))):
                for strict in (True, False):
                    assert S._repeat_add(e, kmax, r, strict) == loop(e, kmax, r, strict), (e, kmax, r, strict)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [2.0, 0.5, 3.0])
def test_subnormal_logits_keep_the_reference_sets_under_every_raw_bound(dtype, temperature):
    """Logits near the smallest subnormal: dividing by the temperature rounds them by up to half a
    subnormal spacing, far more than any relative margin, so every raw-logit bound (bucket range,
    min-p threshold, the cut inside a bucket) must allow for it. Found by Hypothesis with
    [[-1e-45], [-3e-45]], temperature 2, min_p 1 (the kept token was skipped by the draw)."""
    tiny = np.finfo(dtype).smallest_subnormal
    rows = [np.array([-1.0, -3.0, 0.0, 2.0, -2.0], dtype=dtype) * tiny,
            np.array([-1.0], dtype=dtype) * tiny,
            np.concatenate([np.full(5000, -tiny, dtype=dtype), np.full(5000, -2 * tiny, dtype=dtype)])]
    for x in rows:
        for kw in ({"min_p": 1.0}, {"min_p": 0.5}, {"top_p": 0.5}, {"top_p": 0.5, "min_p": 0.9}, {}):
            kw = dict(kw, temperature=temperature)
            got = S.filter_logits(x, **kw)
            np.testing.assert_array_equal(got, S.filter_logits_ref(x, **kw))
            for seed in range(4):
                tok, lp = S.sample(x, seed=seed, return_logprobs=True, **kw)
                assert np.isfinite(got[tok])
                np.testing.assert_allclose(lp, S.logprobs_ref(x, tok, **kw), rtol=1e-10, atol=1e-10)
