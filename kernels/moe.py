"""Mixture-of-experts routing kernels: gating, dispatch, permute/combine,
capacity, balancing losses, expert choice and a sparse SwiGLU MoE layer.

A mixture-of-experts (MoE) layer activates only ``top_k`` of ``E`` experts per
token; these kernels are where that sparsity is won or lost. Every public
function has a plain NumPy reference beside it (``<name>_ref``) that the tests
compare against.

Variants and why the fast ones are faster
-----------------------------------------
``route`` (softmax)
    One pass over each row keeps a sorted top-k list by insertion (strict
    ``>`` so equal logits keep the lower expert id). Softmax is monotone, so
    selection runs on the raw logits; with ``renormalize=True`` the weights
    are ``softmax`` over the k chosen logits only, which equals the
    renormalised top-k probabilities exactly, so only k exponentials per row
    are evaluated instead of E. The scan compares against the current k-th
    best held in a register; the NaN / +inf check is a vectorised count over
    the row while it is in L1, not a separate sweep over the logits.
``route`` (sigmoid, DeepSeek-V3)
    Sigmoid needs every score (the selection bias is added after the
    sigmoid), so the exponentials are computed by a branch-free float32
    ``exp`` (Cody-Waite range reduction + degree-6 polynomial, 2**n built
    from the exponent bits) that LLVM vectorises; ``np.exp`` in Numba
    calls scalar libm. Group scores and the top-k then work on that row.
``dispatch``
    A stable counting sort: per-block expert histograms (fixed blocks of
    tokens), a sequential prefix over (expert, block), then every block
    scatters its own assignments. No atomics, and the output does not
    depend on the thread count.
``permute`` / ``unpermute``
    Row gathers parallel over fixed row blocks; ``unpermute`` is a gather
    too: token t reads its k rows through ``Dispatch.position`` and adds them
    in slot order, so each output row is written by one thread in a fixed
    order (deterministic, no atomics).
``moe_layer``
    route -> dispatch -> permute -> for each expert three BLAS GEMMs on only
    the rows routed to it (fused Numba SiLU*gate between them) -> unpermute.
    Experts (largest first) are spread over worker threads, each running
    single-threaded BLAS: small per-expert GEMMs would otherwise pay BLAS's
    fork/join barriers 3E times per layer.
    ``moe_layer_ref`` runs every expert on every token in float64 and masks.

Conventions
-----------
* Assignment ids: token ``t``'s slot ``s`` is assignment ``a = t * top_k + s``.
* Ties: lowest expert id first (route), lowest token id first (expert_choice).
* ``-inf`` logits mark unavailable experts and never produce NaN. A row whose
  logits are all ``-inf`` is a token with no route: softmax routing returns
  weight 0 for it (experts = the lowest ids); the losses give it zero
  probability and zero z-loss. NaN logits (and +inf for softmax scoring,
  where it has no probability) raise ``ValueError``.
* Dtypes: logits and activations may be float32 or float64. Softmax weights
  are accumulated in float64; sigmoid scores are computed in float32 (the
  precision DeepSeek-V3's router uses) and normalised in float64. Returned
  routing weights are float32, expert / token ids int32. ``permute`` and
  ``unpermute`` keep the activation dtype (accumulation in that dtype, at
  least float32); ``moe_layer`` requires every array in one dtype and
  computes in it.
* Threads: every kernel has a parallel driver and a one-thread twin running
  the same block leaves over the same fixed blocks; small problems (below
  ``_LOGITS_PARALLEL_MIN``, ``_DISPATCH_PARALLEL_MIN``,
  ``_COPY_PARALLEL_MIN_BYTES``, ``_SILU_PARALLEL_MIN``) take the twin, since a
  2-thread fork/join costs milliseconds on a loaded machine. Results are
  bitwise identical on either path and for any thread count.
* Weight layout for ``moe_layer``: ``x`` (T, d), ``router_w`` (d, E),
  ``w1`` and ``w3`` (E, d, ffn) (gate and up projections), ``w2`` (E, ffn, d)
  (down projection); expert e computes
  ``(silu(x @ w1[e]) * (x @ w3[e])) @ w2[e]`` on the rows routed to it.
"""

from __future__ import annotations

import math
import numbers
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from scalelab.kernels._common import INT64_MAX, aligned_empty, check_float_array, check_int
from scalelab.kernels._vecmath import FASTMATH_INF_SAFE, exp_f32_split

__all__ = [
    "Dispatch",
    "silu_mul",
    "route",
    "route_ref",
    "dispatch",
    "dispatch_ref",
    "capacity_from_factor",
    "permute",
    "permute_ref",
    "unpermute",
    "unpermute_ref",
    "load_balancing_loss",
    "load_balancing_loss_ref",
    "router_z_loss",
    "router_z_loss_ref",
    "expert_choice",
    "expert_choice_ref",
    "swiglu_ffn",
    "moe_layer",
    "moe_layer_ref",
]

# Rows (tokens) per parallel block. Blocks are fixed by the problem size, not
# by the thread count, so every reduction has the same order on 1 or N threads.
_ROW_BLOCK = 64
# Rows per block for the wide (d-long) row copies of permute / unpermute.
_COPY_BLOCK = 8



# ----------------------------------------------------------------------------
# Validation at the public boundary
# ----------------------------------------------------------------------------

def _check_logits(router_logits, allow_posinf: bool = False, scan: bool = True) -> np.ndarray:
    a = check_float_array("router_logits", router_logits, ndim=2)
    if a.shape[1] < 1:
        raise ValueError(f"router_logits must have at least one expert column, got shape {a.shape}")
    if scan:
        if np.isnan(a).any():
            raise ValueError("router_logits must not contain NaN")
        if not allow_posinf and np.isposinf(a).any():
            raise ValueError("router_logits must not contain +inf (softmax has no probability for it)")
    return np.ascontiguousarray(a)


def _check_experts(experts, n_experts: int, name: str = "experts") -> np.ndarray:
    e = np.asarray(experts)
    if e.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {e.dtype}")
    if e.ndim != 2:
        raise ValueError(f"{name} must have rank 2 (T, top_k), got shape {e.shape}")
    if e.size and (int(e.min()) < 0 or int(e.max()) >= n_experts):
        raise ValueError(
            f"{name} ids must lie in [0, {n_experts}), got range [{int(e.min())}, {int(e.max())}]"
        )
    return np.ascontiguousarray(e, dtype=np.int32)


# ----------------------------------------------------------------------------
# Jitted leaves
# ----------------------------------------------------------------------------

@njit(cache=True)
def _push(vals, idx, n, k, v, e):
    """Insert ``(v, e)`` into the descending list ``vals[:n]`` (capacity k).

    The caller guarantees ``n < k or v > vals[k-1]``. Strict ``>`` keeps an
    earlier (lower-id) entry ahead of an equal later one. Returns the new length.
    """
    if n < k:
        j = n
        n += 1
    else:
        j = k - 1
    while j > 0 and v > vals[j - 1]:
        vals[j] = vals[j - 1]
        idx[j] = idx[j - 1]
        j -= 1
    vals[j] = v
    idx[j] = e
    return n


@njit(cache=True, fastmath=FASTMATH_INF_SAFE)
def _sigmoid_row_f32(logits_row, bias, ibuf, pbuf, score, biased):
    """float32 sigmoid of one row into ``score`` and ``score + bias`` into ``biased``.

    ``exp(-l)`` is :func:`~scalelab.kernels._vecmath.exp_f32_split`: a polynomial
    times 2**n whose exponent bits are stored in ``ibuf`` and read back as
    float32 through ``fbuf`` in a second loop, so both loops vectorise.
    Returns the number of NaNs seen.
    """
    n_nan = 0
    E = logits_row.shape[0]
    fbuf = ibuf.view(np.float32)
    for e in range(E):
        l = np.float32(logits_row[e])
        n_nan += l != l
        pbuf[e], ibuf[e] = exp_f32_split(-l)
    for e in range(E):
        s = np.float32(1.0) / (np.float32(1.0) + fbuf[e] * pbuf[e])
        score[e] = s
        biased[e] = s + bias[e]
    return n_nan


@njit(cache=True, nogil=True, fastmath=FASTMATH_INF_SAFE)
def _silu_mul_block(h, g, lo, hi, one):
    """h[lo:hi] <- silu(h) * g in place; ``one`` carries h's dtype so float32 stays float32."""
    F = h.shape[1]
    for i in range(lo, hi):
        for j in range(F):
            a = h[i, j]
            h[i, j] = a / (one + np.exp(-a)) * g[i, j]


# ----------------------------------------------------------------------------
# Block leaves and their drivers
# ----------------------------------------------------------------------------
# Every kernel is a jitted leaf that does one fixed block, driven twice: a
# parallel driver (prange over blocks) and a one-thread twin (range over the
# same blocks). Both run the same leaf in the same order within a block and
# blocks never share outputs, so the two paths are bitwise identical. The
# public functions take the serial twin below a work threshold: on this 2-core
# machine, shared with other jobs, a 2-thread parallel section paid a fixed
# cost of about 5-15 ms (measured: route + dispatch at T=512, E=8 took 0.19 ms
# on 1 thread and 10-16 ms on 2; permute + unpermute at T=512, d=4096 moved
# 3.4 GB/s on 1 thread and 1.9 GB/s on 2), which small problems cannot repay.
# The twins are written out as two functions, not one function jitted twice
# with and without parallel=True, because Numba's on-disk cache key (qualified
# name, source line, argument types) ignores target options: the two compiled
# versions of one function would overwrite each other in the cache.

# Router logits (T * E) below which route, the losses and expert_choice run on
# one thread. One thread routes about 2-10 ns per logit (softmax..grouped
# sigmoid), so this is at most ~1-2 ms of serial work: T = 512 at E <= 256
# stays serial; T = 8192 at E >= 64 (the asv bars, 2 threads) stays parallel.
_LOGITS_PARALLEL_MIN = 1 << 18
# Assignments (T * k) below which dispatch runs on one thread (~0.1 ms of work).
_DISPATCH_PARALLEL_MIN = 1 << 15
# Bytes of rows a permute / unpermute call reads + writes below which it runs
# on one thread: 64 MiB is ~5 ms of one-thread copying at the ~14 GB/s one
# core streams here, about the 2-thread fork/join cost measured under load.
# T = 512, d = 4096, k = 2 in float32 (~34 MB per call) stays serial;
# T = 8192 (the bandwidth bar, ~0.5 GB per call) stays parallel.
_COPY_PARALLEL_MIN_BYTES = 1 << 26
# Elements of h below which the SwiGLU silu * gate runs on one thread.
_SILU_PARALLEL_MIN = 1 << 16


@njit(cache=True)
def _route_softmax_block(logits, k, renormalize, weights, experts, b):
    """Softmax top-k of token block b; returns the block's count of NaN / +inf logits."""
    T, E = logits.shape
    vals = np.empty(k, logits.dtype)  # selection in the input dtype: exact
    idx = np.empty(k, np.int32)
    nbad = 0
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        row = logits[t]
        for e in range(E):  # vectorised NaN / +inf count, kept out of the scan
            v = row[e]
            nbad += (v != v) | (v == np.inf)
        for e in range(k):
            _push(vals, idx, e, k, row[e], e)
        thr = vals[k - 1]  # the scan below only ever compares against this
        for e in range(k, E):
            v = row[e]
            if v > thr:
                _push(vals, idx, k, k, v, e)
                thr = vals[k - 1]
        m = np.float64(vals[0])
        if m == -np.inf:  # every expert masked: a token with no route
            for s in range(k):
                weights[t, s] = 0.0
                experts[t, s] = idx[s]
            continue
        denom = 0.0
        if renormalize:
            for s in range(k):
                denom += np.exp(np.float64(vals[s]) - m)
        else:
            for e in range(E):
                denom += np.exp(np.float64(row[e]) - m)
        for s in range(k):
            weights[t, s] = np.exp(np.float64(vals[s]) - m) / denom
            experts[t, s] = idx[s]
    return nbad


@njit(parallel=True, cache=True)
def _route_softmax_par(logits, k, renormalize, weights, experts, bad):
    for b in prange(bad.shape[0]):
        bad[b] = _route_softmax_block(logits, k, renormalize, weights, experts, b)


@njit(cache=True)
def _route_softmax_ser(logits, k, renormalize, weights, experts, bad):
    for b in range(bad.shape[0]):
        bad[b] = _route_softmax_block(logits, k, renormalize, weights, experts, b)


@njit(cache=True)
def _route_sigmoid_block(logits, k, bias, n_groups, topk_groups, renormalize, scale,
                         weights, experts, b):
    """Sigmoid (grouped) top-k of token block b; returns the block's count of NaN logits."""
    T, E = logits.shape
    gsz = E // n_groups
    ibuf = np.empty(E, np.int32)
    pbuf = np.empty(E, np.float32)
    score = np.empty(E, np.float32)   # (E,) unbiased sigmoid scores
    biased = np.empty(E, np.float32)  # (E,) selection scores
    gscore = np.empty(n_groups, np.float32)
    eligible = np.ones(n_groups, np.bool_)
    gvals = np.empty(topk_groups, np.float32)
    gidx = np.empty(topk_groups, np.int32)
    vals = np.empty(k, np.float32)
    idx = np.empty(k, np.int32)
    nbad = 0
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        nbad += _sigmoid_row_f32(logits[t], bias, ibuf, pbuf, score, biased)
        if n_groups > 1:
            # group score: sum of the group's two highest biased scores
            for g in range(n_groups):
                m1 = -np.inf
                m2 = -np.inf
                for e in range(g * gsz, (g + 1) * gsz):
                    v = biased[e]
                    if v > m1:
                        m2 = m1
                        m1 = v
                    elif v > m2:
                        m2 = v
                gscore[g] = m1 + m2 if gsz > 1 else m1
            ng = 0
            for g in range(n_groups):
                v = gscore[g]
                if ng < topk_groups or v > gvals[topk_groups - 1]:
                    ng = _push(gvals, gidx, ng, topk_groups, v, g)
            eligible[:] = False
            for j in range(topk_groups):
                eligible[gidx[j]] = True
        # experts are visited in ascending id, so ties keep the lowest id;
        # excluded groups are skipped outright (never masked by value).
        n = 0
        for g in range(n_groups):
            if not eligible[g]:
                continue
            for e in range(g * gsz, (g + 1) * gsz):
                v = biased[e]
                if n < k or v > vals[k - 1]:
                    n = _push(vals, idx, n, k, v, e)
        denom = 0.0
        for s in range(k):
            denom += np.float64(score[idx[s]])
        for s in range(k):
            w = np.float64(score[idx[s]]) * scale
            if renormalize:
                w = w / denom if denom > 0.0 else 0.0
            weights[t, s] = w
            experts[t, s] = idx[s]
    return nbad


@njit(parallel=True, cache=True)
def _route_sigmoid_par(logits, k, bias, n_groups, topk_groups, renormalize, scale,
                       weights, experts, bad):
    for b in prange(bad.shape[0]):
        bad[b] = _route_sigmoid_block(logits, k, bias, n_groups, topk_groups, renormalize,
                                      scale, weights, experts, b)


@njit(cache=True)
def _route_sigmoid_ser(logits, k, bias, n_groups, topk_groups, renormalize, scale,
                       weights, experts, bad):
    for b in range(bad.shape[0]):
        bad[b] = _route_sigmoid_block(logits, k, bias, n_groups, topk_groups, renormalize,
                                      scale, weights, experts, b)


@njit(cache=True)
def _dispatch_hist_block(experts, b, hist):
    """hist[b, e] <- assignments of token block b that go to expert e."""
    T, k = experts.shape
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        for s in range(k):
            hist[b, experts[t, s]] += 1


@njit(cache=True)
def _dispatch_prefix(hist, capacity, counts, demand, offsets):
    """Turn hist (blocks, E) into each block's first rank per expert; fill counts/demand/offsets."""
    nb, E = hist.shape
    offsets[0] = 0
    for e in range(E):
        run = 0
        for b in range(nb):
            c = hist[b, e]
            hist[b, e] = run
            run += c
        demand[e] = run
        kept = run if capacity < 0 else min(run, capacity)
        counts[e] = kept
        offsets[e + 1] = offsets[e] + kept
    return offsets[E]


@njit(cache=True)
def _dispatch_scatter_block(experts, b, hist, capacity, offsets, order, position):
    """Place block b's assignments: the r-th assignment of expert e goes to row offsets[e] + r."""
    T, k = experts.shape
    rank = hist[b].copy()
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        for s in range(k):
            e = experts[t, s]
            r = rank[e]
            rank[e] = r + 1
            if capacity < 0 or r < capacity:
                p = offsets[e] + r
                order[p] = t * k + s
                position[t, s] = p
            else:
                position[t, s] = -1


@njit(parallel=True, cache=True)
def _dispatch_kernel(experts, n_experts, capacity, order, position, counts, demand, offsets):
    """Stable counting sort of the (T, k) assignments by expert, with capacity.

    ``capacity < 0`` means unlimited. Fills ``order`` (kept,), ``position``
    (T, k) (-1 = dropped), ``counts`` (E,) kept, ``demand`` (E,) before capacity
    and ``offsets`` (E+1,); returns the number of kept assignments.
    """
    nb = (experts.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    hist = np.zeros((nb, n_experts), np.int64)  # (blocks, E)
    for b in prange(nb):
        _dispatch_hist_block(experts, b, hist)
    n_kept = _dispatch_prefix(hist, capacity, counts, demand, offsets)
    for b in prange(nb):
        _dispatch_scatter_block(experts, b, hist, capacity, offsets, order, position)
    return n_kept


@njit(cache=True)
def _dispatch_serial(experts, n_experts, capacity, order, position, counts, demand, offsets):
    """One-thread twin of :func:`_dispatch_kernel` (same blocks, same order, same output)."""
    nb = (experts.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    hist = np.zeros((nb, n_experts), np.int64)  # (blocks, E)
    for b in range(nb):
        _dispatch_hist_block(experts, b, hist)
    n_kept = _dispatch_prefix(hist, capacity, counts, demand, offsets)
    for b in range(nb):
        _dispatch_scatter_block(experts, b, hist, capacity, offsets, order, position)
    return n_kept


@njit(cache=True)
def _permute_block(x, order, k, out, b):
    """Copy block b's rows; returns how many ``order`` entries lie outside [0, T*k).

    The range check is done here, per row, because a Dispatch's arrays can be
    changed after it was validated; a bad row is zeroed, never read.
    """
    n = order.shape[0]
    limit = x.shape[0] * k
    bad = 0
    for r in range(b * _COPY_BLOCK, min(n, (b + 1) * _COPY_BLOCK)):
        a = order[r]
        if a < 0 or a >= limit:
            out[r, :] = 0.0
            bad += 1
        else:
            out[r, :] = x[a // k, :]
    return bad


@njit(parallel=True, cache=True)
def _permute_par(x, order, k, out):
    nb = (order.shape[0] + _COPY_BLOCK - 1) // _COPY_BLOCK
    bad = 0
    for b in prange(nb):
        bad += _permute_block(x, order, k, out, b)
    return bad


@njit(cache=True)
def _permute_ser(x, order, k, out):
    nb = (order.shape[0] + _COPY_BLOCK - 1) // _COPY_BLOCK
    bad = 0
    for b in range(nb):
        bad += _permute_block(x, order, k, out, b)
    return bad


@njit(cache=True)
def _unpermute_block(y_sorted, position, weights, out, b):
    """Combine block b's tokens; returns how many positions lie outside [-1, n_kept).

    Checked here for the same reason as in :func:`_permute_block`; a bad
    position is skipped, never read.
    """
    T, k = position.shape
    d = out.shape[1]
    n = y_sorted.shape[0]
    bad = 0
    for t in range(b * _COPY_BLOCK, min(T, (b + 1) * _COPY_BLOCK)):
        first = True
        for s in range(k):  # fixed slot order: deterministic sums
            p = position[t, s]
            if p < -1 or p >= n:
                bad += 1
                continue
            if p < 0:
                continue
            w = weights[t, s]
            if first:
                for j in range(d):
                    out[t, j] = w * y_sorted[p, j]
                first = False
            else:
                for j in range(d):
                    out[t, j] += w * y_sorted[p, j]
        if first:
            out[t, :] = 0.0
    return bad


@njit(parallel=True, cache=True)
def _unpermute_par(y_sorted, position, weights, out):
    nb = (position.shape[0] + _COPY_BLOCK - 1) // _COPY_BLOCK
    bad = 0
    for b in prange(nb):
        bad += _unpermute_block(y_sorted, position, weights, out, b)
    return bad


@njit(cache=True)
def _unpermute_ser(y_sorted, position, weights, out):
    nb = (position.shape[0] + _COPY_BLOCK - 1) // _COPY_BLOCK
    bad = 0
    for b in range(nb):
        bad += _unpermute_block(y_sorted, position, weights, out, b)
    return bad


@njit(cache=True)
def _softmax_stats_block(logits, psum, zsum, b):
    """Block b's sums of softmax probabilities into psum[b] (E,) and of logsumexp^2 into zsum[b]."""
    T, E = logits.shape
    p = np.empty(E, np.float64)
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        m = -np.inf
        for e in range(E):
            m = max(m, np.float64(logits[t, e]))
        if m == -np.inf:
            continue
        ssum = 0.0
        for e in range(E):
            p[e] = np.exp(np.float64(logits[t, e]) - m)
            ssum += p[e]
        for e in range(E):
            psum[b, e] += p[e] / ssum
        lse = m + np.log(ssum)
        zsum[b] += lse * lse


@njit(parallel=True, cache=True)
def _softmax_stats_par(logits, psum, zsum):
    for b in prange(psum.shape[0]):
        _softmax_stats_block(logits, psum, zsum, b)


@njit(cache=True)
def _softmax_stats_ser(logits, psum, zsum):
    for b in range(psum.shape[0]):
        _softmax_stats_block(logits, psum, zsum, b)


@njit(cache=True)
def _softmax_rows_block(logits, probs, b):
    """Row softmax (float64 accumulation) of block b into ``probs``; fully masked rows give 0."""
    T, E = logits.shape
    for t in range(b * _ROW_BLOCK, min(T, (b + 1) * _ROW_BLOCK)):
        m = -np.inf
        for e in range(E):
            m = max(m, np.float64(logits[t, e]))
        if m == -np.inf:
            probs[t, :] = 0.0
            continue
        ssum = 0.0
        for e in range(E):
            ssum += np.exp(np.float64(logits[t, e]) - m)
        for e in range(E):
            probs[t, e] = np.exp(np.float64(logits[t, e]) - m) / ssum


@njit(parallel=True, cache=True)
def _softmax_rows_par(logits, probs):
    nb = (logits.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    for b in prange(nb):
        _softmax_rows_block(logits, probs, b)


@njit(cache=True)
def _softmax_rows_ser(logits, probs):
    nb = (logits.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    for b in range(nb):
        _softmax_rows_block(logits, probs, b)


@njit(cache=True)
def _expert_choice_column(probs, capacity, tokens, weights, e):
    """Expert (column) e keeps its ``capacity`` largest probabilities, lowest token first on ties."""
    T = probs.shape[0]
    col = np.empty(T, np.float64)  # (T,) negated so "best" = smallest
    for t in range(T):
        col[t] = -probs[t, e]
    # O(T) selection of the capacity-th best value, then a stable sort of
    # only the candidates (in token order) instead of sorting all T.
    thr = np.partition(col, capacity - 1)[capacity - 1]
    cand = np.empty(T, np.int64)
    n = 0
    n_better = 0
    for t in range(T):
        if col[t] < thr:
            n_better += 1
    n_ties = capacity - n_better  # how many tokens equal to thr still fit
    for t in range(T):
        v = col[t]
        if v < thr:
            cand[n] = t
            n += 1
        elif v == thr and n_ties > 0:
            cand[n] = t
            n += 1
            n_ties -= 1
    keys = np.empty(n, np.float64)
    for i in range(n):
        keys[i] = col[cand[i]]
    perm = np.argsort(keys, kind="mergesort")  # stable: equal values keep token order
    for c in range(capacity):
        t = cand[perm[c]]
        tokens[e, c] = t
        weights[e, c] = probs[t, e]


@njit(parallel=True, cache=True)
def _expert_choice_par(probs, capacity, tokens, weights):
    if capacity == 0:
        return
    for e in prange(probs.shape[1]):
        _expert_choice_column(probs, capacity, tokens, weights, e)


@njit(cache=True)
def _expert_choice_ser(probs, capacity, tokens, weights):
    if capacity == 0:
        return
    for e in range(probs.shape[1]):
        _expert_choice_column(probs, capacity, tokens, weights, e)


@njit(parallel=True, cache=True)
def _silu_mul_par(h, g, one):
    n = h.shape[0]
    nb = (n + _COPY_BLOCK - 1) // _COPY_BLOCK
    for b in prange(nb):
        _silu_mul_block(h, g, b * _COPY_BLOCK, min(n, (b + 1) * _COPY_BLOCK), one)


@njit(cache=True)
def _silu_mul_ser(h, g, one):
    n = h.shape[0]
    nb = (n + _COPY_BLOCK - 1) // _COPY_BLOCK
    for b in range(nb):
        _silu_mul_block(h, g, b * _COPY_BLOCK, min(n, (b + 1) * _COPY_BLOCK), one)


def _pick(parallel, serial, work: int, threshold: int):
    """The parallel driver when ``work`` reaches ``threshold`` (read at call time, so tests can patch it)."""
    return parallel if work >= threshold else serial


# ----------------------------------------------------------------------------
# route
# ----------------------------------------------------------------------------

_SCORINGS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class _RouteOptions:
    scoring: str
    renormalize: bool
    bias: np.ndarray | None  # (E,) float64, sigmoid only
    n_groups: int
    topk_groups: int
    scale: float


def _check_route_options(E, top_k, scoring, renormalize, bias, n_groups, topk_groups, scale):
    if scoring not in _SCORINGS:
        raise ValueError(f"scoring must be one of {_SCORINGS}, got {scoring!r}")
    if not isinstance(renormalize, (bool, np.bool_)):
        raise TypeError(f"renormalize must be a bool, got {type(renormalize).__name__}")
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {type(scale).__name__}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale}")
    n_groups = check_int("n_groups", n_groups, lo=1)
    topk_groups = check_int("topk_groups", topk_groups, lo=1)
    if E % n_groups:
        raise ValueError(f"n_groups must divide the number of experts E={E}, got {n_groups}")
    if topk_groups > n_groups:
        raise ValueError(f"topk_groups must be <= n_groups={n_groups}, got {topk_groups}")
    eligible = topk_groups * (E // n_groups)
    if top_k > eligible:
        raise ValueError(
            f"top_k={top_k} exceeds the {eligible} experts in the {topk_groups} eligible "
            f"group(s) of size {E // n_groups}"
        )
    if bias is not None:
        bias = check_float_array("bias", bias, ndim=1)
        if bias.shape != (E,):
            raise ValueError(f"bias must have shape ({E},) to match router_logits, got {bias.shape}")
        if not np.isfinite(bias).all():
            raise ValueError("bias must be finite")
    if scoring == "softmax":
        if bias is not None:
            raise ValueError("bias is only defined for scoring='sigmoid' (DeepSeek-V3 selection bias)")
        if n_groups != 1:
            raise ValueError("n_groups > 1 (group-limited routing) needs scoring='sigmoid'")
    return _RouteOptions(scoring, bool(renormalize), bias, n_groups, topk_groups, float(scale))


def route(router_logits, top_k, *, scoring="softmax", renormalize=True, bias=None,
          n_groups=1, topk_groups=1, scale=1.0):
    """Pick each token's ``top_k`` experts and their gate weights.

    Parameters
    ----------
    router_logits : ndarray, (T, E) float32 or float64
        Router logits; ``-inf`` marks an unavailable expert. NaN raises, as does
        +inf with softmax scoring.
    top_k : int
        Experts per token, ``1 <= top_k <= E`` (and at most the number of
        experts in the eligible groups).
    scoring : {"softmax", "sigmoid"}
        ``"softmax"`` (Mixtral, Qwen-MoE, Switch): probabilities over all E
        experts (float64 accumulation), top-k, renormalised to sum 1 when
        ``renormalize`` (raw probabilities otherwise). ``"sigmoid"``
        (DeepSeek-V3): scores ``sigmoid(logits)`` in float32; ``bias`` is added
        for selection only; the weights are the unbiased scores of the chosen
        experts, normalised to sum 1 when ``renormalize``, times ``scale``.
    renormalize : bool
    bias : ndarray (E,), optional
        Selection bias (sigmoid only; used in float32).
    n_groups, topk_groups : int
        Group-limited routing (sigmoid only): the E experts form ``n_groups``
        contiguous groups; a group's score is the sum of its two highest biased
        scores (its only score if a group has one expert); only the best
        ``topk_groups`` groups (lowest group id on ties) are eligible. Experts in
        other groups are skipped outright, never chosen whatever the signs.
    scale : float
        Multiplies the sigmoid weights (DeepSeek-V3's routed scaling factor).

    Returns
    -------
    weights : ndarray, (T, top_k) float32
    experts : ndarray, (T, top_k) int32
        Descending selection score; lowest expert id first on ties.
    """
    a = check_float_array("router_logits", router_logits, ndim=2)
    if a.shape[1] < 1:
        raise ValueError(f"router_logits must have at least one expert column, got shape {a.shape}")
    a = np.ascontiguousarray(a)
    T, E = a.shape
    k = check_int("top_k", top_k, lo=1, hi=E)
    opt = _check_route_options(E, k, scoring, renormalize, bias, n_groups, topk_groups, scale)
    weights = np.empty((T, k), np.float32)  # (T, k)
    experts = np.empty((T, k), np.int32)  # (T, k)
    bad = np.zeros((T + _ROW_BLOCK - 1) // _ROW_BLOCK, np.int64)  # (blocks,)
    if opt.scoring == "softmax":
        kernel = _pick(_route_softmax_par, _route_softmax_ser, T * E, _LOGITS_PARALLEL_MIN)
        kernel(a, k, opt.renormalize, weights, experts, bad)
        if bad.any():
            raise ValueError("router_logits must not contain NaN or +inf (softmax scoring)")
    else:
        b32 = np.zeros(E, np.float32) if opt.bias is None else opt.bias.astype(np.float32)
        kernel = _pick(_route_sigmoid_par, _route_sigmoid_ser, T * E, _LOGITS_PARALLEL_MIN)
        kernel(a, k, b32, opt.n_groups, opt.topk_groups, opt.renormalize, opt.scale,
               weights, experts, bad)
        if bad.any():
            raise ValueError("router_logits must not contain NaN")
    return weights, experts


def route_ref(router_logits, top_k, *, scoring="softmax", renormalize=True, bias=None,
              n_groups=1, topk_groups=1, scale=1.0):
    """NumPy reference for :func:`route` (float64 throughout, stable sorts for ties)."""
    a = _check_logits(router_logits, allow_posinf=(scoring == "sigmoid"))
    T, E = a.shape
    k = check_int("top_k", top_k, lo=1, hi=E)
    opt = _check_route_options(E, k, scoring, renormalize, bias, n_groups, topk_groups, scale)
    l = a.astype(np.float64)  # (T, E)
    ids = np.broadcast_to(np.arange(E), (T, E))
    if opt.scoring == "softmax":
        p = _softmax_ref(l)  # (T, E)
        order = np.argsort(-l, axis=1, kind="stable")[:, :k]  # (T, k)
        w = np.take_along_axis(p, order, axis=1)  # (T, k)
        if opt.renormalize:
            tot = w.sum(axis=1, keepdims=True)
            w = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
        return w.astype(np.float32), order.astype(np.int32)
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-l))  # (T, E)
    b = s + (0.0 if opt.bias is None else opt.bias.astype(np.float64))  # (T, E)
    eligible = np.ones((T, E), bool)
    if opt.n_groups > 1:
        G, gsz = opt.n_groups, E // opt.n_groups
        top2 = np.sort(b.reshape(T, G, gsz), axis=2)[:, :, -min(2, gsz):]  # (T, G, <=2)
        gscore = top2.sum(axis=2)  # (T, G)
        keep = np.argsort(-gscore, axis=1, kind="stable")[:, :opt.topk_groups]  # (T, kg)
        gmask = np.zeros((T, G), bool)
        np.put_along_axis(gmask, keep, True, axis=1)
        eligible = np.repeat(gmask, gsz, axis=1)  # (T, E)
    # primary key: eligible first; then descending biased score; then expert id
    order = np.lexsort((ids, -b, ~eligible), axis=1)[:, :k]  # (T, k)
    w = np.take_along_axis(s, order, axis=1)  # (T, k)
    if opt.renormalize:
        tot = w.sum(axis=1, keepdims=True)
        w = np.divide(w, tot, out=np.zeros_like(w), where=tot > 0)
    return (w * opt.scale).astype(np.float32), order.astype(np.int32)


def _softmax_ref(l: np.ndarray) -> np.ndarray:
    """Row softmax in float64; rows that are all -inf give zeros."""
    m = l.max(axis=1, keepdims=True) if l.shape[1] else np.zeros((l.shape[0], 1))
    live = np.isfinite(m)
    with np.errstate(invalid="ignore"):
        e = np.where(live, np.exp(l - np.where(live, m, 0.0)), 0.0)
    tot = e.sum(axis=1, keepdims=True)
    return np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)


# ----------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------

_DISPATCH_FIELDS = (("order", np.int32, 1), ("counts", np.int64, 1), ("offsets", np.int64, 1),
                    ("position", np.int32, 2), ("demand", np.int64, 1))


@dataclass(frozen=True)
class Dispatch:
    """The assignments of T tokens x top_k slots to E experts, grouped by expert.

    Attributes
    ----------
    order : ndarray, (n_kept,) int32
        Kept assignment ids ``t * top_k + s`` grouped by expert (ascending
        expert), ascending token (then slot) within an expert. Row ``r`` of a
        permuted buffer holds assignment ``order[r]``.
    counts : ndarray, (E,) int64
        Kept assignments per expert (after capacity).
    offsets : ndarray, (E+1,) int64
        Exclusive prefix sums of ``counts``: expert e owns rows
        ``offsets[e]:offsets[e+1]``.
    position : ndarray, (T, top_k) int32
        Row of each assignment in the permuted buffer, -1 if dropped.
    demand : ndarray, (E,) int64
        Assignments per expert before capacity.
    capacity : int or None
    """

    order: np.ndarray
    counts: np.ndarray
    offsets: np.ndarray
    position: np.ndarray
    demand: np.ndarray
    capacity: int | None

    def __post_init__(self):
        # A Dispatch carries indices from dispatch() to permute/unpermute, so a
        # hand-built one is checked here and every array is frozen (a private
        # read-only copy when the caller's array was writable). The kernels still
        # range-check each index they read, since flags can be flipped back.
        for name, dtype, ndim in _DISPATCH_FIELDS:
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
                got = f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise TypeError(f"Dispatch.{name} must be a rank-{ndim} {np.dtype(dtype)} array, got {got}")
            if a.flags.writeable:
                a = a.copy()
                a.flags.writeable = False
            object.__setattr__(self, name, a)
        E = self.counts.shape[0]
        if self.offsets.shape != (E + 1,) or self.demand.shape != (E,):
            raise ValueError(f"Dispatch.offsets must have shape ({E + 1},) and demand ({E},) for "
                             f"{E} experts, got {self.offsets.shape} and {self.demand.shape}")
        self.check_indices()
        if self.capacity is not None:
            check_int("Dispatch.capacity", self.capacity, lo=0)

    def check_indices(self) -> None:
        """Raise ``ValueError`` unless order, position and offsets are in range and consistent."""
        T, k = self.position.shape
        n = self.order.shape[0]
        if n and (int(self.order.min()) < 0 or int(self.order.max()) >= T * k):
            raise ValueError(f"Dispatch.order must lie in [0, T*top_k = {T * k}), got range "
                             f"[{int(self.order.min())}, {int(self.order.max())}]")
        if self.position.size and (int(self.position.min()) < -1 or int(self.position.max()) >= n):
            raise ValueError(f"Dispatch.position must lie in [-1, n_kept = {n}), got range "
                             f"[{int(self.position.min())}, {int(self.position.max())}]")
        if self.offsets[0] != 0 or (np.diff(self.offsets) != self.counts).any() or self.offsets[-1] != n:
            raise ValueError("Dispatch.offsets must be the exclusive prefix sums of counts, ending at n_kept")

    @property
    def n_tokens(self) -> int:
        return self.position.shape[0]

    @property
    def top_k(self) -> int:
        return self.position.shape[1]

    @property
    def n_experts(self) -> int:
        return self.counts.shape[0]

    @property
    def n_kept(self) -> int:
        return self.order.shape[0]

    @property
    def dropped(self) -> np.ndarray:
        """(T, top_k) bool: assignments beyond their expert's capacity."""
        return self.position < 0


def _check_capacity(capacity) -> int | None:
    if capacity is None:
        return None
    return check_int("capacity", capacity, lo=0)


def dispatch(experts, n_experts, *, capacity=None) -> Dispatch:
    """Group the (token, slot) assignments by expert with a stable counting sort.

    Parameters
    ----------
    experts : ndarray, (T, top_k) integer
        Expert id of each assignment, in ``[0, n_experts)``.
    n_experts : int
    capacity : int, optional
        Keep each expert's first ``capacity`` assignments in token order and
        drop the rest (Switch / GShard); ``None`` keeps everything.

    Returns
    -------
    Dispatch
    """
    E = check_int("n_experts", n_experts, lo=1)
    e = _check_experts(experts, E)
    C = _check_capacity(capacity)
    T, k = e.shape
    n_max = T * k if C is None else min(T * k, C * E)
    order = np.empty(n_max, np.int32)
    position = np.empty((T, k), np.int32)  # (T, k)
    counts = np.empty(E, np.int64)
    demand = np.empty(E, np.int64)
    offsets = np.empty(E + 1, np.int64)
    kernel = _pick(_dispatch_kernel, _dispatch_serial, T * k, _DISPATCH_PARALLEL_MIN)
    n_kept = kernel(e, E, -1 if C is None else C, order, position, counts, demand, offsets)
    for a in (order, position, counts, demand, offsets):
        a.flags.writeable = False  # frozen in place: Dispatch copies only writable arrays
    return Dispatch(order[:n_kept], counts, offsets, position, demand, C)


def dispatch_ref(experts, n_experts, *, capacity=None) -> Dispatch:
    """NumPy reference for :func:`dispatch` (stable argsort, then ranks within experts)."""
    E = check_int("n_experts", n_experts, lo=1)
    e = _check_experts(experts, E)
    C = _check_capacity(capacity)
    T, k = e.shape
    flat = e.ravel().astype(np.int64)  # (T*k,)
    srt = np.argsort(flat, kind="stable")  # (T*k,)
    demand = np.bincount(flat, minlength=E).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(demand)])
    rank = np.arange(T * k) - start[flat[srt]]
    keep = np.ones(T * k, bool) if C is None else rank < C
    order = srt[keep].astype(np.int32)
    counts = demand if C is None else np.minimum(demand, C)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    position = np.full(T * k, -1, np.int32)
    position[order] = np.arange(order.size, dtype=np.int32)
    return Dispatch(order, counts.astype(np.int64), offsets, position.reshape(T, k), demand, C)


def capacity_from_factor(T, k, E, factor) -> int:
    """Expert capacity ``ceil(factor * T * k / E)`` (Switch Transformer capacity factor).

    At least 1 whenever ``T > 0``; ``ValueError`` if the capacity does not fit in int64.
    """
    T = check_int("T", T, lo=0)
    k = check_int("k", k, lo=1)
    E = check_int("E", E, lo=1)
    if isinstance(factor, (bool, np.bool_)) or not isinstance(factor, numbers.Real):
        raise TypeError(f"factor must be a real number, got {type(factor).__name__}")
    if not (math.isfinite(float(factor)) and factor > 0):
        raise ValueError(f"factor must be finite and > 0, got {factor}")
    v = float(factor) * T * k / E
    if not v <= INT64_MAX:  # also catches inf from a huge factor
        raise ValueError(f"capacity factor * T * k / E = {v:.3g} does not fit in int64; "
                         f"factor must be <= {INT64_MAX * E / max(1, T * k):.3g} here")
    # exact for rational factors given as float: ceil of the float product, guarded
    # against 1-ulp overshoot such as 1.1 * 100 -> 110.00000000000001; the guard
    # never rounds a positive capacity down to 0
    r = round(v)
    return int(r) if r > 0 and abs(v - r) <= 1e-9 * max(1.0, abs(v)) else int(math.ceil(v))


# ----------------------------------------------------------------------------
# permute / unpermute
# ----------------------------------------------------------------------------

def _check_dispatch(dispatch) -> Dispatch:
    if not isinstance(dispatch, Dispatch):
        raise TypeError(f"dispatch must be a Dispatch (from scalelab.kernels.moe.dispatch), got {type(dispatch).__name__}")
    return dispatch


def _check_out(out, shape, dtype):
    if out is None:
        return aligned_empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    return out


def permute(x, dispatch, *, out=None):
    """Gather token rows into expert order: ``out[r] = x[order[r] // top_k]``.

    Parameters
    ----------
    x : ndarray, (T, d) float32 or float64
    dispatch : Dispatch
    out : ndarray, (n_kept, d), optional
        Preallocated output (same dtype as ``x``, C-contiguous).

    Returns
    -------
    ndarray, (n_kept, d)
    """
    D = _check_dispatch(dispatch)
    x = check_float_array("x", x, ndim=2)
    if x.shape[0] != D.n_tokens:
        raise ValueError(f"x must have {D.n_tokens} rows (the dispatch's tokens), got {x.shape[0]}")
    x = np.ascontiguousarray(x)
    out = _check_out(out, (D.n_kept, x.shape[1]), x.dtype)
    nbytes = 2 * D.n_kept * x.shape[1] * x.itemsize  # rows read + written
    bad = _pick(_permute_par, _permute_ser, nbytes, _COPY_PARALLEL_MIN_BYTES)(x, D.order, D.top_k, out)
    if bad:
        raise ValueError(f"dispatch.order has {bad} entries outside [0, T*top_k = {D.n_tokens * D.top_k}) "
                         "(was the Dispatch modified after dispatch()?)")
    return out


def permute_ref(x, dispatch):
    """NumPy reference for :func:`permute`."""
    D = _check_dispatch(dispatch)
    D.check_indices()
    x = check_float_array("x", x, ndim=2)
    return x[D.order // D.top_k]


def _check_weights(weights, D: Dispatch, dtype) -> np.ndarray:
    w = check_float_array("weights", weights, ndim=2)
    if w.shape != (D.n_tokens, D.top_k):
        raise ValueError(f"weights must have shape {(D.n_tokens, D.top_k)}, got {w.shape}")
    return np.ascontiguousarray(w, dtype=dtype)


def unpermute(y_sorted, dispatch, weights, *, out=None):
    """Combine expert outputs: ``y[t] = sum_s weights[t, s] * y_sorted[position[t, s]]``.

    Slots are added in order s = 0..k-1 by the one thread that owns token t,
    so the result is deterministic; dropped assignments contribute zero.

    Parameters
    ----------
    y_sorted : ndarray, (n_kept, d) float32 or float64
    dispatch : Dispatch
    weights : ndarray, (T, top_k) float
        Cast to ``y_sorted``'s dtype, which is the accumulation dtype.
    out : ndarray, (T, d), optional

    Returns
    -------
    ndarray, (T, d), dtype of ``y_sorted``
    """
    D = _check_dispatch(dispatch)
    ys = check_float_array("y_sorted", y_sorted, ndim=2)
    if ys.shape[0] != D.n_kept:
        raise ValueError(f"y_sorted must have {D.n_kept} rows (the kept assignments), got {ys.shape[0]}")
    ys = np.ascontiguousarray(ys)
    w = _check_weights(weights, D, ys.dtype)
    out = _check_out(out, (D.n_tokens, ys.shape[1]), ys.dtype)
    nbytes = (D.n_kept + D.n_tokens) * ys.shape[1] * ys.itemsize  # rows read + written
    bad = _pick(_unpermute_par, _unpermute_ser, nbytes, _COPY_PARALLEL_MIN_BYTES)(ys, D.position, w, out)
    if bad:
        raise ValueError(f"dispatch.position has {bad} entries outside [-1, n_kept = {D.n_kept}) "
                         "(was the Dispatch modified after dispatch()?)")
    return out


def unpermute_ref(y_sorted, dispatch, weights):
    """NumPy reference for :func:`unpermute` (float64 accumulation)."""
    D = _check_dispatch(dispatch)
    D.check_indices()
    ys = check_float_array("y_sorted", y_sorted, ndim=2)
    w = _check_weights(weights, D, np.float64)
    y = np.zeros((D.n_tokens, ys.shape[1]), np.float64)
    for s in range(D.top_k):
        p = D.position[:, s]
        m = p >= 0
        y[m] += w[m, s, None] * ys[p[m]]
    return y.astype(ys.dtype)


# ----------------------------------------------------------------------------
# auxiliary losses
# ----------------------------------------------------------------------------

def _loss_stats(a: np.ndarray):
    nb = (a.shape[0] + _ROW_BLOCK - 1) // _ROW_BLOCK
    psum = np.zeros((nb, a.shape[1]), np.float64)  # (blocks, E)
    zsum = np.zeros(nb, np.float64)  # (blocks,)
    _pick(_softmax_stats_par, _softmax_stats_ser, a.size, _LOGITS_PARALLEL_MIN)(a, psum, zsum)
    return psum.sum(axis=0), zsum.sum()


def load_balancing_loss(router_logits, experts) -> float:
    """Switch Transformer auxiliary loss ``E * sum_i f_i * P_i`` (Fedus et al. 2021, eq. 4).

    ``f_i`` is the fraction of the T*k assignments sent to expert i, ``P_i`` the
    mean softmax probability of expert i. 1.0 for perfectly uniform routing, E
    when every assignment goes to one expert. T = 0 gives 0.0.
    """
    a = _check_logits(router_logits)
    T, E = a.shape
    e = _check_experts(experts, E)
    if e.shape[0] != T:
        raise ValueError(f"experts must have {T} rows to match router_logits, got {e.shape[0]}")
    if e.size == 0:
        return 0.0
    psum, _ = _loss_stats(a)
    f = np.bincount(e.ravel(), minlength=E) / e.size
    return float(E * np.dot(f, psum / T))


def load_balancing_loss_ref(router_logits, experts) -> float:
    """NumPy reference for :func:`load_balancing_loss`."""
    a = _check_logits(router_logits)
    T, E = a.shape
    e = _check_experts(experts, E)
    if e.shape[0] != T:
        raise ValueError(f"experts must have {T} rows to match router_logits, got {e.shape[0]}")
    if e.size == 0:
        return 0.0
    P = _softmax_ref(a.astype(np.float64)).mean(axis=0)  # (E,)
    f = np.array([(e == i).sum() for i in range(E)]) / e.size  # (E,)
    return float(E * (f * P).sum())


def router_z_loss(router_logits) -> float:
    """Router z-loss: mean over tokens of ``logsumexp(logits)**2`` (Zoph et al. 2022, ST-MoE eq. 5).

    Fully masked rows contribute 0; T = 0 gives 0.0.
    """
    a = _check_logits(router_logits)
    if a.shape[0] == 0:
        return 0.0
    _, z = _loss_stats(a)
    return float(z / a.shape[0])


def router_z_loss_ref(router_logits) -> float:
    """NumPy reference for :func:`router_z_loss`."""
    a = _check_logits(router_logits).astype(np.float64)
    if a.shape[0] == 0:
        return 0.0
    m = a.max(axis=1)
    live = np.isfinite(m)
    lse = m[live] + np.log(np.exp(a[live] - m[live, None]).sum(axis=1))
    return float((lse ** 2).sum() / a.shape[0])


# ----------------------------------------------------------------------------
# expert choice
# ----------------------------------------------------------------------------

def expert_choice(router_logits, capacity):
    """Expert-choice routing (Zhou et al. 2022): every expert takes its ``capacity`` best tokens.

    Scores are the softmax over experts of each token (float64 accumulation);
    expert e keeps the ``capacity`` tokens with the highest score, lowest token
    id first on ties. A token may get zero or several experts.

    Returns
    -------
    tokens : ndarray, (E, capacity) int32
    weights : ndarray, (E, capacity) float32
        The chosen tokens' probabilities for that expert, descending.
    """
    a = _check_logits(router_logits)
    T, E = a.shape
    C = check_int("capacity", capacity, lo=0, hi=T)
    probs = np.empty((T, E), np.float64)  # (T, E)
    _pick(_softmax_rows_par, _softmax_rows_ser, a.size, _LOGITS_PARALLEL_MIN)(a, probs)
    tokens = np.empty((E, C), np.int32)  # (E, C)
    weights = np.empty((E, C), np.float32)  # (E, C)
    _pick(_expert_choice_par, _expert_choice_ser, a.size, _LOGITS_PARALLEL_MIN)(probs, C, tokens, weights)
    return tokens, weights


def expert_choice_ref(router_logits, capacity):
    """NumPy reference for :func:`expert_choice`."""
    a = _check_logits(router_logits)
    T, E = a.shape
    C = check_int("capacity", capacity, lo=0, hi=T)
    p = _softmax_ref(a.astype(np.float64)).T  # (E, T)
    tokens = np.argsort(-p, axis=1, kind="stable")[:, :C]  # (E, C)
    return tokens.astype(np.int32), np.take_along_axis(p, tokens, axis=1).astype(np.float32)


# ----------------------------------------------------------------------------
# SwiGLU FFN and the MoE layer
# ----------------------------------------------------------------------------

def silu_mul(h, g) -> None:
    """The SwiGLU gate in place: ``h <- silu(h) * g`` elementwise.

    h, g : ndarray, (T, F), C-contiguous, one float dtype (float32 or float64; computed in it).
    Each element depends on its own two inputs only (no reduction), so rows are independent.
    """
    for name, a in (("h", h), ("g", g)):
        check_float_array(name, a, ndim=2)
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
    if g.shape != h.shape or g.dtype != h.dtype:
        raise ValueError(f"g must match h's shape {h.shape} and dtype {h.dtype}, got {g.shape} {g.dtype}")
    if not h.flags.writeable:
        raise ValueError("h must be writeable (the result is written into it)")
    _silu_mul_trusted(h, g)


def _silu_mul_trusted(h, g) -> None:
    """:func:`silu_mul` on arguments already known to be valid (the layers' own scratch buffers)."""
    _pick(_silu_mul_par, _silu_mul_ser, h.size, _SILU_PARALLEL_MIN)(h, g, h.dtype.type(1))


def _swiglu_into(x, w1, w3, w2, h, g, out):
    """out <- (silu(x @ w1) * (x @ w3)) @ w2 using the scratch buffers h, g (rows, ffn)."""
    np.matmul(x, w1, out=h)
    np.matmul(x, w3, out=g)
    _silu_mul_trusted(h, g)
    np.matmul(h, w2, out=out)


def swiglu_ffn(x, w1, w3, w2):
    """Dense SwiGLU feed-forward ``(silu(x @ w1) * (x @ w3)) @ w2``.

    x (T, d), w1 and w3 (d, F), w2 (F, d), one float dtype. This is the dense
    peer of :func:`moe_layer`: with ``F = top_k * ffn`` it has exactly the
    active parameters (and FLOPs) of a top-k MoE whose experts have width ffn.
    """
    x = check_float_array("x", x, ndim=2)
    w1 = check_float_array("w1", w1, ndim=2)
    w3 = check_float_array("w3", w3, ndim=2)
    w2 = check_float_array("w2", w2, ndim=2)
    T, d = x.shape
    F = w1.shape[1]
    for name, w, shape in (("w1", w1, (d, F)), ("w3", w3, (d, F)), ("w2", w2, (F, d))):
        if w.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {w.shape}")
        if w.dtype != x.dtype:
            raise TypeError(f"{name} must have dtype {x.dtype} like x, got {w.dtype}")
    h = aligned_empty((T, F), x.dtype)  # (T, F)
    g = aligned_empty((T, F), x.dtype)  # (T, F)
    out = aligned_empty((T, d), x.dtype)  # (T, d)
    _swiglu_into(x, w1, w3, w2, h, g, out)
    return out


def _check_moe_args(x, router_w, w1, w3, w2):
    x = check_float_array("x", x, ndim=2)
    router_w = check_float_array("router_w", router_w, ndim=2)
    w1 = check_float_array("w1", w1, ndim=3)
    w3 = check_float_array("w3", w3, ndim=3)
    w2 = check_float_array("w2", w2, ndim=3)
    T, d = x.shape
    if router_w.shape[0] != d or router_w.shape[1] < 1:
        raise ValueError(f"router_w must have shape ({d}, E) with E >= 1, got {router_w.shape}")
    E = router_w.shape[1]
    if w1.shape[:2] != (E, d):
        raise ValueError(f"w1 must have shape ({E}, {d}, ffn), got {w1.shape}")
    F = w1.shape[2]
    for name, w, shape in (("w3", w3, (E, d, F)), ("w2", w2, (E, F, d))):
        if w.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {w.shape}")
    for name, w in (("router_w", router_w), ("w1", w1), ("w3", w3), ("w2", w2)):
        if w.dtype != x.dtype:
            raise TypeError(f"{name} must have dtype {x.dtype} like x, got {w.dtype}")
    return x, router_w, w1, w3, w2


_POOL: ThreadPoolExecutor | None = None
_BLAS: object | None = None
_POOL_LOCK = threading.Lock()


def _expert_pool():
    """Lazily created worker threads (one per possible Numba thread) and a BLAS controller."""
    global _POOL, _BLAS
    with _POOL_LOCK:
        if _POOL is None:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController().select(user_api="blas")
            _POOL = ThreadPoolExecutor(max_workers=max(1, numba.config.NUMBA_NUM_THREADS),
                                       thread_name_prefix="scalelab-moe")
    return _POOL, _BLAS


def _run_experts(xs, w1, w3, w2, offsets, ys, n_workers):
    """ys[rows of e] <- SwiGLU_e(xs[rows of e]) for every non-empty expert.

    Experts, largest first, are handed to ``n_workers`` threads; each runs its
    expert's three GEMMs with single-threaded BLAS. Splitting by expert keeps
    every core busy on small per-expert GEMMs without BLAS's per-call thread
    barriers, and each expert's rows are computed by one thread with one BLAS
    call sequence, so the result does not depend on the worker count.
    """
    sizes = np.diff(offsets)  # (E,)
    todo = [int(e) for e in np.argsort(-sizes, kind="stable") if sizes[e] > 0]
    if not todo:
        return
    F = w1.shape[2]
    rows = int(sizes.max())
    one = xs.dtype.type(1)
    queue = iter(todo)
    lock = threading.Lock()

    def work():
        h = aligned_empty((rows, F), xs.dtype)  # (rows, F) per-worker scratch
        g = aligned_empty((rows, F), xs.dtype)  # (rows, F)
        while True:
            with lock:
                e = next(queue, None)
            if e is None:
                return
            lo, hi = int(offsets[e]), int(offsets[e + 1])
            n = hi - lo
            np.matmul(xs[lo:hi], w1[e], out=h[:n])
            np.matmul(xs[lo:hi], w3[e], out=g[:n])
            _silu_mul_block(h, g, 0, n, one)
            np.matmul(h[:n], w2[e], out=ys[lo:hi])

    n_workers = max(1, min(int(n_workers), len(todo)))
    pool, blas = _expert_pool()
    with blas.limit(limits=1):
        if n_workers == 1:
            work()
        else:
            futures = [pool.submit(work) for _ in range(n_workers - 1)]
            work()
            for f in futures:
                f.result()


def moe_layer(x, router_w, w1, w3, w2, top_k, *, capacity=None, threads=None, **route_options):
    """Sparse SwiGLU mixture-of-experts feed-forward layer.

    ``logits = x @ router_w``; :func:`route` (``route_options`` are passed on);
    :func:`dispatch` (with ``capacity``); :func:`permute`; for each expert e
    three GEMMs on only its ``counts[e]`` rows,
    ``(silu(xs @ w1[e]) * (xs @ w3[e])) @ w2[e]``; :func:`unpermute` with the
    gate weights. Dropped assignments contribute zero.

    Parameters
    ----------
    x : ndarray, (T, d)
    router_w : ndarray, (d, E)
    w1, w3 : ndarray, (E, d, ffn)
        Gate and up projections of every expert.
    w2 : ndarray, (E, ffn, d)
        Down projections.
    top_k : int
    capacity : int, optional
    threads : int, optional
        Worker threads for the expert GEMMs (default: ``numba.get_num_threads()``).
        Each worker runs whole experts with single-threaded BLAS; BLAS is limited
        to one thread process-wide for the duration of the expert loop (so do
        not call ``moe_layer`` from several threads at once).

    All arrays share one dtype (float32 or float64); GEMMs accumulate in it.
    The result is identical for any ``threads``.

    Returns
    -------
    ndarray, (T, d)
    """
    x, router_w, w1, w3, w2 = _check_moe_args(x, router_w, w1, w3, w2)
    workers = numba.get_num_threads() if threads is None else check_int("threads", threads, lo=1)
    x = np.ascontiguousarray(x)
    E = w1.shape[0]
    logits = x @ router_w  # (T, E)
    weights, experts = route(logits, top_k, **route_options)  # (T, k) each
    D = dispatch(experts, E, capacity=capacity)
    xs = permute(x, D)  # (n_kept, d)
    ys = aligned_empty(xs.shape, x.dtype)  # (n_kept, d)
    _run_experts(xs, w1, w3, w2, D.offsets, ys, workers)
    return unpermute(ys, D, weights)


def moe_layer_ref(x, router_w, w1, w3, w2, top_k, *, capacity=None, **route_options):
    """Dense reference for :func:`moe_layer`: every expert on every token in float64, then masked.

    The router logits are the same ``x @ router_w`` product as in
    :func:`moe_layer` (so both route identically); routing uses :func:`route_ref`
    and :func:`dispatch_ref`.
    """
    x, router_w, w1, w3, w2 = _check_moe_args(x, router_w, w1, w3, w2)
    T, d = x.shape
    E = w1.shape[0]
    weights, experts = route_ref(x @ router_w, top_k, **route_options)
    D = dispatch_ref(experts, E, capacity=capacity)
    gate = np.zeros((T, E), np.float64)  # (T, E) combine weights, 0 for unrouted/dropped
    kept = ~D.dropped
    t_idx = np.repeat(np.arange(T)[:, None], experts.shape[1], axis=1)
    np.add.at(gate, (t_idx[kept], experts[kept]), weights[kept].astype(np.float64))
    x64 = x.astype(np.float64)
    y = np.zeros((T, d), np.float64)
    for e in range(E):
        h = x64 @ w1[e].astype(np.float64)  # (T, F)
        g = x64 @ w3[e].astype(np.float64)  # (T, F)
        a = h / (1.0 + np.exp(-h)) * g
        y += gate[:, e, None] * (a @ w2[e].astype(np.float64))
    return y.astype(x.dtype)
