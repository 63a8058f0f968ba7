"""Recurrent sequence mixers on the CPU: the Mamba selective scan and RWKV-6 time mixing.

Both replace attention's growing KV cache by a state of fixed size per
sequence, so a decode step reads the same number of bytes at any context
length. Public API (every kernel has a float64 NumPy reference that runs the
plain recurrence one token at a time)

=================  ==================  ================================================
kernel (Numba)     reference (NumPy)   what it computes
=================  ==================  ================================================
``mamba_scan``     ``mamba_scan_ref``  prefill: the S6 selective scan over L tokens
``mamba_step``     ``mamba_step_ref``  decode: one token, state updated in place
``rwkv_wkv``       ``rwkv_wkv_ref``    prefill: RWKV-6 WKV in chunks of ``RWKV_CHUNK``
``rwkv_wkv_loop``  ``rwkv_wkv_ref``    the same, token by token (the step kernel in a loop)
``rwkv_step``      ``rwkv_step_ref``   decode: one token, state updated in place
=================  ==================  ================================================

plus the napkin-math helpers :func:`mamba_scan_bytes` and :func:`rwkv_wkv_flops`
used by the benchmarks.

Semantics
---------
* Mamba (Gu & Dao 2023, Algorithm 2, with the discretisation of the reference
  implementation ``selective_scan_ref``): for channel ``d`` and state index
  ``n``, ``h_t = exp(delta_t A) * h_{t-1} + delta_t B_t x_t`` and
  ``y_t = sum_n C_t h_t + D x_t``. Shapes: ``x, delta (B, L, D)`` (``delta``
  after the softplus, so ``>= 0``), ``A (D, N)`` with ``A <= 0``,
  ``B, C (B, L, N)`` (shared by all channels), ``D (D,)``, state
  ``(B, D, N)``; ``y (B, L, D)``.
* RWKV-6 "Finch" WKV (Peng et al. 2024, Section 4) per head, with ``r, k, w
  (B, L, H, K)``, ``v (B, L, H, V)``, ``u (H, K)``, state ``S (B, H, K, V)``:
  ``y_t = r_t (S_{t-1} + diag(u) k_t^T v_t)`` and
  ``S_t = diag(w_t) S_{t-1} + k_t^T v_t``; ``w`` is the per-step decay in
  ``[0, 1]`` (0 forgets, 1 keeps), data-dependent per token and channel.
* State hand-off: a prefill returns the final state; ``state=None`` starts
  from zeros; a state passed to a prefill is not modified. The step kernels
  update ``state`` in place and return ``y``. Prefill of ``L`` tokens then
  ``n`` steps equals one prefill of ``L + n`` tokens (to rounding).
* dtype rule: float32 or float64 inputs, promoted with ``np.result_type``;
  outputs and the returned state have the promoted dtype, and a state updated
  in place must already have it. float32 kernels accumulate in float32 (each
  sum has at most ``N``, ``K`` or ``RWKV_CHUNK`` terms), the references in
  float64.
* Bad input raises ``TypeError``/``ValueError`` naming the argument: wrong
  rank or mismatched sizes, ``A > 0``, ``delta < 0``, ``w`` outside ``[0, 1]``,
  NaN or inf anywhere. ``mamba_scan`` checks ``x`` and ``delta``, its two
  largest inputs, in the kernel as it reads them and raises after it (its
  output and state are new arrays, so nothing the caller holds has changed);
  a separate pass over them cost ~8% of the scan.

Precision: float32 kernels match the float64 references to about ``3e-7 *
max|ref|`` on the tested shapes (the tests bound it at ``2e-5``), including
``L`` in the thousands with decays near 1: every decay factor is ``<= 1``, so
rounding errors in the state are damped, not amplified. float64 kernels
match to ``1e-12``.

Numerical safety of the decays
------------------------------
No kernel divides by a decay or exponentiates a positive number. Mamba's
chunked scan needs the product of ``exp(delta_s A)`` from a chunk's start to
position ``t``; it is formed in log space as ``exp2(A log2(e) * sum_s
delta_s)`` with an exponent ``<= 0``, so it can only underflow to 0 (when the
true value is below ``2**-126`` too); the carry is added, never divided out.
RWKV's chunked form uses *running products* of ``w`` over sub-ranges that lie
between the two tokens involved (from the chunk start to a query, from a key
to the chunk end, from a key to a query), each a product of factors in
``[0, 1]``. The textbook factorisation ``r_i * W_i`` times ``k_j / W_j``
with cumulative ``W`` is not used: for ``w = 1e-6`` over 32 tokens ``W``
underflows and ``k_j / W_j`` is 0/0.

Variants, in rising sophistication, and why each is faster
----------------------------------------------------------
0. ``*_ref``: one token at a time in float64 NumPy, vectorised over batch,
   channels and heads; the oracles.
1. ``mamba_scan``: a work item is (sequence, block of up to
   ``SCAN_CHANNELS`` channels, chunk of the sequence); the state of a block
   is kept as ``(N, 256)`` float32 (16 KB at N=16, in L1) with the channels
   contiguous. Per token the loop over ``n`` is outside and the loop over
   the block's channels inside: every vector lane is its own channel, so the
   update ``h = exp2(dt A) h + dt x B`` and the output sum ``y = D x + sum_n
   C_n h_n`` vectorise (``exp2`` included) without a horizontal sum and
   without reassociation, and ``y`` adds its terms in the order of ``n``
   whatever the vector width. State rows go in pairs (one pass over the
   channels updates ``h[n]`` and ``h[n + 1]``), so ``delta``, ``dx`` and the
   output accumulator move through L1 once per two rows, and the ``exp2``
   constants arrive as a run-time tuple (``EXP2_F32_COEFFS``) so the loop keeps
   them in registers instead of re-broadcasting eight of them from memory per
   vector; both keep every operation and its order, so the bits are those of
   one row per pass with inline constants (float32; float64, which calls libm,
   moved by ~1e-14 where LLVM fused its multiply-adds differently). Together
   1.15-1.2x, one or two threads, interleaved in one process. A work item
   walks ``x``, ``delta`` and ``y`` in rows ``D`` elements apart, a stride the
   hardware prefetcher does not follow across pages, so every token began
   with a miss to DRAM; the kernel hints the rows ``SCAN_PREFETCH`` tokens
   ahead (``prefetch_span``): a further 1.1-1.15x (bitwise equal; 2 and 8
   tokens ahead did no better). Checking ``x`` and ``delta`` inside the
   kernel instead of in a pass of their own: 1.05-1.15x more. The inner
   loops index 1-D row views (``delta[b, t, d0:d0 + nd]``); with the 3-D indices written inside them
   LLVM did not vectorise, and the same loops ran 4.4x slower (one thread,
   interleaved, bitwise-equal outputs). Blocks of 256 channels rather than 16 (one
   cache line of ``x`` per token): a work item walks its sequence with a
   ``D``-element stride, and 16-channel blocks touched a new 4 KB page of
   ``x``, ``delta`` and ``y`` for every 64 bytes read; at B=1, L=4096,
   D=2048, 2 threads, 256 ran 1.4-1.9x faster than 16 (64: 1.3x, 512: no
   better), interleaved in one process. The sequence is cut into ``SCAN_CHUNK``-token
   chunks only when a sequence has fewer than ``SPLIT_BELOW_BLOCKS`` channel
   blocks (the choice depends on ``D`` and ``L`` alone, never on the batch or
   the thread count, so results are bitwise reproducible): the carry pass
   repeats the ``exp`` of every element of the later chunks, nearly doubling
   the work, which pays only when channels alone cannot keep both cores busy.
   Two-pass scheme: pass 1 scans every chunk from a zero state in parallel
   and keeps its final state and ``sum delta``; a serial pass over chunks (in
   order, per channel) forms each chunk's incoming state; pass 2 adds
   ``C_t . (exp(A sum_{s<=t} delta_s) * carry)`` to every position, in
   parallel.
2. ``mamba_step`` is the same block kernel on one token.
3. ``rwkv_wkv_loop``: a work item is (sequence, head); per token the state
   ``(K, V)`` is read and written once (the ``V`` loop innermost, vectorised):
   per state element a multiply and three multiply-adds, with a load and a
   store through L1. A work item walks its rows ``H * K`` elements apart, a
   stride across pages the hardware prefetcher does not follow, so the loop
   hints the rows ``RWKV_PREFETCH`` tokens ahead into the cache: 1.3x at
   B=1, L=4096, H=32, head 64, 2 threads (any distance from 1 to 16 alike).
4. ``rwkv_wkv``: per chunk of ``RWKV_CHUNK`` tokens the state is used twice
   as a matrix: ``Y = (R * decay-from-chunk-start) S`` and
   ``S <- diag(prod w) S + (K * decay-to-chunk-end)^T V``, both with the
   register-tile micro-kernels of :mod:`kernels._tiles` (the accumulators
   stay in registers; no state load/store per token): two multiply-adds
   per state element and token. The intra-chunk pairs form a ``(T, T)``
   lower-triangular score matrix with the bonus ``u`` on its diagonal,
   applied to ``V`` with the same tiles; its entries are dot products over
   the channels in the fixed lane order of the dot tiles, of ``r_i`` with
   the keys decayed to query ``i`` (keys by channels, a running product
   updated once per query, channels contiguous so every update is a
   vector loop). The decayed keys left after the last query are the
   decay-to-chunk-end keys of the state update, so they are not formed a
   second time. A work item is (sequence, ``RWKV_HEADS`` consecutive heads),
   each chunk running through the item's heads in turn, so one token's rows
   of those heads are one contiguous run; the rows of the next chunk are
   hinted into the cache while the current one is computed. Every reduction
   runs in a fixed order, so results do not depend on the thread count.

Measured here (2 shared cores, load average 8-14 while measuring, so
absolute times are inflated; ratios are from interleaved runs in one
process; per-element figures are CPU time, one thread, which the load
inflates less than wall time): at B=1, L=4096, D=2048, N=16 the scan's
block kernel takes ~0.8 ns per (token, channel, state) element streaming
from DRAM and ~0.55 ns with its rows in cache; a bare vectorised ``exp2``
loop takes ~0.37 ns per element, and the kernel with its ``exp2`` replaced by
an add took ~0.6 of the full kernel's time, so the exponentials are ~40% of
the work, not all of it (the rest is the state and ``A`` rows through L1 and
the strided walk over ``x``/``delta``/``y``). ``N`` exponentials per
(token, channel) move only 12 bytes of ``x``/``delta``/``y``: even at the
bare-``exp2`` rate on both cores the scan would move ~4 GB/s, under 20% of
the 20-23 GB/s read-stream bandwidth measured on a quiet machine: with an
``exp`` accurate to float32 the exponentials' arithmetic alone keeps the
scan far below half the read bandwidth.

The WKV at B=1, L=4096, H=32, head 64, float32, 2 threads, on a quiet Zen 3
(AVX2; old and new kernels interleaved in one process, three processes):
the chunked form takes 37-48 ms, 1.4-1.7x the token loop (62-70 ms) and
1.75x faster than before its score matrix became dot products, its heads
were grouped and its rows prefetched (78-81 ms; 0.95-0.99x the loop as it
was then). It cannot be much faster than the loop: it saves the loop's
state load and store and half its vector operations, two multiply-adds
against a multiply and three multiply-adds per state element and token,
so at equal efficiency per operation it would be at most 2x the loop
before its intra-chunk work, which grows with the chunk. With its rows in
L2 and one thread the chunked form splits as: the two state matmuls
46%, the intra-chunk scores 24%, copies and decays 22%, the transpose of
the keys 7%. Chunks of 8 and 16 tokens ran alike, 24 slightly and 32
clearly slower; groups of 2 to 16 heads alike within the noise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from scalelab.kernels._common import check_float_array, check_int
from scalelab.kernels._tiles import (TILE_ROW_BYTES, TILE_ROWS, dot_tile_nt_1x1, dot_tile_nt_1x4, mm_tile_rescale_add,
                                     mm_tile_store)
from scalelab.kernels.attention import LOG2E
from scalelab.kernels._vecmath import EXP2_F32_COEFFS, FASTMATH_INF_SAFE, exp2_nonpositive_with, prefetch_span

__all__ = [
    "mamba_scan",
    "mamba_scan_ref",
    "mamba_step",
    "mamba_step_ref",
    "rwkv_wkv",
    "rwkv_wkv_loop",
    "rwkv_wkv_ref",
    "rwkv_step",
    "rwkv_step_ref",
    "mamba_scan_bytes",
    "rwkv_wkv_flops",
    "SCAN_CHANNELS",
    "SCAN_CHUNK",
    "SPLIT_BELOW_BLOCKS",
    "RWKV_CHUNK",
    "RWKV_HEADS",
    "RWKV_PREFETCH",
]

#: Channels per Mamba work item: at most this many, at least 16, else ``D // SPLIT_BELOW_BLOCKS``
#: rounded down to a multiple of 16 (so wide layers still give every thread several blocks).
SCAN_CHANNELS = 256
#: Tokens per sequence chunk when the Mamba scan splits the sequence.
SCAN_CHUNK = 256
#: Tokens ahead whose ``x``/``delta``/``y`` rows the scan asks the cache for.
SCAN_PREFETCH = 4
#: Split the sequence only when a sequence has fewer channel blocks than this.
SPLIT_BELOW_BLOCKS = 8
#: Tokens per RWKV chunk (a multiple of the 4-row register tile).
RWKV_CHUNK = 16
#: Heads per work item of the chunked WKV (fixed, so results never depend on the thread count).
RWKV_HEADS = 4
#: Tokens ahead whose rows the token-by-token WKV loop asks the cache for.
RWKV_PREFETCH = 4


# --------------------------------------------------------------------------- NumPy references


def mamba_scan_ref(x, delta, A, B, C, D, state=None):
    """The selective scan one token at a time in float64; same semantics as :func:`mamba_scan`."""
    x, delta, A, B, C, D, state, dtype = _check_mamba(x, delta, A, B, C, D, state, step=False)
    nb, L, d = x.shape
    h = np.zeros((nb, d, A.shape[1])) if state is None else state.astype(np.float64)  # (B, D, N)
    A64, D64 = A.astype(np.float64), D.astype(np.float64)
    y = np.zeros((nb, L, d))
    for t in range(L):
        dt = delta[:, t].astype(np.float64)  # (B, D)
        xt = x[:, t].astype(np.float64)  # (B, D)
        h = np.exp(dt[:, :, None] * A64) * h + (dt * xt)[:, :, None] * B[:, t, None, :]  # (B, D, N)
        y[:, t] = np.einsum("bdn,bn->bd", h, C[:, t].astype(np.float64)) + D64 * xt
    return y.astype(dtype), h.astype(dtype)


def mamba_step_ref(x, delta, A, B, C, D, state):
    """One Mamba decode step in float64; updates ``state`` in place like :func:`mamba_step`."""
    _check_mamba(x, delta, A, B, C, D, state, step=True)
    y, h = mamba_scan_ref(x[:, None], delta[:, None], A, B[:, None], C[:, None], D, state)
    state[...] = h
    return y[:, 0]


def rwkv_wkv_ref(r, k, v, w, u, state=None):
    """RWKV-6 WKV one token at a time in float64; same semantics as :func:`rwkv_wkv`."""
    r, k, v, w, u, state, dtype = _check_rwkv(r, k, v, w, u, state, step=False)
    nb, L, H, K = r.shape
    S = np.zeros((nb, H, K, v.shape[3])) if state is None else state.astype(np.float64)  # (B, H, K, V)
    u64 = u.astype(np.float64)
    y = np.zeros((nb, L, H, v.shape[3]))
    for t in range(L):
        kv = k[:, t, :, :, None].astype(np.float64) * v[:, t, :, None, :]  # (B, H, K, V)
        y[:, t] = np.einsum("bhk,bhkv->bhv", r[:, t].astype(np.float64), S + u64[None, :, :, None] * kv)
        S = w[:, t, :, :, None] * S + kv
    return y.astype(dtype), S.astype(dtype)


def rwkv_step_ref(r, k, v, w, u, state):
    """One RWKV-6 decode step in float64; updates ``state`` in place like :func:`rwkv_step`."""
    _check_rwkv(r, k, v, w, u, state, step=True)
    y, S = rwkv_wkv_ref(r[:, None], k[:, None], v[:, None], w[:, None], u, state)
    state[...] = S
    return y[:, 0]


# --------------------------------------------------------------------------- napkin math


def mamba_scan_bytes(batch, seq_len, d_inner, d_state, itemsize=4):
    """Bytes a selective scan must move: read ``x``, ``delta``, ``B``, ``C``; write ``y``; state in and out."""
    batch, seq_len, d_inner, d_state = (check_int(n, v, lo=0) for n, v in
                                        (("batch", batch), ("seq_len", seq_len), ("d_inner", d_inner),
                                         ("d_state", d_state)))
    itemsize = check_int("itemsize", itemsize, lo=1)
    tokens = batch * seq_len
    return itemsize * (3 * tokens * d_inner + 2 * tokens * d_state + 2 * batch * d_inner * d_state)


def rwkv_wkv_flops(batch, seq_len, n_heads, head_k, head_v=None):
    """FLOPs of the token-by-token WKV recurrence: ``y = r S`` (2KV) and ``S = w S + k^T v`` (3KV) per token and head."""
    batch, seq_len, n_heads, head_k = (check_int(n, v, lo=0) for n, v in
                                       (("batch", batch), ("seq_len", seq_len), ("n_heads", n_heads),
                                        ("head_k", head_k)))
    head_v = head_k if head_v is None else check_int("head_v", head_v, lo=0)
    return 5 * batch * seq_len * n_heads * head_k * head_v


# --------------------------------------------------------------------------- validation


def _finite(name, a):
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")


@njit(parallel=True, cache=True)
def _count_outside(a, lo, hi):
    """Number of elements of the 1-D array ``a`` not in ``[lo, hi]`` (NaN counts as outside)."""
    nblk = (a.size + 65535) // 65536
    counts = np.zeros(nblk, dtype=np.int64)
    for blk in prange(nblk):
        c = 0
        for i in range(blk * 65536, min(a.size, (blk + 1) * 65536)):
            v = a[i]
            if not (v >= lo and v <= hi):
                c += 1
        counts[blk] = c
    return counts.sum()


def _check_range(name, a, lo, hi, what):
    """Raise unless every element of ``a`` lies in ``[lo, hi]`` (one parallel pass, no temporaries)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.size and _count_outside(flat, flat.dtype.type(lo), flat.dtype.type(hi)):
        if not np.isfinite(flat).all():
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        raise ValueError(f"{name} must be {what}")


def _check_state(state, shape, dtype, step):
    if state is None:
        if step:
            raise TypeError("state must be a numpy array (the step kernels update it in place)")
        return None
    state = check_float_array("state", state, len(shape))
    if state.shape != shape:
        raise ValueError(f"state must have shape {shape}, got {state.shape}")
    if step:
        if state.dtype != dtype:
            raise TypeError(f"state must have the promoted input dtype {dtype} (it is updated in place), "
                            f"got {state.dtype}")
        if not state.flags.c_contiguous or not state.flags.writeable:
            raise ValueError("state must be a writeable C-contiguous array (it is updated in place)")
    _finite("state", state)
    return state


def _check_x_delta(x, delta):
    """Raise unless ``delta`` is in ``[0, max]`` and ``x`` is finite."""
    _check_range("delta", delta, 0.0, np.finfo(delta.dtype).max, ">= 0 (the step size after softplus)")
    _check_range("x", x, -np.finfo(x.dtype).max, np.finfo(x.dtype).max, "finite")


def _check_mamba(x, delta, A, B, C, D, state, step, values_xd=True):
    """Validate and return the inputs and the promoted dtype.

    ``values_xd=False`` leaves the values of ``x`` and ``delta`` unchecked:
    the scan counts bad ones as it reads them and calls :func:`_check_x_delta`
    afterwards (one pass over the two largest inputs fewer).
    """
    nd = 2 if step else 3
    x = check_float_array("x", x, nd)
    delta = check_float_array("delta", delta, nd)
    A = check_float_array("A", A, 2)
    B = check_float_array("B", B, nd)
    C = check_float_array("C", C, nd)
    D = check_float_array("D", D, 1)
    if delta.shape != x.shape:
        raise ValueError(f"delta must have the shape of x {x.shape}, got {delta.shape}")
    d, n = A.shape
    if x.shape[-1] != d or D.shape[0] != d:
        raise ValueError(f"channel mismatch: x has D={x.shape[-1]}, A has {d} rows, D has {D.shape[0]}")
    lead = x.shape[:-1]
    for name, a in (("B", B), ("C", C)):
        if a.shape != lead + (n,):
            raise ValueError(f"{name} must have shape {lead + (n,)} (x's leading dims, A's N={n}), got {a.shape}")
    dtype = np.result_type(x, delta, A, B, C, D)
    _check_range("A", A, -np.inf, 0.0, "<= 0 (a stable state transition)")
    _finite("A", A)
    if values_xd:
        _check_x_delta(x, delta)
    for name, a in (("B", B), ("C", C), ("D", D)):
        _finite(name, a)
    state = _check_state(state, (x.shape[0], d, n), dtype, step)
    return x, delta, A, B, C, D, state, dtype


def _check_rwkv(r, k, v, w, u, state, step):
    nd = 3 if step else 4
    r = check_float_array("r", r, nd)
    k = check_float_array("k", k, nd)
    v = check_float_array("v", v, nd)
    w = check_float_array("w", w, nd)
    u = check_float_array("u", u, 2)
    for name, a in (("k", k), ("w", w)):
        if a.shape != r.shape:
            raise ValueError(f"{name} must have the shape of r {r.shape}, got {a.shape}")
    if v.shape[:-1] != r.shape[:-1]:
        raise ValueError(f"v must match r in its leading dims {r.shape[:-1]}, got {v.shape}")
    H, K = r.shape[-2:]
    if u.shape != (H, K):
        raise ValueError(f"u must have shape (H, K) = {(H, K)}, got {u.shape}")
    dtype = np.result_type(r, k, v, w, u)
    _check_range("w", w, 0.0, 1.0, "in [0, 1] (a per-step decay factor)")
    for name, a in (("r", r), ("k", k), ("v", v), ("u", u)):
        _finite(name, a)
    state = _check_state(state, (r.shape[0], H, K, v.shape[-1]), dtype, step)
    return r, k, v, w, u, state, dtype


# --------------------------------------------------------------------------- Mamba kernels


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _scan_block(x, delta, A2t, Bm, C, Dv, y, b, d0, nd, t0, t1, h, dsum, dx, acc, k):
    """Scan tokens ``[t0, t1)`` of sequence ``b``, channels ``[d0, d0 + nd)``, from state ``h (N, nd)``; returns
    the number of ``delta`` values outside ``[0, inf)`` plus non-finite ``x`` values it read.

    ``y`` gets ``D x + sum_n C_n h_n`` (summed in the order of ``n``); ``h``
    ends as the final state and ``dsum[j]`` as ``sum_t delta`` of channel
    ``d0 + j``. ``dx`` and ``acc`` are scratch rows of ``nd``; ``k`` is
    ``EXP2_F32_COEFFS``. The channel loop is innermost: every lane is its own
    channel, so the loop (``exp2`` included) vectorises with no horizontal sum
    and no reassociation. State rows go in pairs: one pass over the channels
    updates ``h[n]`` and ``h[n + 1]`` and adds both terms to ``acc`` (``n``
    first, the same order and bits as one row per pass), so ``delta``, ``dx``
    and ``acc`` are loaded and ``acc`` stored once per pair.
    """
    N = A2t.shape[0]
    nbad = 0
    for j in range(nd):
        dsum[j] = 0
    for t in range(t0, t1):
        if t + SCAN_PREFETCH < t1:  # rows SCAN_PREFETCH tokens ahead lie D elements apart: hint them
            prefetch_span(delta[b, t + SCAN_PREFETCH, d0:d0 + nd], 0)
            prefetch_span(x[b, t + SCAN_PREFETCH, d0:d0 + nd], 0)
            prefetch_span(y[b, t + SCAN_PREFETCH, d0:d0 + nd], 1)
        dl = delta[b, t, d0:d0 + nd]  # (nd,) row views: with 3-D indices inside, the loops did not vectorise
        xr = x[b, t, d0:d0 + nd]
        for j in range(nd):
            dsum[j] += dl[j]
            dx[j] = dl[j] * xr[j]
            acc[j] = Dv[d0 + j] * xr[j]
            nbad += 0 if (dl[j] >= 0 and dl[j] < np.inf and abs(xr[j]) < np.inf) else 1  # NaN fails too
        for n in range(0, N - 1, 2):
            b0, b1 = Bm[b, t, n], Bm[b, t, n + 1]
            c0, c1 = C[b, t, n], C[b, t, n + 1]
            a0, a1 = A2t[n, d0:d0 + nd], A2t[n + 1, d0:d0 + nd]
            h0, h1 = h[n], h[n + 1]
            for j in range(nd):
                dlj, dxj = dl[j], dx[j]
                v0 = exp2_nonpositive_with(dlj * a0[j], k) * h0[j] + dxj * b0
                v1 = exp2_nonpositive_with(dlj * a1[j], k) * h1[j] + dxj * b1
                h0[j] = v0
                h1[j] = v1
                acc[j] = (acc[j] + c0 * v0) + c1 * v1
        if N % 2:
            n = N - 1
            bn, cn = Bm[b, t, n], C[b, t, n]
            ar, hr = A2t[n, d0:d0 + nd], h[n]
            for j in range(nd):
                hv = exp2_nonpositive_with(dl[j] * ar[j], k) * hr[j] + dx[j] * bn
                hr[j] = hv
                acc[j] += cn * hv
        yr = y[b, t, d0:d0 + nd]
        for j in range(nd):
            yr[j] = acc[j]
    return nbad


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _carry_block(delta, A2t, C, y, b, d0, nd, t0, t1, carry, s, acc, k):
    """Add ``C_t . (exp(A sum_{t0<=s<=t} delta_s) * carry)`` to ``y`` over tokens ``[t0, t1)`` (log-space decay).

    ``carry (N, nd)``; ``s`` and ``acc`` are scratch rows of ``nd``; channels innermost, as in :func:`_scan_block`.
    """
    N = A2t.shape[0]
    for j in range(nd):
        s[j] = 0
    for t in range(t0, t1):
        dl = delta[b, t, d0:d0 + nd]  # (nd,)
        yr = y[b, t, d0:d0 + nd]
        for j in range(nd):
            s[j] += dl[j]
            acc[j] = yr[j]
        for n in range(N):
            cn = C[b, t, n]
            ar = A2t[n, d0:d0 + nd]
            cr = carry[n]
            for j in range(nd):
                acc[j] += cn * exp2_nonpositive_with(s[j] * ar[j], k) * cr[j]
        for j in range(nd):
            yr[j] = acc[j]


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _mamba_kernel(x, delta, A2t, Bm, C, Dv, y, state, chunk, cb, k):
    """Driver: pass 1 over (sequence, channel block, chunk), a serial carry pass, pass 2 (see the module docstring).

    ``A2t (N, D)`` is ``A`` transposed and times ``log2 e``; ``state (B, D, N)`` holds the initial state on
    entry and the final state on exit; ``cb`` channels per work item, whose states are kept as
    ``(N, cb)`` (channels contiguous); ``k`` is ``EXP2_F32_COEFFS`` (a run-time argument, see ``_vecmath``).
    Returns the number of bad ``x``/``delta`` values read (see :func:`_scan_block`).
    """
    nb, L, d = x.shape
    N = A2t.shape[0]
    nblk = (d + cb - 1) // cb
    nch = max(1, (L + chunk - 1) // chunk)
    hend = np.zeros((nb, nblk, nch, N, cb), dtype=y.dtype)  # each chunk's final state from its start state
    dsum = np.zeros((nb, nblk, nch, cb), dtype=y.dtype)  # (B, blocks, chunks, channels)
    bad = np.zeros(nb * nblk * nch, dtype=np.int64)  # per work item
    for item in prange(nb * nblk * nch):
        b, rest = item // (nblk * nch), item % (nblk * nch)
        blk, c = rest // nch, rest % nch
        d0 = blk * cb
        nd = min(cb, d - d0)
        h = hend[b, blk, c]
        if c == 0:  # the first chunk starts from the given state, later ones from zero
            for j in range(nd):
                for n in range(N):
                    h[n, j] = state[b, d0 + j, n]
        scratch = np.empty((2, cb), dtype=y.dtype)
        bad[item] = _scan_block(x, delta, A2t, Bm, C, Dv, y, b, d0, nd, c * chunk, min(L, (c + 1) * chunk), h,
                                dsum[b, blk, c], scratch[0], scratch[1], k)
    carries = np.zeros((nb, nblk, nch, N, cb), dtype=y.dtype)  # state entering each chunk
    for item in prange(nb * nblk):
        b, blk = item // nblk, item % nblk
        d0 = blk * cb
        nd = min(cb, d - d0)
        run = hend[b, blk, 0].copy()
        for c in range(1, nch):  # in chunk order: the one serial step
            carries[b, blk, c] = run
            for n in range(N):
                for j in range(nd):
                    run[n, j] = exp2_nonpositive_with(dsum[b, blk, c, j] * A2t[n, d0 + j], k) * run[n, j] + hend[b, blk, c, n, j]
        for j in range(nd):
            for n in range(N):
                state[b, d0 + j, n] = run[n, j]
    for item in prange(nb * nblk * (nch - 1)):
        b, rest = item // (nblk * (nch - 1)), item % (nblk * (nch - 1))
        blk, c = rest // (nch - 1), rest % (nch - 1) + 1
        d0 = blk * cb
        scratch = np.empty((2, cb), dtype=y.dtype)
        _carry_block(delta, A2t, C, y, b, d0, min(cb, d - d0), c * chunk, min(L, (c + 1) * chunk),
                     carries[b, blk, c], scratch[0], scratch[1], k)
    return bad.sum()


def _channel_block(d):
    """Channels per work item for ``d`` channels (a function of ``d`` alone: results never depend on the batch)."""
    return int(min(SCAN_CHANNELS, max(16, d // SPLIT_BELOW_BLOCKS // 16 * 16)))


def _scan_chunk(L, d):
    """Tokens per chunk: the whole sequence unless the channels give fewer than ``SPLIT_BELOW_BLOCKS`` blocks."""
    if -(-d // _channel_block(d)) >= SPLIT_BELOW_BLOCKS:
        return max(L, 1)
    return SCAN_CHUNK


def _run_mamba(x, delta, A, B, C, D, state, dtype, chunk):
    """``y`` and the number of bad ``x``/``delta`` values the kernel read (``state`` updated in place)."""
    cast = (lambda a: np.ascontiguousarray(a, dtype=dtype))
    A2t = np.ascontiguousarray((A.astype(dtype) * dtype.type(LOG2E)).T)  # (N, D): exp(dt A) = exp2(dt A log2 e)
    y = np.empty(x.shape, dtype=dtype)
    nbad = _mamba_kernel(cast(x), cast(delta), A2t, cast(B), cast(C), cast(D), y, state, int(chunk),
                         _channel_block(x.shape[2]), EXP2_F32_COEFFS)
    return y, nbad


def mamba_scan(x, delta, A, B, C, D, state=None, *, chunk=None):
    """Mamba selective scan (prefill): ``y (B, L, D)`` and the final state ``(B, D, N)``.

    Parameters
    ----------
    x, delta : ndarray (B, L, D)
        Input and step size (after softplus, ``>= 0``).
    A : ndarray (D, N)
        State matrix (diagonal per channel), ``<= 0``.
    B, C : ndarray (B, L, N)
        Input and output projections of the state, per token.
    D : ndarray (D,)
        Skip connection.
    state : ndarray (B, D, N), optional
        Initial state (not modified); zeros if None.
    chunk : int, optional
        Tokens per sequence chunk; default: see :data:`SPLIT_BELOW_BLOCKS`.
        Any value gives the same result to rounding.

    Returns
    -------
    y : ndarray (B, L, D)
    state : ndarray (B, D, N)
    """
    # x and delta, the two largest inputs, are checked by the kernel as it reads them (no extra pass);
    # nothing the caller sees is written before the error is raised
    x, delta, A, B, C, D, state, dtype = _check_mamba(x, delta, A, B, C, D, state, step=False, values_xd=False)
    nb, L, d = x.shape
    if chunk is None:
        chunk = _scan_chunk(L, d)
    else:
        chunk = min(check_int("chunk", chunk, lo=1), max(L, 1))  # one chunk past L; no overflow in the kernel
    out_state = np.zeros((nb, d, A.shape[1]), dtype=dtype) if state is None else state.astype(dtype, copy=True)
    if L == 0 or d == 0:
        return np.zeros(x.shape, dtype=dtype), out_state
    y, nbad = _run_mamba(x, delta, A, B, C, D, out_state, dtype, chunk)
    if nbad:
        _check_x_delta(x, delta)  # raises, naming the argument
        raise ValueError("x must be finite and delta >= 0")  # unreachable unless the two checks disagree
    return y, out_state


def mamba_step(x, delta, A, B, C, D, state):
    """One Mamba decode step: ``x, delta (B, D)``, ``B, C (B, N)``; updates ``state (B, D, N)`` in place, returns ``y (B, D)``.

    The same block kernel as :func:`mamba_scan` on one token, so a prefill
    that does not split its sequence and the steps after it agree bitwise
    with one longer prefill.
    """
    x, delta, A, B, C, D, state, dtype = _check_mamba(x, delta, A, B, C, D, state, step=True)
    if x.shape[1] == 0:
        return np.zeros(x.shape, dtype=dtype)
    return _run_mamba(x[:, None], delta[:, None], A, B[:, None], C[:, None], D, state, dtype, 1)[0][:, 0]


# --------------------------------------------------------------------------- RWKV kernels


@njit(cache=True, inline="always")
def _prefetch_token(r, k, v, w, y, b, t, hh):
    """Hint the rows of token ``t`` of head ``hh`` into the cache (inputs read, ``y`` written)."""
    prefetch_span(r[b, t, hh], 0)
    prefetch_span(k[b, t, hh], 0)
    prefetch_span(v[b, t, hh], 0)
    prefetch_span(w[b, t, hh], 0)
    prefetch_span(y[b, t, hh], 1)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _wkv_token(r, k, v, w, u, S, y, b, t, hh, acc):
    """One token of one head: ``y[b, t, hh] = r (S + diag(u) k^T v)``, then ``S = diag(w) S + k^T v``."""
    K, V = S.shape
    zero = y.dtype.type(0)
    rt, kt, wt, vt, uh = r[b, t, hh], k[b, t, hh], w[b, t, hh], v[b, t, hh], u[hh]  # 1-D rows
    for j in range(V):
        acc[j] = zero
    for i in range(K):
        ri, ki, wi, ui = rt[i], kt[i], wt[i], uh[i]
        Si = S[i]
        for j in range(V):
            kv = ki * vt[j]
            s = Si[j]
            acc[j] += ri * (s + ui * kv)
            Si[j] = wi * s + kv
    yt = y[b, t, hh]
    for j in range(V):
        yt[j] = acc[j]


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _wkv_loop_kernel(r, k, v, w, u, y, state):
    """Token-by-token WKV; a work item is (sequence, head). ``state`` is updated in place."""
    nb, L, H, _ = r.shape
    for item in prange(nb * H):
        b, hh = item // H, item % H
        S = state[b, hh]
        acc = np.empty(S.shape[1], dtype=y.dtype)
        for t in range(L):
            if t + RWKV_PREFETCH < L:  # rows H * K elements apart: a stride across pages
                _prefetch_token(r, k, v, w, y, b, t + RWKV_PREFETCH, hh)
            _wkv_token(r, k, v, w, u, S, y, b, t, hh, acc)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _wkv_chunk(r, k, v, w, u, y, b, hh, t0, T, S, R, Rr, Dm, KT, P, Vc, Y, alpha, ones, cw):
    """Tokens ``[t0, t0 + T)`` of head ``hh`` of sequence ``b`` as small matmuls; ``S (Kp, Vp)`` padded state.

    Decays are running products of ``w`` over the tokens between the two ends
    of each term (all in ``[0, 1]``), never ratios of cumulative products.
    ``P``'s entries above the diagonal are zero on entry and stay zero.
    """
    K, V = r.shape[3], v.shape[3]
    Tp, Kp = R.shape
    Vp = S.shape[1]
    zero = y.dtype.type(0)
    one = y.dtype.type(1)
    # R[i] = r_i * prod_{t0 <= m < i} w_m (decay from the chunk start); alpha = prod over the chunk.
    # Inner loops index 1-D row views (r[b, t, hh] is (K,)): written with 4-D indices they did not vectorise.
    for c in range(K):
        alpha[c] = one
    L = r.shape[1]
    for i in range(T):
        if t0 + T + i < L:  # the next chunk's rows, H * K elements apart (a stride across pages)
            _prefetch_token(r, k, v, w, y, b, t0 + T + i, hh)
        ri, wi, Ri = r[b, t0 + i, hh], w[b, t0 + i, hh], R[i]
        for c in range(K):
            Ri[c] = ri[c] * alpha[c]
            alpha[c] *= wi[c]
    for i in range(T, Tp):
        for c in range(K):
            R[i, c] = zero
    uh = u[hh]
    for i in range(T):
        ri, ki, wi, Rri, Dmi = r[b, t0 + i, hh], k[b, t0 + i, hh], w[b, t0 + i, hh], Rr[i], Dm[i]
        for c in range(K):
            Rri[c] = ri[c]
            Dmi[c] = uh[c] * ki[c]
        j = 0
        while j + 4 <= i + 1:
            dot_tile_nt_1x4(Rr, i, Dm, j, 1, P, i, j, K)
            j += 4
        while j <= i:
            dot_tile_nt_1x1(Rr, i, Dm, j, 1, P, i, j, K)
            j += 1
        for j in range(i):
            Dj = Dm[j]
            for c in range(K):
                Dj[c] *= wi[c]
        for c in range(K):
            Dmi[c] = ki[c]
    for j in range(T):  # KT = Dm^T, the left operand of the state update
        Dj = Dm[j]
        for c in range(K):
            KT[c, j] = Dj[c]
    for c in range(K):
        for j in range(T, Tp):
            KT[c, j] = zero
    for i in range(T):
        vi, Vi = v[b, t0 + i, hh], Vc[i]
        for c in range(V):
            Vi[c] = vi[c]
    # Y = R S + P V (rows in tiles of 4, columns in tiles of cw, one register row)
    for i in range(0, Tp, TILE_ROWS):
        for jc in range(0, Vp, cw):
            mm_tile_store(R, i, S, 0, jc, Y, jc, Kp)
            mm_tile_rescale_add(P, i, Vc, 0, jc, Y, jc, min(Tp, i + TILE_ROWS), ones)
    # S <- diag(alpha) S + KT V
    for i in range(0, Kp, TILE_ROWS):
        for jc in range(0, Vp, cw):
            mm_tile_rescale_add(KT, i, Vc, 0, jc, S, jc, Tp, alpha)
    for i in range(T):
        yi, Yi = y[b, t0 + i, hh], Y[i]
        for c in range(V):
            yi[c] = Yi[c]


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _wkv_chunked_kernel(r, k, v, w, u, y, state, chunk, cw, group):
    """Chunked WKV; a work item is (sequence, ``group`` consecutive heads); per chunk of tokens the
    item's heads run in order, each through its own padded state.

    ``cw`` is the column width of a register tile for ``y``'s dtype.
    """
    nb, L, H, K = r.shape
    V = v.shape[3]
    Kp = -(-K // TILE_ROWS) * TILE_ROWS
    Vp = -(-V // cw) * cw
    Tp = -(-chunk // TILE_ROWS) * TILE_ROWS
    ng = -(-H // group)
    for item in prange(nb * ng):
        b, h0 = item // ng, (item % ng) * group
        nh = min(group, H - h0)
        S = np.zeros((nh, Kp, Vp), dtype=y.dtype)  # padding rows/columns stay zero
        for g in range(nh):
            for i in range(K):
                for c in range(V):
                    S[g, i, c] = state[b, h0 + g, i, c]
        R = np.empty((Tp, Kp), dtype=y.dtype)
        R[:, K:] = 0
        Rr = np.empty((Tp, K), dtype=y.dtype)
        Dm = np.empty((Tp, K), dtype=y.dtype)
        KT = np.zeros((Kp, Tp), dtype=y.dtype)
        P = np.zeros((Tp, Tp), dtype=y.dtype)
        Vc = np.zeros((Tp, Vp), dtype=y.dtype)
        Y = np.empty((Tp, Vp), dtype=y.dtype)
        alpha = np.ones(Kp, dtype=y.dtype)
        ones = np.ones(Tp, dtype=y.dtype)
        for t0 in range(0, L, chunk):
            T = min(chunk, L - t0)
            if T < chunk:  # stale rows of the previous chunk must not leak into the last one
                Vc[:, :] = 0
            for g in range(nh):
                _wkv_chunk(r, k, v, w, u, y, b, h0 + g, t0, T, S[g], R, Rr, Dm, KT, P, Vc, Y, alpha, ones, cw)
        for g in range(nh):
            for i in range(K):
                for c in range(V):
                    state[b, h0 + g, i, c] = S[g, i, c]


def _run_rwkv(fn, r, k, v, w, u, state, dtype, *extra):
    cast = (lambda a: np.ascontiguousarray(a, dtype=dtype))
    y = np.empty(r.shape[:-1] + (v.shape[-1],), dtype=dtype)
    fn(cast(r), cast(k), cast(v), cast(w), cast(u), y, state, *extra)
    return y


def _rwkv_prefill(r, k, v, w, u, state, chunked):
    r, k, v, w, u, state, dtype = _check_rwkv(r, k, v, w, u, state, step=False)
    nb, L, H, K = r.shape
    out_state = (np.zeros((nb, H, K, v.shape[3]), dtype=dtype) if state is None
                 else state.astype(dtype, copy=True))
    if L == 0 or K == 0 or v.shape[3] == 0:
        return np.zeros((nb, L, H, v.shape[3]), dtype=dtype), out_state
    if chunked:
        return _run_rwkv(_wkv_chunked_kernel, r, k, v, w, u, out_state, dtype, RWKV_CHUNK,
                         TILE_ROW_BYTES // dtype.itemsize, RWKV_HEADS), out_state
    return _run_rwkv(_wkv_loop_kernel, r, k, v, w, u, out_state, dtype), out_state


def rwkv_wkv(r, k, v, w, u, state=None):
    """RWKV-6 WKV (prefill) in chunks of :data:`RWKV_CHUNK` tokens: ``y (B, L, H, V)`` and the final state.

    Parameters
    ----------
    r, k, w : ndarray (B, L, H, K)
        Receptance, key and per-step decay (``w`` in ``[0, 1]``).
    v : ndarray (B, L, H, V)
    u : ndarray (H, K)
        Bonus of the current token.
    state : ndarray (B, H, K, V), optional
        Initial state (not modified); zeros if None.

    Returns
    -------
    y : ndarray (B, L, H, V)
    state : ndarray (B, H, K, V)
    """
    return _rwkv_prefill(r, k, v, w, u, state, chunked=True)


def rwkv_wkv_loop(r, k, v, w, u, state=None):
    """:func:`rwkv_wkv` token by token (the decode kernel in a loop): the baseline the chunked form is measured against."""
    return _rwkv_prefill(r, k, v, w, u, state, chunked=False)


def rwkv_step(r, k, v, w, u, state):
    """One RWKV-6 decode step: ``r, k, w (B, H, K)``, ``v (B, H, V)``; updates ``state`` in place, returns ``y (B, H, V)``."""
    r, k, v, w, u, state, dtype = _check_rwkv(r, k, v, w, u, state, step=True)
    if r.shape[2] == 0 or v.shape[2] == 0:
        return np.zeros(v.shape, dtype=dtype)
    return _run_rwkv(_wkv_loop_kernel, r[:, None], k[:, None], v[:, None], w[:, None], u, state, dtype)[:, 0]
