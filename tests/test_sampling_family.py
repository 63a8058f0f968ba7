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
