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
