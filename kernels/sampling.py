"""Sampling kernels: temperature, top-k, top-p, min-p, seeded draws and best-of-N.

Versions in this file (each fast kernel has a plain NumPy reference beside it):

* ``*_ref`` -- the obviously-correct way: full stable sort of the vocabulary,
  softmax, cumulative sum, mask, ``Generator.choice``.  O(V log V) per row.
* Numba kernels -- O(V) per row, never sorting the vocabulary:

  - ``top_k``: one streaming pass per row keeping a size-k min-heap; a chunk of
    64 logits is only inspected element-wise when one of them beats the heap
    minimum, so after the first few thousand tokens the pass is a vectorized
    compare-and-count.  The final k entries are heap-sorted (O(k log k)).
  - top-p / sampling: the probability mass is bucketed by the distance
    ``d = max - x`` of each scaled logit below the row maximum (1024 buckets of
    width 1/16 nat plus one overflow bucket for ``d >= 64``, whose tokens carry
    less than ``V * e**-64`` of the mass and are below float64 resolution).
    ``exp(-d)`` is factored as ``exp(-b/16) * exp(-(d - b/16))`` with a table for
    the first factor and a degree-9 polynomial on ``[0, 1/16)`` for the second,
    so the hot loop is branch-free and vectorizes.  The cumulative mass over
    buckets finds the boundary bucket; only the tokens of that bucket are
    collected and the exact crossing token is found by re-bucketing them
    (linear in the bucket size) and sorting the last few dozen.  The draw is an
    inverse CDF over the bucket masses, then over the chosen bucket's masses
    per block of ``BLOCK`` tokens (kept from the histogram pass), then over
    that block's tokens of the bucket in id order: no per-token random
    numbers, and one block streamed instead of the row. Only when the cut
    falls inside the chosen bucket (its block masses then include tokens the
    cut removes) is the whole row streamed in id order.
  - Flat distributions put thousands of tokens in one bucket, so the passes
    over a bucket must not slow down with its size. A pass first finds the
    ids of the logits in the bucket's logit range (per chunk of 64, a
    vectorized compare into a 64-bit mask whose set bits are visited by
    trailing-zero count), then computes their values and masses as one
    vectorized batch; the draw does this a segment at a time and stops at
    the drawn token. A histogram sub-pass whose tokens all fall in one
    bucket sums in a register. With the bucket masses known, the min-p cut
    is found among the tokens between the highest non-empty bucket inside
    the cut and the cut's own bucket, as one vectorized minimum over the raw
    logits' bit patterns (exact tests only within a hair of the cut).
  - Ties: a bucket large enough to hold thousands of tokens is first checked
    for one shared logit (all-equal rows; logits from a low-precision
    format). Its crossing token and its draw are then running sums of one
    mass in id order with the bits of the general path's additions, computed
    a binade at a time (:func:`_repeat_add`): no exponential, store or
    dependent addition per token.
  - Together these took the slowest member of the benchmark's distribution
    family (all-equal logits with top-p and min-p) from ~4.8x the fastest to
    within 1.5-2x of it at B=1 and 32, V=128256 and 256000, 1 and 2 threads
    (Zen 3, quiet machine; ``tools/bench_bars_sampling.py --family``).
  - Collecting one bucket's tokens is a two-compare scan, kept on one thread
    for rows up to ``_COLLECT_PAR_V`` tokens even for B=1 (cheaper than waking
    the other threads), so a B=1 ``sample`` has two parallel sections (max,
    histogram) instead of four.
  - Leaf loops index a slice from 0 (``a = l[lo:hi]; a[j]``): with an index
    like ``l[lo + j]`` Numba must allow for a negative index and wrap it,
    which kept LLVM from vectorising the NaN/+inf check (~5x slower) and
    slowed the histogram loop by ~20%. The row maximum and NaN/+inf count
    come from an LLVM-IR vector loop (:func:`scalelab.kernels._vecmath.max_and_bad`): 20 us instead
    of 200 us for a 256k-token row.
  - Scratch: the O(V) collection buffers are kept per Python thread between
    calls with the same shape (a decode loop), which removed ~50 us of
    allocation per call; a seed becomes its uniform number in compiled code.
    Together these took B=1, V=256000 ``sample`` from 1.4-1.8 ms to
    0.64-0.86 ms here.
  - Determinism: every row is split into fixed blocks of ``BLOCK`` tokens; all
    floating-point sums are formed per block and merged in block order, both
    when a row is processed by one thread and when its blocks are spread over
    threads (small batches), so results do not depend on the thread count or on
    which rows share the batch.  Each row uses one uniform number, a pure
    function of its seed (splitmix64), and greedy rows use none.

Dtype rules: logits may be float32 or float64; temperature scaling happens in
the logits dtype (``logits / dtype(temperature)``), so filtered logits have the
input dtype.  Probabilities, masses and log-probabilities are float64.  Every
cut is compared on exactly the values the output holds: the k-th largest logit
is divided by the temperature in the logits dtype like every other token (a
float64 quotient of a float32 logit can round to the other side of the token's
own float32 quotient and remove it).  A temperature that rounds to 0 or
overflows in the logits dtype is rejected.
Accuracy: the kernel and the reference agree exactly on which tokens survive
except when a cumulative mass lies within a few float64 ulps of ``top_p * Z``
(the sums are formed in a different order), or a probability ratio within an
ulp of ``min_p``.
"""

from __future__ import annotations

import math
import threading
from collections import namedtuple

import numba
import numpy as np
from numba import njit, prange, types
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from scalelab.kernels._common import aligned_empty, check_float_array, check_int, check_int_array
from scalelab.kernels._vecmath import FASTMATH_EXACT_DIV, exp_neg_1ulp, exp_neg_near_zero, max_and_bad

__all__ = [
    "filter_logits",
    "filter_logits_ref",
    "sample",
    "sample_ref",
    "top_k",
    "top_k_ref",
    "logprobs_ref",
    "row_uniform",
    "sequence_logprob",
    "best_of_n",
    "BLOCK",
]

#: Tokens per block; every float sum is formed per block, then merged in block order.
BLOCK = 16384
#: Bucket width is 1/BUCKETS_PER_NAT nat of distance below the row maximum.
BUCKETS_PER_NAT = 16
#: Regular buckets cover d in [0, 64); the last bucket holds d >= 64 (and -inf).
N_REGULAR = 64 * BUCKETS_PER_NAT
NB = N_REGULAR + 1
_WIDTH = 1.0 / BUCKETS_PER_NAT
#: exp(-b/16) at each regular bucket's upper edge (from np.exp); the overflow bucket has no mass.
_BUCKET_SCALE = np.concatenate([np.exp(-np.arange(N_REGULAR) * _WIDTH), [0.0]])
#: Tokens per chunk of the collection passes; at most 64 (a chunk's hits are one uint64 mask).
_CHUNK = 64
#: Rows up to this many tokens collect a bucket on one thread even when B is small.
_COLLECT_PAR_V = 1 << 20
#: Tokens per vectorized sub-pass of the histogram (scratch stays in L1/L2).
_HCHUNK = 2048
#: Tokens per segment of a streamed draw: their ids, values and masses are computed as a
#: batch (vectorized) before the running sum walks them.
_SEG = 4096
#: Below this many candidates the boundary bucket is resolved by insertion sort.
_SMALL = 48
_SUB = 256
#: A bucket whose masses say it holds at least this many tokens is first checked for one
#: shared logit (all-equal rows, low-precision logits): its crossing and draw are then
#: running sums of one mass, with no per-token exponential. Not tuned: the check is one
#: vectorized pass (~0.1 ms for 256k tokens), paid only by buckets this large.
_TIE_MIN = 4096

_OK, _BAD_VALUE, _NO_FINITE, _OVERFLOW, _NO_CANDIDATE = 0, 1, 2, 3, 4


# --------------------------------------------------------------------------- #
# NumPy references: the plain sorting way.
# --------------------------------------------------------------------------- #

def _ref_rows(logits, temperature, top_k_, top_p, min_p):
    x2, squeeze = _as_2d(check_float_array("logits", logits, (1, 2)))
    _check_logits_values(x2)
    B, V = x2.shape
    t, k, p, mp = _row_params(B, temperature, top_k_, top_p, min_p)
    _check_scaling(x2, t)
    return x2, squeeze, t, k, p, mp


def _check_scaling(x2, t):
    """Temperatures must be representable in the logits dtype and not overflow the scaled max."""
    tdt = _temperature_in_dtype(t, x2.dtype)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        over = (t > 0) & (x2.max(axis=1) / np.where(tdt > 0, tdt, 1) == np.inf)
    if over.any():
        r = int(np.nonzero(over)[0][0])
        raise ValueError(f"temperature {t[r]} is too small for row {r}: "
                         "the scaled logits overflow the logits dtype")
    return tdt


def _temperature_in_dtype(t, dtype):
    """Per-row temperatures cast to the logits dtype; each must stay 0 or a positive finite number."""
    with np.errstate(over="ignore"):
        tdt = t.astype(dtype)
    bad = (t > 0) & ~((tdt > 0) & np.isfinite(tdt))
    if bad.any():
        r = int(np.nonzero(bad)[0][0])
        raise ValueError(f"temperature must be 0 or a positive number representable in {np.dtype(dtype)} "
                         f"(row {r}, got {t[r]})")
    return tdt


def _ref_filter_row(row, t, k, p, mp):
    """Filtered, temperature-scaled logits of one row (NumPy, full sort)."""
    V = row.size
    dt = row.dtype.type
    out = np.full(V, -np.inf, dtype=row.dtype)
    if t == 0.0:
        j = int(np.argmax(row))  # first maximum = lowest id on ties
        out[j] = row[j]
        return out
    x = row / dt(t)  # (V,) scaled in the logits dtype
    keep = np.ones(V, dtype=bool)
    if 0 < k < V:
        kth = np.sort(x)[::-1][k - 1]
        keep &= x >= kth
    m = np.float64(x.max())
    e = np.exp(x.astype(np.float64) - m)  # (V,) unnormalised probabilities
    if p < 1.0:
        ek = np.where(keep, e, 0.0)
        order = np.argsort(-x, kind="stable")  # desc prob, lower id first
        es = ek[order]
        cum_before = np.concatenate([[0.0], np.cumsum(es)[:-1]])
        thr = p * ek.sum()
        pos = es > 0
        cross = np.nonzero((cum_before < thr) & pos & (cum_before + es >= thr))[0]
        last = cross[0] if cross.size else np.nonzero(pos)[0][-1]
        kp = np.zeros(V, dtype=bool)
        kp[order[: last + 1]] = True
        keep &= kp
    if mp > 0.0:
        keep &= e >= mp
    out[keep] = x[keep]
    return out


def filter_logits_ref(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """NumPy reference for :func:`filter_logits` (sorts the whole vocabulary)."""
    x2, squeeze, t, k, p, mp = _ref_rows(logits, temperature, top_k, top_p, min_p)
    out = np.stack([_ref_filter_row(x2[r], t[r], k[r], p[r], mp[r]) for r in range(x2.shape[0])])
    return out[0] if squeeze else out


def sample_ref(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=None,
               return_logprobs=False):
    """NumPy reference for :func:`sample`: draws from the reference-filtered distribution.

    Row ``r`` uses ``numpy.random.default_rng(seed_r)``; it draws from the same
    distribution as :func:`sample` but not the same tokens.
    """
    x2, squeeze, t, k, p, mp = _ref_rows(logits, temperature, top_k, top_p, min_p)
    B = x2.shape[0]
    seeds = _row_seeds(B, seed)
    tokens = np.empty(B, dtype=np.int64)
    logp = np.empty(B, dtype=np.float64)
    for r in range(B):
        f = _ref_filter_row(x2[r], t[r], k[r], p[r], mp[r]).astype(np.float64)
        if t[r] == 0.0:
            tokens[r], logp[r] = int(np.argmax(f)), 0.0
            continue
        lp = f - f.max()
        lp = lp - np.log(np.exp(lp).sum())  # (V,) log-probabilities
        probs = np.exp(lp)
        tokens[r] = np.random.default_rng(int(seeds[r])).choice(f.size, p=probs / probs.sum())
        logp[r] = lp[tokens[r]]
    if squeeze:
        tokens, logp = tokens[0], logp[0]
    return (tokens, logp) if return_logprobs else tokens


def top_k_ref(logits, k):
    """NumPy reference for :func:`top_k`: stable full sort, first k."""
    x2, squeeze = _as_2d(check_float_array("logits", logits, (1, 2)))
    _check_logits_values(x2)
    k = _check_k(k, x2.shape[1])
    idx = np.argsort(-x2, axis=1, kind="stable")[:, :k]  # (B, k)
    vals = np.take_along_axis(x2, idx, axis=1)
    if squeeze:
        return vals[0], idx[0]
    return vals, idx


def logprobs_ref(logits, tokens, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """Log-probability of ``tokens`` under the reference-filtered distribution (float64)."""
    x2, squeeze, t, k, p, mp = _ref_rows(logits, temperature, top_k, top_p, min_p)
    tok = np.atleast_1d(check_int_array("tokens", tokens))
    if tok.shape != (x2.shape[0],):
        raise ValueError(f"tokens must hold one id per row ({x2.shape[0]}), got shape {np.shape(tokens)}")
    if tok.size and (tok.min() < 0 or tok.max() >= x2.shape[1]):
        raise ValueError(f"tokens must be in [0, {x2.shape[1]}), got ids from {tok.min()} to {tok.max()}")
    out = np.empty(x2.shape[0])
    for r in range(x2.shape[0]):
        if t[r] == 0.0:
            out[r] = 0.0 if tok[r] == np.argmax(x2[r]) else -np.inf
            continue
        f = _ref_filter_row(x2[r], t[r], k[r], p[r], mp[r]).astype(np.float64)
        e = np.exp(f - f.max())
        out[r] = (f[tok[r]] - f.max()) - np.log(e.sum())
    return out[0] if squeeze else out


# --------------------------------------------------------------------------- #
# Validation at the public boundary.
# --------------------------------------------------------------------------- #

def _as_2d(a):
    if a.ndim == 1:
        return a[None, :], True
    return a, False


def _check_logits_values(x2):
    bad = ~(x2 < np.inf)  # NaN or +inf
    if bad.any():
        r = int(np.nonzero(bad.any(axis=1))[0][0])
        raise ValueError(f"logits must not contain NaN or +inf (first bad row {r})")
    nofin = ~(x2 > -np.inf).any(axis=1)
    if nofin.any():
        r = int(np.nonzero(nofin)[0][0])
        raise ValueError(f"logits row {r} has no finite logit")


def _per_row(name, a, B):
    if a.ndim == 0:
        return np.broadcast_to(a, (B,))
    if a.ndim != 1 or a.shape[0] != B:
        raise ValueError(f"{name} must be a scalar or a per-row array of length {B}, got shape {a.shape}")
    return a


def _first_bad(name, ok, vals, what):
    if not ok.all():
        r = int(np.nonzero(~ok)[0][0])
        raise ValueError(f"{name} must be {what} (first bad row {r}, got {vals[r]})")


def _row_params(B, temperature, top_k_, top_p, min_p):
    """Per-row parameter arrays (float64 t, p, mp; int64 k), validated."""
    t = _num_param("temperature", temperature, B)
    _first_bad("temperature", np.isfinite(t) & (t >= 0), t, "finite and >= 0")
    p = _num_param("top_p", top_p, B)
    _first_bad("top_p", (p > 0) & (p <= 1), p, "in (0, 1]")
    mp = _num_param("min_p", min_p, B)
    _first_bad("min_p", (mp >= 0) & (mp <= 1), mp, "in [0, 1]")
    if type(top_k_) is int and -2**63 <= top_k_ < 2**63:
        return t, np.full(B, top_k_, dtype=np.int64), p, mp
    ka = np.asarray(top_k_)
    if ka.dtype.kind not in "iu":
        raise TypeError(f"top_k must be an integer or a per-row integer array, got {ka.dtype}")
    k = check_int_array("top_k", _per_row("top_k", ka, B))
    return t, k, p, mp


def _num_param(name, value, B):
    if type(value) is float or (type(value) is int and -2**63 <= value < 2**63):
        return np.full(B, float(value))  # the common case, without array round trips
    a = np.asarray(value)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number or a per-row array of real numbers, got {a.dtype}")
    return _per_row(name, a, B).astype(np.float64)


def _check_k(k, V):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    k = int(k)
    if not 1 <= k <= V:
        raise ValueError(f"k must be in [1, V={V}], got {k}")
    return k


_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


@njit(cache=True)
def _mix64(z):
    """splitmix64 finaliser (uint64, wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _uniform_kernel(seeds, step):
    out = np.empty(seeds.shape[0], dtype=np.float64)
    for i in range(seeds.shape[0]):
        z = _mix64(_mix64(seeds[i] + step) ^ np.uint64(0xD1B54A32D192ED03))
        out[i] = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return out


def row_uniform(seeds, counter=0):
    """Uniform in [0, 1) for each row: a pure function of (seed, counter) (53 random bits).

    ``splitmix64(splitmix64(seed + golden * (counter + 1)) ^ c) >> 11``, in
    compiled code (a NumPy version cost ~35 us per call at B=1).
    """
    counter = check_int("counter", counter, lo=0, hi=2**64 - 2)
    with np.errstate(over="ignore"):
        step = _GOLDEN * _U64(counter + 1)
    s = _seed_array(seeds)
    out = _uniform_kernel(np.ascontiguousarray(s.reshape(-1)), step).reshape(s.shape)
    return out[()] if out.ndim == 0 else out


def _seed_array(seeds, name: str = "seeds") -> np.ndarray:
    """Seeds as uint64, rejecting what ``sample`` rejects: non-integers, bools and values outside [0, 2**64).

    ``name`` is the argument the errors name. The shape is kept (a Python int gives a 0-d array).
    """
    if isinstance(seeds, (bool, np.bool_)):
        raise TypeError(f"{name} must be integers in [0, 2**64), got bool")
    if isinstance(seeds, int):
        if not 0 <= seeds < 2**64:
            raise ValueError(f"{name} must be in [0, 2**64), got {seeds}")
        return np.asarray(seeds, dtype=_U64)
    a = np.asarray(seeds)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers in [0, 2**64), got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(a.min())}")
    return a.astype(_U64)


def _row_seeds(B, seed):
    """``(B,)`` uint64 seeds: fresh entropy for ``None``, one seed for every row, or one per row."""
    if seed is None:
        return np.random.SeedSequence().generate_state(B, dtype=np.uint64)
    s = _seed_array(seed, "seed")
    if s.ndim == 0:
        return np.full(B, s, dtype=_U64)
    if s.ndim != 1 or s.shape[0] != B:
        raise ValueError(f"seed must be a scalar or a per-row array of length {B}, got shape {s.shape}")
    return s


# --------------------------------------------------------------------------- #
# Numba leaves: one block [lo, hi) of one row.
# --------------------------------------------------------------------------- #

@njit(cache=True, inline="always")
def _offset(d, b):
    """d minus the lower edge of bucket b, in [0, 1/16)."""
    return d - b * 0.0625


@njit(cache=True, inline="always")
def _bucket(d):
    s = d * 16.0  # BUCKETS_PER_NAT
    s = s if s < 1024.0 else 1024.0  # N_REGULAR; also maps d = +inf
    return np.int32(s)


@njit(cache=True)
def _blk_max(l, lo, hi):
    """(max, number of NaN/+inf) of l[lo:hi]; -inf when there is no finite value."""
    m, bad = max_and_bad(l[lo:hi])  # vectorised in IR: ~10x the plain loop
    return np.float64(m), bad


@njit(cache=True, inline="always")
def _worse(va, ia, vb, ib):
    return va < vb or (va == vb and ia > ib)


@njit(cache=True)
def _sift_down(hv, hi_, n, j):
    v, idx = hv[j], hi_[j]
    while True:
        c = 2 * j + 1
        if c >= n:
            break
        if c + 1 < n and _worse(hv[c + 1], hi_[c + 1], hv[c], hi_[c]):
            c += 1
        if _worse(hv[c], hi_[c], v, idx):
            hv[j], hi_[j] = hv[c], hi_[c]
            j = c
        else:
            break
    hv[j], hi_[j] = v, idx


@njit(cache=True)
def _heap_push_all(hv, hi_, n, k, v, idx):
    """Offer (v, idx) to a min-heap (worst at the root) of capacity k holding n items."""
    if n < k:
        j = n
        while j > 0:
            p = (j - 1) // 2
            if _worse(v, idx, hv[p], hi_[p]):
                hv[j], hi_[j] = hv[p], hi_[p]
                j = p
            else:
                break
        hv[j], hi_[j] = v, idx
        return n + 1
    if _worse(hv[0], hi_[0], v, idx):
        hv[0], hi_[0] = v, idx
        _sift_down(hv, hi_, n, 0)
    return n


@njit(cache=True)
def _blk_topk(l, lo, hi, k, hv, hi_):
    """Top-k of l[lo:hi] into the heap (hv, hi_); returns (n_in_heap, max, n_bad)."""
    n = 0
    bad = 0
    m = -np.inf
    i = lo
    while i < hi and n < k:  # fill: everything is accepted, -inf included
        v = l[i]
        bad += not (v < np.inf)
        m = max(m, v)
        n = _heap_push_all(hv, hi_, n, k, v, i)
        i += 1
    thr = hv[0]
    while i < hi:
        c1 = min(i + _CHUNK, hi)
        hit = 0
        for j in range(i, c1):  # vectorized compare-and-count; most chunks stop here
            v = l[j]
            hit += v > thr
            bad += not (v < np.inf)
        if hit:
            for j in range(i, c1):
                v = l[j]
                if v > thr:  # strict: a later equal value has a higher id and loses
                    hv[0], hi_[0] = v, j
                    _sift_down(hv, hi_, n, 0)
                    thr = hv[0]
                    m = max(m, v)
        i = c1
    return n, m, bad


@njit(cache=True)
def _heap_sort_desc(hv, hi_, n):
    """Sort the heap in place into descending order (lowest id first on ties)."""
    end = n - 1
    while end > 0:
        hv[0], hv[end] = hv[end], hv[0]
        hi_[0], hi_[end] = hi_[end], hi_[0]
        _sift_down(hv, hi_, end, 0)
        end -= 1


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _blk_hist(l, lo, hi, tt, m, xk, hist, bidx, pv):
    """Raw bucket masses sum(exp(-(d - b/16))) of tokens with x >= xk in l[lo:hi].

    ``bidx``/``pv`` are (_HCHUNK,) scratch: the arithmetic runs as one
    vectorized loop into them, the scatter into ``hist`` as a second loop.
    """
    hist[:] = 0.0
    for c0 in range(lo, hi, _HCHUNK):
        n = min(_HCHUNK, hi - c0)
        a = l[c0:c0 + n]  # index from 0: no negative-index wraparound, so the loop vectorises
        for j in range(n):
            x = a[j] / tt
            d = m - np.float64(x)
            b = _bucket(d)
            p = exp_neg_near_zero(_offset(d, b))
            pv[j] = p if ((x >= xk) & (b < 1024)) else 0.0
            bidx[j] = b
        b0 = bidx[0]
        same = 0
        for j in range(n):
            same += bidx[j] == b0
        if same == n:
            # one bucket for the whole sub-pass (a flat row): the same additions in
            # the same order, in a register instead of through memory (~1.6x faster here)
            acc = hist[b0]
            for j in range(n):
                acc += pv[j]
            hist[b0] = acc
        else:
            for j in range(n):
                hist[bidx[j]] += pv[j]


@njit(cache=True, inline="always")
def _raw_margin(t64, span):
    """Safety margin of a raw-logit bound: ``1e-5`` relative to ``span`` (the magnitudes involved)
    plus the largest error of a quotient rounded to a subnormal, scaled back by the temperature
    (half a float32 subnormal spacing, 7e-46, bounds float64's too), so a token whose scaled logit
    passes a test always passes the raw test built from it."""
    return 1e-5 * span + t64 * 1.5e-45 + 1e-300


@njit(cache=True)
def _bucket_l_bounds(tb, tt, m, lmax):
    """Logit interval [lo, hi] (with a safety margin) holding every token of bucket tb.

    Lets the collection passes test the raw logits with two compares; the
    exact bucket is recomputed for the few tokens inside.
    """
    hi = (m - tb * _WIDTH) * tt
    lo = (m - (tb + 1) * _WIDTH) * tt if tb < N_REGULAR else -np.inf
    margin = _raw_margin(np.float64(tt), abs(hi) + abs(lmax) + (abs(lo) if tb < N_REGULAR else 0.0))
    return lo - margin, hi + margin


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV, inline="always")
def _is_candidate(xf, j, tb, b, x, xlim, xc, idc):
    """Token j (scaled logit x, float64 xf, bucket b) is in bucket tb, >= xlim and not after (xc, idc)."""
    return (b == tb) & (x >= xlim) & ((xf > xc) | ((xf == xc) & (j <= idc)))


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _ids_compute(l, ids, n, tt, m, tb, xlim, xc, idc, bx, be, tok):
    """For the tokens ``ids[:n]``: float64 scaled logits ``bx``, masses ``exp(-d)`` in bucket tb ``be``
    and whether each is a candidate ``tok`` (:func:`_is_candidate`); one vectorized loop.

    The one place these values are computed, so a collected bucket and a
    streamed draw add the same masses.
    """
    scale = _BUCKET_SCALE[tb]
    for i in range(n):
        j = ids[i]
        x = l[j] / tt
        xf = np.float64(x)
        d = m - xf
        bx[i] = xf
        be[i] = scale * exp_neg_near_zero(_offset(d, tb)) if tb < N_REGULAR else 0.0
        tok[i] = _is_candidate(xf, j, tb, _bucket(d), x, xlim, xc, idc)


@njit(cache=True)
def _range_ids(l, lo, hi, llo, lhi, ids):
    """Write the ids of l[lo:hi] whose raw logit lies in [llo, lhi] to ``ids``, in order; return the count.

    A 64-bit mask per chunk (:func:`_range_mask`), its set bits visited by
    trailing-zero count: no branch or store per token outside the range (2-5x
    faster than packing the ids with a store per token).
    """
    n = 0
    for c0 in range(lo, hi, _CHUNK):
        c1 = min(c0 + _CHUNK, hi)
        mask, hit = _range_mask(l[c0:c1], llo, lhi)
        while mask:
            ids[n] = c0 + trailing_zeros(mask)
            n += 1
            mask &= mask - np.uint64(1)
    return n


@njit(cache=True, inline="always")
def _range_mask(a, llo, lhi):
    """(bit mask, count) of the raw logits ``a`` (at most 64) in [llo, lhi]: bit j for a[j] (vectorized)."""
    hit = 0
    mask = np.uint64(0)
    for j in range(a.shape[0]):
        v = a[j]
        inside = (v >= llo) & (v <= lhi)
        hit += inside
        mask |= np.uint64(inside) << np.uint64(j)
    return mask, hit


@njit(cache=True, inline="always")
def _range_hits(a, llo, lhi):
    """How many of the raw logits ``a`` lie in [llo, lhi] (vectorized: two compares per logit)."""
    hit = 0
    for j in range(a.shape[0]):
        v = a[j]
        hit += (v >= llo) & (v <= lhi)
    return hit


@njit(cache=True)
def _blk_collect(l, lo, hi, tt, m, tb, llo, lhi, xlim, xc, idc, cid, cx, ce, pos):
    """Append tokens of bucket tb with x >= xlim and (x, id) not after (xc, idc).

    ``[llo, lhi]`` bounds the bucket's raw logits (see _bucket_l_bounds).
    Writes ids, scaled logits (float64) and masses exp(-d) at cid/cx/ce[pos:],
    in id order; returns the count. Two phases: the ids of the logits in
    ``[llo, lhi]`` (:func:`_range_ids`), then, _SUB ids at a time, their
    values (:func:`_ids_compute`, vectorized) and the candidates kept in place.
    Computing the exponentials over a batch instead of a 64-token chunk's few
    hits made collecting a bucket of 7% of a 256k-token row ~2x faster.
    """
    ids = cid[pos:]
    xs = cx[pos:]
    es = ce[pos:]
    n = _range_ids(l, lo, hi, llo, lhi, ids)
    tok = np.empty(_SUB, dtype=np.int64)
    w = 0
    for i0 in range(0, n, _SUB):
        i1 = min(i0 + _SUB, n)
        bi = ids[i0:i1]
        bx = xs[i0:i1]
        be = es[i0:i1]
        _ids_compute(l, bi, i1 - i0, tt, m, tb, xlim, xc, idc, bx, be, tok)
        for i in range(i1 - i0):  # keep the candidates, in place (w <= i0 + i)
            ids[w] = bi[i]
            xs[w] = bx[i]
            es[w] = be[i]
            w += tok[i]
    return w


@njit(cache=True)
def _blk_draw(l, lo, hi, tt, m, tb, llo, lhi, xlim, xc, idc, r):
    """Inverse-CDF draw among the candidates of bucket tb (as :func:`_blk_collect` selects them).

    The candidates' masses are summed in id order; the first token whose running
    sum exceeds ``r`` is drawn, the last candidate if none does. The same
    additions in the same order as summing a collected list, streamed a
    segment of _SEG tokens at a time (their ids, then their values as one
    vectorized batch, then the running sum), stopping at the drawn token.
    Returns ``(count, id, float64 scaled logit, running sum)``: the count is 0
    when the bucket has no candidate, and only then are id and logit
    meaningless; with ``r = inf`` the sum is the mass of every candidate.
    """
    ids = np.empty(_SEG, dtype=np.int64)
    bx = np.empty(_SEG, dtype=np.float64)
    be = np.empty(_SEG, dtype=np.float64)
    tok = np.empty(_SEG, dtype=np.int64)
    acc = 0.0
    nc = 0
    last, xlast = -1, 0.0
    for s0 in range(lo, hi, _SEG):
        n = _range_ids(l, s0, min(s0 + _SEG, hi), llo, lhi, ids)
        if n == 0:
            continue
        _ids_compute(l, ids, n, tt, m, tb, xlim, xc, idc, bx, be, tok)
        for i in range(n):
            if tok[i]:
                acc += be[i]
                nc += 1
                if acc > r:
                    return nc, ids[i], bx[i], acc
                last, xlast = ids[i], bx[i]
    return nc, last, xlast, acc


@njit(cache=True)
def _tied_value(l, llo, lhi):
    """``(count, v)``: every raw logit of the row ``l`` in [llo, lhi] equals ``v``; count -1 if not.

    One early-exit scan finds the first logit in the range, one vectorized pass
    counts the range's logits and those equal to it (integer sums, no branch).
    """
    V = l.shape[0]
    v = l[0]
    i = 0
    while i < V and not ((l[i] >= llo) & (l[i] <= lhi)):
        i += 1
    if i == V:
        return -1, v
    v = l[i]
    hit = 0
    same = 0
    for c0 in range(i, V, _CHUNK):
        a = l[c0:min(c0 + _CHUNK, V)]
        for j in range(a.shape[0]):
            w = a[j]
            hit += (w >= llo) & (w <= lhi)
            same += w == v
    return (hit, v) if hit == same else (-1, v)


@njit(cache=True, inline="always")
def _reached(s, r, strict):
    return (s > r) if strict else (s >= r)


@njit(cache=True)
def _repeat_add(e, kmax, r, strict):
    """``acc = 0.0`` then ``acc += e`` (e > 0) up to kmax times, stopping at the first sum past ``r``.

    "Past" is ``> r`` when ``strict``, else ``>= r``. Returns ``(k, acc)`` after
    k additions (k = kmax when the sum never gets past ``r``), with the bits
    of that loop, computed a binade at a time: while the sum stays in
    ``[2**(p-1), 2**p)`` every addition rounds ``e`` to the same multiple of
    the binade's ulp ``u`` (the sum is a multiple of u), so j additions add
    exactly ``j * round_u(e)``. The addition that leaves a binade, and any
    where ``e / u`` is exactly half-odd (round-half-even then depends on the
    sum), are made one at a time.
    """
    acc = 0.0
    k = 0
    while k < kmax:
        if acc > 0.0:
            ex = math.frexp(acc)[1]  # acc in [2**(ex-1), 2**ex)
            top = math.ldexp(1.0, ex)
            u = math.ldexp(1.0, ex - 53)
            q = e / u  # exact: u is a power of two
            fq = math.floor(q)
            rem = q - fq
            if q < 4503599627370496.0 and rem != 0.5:  # q < 2**52; not a half-way case
                D = fq + (1.0 if rem > 0.5 else 0.0)  # e rounded to a multiple of u, in units of u
                if D == 0.0:  # e is under half an ulp: the sum no longer moves
                    return kmax, acc
                jb = min(float(kmax - k), ((top - acc) / u - 1.0) // D)  # additions whose sum stays below top
                if jb >= 1.0:
                    d = D * u
                    if not _reached(acc + jb * d, r, strict):
                        acc += jb * d  # exact: a multiple of u below top
                        k += int(jb)
                        continue
                    j = max(1.0, min(jb, math.floor((r - acc) / d)))
                    while j > 1.0 and _reached(acc + (j - 1.0) * d, r, strict):
                        j -= 1.0
                    while not _reached(acc + j * d, r, strict):
                        j += 1.0
                    return k + int(j), acc + j * d
        acc += e
        k += 1
        if _reached(acc, r, strict):
            return k, acc
    return k, acc


@njit(cache=True)
def _tied_scan(l, v, e, last_id, r, strict, n_all):
    """Running sum, in id order, of mass ``e`` per token with raw logit ``v`` and id <= last_id.

    Stops at the first token where the sum exceeds ``r`` (``strict``) or reaches
    it; otherwise ends on the last such token. Returns ``(count, id, sum)``, count
    0 (and id -1) when there is no such token. These are the additions
    :func:`_blk_draw` and :func:`_resolve` make for candidates that share one
    logit, with the same bits (:func:`_repeat_add`), without an exponential or
    a store per token: a count of the tokens (skipped when ``n_all >= 0`` gives
    it), the sums in closed form, and a count up to the token reached.
    """
    V = l.shape[0]
    end = min(V, last_id + 1)
    if n_all < 0:
        n_all = 0
        for i in range(end):
            n_all += l[i] == v
    if n_all == 0:
        return 0, -1, 0.0
    k, acc = _repeat_add(e, n_all, r, strict)
    seen = 0
    for c0 in range(0, end, _CHUNK):  # the k-th token equal to v
        c1 = min(c0 + _CHUNK, end)
        a = l[c0:c1]
        h = 0
        for j in range(c1 - c0):
            h += a[j] == v
        if seen + h >= k:
            for j in range(c1 - c0):
                seen += a[j] == v
                if seen == k:
                    return k, c0 + j, acc
        seen += h
    return k, -1, acc  # unreachable: k <= n_all tokens equal v up to last_id


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _bucket_tie(l, hist, tt, m, lmax, tb, xlim):
    """``(count, v, x, e)`` when bucket tb is large and its tokens share the raw logit v, else count -1.

    ``x`` is their float64 scaled logit and ``e`` the mass of each, computed as
    the collection passes compute it. Only buckets whose mass implies at least
    :data:`_TIE_MIN` tokens are checked (a token of bucket b has mass at most
    ``_BUCKET_SCALE[b]``), so small buckets pay nothing.
    """
    v = l[0]
    if tb >= N_REGULAR or not hist[tb] >= _TIE_MIN * _BUCKET_SCALE[tb]:
        return -1, v, 0.0, 0.0
    llo, lhi = _bucket_l_bounds(tb, tt, m, lmax)
    cnt, v = _tied_value(l, llo, lhi)
    xs = v / tt
    x = np.float64(xs)
    d = m - x
    if cnt <= 0 or _bucket(d) != tb or not xs >= xlim:
        return -1, v, 0.0, 0.0
    return cnt, v, x, _BUCKET_SCALE[tb] * exp_neg_near_zero(_offset(d, tb))


@njit(cache=True)
def _bucket_draw(l, ws, tt, m, lmax, tb, xlim, xc, idc, r, whole, tie):
    """:func:`_blk_draw` over the whole row for bucket tb, the same tokens, found with less work.

    * ``whole`` (the candidates are every token of the bucket's mass in
      ``hist``, no cut inside the bucket): the per-block masses of
      :func:`_row_hist` pick the block that holds the drawn token, and only
      that block is streamed (1/16 of a 256k-token row). The inverse CDF runs
      over blocks in block order, then over the block's tokens in id order.
    * a large bucket whose tokens share one logit (``tie``, what
      :func:`_bucket_tie` says of bucket tb): a running sum of one mass
      (:func:`_tied_scan`).
    * otherwise the whole row is streamed in id order, looking only at raw
      logits from just under the cut ``xc`` to the bucket's top (the same
      margin as :func:`_bucket_l_bounds`; the candidate test is unchanged).

    Returns ``(count, id, float64 scaled logit, running sum)`` like :func:`_blk_draw`.
    """
    V = l.shape[0]
    cnt, v, x, e = tie
    if cnt > 0:
        last_id = V if x > xc else (idc if x == xc else -1)
        n, tok, acc = _tied_scan(l, v, e, last_id, r, True, cnt if last_id >= V - 1 else -1)
        return n, tok, x, acc
    llo, lhi = _bucket_l_bounds(tb, tt, m, lmax)
    if whole and tb < N_REGULAR:
        bhist = ws.bhist
        nblk = (V + BLOCK - 1) // BLOCK
        scale = _BUCKET_SCALE[tb]
        cum = 0.0
        pick = -1
        for j in range(nblk):
            mj = bhist[j, tb] * scale
            if mj > 0.0:
                if r < cum + mj:
                    pick = j
                    break
                cum += mj
        rb = r - cum
        if pick < 0:  # rounding at the top of the bucket: the last token of its last block
            rb = np.inf
            for j in range(nblk):
                if bhist[j, tb] > 0.0:
                    pick = j
        if pick >= 0:
            lo = pick * BLOCK
            out = _blk_draw(l, lo, min(V, lo + BLOCK), tt, m, tb, llo, lhi, xlim, -np.inf, np.int64(V), rb)
            if out[0] > 0:
                return out
    if xc > -np.inf:  # candidates have x >= xc: skip the part of the bucket below the cut
        t64 = np.float64(tt)
        llo = max(llo, xc * t64 - _raw_margin(t64, abs(xc * t64) + abs(lmax)))
    return _blk_draw(l, 0, V, tt, m, tb, llo, lhi, xlim, xc, idc, r)


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV, inline="always")
def _minp_ok(d, dcut, min_p):
    """exp(-d) >= min_p for a token d below the maximum (``dcut = -log(min_p)``); exact near the cut."""
    return d < dcut - 1e-9 or (d <= dcut + 1e-9 and exp_neg_1ulp(d) >= min_p)


@njit(cache=True)
def _blk_minp(l, lo, hi, tt, m, min_p):
    """Smallest scaled logit (float64) among tokens with exp(x - max) >= min_p."""
    return _blk_minp_range(l, lo, hi, tt, m, -np.inf, np.inf, min_p)


def _bits_view(a):
    """The same memory as integers of the float's width (compiled only; see the overload)."""
    raise NotImplementedError


@overload(_bits_view, jit_options={"cache": True})
def _bits_view_ov(a):
    if isinstance(a, types.Array) and a.dtype == types.float32:
        return lambda a: a.view(np.int32)
    if isinstance(a, types.Array) and a.dtype == types.float64:
        return lambda a: a.view(np.int64)
    return None


@njit(cache=True, inline="always")
def _order_key(bits, sh, mx):
    """Integer with the order of the float whose bits are ``bits`` (not NaN; -0.0 just below +0.0).

    Negative floats have their magnitude bits flipped; an involution, so it
    also turns a key back into bits.
    """
    return bits ^ ((bits >> sh) & mx)


@njit(cache=True)
def _raw_min_and_band(l, lo, hi, llo, vhi, lhi, blo, bhi):
    """(smallest raw logit of l[lo:hi] in [llo, lhi] and above vhi, whether there is one, count in [blo, bhi]).

    The logit keeps the logits dtype (dividing it by the temperature must
    round as every token's quotient does).

    One vectorized pass: the minimum is taken over integer keys of the logits'
    bits (an integer minimum vectorizes, a float one needs fast-math flags that
    would drop -inf semantics).
    """
    a = l[lo:hi]
    ai = _bits_view(a)
    sh = ai.itemsize * 8 - 1
    mx = ~(np.int64(-1) << sh)
    best = mx
    near = 0
    for j in range(hi - lo):
        v = a[j]
        k = _order_key(np.int64(ai[j]), sh, mx)
        best = min(best, k if (v >= llo) & (v > vhi) & (v <= lhi) else mx)
        near += (v >= blo) & (v <= bhi)
    out = np.empty(1, dtype=ai.dtype)
    out[0] = _order_key(best, sh, mx)
    return out.view(l.dtype)[0], best != mx, near  # mx: the largest NaN's key, i.e. none found


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _blk_minp_range(l, lo, hi, tt, m, llo, lhi, min_p):
    """Smallest scaled logit (float64) with exp(x - max) >= min_p among tokens whose raw logit is in [llo, lhi].

    Dividing by the temperature is monotone, so the test moves to the raw
    logits: above a raw threshold ``vhi`` every token is clearly inside the
    cut, below ``vlo`` clearly outside (both :func:`_raw_margin` beyond the
    cut's 1e-9 band, more than a division's rounding, subnormal quotients
    included). One vectorized pass
    (:func:`_raw_min_and_band`) takes the smallest raw logit above ``vhi``
    and counts the tokens between the two, which then get the exact test of
    :func:`_blk_minp_exact`. The minimum is the one testing every token finds
    (0.14 ms for 256k tokens wherever the cut lies; testing each token cost
    0.06-0.7 ms, the most when the range holds most of the row). Thresholds
    that are not finite (extreme temperatures) take :func:`_blk_minp_exact`.
    """
    dcut = -math.log(min_p)
    t64 = np.float64(tt)
    vhi = (m - (dcut - 1e-9)) * t64
    vlo = (m - (dcut + 1e-9)) * t64
    margin = _raw_margin(t64, abs(vhi) + abs(vlo) + abs(m * t64))
    vhi += margin
    vlo -= margin
    if not (math.isfinite(vhi) and math.isfinite(vlo)):
        return _blk_minp_exact(l, lo, hi, tt, m, llo, lhi, min_p)
    blo = max(llo, vlo)
    bhi = min(lhi, vhi)
    vmin, found, near = _raw_min_and_band(l, lo, hi, llo, vhi, lhi, blo, bhi)
    best = np.float64(vmin / tt) if found else np.inf  # divided in the logits dtype, like every token
    if near:
        best = min(best, _blk_minp_exact(l, lo, hi, tt, m, blo, bhi, min_p))
    return best


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _blk_minp_exact(l, lo, hi, tt, m, llo, lhi, min_p):
    """:func:`_blk_minp_range` testing every token in [llo, lhi] on its scaled logit (any thresholds).

    Chunks with no logit in the range are skipped after a vectorized count.
    Tokens clearly inside the cut are taken with selects, not branches; the
    few within 1e-9 of it get the exact test in a second loop. (Written as one
    ``or``, LLVM evaluated the exact test's ``2.0 ** n`` for every token
    that failed the first compare: ~8 ns a token.) The minimum is the same.
    """
    best = np.inf
    dcut = -math.log(min_p)
    for c0 in range(lo, hi, _CHUNK):
        c1 = min(c0 + _CHUNK, hi)
        a = l[c0:c1]
        if _range_hits(a, llo, lhi):
            near = 0
            for j in range(c1 - c0):
                v = a[j]
                x = np.float64(v / tt)
                d = m - x
                inside = (v >= llo) & (v <= lhi)
                best = min(best, x) if inside & (d < dcut - 1e-9) else best
                near += inside & (d >= dcut - 1e-9) & (d <= dcut + 1e-9)
            if near:
                for j in range(c1 - c0):
                    v = a[j]
                    if (v >= llo) & (v <= lhi):
                        x = np.float64(v / tt)
                        best = min(best, x) if _minp_ok(m - x, dcut, min_p) else best
    return best


@njit(cache=True, fastmath=FASTMATH_EXACT_DIV)
def _blk_write(l, lo, hi, tt, xc, idc, out):
    """out = scaled logits where (x, id) is not after the cut (xc, idc), else -inf."""
    for i in range(lo, hi):
        x = l[i] / tt
        xf = np.float64(x)
        keep = (xf > xc) | ((xf == xc) & (i <= idc))
        out[i] = x if keep else -np.inf


# --------------------------------------------------------------------------- #
# Pass drivers: the same block leaves, serial (one thread per row) or over
# threads (within one row).  Both merge per-block results in block order.
# --------------------------------------------------------------------------- #

_P_MAX, _P_TOPK, _P_HIST, _P_COLLECT, _P_MINP, _P_WRITE = 0, 1, 2, 3, 4, 5
# typed zeros so every call of _par_pass has one signature (one compile per dtype)
_F0 = np.float64(0.0)
_I0 = np.int64(0)

#: Scratch of the pass drivers for one row of V tokens in nblk blocks (one per
#: thread group in the rows driver). Slots a pass does not use may be (1,) or
#: (1, 1) placeholders of the same dtype, so every caller shares one signature.
RowWorkspace = namedtuple("RowWorkspace", [
    "bmax",    # (nblk,) float64: each block's largest scaled logit
    "bbad",    # (nblk,) int64: each block's count of NaN / +inf logits
    "bn",      # (nblk,) int64: entries in each block's top-k heap
    "bhv",     # (nblk, k) logits dtype: each block's top-k heap values
    "bhi",     # (nblk, k) int64: each block's top-k heap token ids
    "bhist",   # (nblk, NB) float64: each block's raw bucket masses (kept for the draw)
    "cid",     # (V,) int64: ids of the collected tokens of one bucket
    "cx",      # (V,) float64: their scaled logits
    "ce",      # (V,) float64: their unnormalised probabilities
    "bcount",  # (nblk,) int64: tokens each block collected
    "bmin",    # (nblk,) float64: each block's min-p threshold result
])

#: The scalar operands of one :func:`_par_pass`; a pass reads only its own
#: (the others are typed zeros, so every pass has one signature).
PassArgs = namedtuple("PassArgs", [
    "tt",     # temperature in the logits dtype
    "m",      # float64 row maximum of the scaled logits
    "xk",     # float64 lower bound on scaled logits (the top-k threshold) / collect limit
    "k",      # int64 top-k size
    "tb",     # int64 bucket to collect
    "llo",    # float64 lowest raw logit of that bucket
    "lhi",    # float64 highest raw logit of that bucket
    "xc",     # float64 scaled logit of the crossing token (write / collect cut)
    "idc",    # int64 id of the crossing token
    "min_p",  # float64 min-p factor
])


@njit(cache=True)
def _pass_args(tt, m, xk, k, tb, llo, lhi, xc, idc, min_p):
    """:class:`PassArgs` with every slot in its one type."""
    return PassArgs(tt=tt, m=np.float64(m), xk=np.float64(xk), k=np.int64(k), tb=np.int64(tb),
                    llo=np.float64(llo), lhi=np.float64(lhi), xc=np.float64(xc), idc=np.int64(idc),
                    min_p=np.float64(min_p))


@njit(cache=True)
def _par_pass(kind, l, out, ws, a):
    """One pass of kind ``kind`` over the blocks of one row, blocks spread over threads.

    ``ws`` is the row's :class:`RowWorkspace`, ``a`` the pass's :class:`PassArgs`.
    The parallel loop itself (:func:`_par_blocks`) takes every field as its own
    argument: arrays taken out of a tuple for a parfor were not written back.
    """
    _par_blocks(kind, l, out, ws.bmax, ws.bbad, ws.bn, ws.bhv, ws.bhi, ws.bhist, ws.cid, ws.cx, ws.ce,
                ws.bcount, ws.bmin, a.tt, a.m, a.xk, a.k, a.tb, a.llo, a.lhi, a.xc, a.idc, a.min_p)


@njit(cache=True, parallel=True)
def _par_blocks(kind, l, out, bmax, bbad, bn, bhv, bhi, bhist, cid, cx, ce, bcount, bmin,
                tt, m, xk, k, tb, llo, lhi, xc, idc, min_p):
    """The parallel loop of :func:`_par_pass`: the fields of its :class:`RowWorkspace`
    and :class:`PassArgs`, in order.

    A single parallel function (rather than one per pass) keeps compile time
    down. Each block writes only its own slot, so results never depend on the
    schedule.
    """
    V = l.shape[0]
    nblk = (V + BLOCK - 1) // BLOCK
    for j in prange(nblk):
        lo = j * BLOCK
        hi = min(V, lo + BLOCK)
        if kind == _P_MAX:
            bmax[j], bbad[j] = _blk_max(l, lo, hi)
        elif kind == _P_TOPK:
            bn[j], bmax[j], bbad[j] = _blk_topk(l, lo, hi, k, bhv[j], bhi[j])
        elif kind == _P_HIST:
            bidx = np.empty(_HCHUNK, dtype=np.int32)
            pv = np.empty(_HCHUNK, dtype=np.float64)
            _blk_hist(l, lo, hi, tt, m, xk, bhist[j], bidx, pv)
        elif kind == _P_COLLECT:
            bcount[j] = _blk_collect(l, lo, hi, tt, m, tb, llo, lhi, xk, xc, idc, cid, cx, ce, lo)
        elif kind == _P_MINP:
            bmin[j] = _blk_minp(l, lo, hi, tt, m, min_p)
        else:
            _blk_write(l, lo, hi, tt, xc, idc, out)


@njit(cache=True)
def _row_max(l, par, ws):
    bmax, bbad = ws.bmax, ws.bbad
    V = l.shape[0]
    if not par or V <= BLOCK:  # one block: a parallel launch would only add overhead
        return _blk_max(l, 0, V)
    _par_pass(_P_MAX, l, l, ws, _pass_args(l[0], _F0, _F0, _I0, _I0, _F0, _F0, _F0, _I0, _F0))
    nblk = (V + BLOCK - 1) // BLOCK
    m = -np.inf
    bad = 0
    for j in range(nblk):
        m = max(m, bmax[j])
        bad += bbad[j]
    return m, bad


@njit(cache=True)
def _row_topk(l, par, ws, k, hv, hi_):
    """Top-k heap of the row in (hv, hi_); returns (n, max, n_bad)."""
    V = l.shape[0]
    if not par or V <= BLOCK:  # one block: a parallel launch would only add overhead
        return _blk_topk(l, 0, V, k, hv, hi_)
    bmax, bbad, bn, bhv, bhi = ws.bmax, ws.bbad, ws.bn, ws.bhv, ws.bhi
    _par_pass(_P_TOPK, l, l, ws, _pass_args(l[0], _F0, _F0, k, _I0, _F0, _F0, _F0, _I0, _F0))
    nblk = (V + BLOCK - 1) // BLOCK
    n = 0
    m = -np.inf
    bad = 0
    for j in range(nblk):
        m = max(m, bmax[j])
        bad += bbad[j]
        for t in range(bn[j]):
            n = _heap_push_all(hv, hi_, n, k, bhv[j, t], bhi[j, t])
    return n, m, bad


@njit(cache=True)
def _row_hist(l, par, ws, tt, m, xk, hist):
    """Bucket masses (float64, NB) of tokens with x >= xk: block sums merged in block order.

    Each block's raw sums stay in ``ws.bhist`` (nblk, NB) for :func:`_bucket_draw`.
    """
    bhist = ws.bhist
    V = l.shape[0]
    nblk = (V + BLOCK - 1) // BLOCK
    hist[:] = 0.0
    if par and V > BLOCK:
        _par_pass(_P_HIST, l, l, ws, _pass_args(tt, m, xk, _I0, _I0, _F0, _F0, _F0, _I0, _F0))
        for j in range(nblk):
            for b in range(NB):
                hist[b] += bhist[j, b]
    else:
        bidx = np.empty(_HCHUNK, dtype=np.int32)
        pv = np.empty(_HCHUNK, dtype=np.float64)
        for j in range(nblk):
            _blk_hist(l, j * BLOCK, min(V, (j + 1) * BLOCK), tt, m, xk, bhist[j], bidx, pv)
            for b in range(NB):
                hist[b] += bhist[j, b]
    for b in range(NB):
        hist[b] *= _BUCKET_SCALE[b]


@njit(cache=True)
def _row_collect(l, par, ws, tt, m, lmax, tb, xlim, xc, idc):
    """Tokens of bucket tb passing the filters, in id order, at the front of cid/cx/ce."""
    cid, cx, ce, bcount = ws.cid, ws.cx, ws.ce, ws.bcount
    V = l.shape[0]
    llo, lhi = _bucket_l_bounds(tb, tt, m, lmax)
    # The scan is two compares per logit (~0.2 ns): below _COLLECT_PAR_V a
    # parallel launch (waking the other threads) costs more than it saves, and
    # on a loaded machine far more.  Serial and parallel give identical output.
    if not par or V <= _COLLECT_PAR_V:
        return _blk_collect(l, 0, V, tt, m, tb, llo, lhi, xlim, xc, idc, cid, cx, ce, 0)
    _par_pass(_P_COLLECT, l, l, ws, _pass_args(tt, m, xlim, _I0, tb, llo, lhi, xc, idc, _F0))
    nblk = (V + BLOCK - 1) // BLOCK
    n = 0
    for j in range(nblk):
        lo = j * BLOCK
        for t in range(bcount[j]):
            cid[n] = cid[lo + t]
            cx[n] = cx[lo + t]
            ce[n] = ce[lo + t]
            n += 1
    return n


@njit(cache=True)
def _row_minp(l, par, ws, tt, m, min_p):
    bmin = ws.bmin
    V = l.shape[0]
    if not par or V <= BLOCK:  # one block: a parallel launch would only add overhead
        return _blk_minp(l, 0, V, tt, m, min_p)
    _par_pass(_P_MINP, l, l, ws, _pass_args(tt, m, _F0, _I0, _I0, _F0, _F0, _F0, _I0, min_p))
    nblk = (V + BLOCK - 1) // BLOCK
    best = np.inf
    for j in range(nblk):
        best = min(best, bmin[j])
    return best


@njit(cache=True)
def _row_minp_hist(l, par, ws, tt, m, lmax, min_p, hist):
    """:func:`_row_minp` for a row whose bucket masses ``hist`` (of tokens with x >= xk) are known.

    Tokens more than ``-log(min_p)`` below the maximum fail min-p; those of a
    non-empty bucket entirely inside the cut pass it, and every token in a
    lower bucket lies above them. So the smallest passing logit lies between
    the highest such bucket and the cut's bucket: one scan of the tokens in
    that logit range finds exactly what the full pass finds (tokens under the
    top-k threshold are all below the hist's tokens, so cannot sit lower).
    """
    dcut = -math.log(min_p)
    bhi = _bucket(dcut + 1e-9)
    if bhi >= N_REGULAR:  # the cut is in the overflow bucket, which has no masses
        return _row_minp(l, par, ws, tt, m, min_p)
    blo = _bucket(max(dcut - 1e-9, 0.0))  # buckets below blo lie wholly inside the cut
    hb = 0
    for b in range(blo):
        if hist[b] > 0.0:
            hb = b
    llo = _bucket_l_bounds(bhi, tt, m, lmax)[0]
    lhi = _bucket_l_bounds(hb, tt, m, lmax)[1]
    return _blk_minp_range(l, 0, l.shape[0], tt, m, llo, lhi, min_p)


@njit(cache=True)
def _row_write(l, par, ws, tt, xc, idc, out):
    if par and l.shape[0] > BLOCK:
        _par_pass(_P_WRITE, l, out, ws, _pass_args(tt, _F0, _F0, _I0, _I0, _F0, _F0, xc, idc, _F0))
    else:
        _blk_write(l, 0, l.shape[0], tt, xc, idc, out)


@njit(cache=True, inline="always")
def _sub_bucket(xmax, span, x):
    # divide (not multiply by a reciprocal) so a subnormal span cannot overflow
    return min(_SUB - 1, int((xmax - x) / span * (_SUB - 1)))


@njit(cache=True, inline="always")
def _crossing_bucket(mass, n_buckets, need):
    """First non-empty bucket whose cumulative mass (itself included) reaches ``need``.

    ``mass[:n_buckets]`` in order. Returns ``(b, mass before b, True)``; when
    rounding leaves ``need`` unreached, ``(last non-empty bucket, mass before it,
    False)``, and ``(-1, 0.0, False)`` for no mass at all. The sums run in bucket
    order, the same additions wherever the crossing is looked for.
    """
    cum = 0.0
    for b in range(n_buckets):
        if mass[b] > 0.0:
            if cum + mass[b] >= need:
                return b, cum, True
            cum += mass[b]
    last = -1
    for b in range(n_buckets):
        if mass[b] > 0.0:
            last = b
    cum = 0.0
    for b in range(last):
        cum += mass[b]
    return last, cum, False


@njit(cache=True)
def _resolve(cid, cx, ce, n, need):
    """Crossing token among candidates (id order) taken in (x desc, id asc) order.

    The crossing token is the first whose cumulative mass (including itself)
    reaches ``need``; if rounding leaves ``need`` unreached, the last one.
    Returns (x, id, mass up to and including it).  Reorders cid/cx/ce.
    """
    above = 0.0
    sub = np.empty(_SUB, dtype=np.float64)
    tied = False
    while True:
        if n <= _SMALL:
            break
        xmin, xmax = np.inf, -np.inf
        for i in range(n):
            xmin = min(xmin, cx[i])
            xmax = max(xmax, cx[i])
        if xmin == xmax:
            tied = True  # all tied: id order is the order, no sorting needed
            break
        span = xmax - xmin
        sub[:] = 0.0
        for i in range(n):
            sub[_sub_bucket(xmax, span, cx[i])] += ce[i]
        # rounding may leave need unreached: then the last non-empty sub-bucket
        kb, cum, _ = _crossing_bucket(sub, _SUB, need)
        # keep only sub-bucket kb (order preserved)
        w = 0
        for i in range(n):
            if _sub_bucket(xmax, span, cx[i]) == kb:
                cid[w], cx[w], ce[w] = cid[i], cx[i], ce[i]
                w += 1
        if w == n:  # no progress possible (should not happen); fall back to sorting
            break
        n = w
        above += cum
        need -= cum
    # stable insertion sort by x descending (ids already ascending)
    for i in range(1, 0 if tied else n):
        a, b_, c = cid[i], cx[i], ce[i]
        j = i - 1
        while j >= 0 and cx[j] < b_:
            cid[j + 1], cx[j + 1], ce[j + 1] = cid[j], cx[j], ce[j]
            j -= 1
        cid[j + 1], cx[j + 1], ce[j + 1] = a, b_, c
    acc = 0.0
    for i in range(n):
        acc += ce[i]
        if acc >= need:
            return cx[i], cid[i], above + acc
    return cx[n - 1], cid[n - 1], above + acc


@njit(cache=True)
def _before(xa, ia, xb, ib):
    """True when (xa, ia) comes strictly before (xb, ib) in (x desc, id asc) order."""
    return xa > xb or (xa == xb and ia < ib)


@njit(cache=True)
def _process_row(l, tt, k, top_p, min_p, u, mode, par, out, ws, hv, hi_, hist):
    """Filter (mode 0, writes ``out``) or sample (mode 1) one row.

    ``par`` spreads the row's blocks over the threads; otherwise one thread
    does them in order.  Both give bit-identical results.  ``ws`` is the
    row's :class:`RowWorkspace`; (hv, hi_) a top-k heap; ``hist`` (NB,).
    Returns (status, token, logprob).
    """
    V = l.shape[0]
    big = np.int64(V)
    # 1. row maximum (and the k-th largest logit when top-k is on)
    use_k = 0 < k < V and tt != 0
    # lv = (row max, k-th largest logit) held in the logits dtype: as locals,
    # Numba unifies ``hv[0]`` with ``-np.inf`` to float64, and ``lk / tt``
    # becomes a float64 division, rounded differently from the float32
    # quotient of each token it is compared with (dropping the k-th token).
    lv = np.empty(2, dtype=l.dtype)
    if use_k:
        n, lmax, bad = _row_topk(l, par, ws, k, hv, hi_)
        lv[1] = hv[0]
    else:
        lmax, bad = _row_max(l, par, ws)
        lv[1] = -np.inf
    if bad:
        return _BAD_VALUE, -1, 0.0
    if lmax == -np.inf:
        return _NO_FINITE, -1, 0.0
    if tt == 0:  # greedy: first maximum, no randomness
        j = 0
        while l[j] != lmax:
            j += 1
        if mode == 0:
            out[:] = -np.inf
            out[j] = lmax
        return _OK, j, 0.0
    lv[0] = lmax  # back to the logits dtype: the scaling must divide in that dtype
    mx = lv[0] / tt
    if mx == np.inf:
        return _OVERFLOW, -1, 0.0
    m = np.float64(mx)
    xk = np.float64(lv[1] / tt)  # k-th largest scaled logit, divided exactly as each token is
    # 2. cuts in (x desc, id asc) order; keep everything not after the cut
    xc, idc = xk, big
    kind = 1 if use_k else 0  # 0 none, 1 top-k, 2 top-p, 3 min-p
    acc_p = 0.0
    tie_b, tie = -1, (-1, l[0], 0.0, 0.0)  # the last bucket checked for one shared logit (_bucket_tie)
    need_hist = mode == 1 or top_p < 1.0
    if need_hist:
        _row_hist(l, par, ws, tt, m, xk, hist)
    xm = np.inf
    if min_p > 0.0:
        if need_hist:
            xm = _row_minp_hist(l, par, ws, tt, m, lmax, min_p, hist)
        else:
            xm = _row_minp(l, par, ws, tt, m, min_p)
    if top_p < 1.0:
        z = 0.0
        for b in range(NB):
            z += hist[b]
        thr = top_p * z
        bs, cum, reached = _crossing_bucket(hist, N_REGULAR, thr)
        need = thr - cum if reached else np.inf  # rounding left thr unreached: keep every token with mass
        # A min-p cut in a bucket above the top-p crossing comes before the crossing
        # token whatever it is, and then decides alone: skip finding the crossing.
        if not (min_p > 0.0 and _bucket(m - xm) < bs):
            tie_b, tie = bs, _bucket_tie(l, hist, tt, m, lmax, bs, xk)
            cnt, v, pxc, e = tie
            if cnt > 0:  # one shared logit: the crossing is a running sum in id order
                pid, acc_p = _tied_scan(l, v, e, big, need, False, cnt)[1:]
            else:
                nc = _row_collect(l, par, ws, tt, m, lmax, bs, xk, -np.inf, big)
                pxc, pid, acc_p = _resolve(ws.cid, ws.cx, ws.ce, nc, need)
            if _before(pxc, pid, xc, idc):
                xc, idc, kind = pxc, pid, 2
    if min_p > 0.0:
        if _before(xm, big, xc, idc):
            xc, idc, kind = xm, big, 3
    if mode == 0:
        _row_write(l, par, ws, tt, xc, idc, out)
        return _OK, -1, 0.0
    # 3. mass of the kept set, then one inverse-CDF draw
    bc = _bucket(m - xc)
    partial = 0.0
    if kind == 2:
        partial = acc_p
    elif kind == 1 or kind == 0:
        partial = hist[bc] if bc < N_REGULAR else 0.0
    else:
        if tie_b != bc:
            tie_b, tie = bc, _bucket_tie(l, hist, tt, m, lmax, bc, xk)
        partial = _bucket_draw(l, ws, tt, m, lmax, bc, xk, xc, idc, np.inf, False, tie)[3]
    zk = 0.0
    for b in range(min(bc, N_REGULAR)):
        zk += hist[b]
    zk += partial
    target = u * zk
    cum = 0.0
    pick = -1
    for b in range(min(bc, N_REGULAR)):
        if hist[b] > 0.0 and target < cum + hist[b]:
            pick = b
            break
        cum += hist[b]
    if pick < 0 and partial > 0.0 and bc < N_REGULAR:
        pick = bc
    if pick < 0:  # rounding at the very top of the CDF: last bucket with mass
        for b in range(min(bc + 1, N_REGULAR)):
            if hist[b] > 0.0 and (b < bc or partial > 0.0):
                pick = b
        cum = 0.0
        for b in range(pick):
            cum += hist[b]
        target = np.inf
    if pick < 0 or not zk > 0.0:
        return _NO_CANDIDATE, -1, 0.0
    if tie_b != pick:
        tie_b, tie = pick, _bucket_tie(l, hist, tt, m, lmax, pick, xk)
    if pick == bc:  # the cut may fall inside this bucket (whole when it is the top-k/no cut)
        nc, tok, xtok, _ = _bucket_draw(l, ws, tt, m, lmax, pick, xk, xc, idc, target - cum, kind <= 1, tie)
    else:
        nc, tok, xtok, _ = _bucket_draw(l, ws, tt, m, lmax, pick, xk, -np.inf, big, target - cum, True, tie)
    if nc == 0:
        # Unreachable while the kept set holds the row maximum (it always
        # does); a status instead of a token from an empty bucket if that ever breaks.
        return _NO_CANDIDATE, -1, 0.0
    dtok = m - xtok
    return _OK, tok, -dtok - math.log(zk)


@njit(cache=True, parallel=True)
def _rows_driver(l2, tts, ks, tps, mps, us, mode, out, ngroups, maxk,
                 bhist, cid, cx, ce, tokens, logps, status):
    """Rows spread over ``ngroups`` threads, each row processed by one thread.

    Scratch ``bhist`` (G, nblk, NB) and ``cid``/``cx``/``ce`` (G, V) are per group.
    """
    B, V = l2.shape
    nblk = (V + BLOCK - 1) // BLOCK
    per = (B + ngroups - 1) // ngroups
    kk = max(maxk, 1)
    for g in prange(ngroups):
        ws = RowWorkspace(
            bmax=np.empty(nblk, dtype=np.float64), bbad=np.empty(nblk, dtype=np.int64),
            bn=np.empty(nblk, dtype=np.int64), bhv=np.empty((1, 1), dtype=l2.dtype),
            bhi=np.empty((1, 1), dtype=np.int64), bhist=bhist[g], cid=cid[g], cx=cx[g], ce=ce[g],
            bcount=np.empty(nblk, dtype=np.int64), bmin=np.empty(nblk, dtype=np.float64))
        hv = np.empty(kk, dtype=l2.dtype)
        hi_ = np.empty(kk, dtype=np.int64)
        hist = np.empty(NB, dtype=np.float64)
        for r in range(g * per, min(B, (g + 1) * per)):
            s, t, lp = _process_row(l2[r], tts[r], ks[r], tps[r], mps[r], us[r], mode, False,
                                    out[r], ws, hv, hi_, hist)
            status[r] = s
            tokens[r] = t
            logps[r] = lp


@njit(cache=True)
def _row_par_driver(l2, tts, ks, tps, mps, us, mode, out, maxk, bhist, cid, cx, ce,
                    tokens, logps, status):
    """Rows one at a time, each row's blocks spread over the threads.

    Scratch ``bhist`` (nblk, NB) and ``cid``/``cx``/``ce`` (V,).
    """
    B, V = l2.shape
    nblk = (V + BLOCK - 1) // BLOCK
    kk = max(maxk, 1)
    ws = RowWorkspace(
        bmax=np.empty(nblk, dtype=np.float64), bbad=np.empty(nblk, dtype=np.int64),
        bn=np.empty(nblk, dtype=np.int64), bhv=np.empty((nblk, kk), dtype=l2.dtype),
        bhi=np.empty((nblk, kk), dtype=np.int64), bhist=bhist, cid=cid, cx=cx, ce=ce,
        bcount=np.empty(nblk, dtype=np.int64), bmin=np.empty(nblk, dtype=np.float64))
    hv = np.empty(kk, dtype=l2.dtype)
    hi_ = np.empty(kk, dtype=np.int64)
    hist = np.empty(NB, dtype=np.float64)
    for r in range(B):
        s, t, lp = _process_row(l2[r], tts[r], ks[r], tps[r], mps[r], us[r], mode, True,
                                out[r], ws, hv, hi_, hist)
        status[r] = s
        tokens[r] = t
        logps[r] = lp


@njit(cache=True, parallel=True)
def _topk_rows(l2, k, ngroups, vals, idx, status):
    B, V = l2.shape
    per = (B + ngroups - 1) // ngroups
    for g in prange(ngroups):
        for r in range(g * per, min(B, (g + 1) * per)):
            n, m, bad = _blk_topk(l2[r], 0, V, k, vals[r], idx[r])
            _heap_sort_desc(vals[r], idx[r], n)
            status[r] = _BAD_VALUE if bad else (_NO_FINITE if m == -np.inf else _OK)


@njit(cache=True)
def _topk_row_par(l2, k, vals, idx, status):
    B, V = l2.shape
    nblk = (V + BLOCK - 1) // BLOCK
    # same workspace types as the sampling path, so _par_pass is compiled once per dtype
    ws = RowWorkspace(
        bmax=np.empty(nblk, dtype=np.float64), bbad=np.empty(nblk, dtype=np.int64),
        bn=np.empty(nblk, dtype=np.int64), bhv=np.empty((nblk, k), dtype=l2.dtype),
        bhi=np.empty((nblk, k), dtype=np.int64), bhist=np.empty((1, NB), dtype=np.float64),
        cid=np.empty(1, dtype=np.int64), cx=np.empty(1, dtype=np.float64),
        ce=np.empty(1, dtype=np.float64), bcount=np.empty(nblk, dtype=np.int64),
        bmin=np.empty(nblk, dtype=np.float64))
    for r in range(B):
        n, m, bad = _row_topk(l2[r], True, ws, k, vals[r], idx[r])
        _heap_sort_desc(vals[r], idx[r], n)
        status[r] = _BAD_VALUE if bad else (_NO_FINITE if m == -np.inf else _OK)


# --------------------------------------------------------------------------- #
# Public API.
# --------------------------------------------------------------------------- #

def _raise_status(status, temperature_rows):
    bad = np.nonzero(status != _OK)[0]
    if bad.size == 0:
        return
    r = int(bad[0])
    s = int(status[r])
    if s == _BAD_VALUE:
        raise ValueError(f"logits must not contain NaN or +inf (first bad row {r})")
    if s == _NO_FINITE:
        raise ValueError(f"logits row {r} has no finite logit")
    if s == _NO_CANDIDATE:
        raise RuntimeError(f"sampling row {r}: no token survived the filters "
                           "(an internal invariant broke; please report it)")
    raise ValueError(
        f"temperature {temperature_rows[r]} is too small for row {r}: "
        "the scaled logits overflow the logits dtype"
    )


def _use_row_par(B):
    return B < numba.get_num_threads()


#: What :func:`_prepare` hands the public functions.
Prepared = namedtuple("Prepared", [
    "logits",         # (B, V) C-contiguous logits
    "squeeze",        # True when the input was one row (V,)
    "temperature",    # (B,) float64 temperatures as given (for error messages)
    "temperature_dt", # (B,) temperatures in the logits dtype (what the kernels scale by)
    "top_k",          # (B,) int64, 0 where top-k is off (k <= 0 or k >= V)
    "top_p",          # (B,) float64
    "min_p",          # (B,) float64
])


def _prepare(logits, temperature, top_k_, top_p, min_p) -> Prepared:
    a = check_float_array("logits", logits, (1, 2))
    l2, squeeze = _as_2d(a)
    if not l2.flags.c_contiguous:
        l2 = np.ascontiguousarray(l2)
    B, V = l2.shape
    if V == 0:
        raise ValueError("logits must have at least one token (V >= 1)")
    t, k, p, mp = _row_params(B, temperature, top_k_, top_p, min_p)
    tdt = _temperature_in_dtype(t, l2.dtype)  # scaling happens in the logits dtype
    # (overflow of the scaled maximum is detected inside the kernel, row by row)
    k = np.where((k <= 0) | (k >= V), 0, k)
    return Prepared(logits=l2, squeeze=squeeze, temperature=t, temperature_dt=tdt, top_k=k, top_p=p, min_p=mp)


_WORKSPACE = threading.local()


def _workspace(key, make):
    """Scratch arrays for ``key``, reused by later calls with the same key on this thread.

    A decode loop calls the kernels with one shape over and over; allocating
    the O(V) scratch (24 bytes per token) and finding its aligned start each
    time cost ~50 us per call. Only the most recent key is kept per thread
    (bounded memory), and each Python thread has its own, so concurrent
    callers never share scratch. The kernels fully overwrite what they read.
    """
    held = getattr(_WORKSPACE, "held", None)
    if held is None or held[0] != key:
        held = _WORKSPACE.held = (key, make())
    return held[1]


def _run(pr: Prepared, u, mode, out):
    l2, tdt, k, p, mp = pr.logits, pr.temperature_dt, pr.top_k, pr.top_p, pr.min_p
    B, V = l2.shape
    tokens = np.empty(B, dtype=np.int64)
    logps = np.empty(B, dtype=np.float64)
    status = np.zeros(B, dtype=np.int64)
    if B == 0:
        return tokens, logps, status
    maxk = int(k.max())
    nblk = (V + BLOCK - 1) // BLOCK
    if _use_row_par(B):
        bhist, cid, cx, ce = _workspace(("row", nblk, V), lambda: (
            aligned_empty((nblk, NB), np.float64), aligned_empty(V, np.int64),
            aligned_empty(V, np.float64), aligned_empty(V, np.float64)))
        _row_par_driver(l2, tdt, k, p, mp, u, mode, out, maxk, bhist, cid, cx, ce,
                        tokens, logps, status)
    else:
        ng = min(B, numba.get_num_threads())
        bhist, cid, cx, ce = _workspace(("rows", ng, V), lambda: (
            aligned_empty((ng, nblk, NB), np.float64), aligned_empty((ng, V), np.int64),
            aligned_empty((ng, V), np.float64), aligned_empty((ng, V), np.float64)))
        _rows_driver(l2, tdt, k, p, mp, u, mode, out, ng, maxk, bhist, cid, cx, ce,
                     tokens, logps, status)
    return tokens, logps, status


def filter_logits(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """Temperature-scale logits and set every token removed by top-k/top-p/min-p to -inf.

    Parameters
    ----------
    logits : ndarray, (B, V) or (V,), float32 or float64
    temperature : float or (B,) array
        ``0`` is greedy (only the first argmax survives and keeps its unscaled
        logit); ``> 0`` divides the logits in the logits dtype.
    top_k : int or (B,) int array
        Keep every token whose scaled logit is >= the k-th largest (ties kept).
        ``<= 0`` or ``>= V`` disables it.
    top_p : float or (B,) array in (0, 1]
        Keep the smallest set of most probable tokens (descending probability,
        lower id first on ties) whose float64 mass reaches ``top_p`` of the
        top-k-renormalised distribution; the crossing token is kept.
    min_p : float or (B,) array in [0, 1]
        Keep tokens with probability >= ``min_p`` times the largest.

    Filters apply in the order temperature, top-k, top-p, min-p.

    Returns
    -------
    ndarray, same shape and dtype as ``logits``.
    """
    pr = _prepare(logits, temperature, top_k, top_p, min_p)
    out = aligned_empty(pr.logits.shape, pr.logits.dtype)  # (B, V)
    u = np.zeros(pr.logits.shape[0])
    _, _, status = _run(pr, u, 0, out)
    _raise_status(status, pr.temperature)
    return out[0] if pr.squeeze else out


def sample(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=None,
           return_logprobs=False):
    """Draw one token per row from the filtered, renormalised distribution.

    Parameters
    ----------
    logits, temperature, top_k, top_p, min_p
        As in :func:`filter_logits`.
    seed : None, int or (B,) integer array
        ``None`` draws fresh entropy for every row.  An int is used for every
        row (identical rows then give identical tokens: pass a per-row array
        for independent streams).  A row's token depends only on its logits,
        parameters and seed, never on other rows or the thread count.
        Greedy rows (temperature 0) consume no randomness.
    return_logprobs : bool
        Also return the float64 log-probability of each chosen token under the
        filtered distribution (0 for greedy rows).

    Returns
    -------
    tokens : (B,) int64, or an int64 scalar for 1-D logits
    logprobs : (B,) float64 (only with ``return_logprobs``)
    """
    pr = _prepare(logits, temperature, top_k, top_p, min_p)
    B = pr.logits.shape[0]
    u = row_uniform(_row_seeds(B, seed))
    out = np.empty((B, 1), dtype=pr.logits.dtype)  # not written in sampling mode
    tokens, logps, status = _run(pr, u, 1, out)
    _raise_status(status, pr.temperature)
    if pr.squeeze:
        tokens, logps = tokens[0], logps[0]
    return (tokens, logps) if return_logprobs else tokens


def top_k(logits, k):
    """The k largest logits per row, sorted descending (lowest index first on ties).

    Parameters
    ----------
    logits : ndarray, (B, V) or (V,), float32 or float64
    k : int in [1, V]

    Returns
    -------
    values : (B, k) logits dtype
    indices : (B, k) int64
    """
    a = check_float_array("logits", logits, (1, 2))
    l2, squeeze = _as_2d(a)
    if not l2.flags.c_contiguous:
        l2 = np.ascontiguousarray(l2)
    B, V = l2.shape
    k = _check_k(k, V)
    vals = aligned_empty((B, k), l2.dtype)
    idx = aligned_empty((B, k), np.int64)
    status = np.empty(B, dtype=np.int64)
    if _use_row_par(B):
        _topk_row_par(l2, k, vals, idx, status)
    else:
        _topk_rows(l2, k, min(B, numba.get_num_threads()), vals, idx, status)
    _raise_status(status, None)
    if squeeze:
        return vals[0], idx[0]
    return vals, idx


def sequence_logprob(token_logprobs, lengths, *, reduce="mean"):
    """Score N candidate sequences from their per-token log-probabilities.

    Parameters
    ----------
    token_logprobs : (N, T) float array
        Row ``i`` holds the log-probabilities of candidate ``i``'s tokens; entries
        at positions ``>= lengths[i]`` are padding and ignored.
    lengths : (N,) int array with values in [1, T]
    reduce : "mean" or "sum"

    Returns
    -------
    (N,) float64

    Notes
    -----
    ``"sum"`` is the joint log-probability of the sequence.  Every token adds a
    negative term, so the sum prefers short outputs regardless of quality; the
    per-token mean removes that length bias and is what :func:`best_of_n` uses.
    """
    lp, ln = _check_seq(token_logprobs, lengths)
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    T = lp.shape[1]
    mask = np.arange(T)[None, :] < ln[:, None]  # (N, T)
    s = np.where(mask, lp, 0.0).sum(axis=1)
    return s / ln if reduce == "mean" else s


def best_of_n(token_logprobs, lengths):
    """Index of the candidate with the highest mean token log-probability.

    Ties go to the lowest index.  The mean, not the sum, is used: the sum of
    log-probabilities falls with every extra token, so it would pick the
    shortest candidate rather than the most confident one.
    """
    return int(np.argmax(sequence_logprob(token_logprobs, lengths, reduce="mean")))


def _check_seq(token_logprobs, lengths):
    lp = check_float_array("token_logprobs", token_logprobs, 2).astype(np.float64, copy=False)
    N, T = lp.shape
    if N == 0:
        raise ValueError("token_logprobs must hold at least one candidate (N >= 1)")
    # compared before any cast to int64, so a huge uint64 length is named as given, not wrapped to -1
    ln = np.asarray(lengths)
    if ln.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array, got {ln.dtype}")
    if ln.shape != (N,):
        raise ValueError(f"lengths must have shape ({N},), got {ln.shape}")
    badl = (ln < 1) | (ln > T)
    if badl.any():
        i = int(np.nonzero(badl)[0][0])
        raise ValueError(f"lengths must be in [1, T={T}] (first bad candidate {i}, got {int(ln[i])})")
    ln = ln.astype(np.int64)
    valid = np.arange(T)[None, :] < ln[:, None]
    badv = valid & ~(lp <= 0)  # NaN or positive log-probability
    if badv.any():
        i = int(np.nonzero(badv.any(axis=1))[0][0])
        raise ValueError(f"token_logprobs must be <= 0 and not NaN (first bad candidate {i})")
    return lp, ln
