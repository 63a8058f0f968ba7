"""Scaled dot-product attention on the CPU: prefill, decode and paged decode.

Public API (every kernel has a plain NumPy reference with the same semantics)

=========================  ===============================  ==========================================
kernel (Numba)             reference (NumPy, float64 sums)  what it computes
=========================  ===============================  ==========================================
``attention``              ``attention_ref``                prefill: Lq queries against Lk keys
``decode_attention``       ``decode_attention_ref``         one new query per sequence, contiguous cache
``paged_decode_attention`` ``paged_decode_attention_ref``   the same over a vLLM-style paged cache
=========================  ===============================  ==========================================

plus the napkin-math helpers :func:`attention_flops` and :func:`kv_bytes_read`
used by the benchmarks and the inference-cost model.

Semantics shared by all of them
-------------------------------
* Grouped-query attention: query head ``h`` reads kv head ``h // (Hq // Hkv)``.
* ``scale`` defaults to ``1 / sqrt(D)``.
* Causal masks are bottom-right aligned: query ``i`` of ``Lq`` may see key ``j``
  of ``Lk`` only if ``j <= i + Lk - Lq`` (FlashAttention-2 convention; a prompt
  that continues a KV cache). Without ``causal`` every key is visible.
* ``window=W`` keeps only the ``W`` most recent keys a query may see, i.e.
  ``j >= hi_i - W + 1`` where ``hi_i`` is the last visible key (for a
  non-causal call that is the last key of the sequence). ``None`` = unlimited.
* A query that sees no key returns zeros, never NaN.
* Decode: keys at positions ``>= lengths[b]`` are never read (NaN/inf there is
  harmless); the new token is position ``lengths[b] - 1``; ``lengths[b] == 0``
  returns zeros.
* Non-finite inputs: NaN or inf in ``q``, ``k`` or ``v`` raises ``ValueError``
  naming the array, even in keys a query cannot see (so the rule does not
  depend on masks or tiles); in decode only the slots below ``lengths[b]`` are
  checked. The references apply the same rule. Prefill checks with one jitted
  pass over the inputs (~1 % of a call). Decode does not read the cache twice:
  the kernel flags a non-finite score (what a non-finite key gives) and a bad
  value makes the output non-finite, and only then the exact check runs and
  names the input; slots a window leaves unread are checked up front.
* ``scale * log2(e)`` must be finite in the computation dtype (``ValueError``
  otherwise), ``window`` must fit in int64.
* dtype rule: inputs must be float32 or float64; mixed inputs are promoted
  with ``np.result_type``; the output has the promoted dtype. float32 kernels
  accumulate in float32 (the NumPy references in float64).

Variants, in rising sophistication (llm.c style), and why each is faster
------------------------------------------------------------------------
0. ``*_ref``: materialises the (Lq, Lk) score matrix per head in float64 and
   calls ``np.exp``; obviously correct, memory O(Lq * Lk), used as the oracle.
1. A plain Numba flash loop (one query row at a time, online softmax, scalar
   ``exp``) is what the issue measured at ~72 GFLOP/s; it is not kept here
   because every later idea strictly dominates it.
2. ``attention`` (FlashAttention-2 loop order) changes five things:

   a. *Tiles*: a block of ``BLOCK_Q`` (32) queries, pre-scaled by
      ``scale * log2(e)`` while being copied into a contiguous scratch
      buffer, meets ``BLOCK_K`` (256) keys at a time; memory is O(tile), not
      O(Lq * Lk). With the register tiles of (b), 16-64 query rows and
      128-512 keys all ran within ~5% of each other (B=1, H=8, D=64, causal
      float32, 2 threads, interleaved with torch SDPA); 32 x 256 keeps the
      score tile (32 KB) in L1/L2 while K and V stream.
   b. *Register-tile micro-kernels in LLVM IR* (:mod:`scalelab.kernels._tiles`): both
      matmuls are the classic GEMM inner kernel, a 4-row x 2-vector tile of
      accumulators that stays in registers while the reduction runs, with
      one broadcast of A and two vector loads of B per step and no
      horizontal sums. K and V are packed once per call into contiguous
      strips of 16 (float32) columns: ``K^T`` strip by strip for the scores,
      ``V`` column strip by column strip for the update, 64-byte aligned.
      History, measured here (paired interleaved runs, 2 threads): the
      previous kernel wrote both matmuls as dot products (reduction index
      innermost, 2 x 4 scalar accumulators that LLVM vectorised), which
      ended every score with an 8-lane horizontal sum (30-40% of the QK^T
      time) and reached 0.84-1.03x torch SDPA; register tiles on an unpacked
      ``K^T`` tile gave ~1.03x over that (the tile's 1 KB row stride maps a
      strip onto a few L1 sets), packed strips ~1.3x, and packing in one
      parallel pass into aligned buffers ~1.45x. The packed buffer stays
      with the calling thread for its next call (up to
      ``STRIP_WORKSPACE_BYTES``): fresh memory on every call cost a page
      fault per 4 KB, up to ~20% of a one-thread call at L = 512-1024.
   c. *A vectorisable exp*: ``exp2`` of float32 is a degree-6 polynomial on the
      fractional part times ``2**n`` built from the exponent bits, so the
      softmax loop vectorises (libm ``exp`` is a scalar call per score);
      clamping at -127 makes masked (-inf) scores exactly 0. Working in base 2
      is free because ``log2(e)`` is folded into the query scale. The row sum
      is a separate pass (:func:`~scalelab.kernels._tiles.row_sum`, lanes in a
      fixed order written in IR): fused into the exp loop, LLVM vectorises the
      sum only with ``reassoc``, which makes the bits depend on the compile;
      written as eight scalar lane sums, the SLP vectoriser left the whole
      exp loop scalar.
   d. *A vectorised row max* (:func:`~scalelab.kernels._tiles.row_max`,
      written in IR): without ``nnan`` LLVM keeps a max chain scalar, and
      eight independent lanes in Numba stayed scalar too (``vmaxss``, one
      score at a time), which made the row max the largest part of the
      softmax. The maximum of non-NaN scores does not depend on the order
      it is taken in (up to the sign of a zero, and ``2**(s - 0)`` and
      ``2**(s + 0)`` have the same bits), so any lane split gives the same
      result.
   e. *Mask only where needed*: tiles entirely outside every row's visible
      range are never visited; tiles entirely inside skip the mask; only
      diagonal / window-edge tiles are masked. The parallel loop walks
      (batch, head, pair of query blocks) where a pair is block ``t`` and
      block ``n - 1 - t``, so causal work is the same for every iteration.
3. ``decode_attention`` (flash-decoding): the ``g`` query heads that share a
   kv head are processed together (4 query heads x 1 key per block of
   :func:`~scalelab.kernels._tiles.dot_tile_nt_for`: full-vector dot products
   in a lane order fixed in IR, so they need no ``reassoc``), so each K and V
   byte is read from DRAM once for all ``g`` heads; both passes prefetch the
   rows ``DECODE_PREFETCH`` keys ahead. The sequence is cut
   into fixed ``DECODE_SPLIT``-key chunks (independent of the thread count);
   a parallel work item is (batch, chunk) and produces (max, sum, partial
   output) per head, and the chunks are merged in a fixed order: both cores
   stream memory even at batch 1, and the result is bitwise identical for any
   thread count. Each kv head's rows are streamed in turn.
4. ``paged_decode_attention``: the same driver, splits, tiles and blocks of
   four keys, so each (head, tile) does the same arithmetic; only the order
   in which rows are read follows the page. A page holds all kv heads' rows
   of a key side by side, so each pass over a tile walks its pages in memory
   order (key, then kv head) and keeps the scores of all heads (Hq x
   ``DECODE_TILE``); every page is one contiguous stream, and the rows
   ``PAGED_PREFETCH_ROWS`` ahead are prefetched, from the next page (read
   from the block table) once the current one ends. Reading head by head
   instead touched one 512-byte row per 4 KB (at Hkv = 8, D = 128), which the
   hardware prefetcher does not follow across 4 KB pages: 0.55-0.6x the
   contiguous rate (B=8 Hq=32 kv=4096 D=128 page 16, one thread, Hkv=8),
   against 0.9-1.0x in memory order (1.0-1.2x at Hkv=32). The helpers the paged loops call per row are
   inlined in Numba IR (``inline="always"``): as LLVM calls they cost ~10 %
   of the contiguous decode. With a page size that is a multiple of 4 and
   no window, paged and contiguous caches holding the same data give the
   same bits (same blocks of four keys in the same order).

Precision: float32 results match the float64 references to about
``1e-5 * max|v|`` for well-conditioned inputs (the exp polynomial has a
relative error below 1e-7); float64 kernels use libm ``exp2`` and match to
~1e-12. Fast-math flags exclude ``nnan``/``ninf`` because -inf marks masked
scores.
"""

from __future__ import annotations

import math
import numbers
import threading

import numpy as np
from numba import njit, prange
from numba.extending import overload

from scalelab.kernels._common import aligned_empty, check_finite, check_float_array, check_int, check_int_array
from scalelab.kernels._vecmath import FASTMATH_INF_SAFE, exp2_nonpositive
from scalelab.kernels._tiles import (TILE_ROW_BYTES, TILE_ROWS, dot_tile_nt_1x1, dot_tile_nt_2x1, dot_tile_nt_4x1,
                                     mm_tile_rescale_add, mm_tile_store, prefetch_row, row_max,
                                     row_sum)

__all__ = [
    "attention",
    "attention_ref",
    "decode_attention",
    "decode_attention_ref",
    "paged_decode_attention",
    "paged_decode_attention_ref",
    "attention_flops",
    "kv_bytes_read",
    "BLOCK_Q",
    "BLOCK_K",
    "DECODE_SPLIT",
]

#: Query rows per prefill block (a multiple of the 4-row register tile wastes no rows).
BLOCK_Q = 32
#: Keys per prefill tile.
BLOCK_K = 256
#: Keys per decode work item (flash-decoding split); fixed so results do not
#: depend on the thread count.
DECODE_SPLIT = 512
#: Keys per decode tile (softmax / value-update granularity) inside a split.
DECODE_TILE = 64
#: Keys ahead whose cache rows the decode passes prefetch (one 512-byte row per
#: key at D = 128). On a Zen 3, B=8 Hkv=8 kv=4096, three runs each: 8 beat 16
#: in every pair (1 thread 7.6-9.0 against 7.2-8.3 GB/s, 2 threads 14.3-16.8
#: against 11.2-14.6); 4 and 32 were no better than 16.
DECODE_PREFETCH = 8
#: Cache rows ahead (in memory order, all kv heads of a key side by side) that
#: the paged decode passes prefetch.
PAGED_PREFETCH_ROWS = 8

LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------- NumPy references


def _visible_range(i, Lq, Lk, causal, window):
    """First and last visible key for query rows ``i`` (arrays); empty when lo > hi."""
    hi = np.full_like(i, Lk - 1)
    if causal:
        hi = np.minimum(hi, i + (Lk - Lq))
    lo = np.zeros_like(i)
    if window is not None:
        lo = np.maximum(0, hi - window + 1)
    return lo, hi


def _softmax_rows_f64(s):
    """Row softmax of float64 scores with -inf masks; rows that are all -inf give zeros."""
    m = np.max(s, axis=-1, keepdims=True)  # (..., 1)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)  # exp(-inf) = 0
    den = p.sum(axis=-1, keepdims=True)
    return np.divide(p, den, out=np.zeros_like(p), where=den > 0)


def attention_ref(q, k, v, *, causal=True, scale=None, window=None):
    """Plain NumPy attention with the same semantics as :func:`attention`.

    Scores, softmax and the weighted sum are computed in float64; the result is
    cast to the input dtype. Memory is O(Lq * Lk) per head.
    """
    q, k, v, scale, window, dtype = _check_prefill(q, k, v, causal, scale, window)
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    group = Hq // Hkv
    i = np.arange(Lq)
    lo, hi = _visible_range(i, Lq, Lk, causal, window)
    j = np.arange(Lk)
    visible = (j[None, :] >= lo[:, None]) & (j[None, :] <= hi[:, None])  # (Lq, Lk)
    out = np.zeros((B, Hq, Lq, Dv), dtype=np.float64)
    if Lq == 0 or Lk == 0:
        return out.astype(dtype)
    for h in range(Hq):
        kh = k[:, h // group].astype(np.float64)  # (B, Lk, D)
        vh = v[:, h // group].astype(np.float64)  # (B, Lk, Dv)
        s = np.einsum("bid,bjd->bij", q[:, h].astype(np.float64), kh) * scale  # (B, Lq, Lk)
        s = np.where(visible[None], s, -np.inf)
        out[:, h] = _softmax_rows_f64(s) @ vh  # (B, Lq, Dv)
    return out.astype(dtype)


def decode_attention_ref(q, k_cache, v_cache, lengths, *, scale=None, window=None):
    """Plain NumPy decode attention with the same semantics as :func:`decode_attention`."""
    q, k_cache, v_cache, lengths, scale, window, dtype = _check_decode(
        q, k_cache, v_cache, lengths, scale, window
    )
    B, Hq, D = q.shape
    Hkv, Dv = k_cache.shape[1], v_cache.shape[3]
    group = Hq // Hkv
    out = np.zeros((B, Hq, Dv), dtype=np.float64)
    for b in range(B):
        n = int(lengths[b])
        lo = 0 if window is None else max(0, n - window)
        if n == lo:
            continue
        kb = k_cache[b, :, lo:n].astype(np.float64)  # (Hkv, n', D): garbage past n never read
        vb = v_cache[b, :, lo:n].astype(np.float64)  # (Hkv, n', Dv)
        for h in range(Hq):
            s = kb[h // group] @ q[b, h].astype(np.float64) * scale  # (n',)
            p = np.exp(s - s.max())
            out[b, h] = p @ vb[h // group] / p.sum()
    return out.astype(dtype)


def paged_decode_attention_ref(q, k_pages, v_pages, block_table, lengths, *, scale=None, window=None):
    """Plain NumPy paged decode: gathers each sequence's pages, then :func:`decode_attention_ref`."""
    q, k_pages, v_pages, block_table, lengths, scale, window, dtype = _check_paged(
        q, k_pages, v_pages, block_table, lengths, scale, window
    )
    B = q.shape[0]
    page_size, Hkv, D = k_pages.shape[1:]
    Dv = v_pages.shape[3]
    max_blocks = block_table.shape[1]
    Lmax = max_blocks * page_size
    k_cache = np.zeros((B, Hkv, Lmax, D), dtype=k_pages.dtype)
    v_cache = np.zeros((B, Hkv, Lmax, Dv), dtype=v_pages.dtype)
    for b in range(B):
        nblk = -(-int(lengths[b]) // page_size)
        for blk in range(nblk):
            sl = slice(blk * page_size, (blk + 1) * page_size)
            k_cache[b, :, sl] = k_pages[block_table[b, blk]].transpose(1, 0, 2)  # (Hkv, ps, D)
            v_cache[b, :, sl] = v_pages[block_table[b, blk]].transpose(1, 0, 2)  # (Hkv, ps, Dv)
    return decode_attention_ref(q, k_cache, v_cache, lengths, scale=scale, window=window).astype(dtype)


# --------------------------------------------------------------------------- napkin math


def attention_flops(Lq, Lk, D, Dv=None, causal=True, window=None):
    """FLOPs of one attention head: ``2 * (D + Dv)`` per visible (query, key) pair.

    Counts only the unmasked part (what a kernel that skips masked tiles must do),
    so causal prefill at Lq = Lk = L counts ``2 * L * (L + 1) / 2 * (D + Dv)``.
    Multiply by batch * query heads for a whole call. Exact integer arithmetic
    in O(1), whatever the lengths. Lengths and widths are integers >= 0
    (``ValueError``/``TypeError`` naming the argument otherwise).
    """
    Lq, Lk = check_int("Lq", Lq, lo=0), check_int("Lk", Lk, lo=0)
    D = check_int("D", D, lo=0)
    Dv = D if Dv is None else check_int("Dv", Dv, lo=0)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    window = _check_window(window)
    # Query i sees keys [lo, hi] (see _visible_range): hi + 1 = min(Lk, i + Lk - Lq + 1)
    # when causal, else Lk; the window keeps at most `window` of them. So row i sees
    # clamp(x_i, 0, cap) keys with cap = min(Lk, window) and x_i = i + first (causal).
    cap = Lk if window is None else min(Lk, window)
    if not causal:
        return 2 * Lq * cap * (D + Dv)
    first = Lk - Lq + 1

    def clamped_prefix(n):  # sum of clamp(x, 0, cap) over x = 0 .. n-1, for n >= 0
        ramp = min(n, cap + 1)
        return ramp * (ramp - 1) // 2 + max(0, n - cap - 1) * cap

    pairs = clamped_prefix(max(first + Lq, 0)) - clamped_prefix(max(first, 0))
    return 2 * pairs * (D + Dv)


def kv_bytes_read(lengths, Hkv, D, Dv=None, itemsize=4, window=None):
    """Bytes of K and V a decode step must read: visible keys x Hkv x (D + Dv) x itemsize.

    ``lengths`` are integers >= 0 (an int or an array of them); ``Hkv`` and
    ``itemsize`` integers >= 1, ``D`` and ``Dv`` integers >= 0.
    """
    n = check_int_array("lengths", lengths)
    if n.size and int(n.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got {int(n.min())}")
    Hkv = check_int("Hkv", Hkv, lo=1)
    D = check_int("D", D, lo=0)
    Dv = D if Dv is None else check_int("Dv", Dv, lo=0)
    itemsize = check_int("itemsize", itemsize, lo=1)
    window = _check_window(window)
    if window is not None:
        n = np.minimum(n, window)
    keys = int(n.sum(dtype=object))  # Python ints: no int64 wrap-around however many lengths
    return keys * Hkv * (D + Dv) * itemsize


# --------------------------------------------------------------------------- validation


def _check_scale(scale, D, dtype):
    """The softmax scale as a float; ``scale * log2(e)`` must be finite in ``dtype``.

    The kernels fold ``log2(e)`` into the scale in the computation dtype, so a
    float32 scale of 1e39 would become inf there: rejected rather than computed wrong.
    """
    if scale is None:
        if D == 0:
            raise ValueError("q must have a head dimension D >= 1 when scale is None")
        return 1.0 / math.sqrt(D)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    limit = float(np.finfo(dtype).max) / LOG2E
    if abs(scale) > limit:
        raise ValueError(f"scale must be at most {limit:.4g} in magnitude for {np.dtype(dtype)} inputs "
                         f"(scale * log2(e) must be finite in the computation dtype), got {scale}")
    return scale


def _check_window(window):
    if window is None:
        return None
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, numbers.Integral):
        raise TypeError(f"window must be an int >= 1 or None, got {type(window).__name__}")
    return check_int("window", window, lo=1)


def _check_heads(Hq, Hkv, kname):
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(
            f"query heads Hq={Hq} must be a multiple of {kname} heads Hkv={Hkv} (grouped-query attention)"
        )


def _common_dtype(*arrays):
    return np.result_type(*arrays)


def _check_prefill(q, k, v, causal, scale, window):
    q = check_float_array("q", q, 4)
    k = check_float_array("k", k, 4)
    v = check_float_array("v", v, 4)
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    B, Hq, Lq, D = q.shape
    if k.shape[0] != B or v.shape[0] != B:
        raise ValueError(f"batch mismatch: q has B={B}, k has {k.shape[0]}, v has {v.shape[0]}")
    if k.shape[3] != D:
        raise ValueError(f"k must have the same head dimension D as q: q has D={D}, k has {k.shape[3]}")
    if v.shape[1] != k.shape[1] or v.shape[2] != k.shape[2]:
        raise ValueError(
            f"v must match k in heads and length: k has (Hkv, Lk)={k.shape[1:3]}, v has {v.shape[1:3]}"
        )
    _check_heads(Hq, k.shape[1], "k")
    scale = _check_scale(scale, D, _common_dtype(q, k, v))
    window = _check_window(window)
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_finite(name, a)
    return q, k, v, scale, window, _common_dtype(q, k, v)


def _check_decode(q, k_cache, v_cache, lengths, scale, window, check_cache=True):
    q = check_float_array("q", q, 3)
    k_cache = check_float_array("k_cache", k_cache, 4)
    v_cache = check_float_array("v_cache", v_cache, 4)
    B, Hq, D = q.shape
    if k_cache.shape[0] != B or v_cache.shape[0] != B:
        raise ValueError(
            f"batch mismatch: q has B={B}, k_cache has {k_cache.shape[0]}, v_cache has {v_cache.shape[0]}"
        )
    if k_cache.shape[3] != D:
        raise ValueError(f"k_cache must have the same head dimension D as q: q has D={D}, k_cache has {k_cache.shape[3]}")
    if v_cache.shape[1:3] != k_cache.shape[1:3]:
        raise ValueError(
            f"v_cache must match k_cache in heads and Lmax: {k_cache.shape[1:3]} vs {v_cache.shape[1:3]}"
        )
    _check_heads(Hq, k_cache.shape[1], "k_cache")
    lengths = _check_lengths(lengths, B, k_cache.shape[2])
    scale = _check_scale(scale, D, _common_dtype(q, k_cache, v_cache))
    window = _check_window(window)
    check_finite("q", q)
    if check_cache:
        _check_decode_cache(k_cache, v_cache, lengths)
    return q, k_cache, v_cache, lengths, scale, window, _common_dtype(q, k_cache, v_cache)


def _check_decode_cache(k_cache, v_cache, lengths, stop=None):
    """Raise naming ``k_cache``/``v_cache`` if a slot below ``lengths[b]`` (or ``stop[b]``) is not finite."""
    for b in range(k_cache.shape[0]):  # only the filled prefix: positions >= lengths[b] may hold anything
        n = int(lengths[b] if stop is None else stop[b])
        check_finite("k_cache", k_cache[b, :, :n], f" at positions < lengths[{b}]")
        check_finite("v_cache", v_cache[b, :, :n], f" at positions < lengths[{b}]")


def _check_lengths(lengths, B, Lmax):
    if isinstance(lengths, np.ndarray) and lengths.dtype.kind == "b":
        raise TypeError("lengths must have an integer dtype, got bool")
    lengths = check_int_array("lengths", lengths, 1)
    if lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {lengths.shape}")
    if B and (lengths.min() < 0 or lengths.max() > Lmax):
        raise ValueError(f"lengths must lie in [0, {Lmax}] (the cache length), got [{lengths.min()}, {lengths.max()}]")
    return lengths


def _check_paged(q, k_pages, v_pages, block_table, lengths, scale, window, check_cache=True):
    q = check_float_array("q", q, 3)
    k_pages = check_float_array("k_pages", k_pages, 4)
    v_pages = check_float_array("v_pages", v_pages, 4)
    B, Hq, D = q.shape
    num_pages, page_size, Hkv, Dk = k_pages.shape
    if Dk != D:
        raise ValueError(f"k_pages must have the same head dimension D as q: q has D={D}, k_pages has {Dk}")
    if v_pages.shape[:3] != k_pages.shape[:3]:
        raise ValueError(
            "v_pages must match k_pages in (num_pages, page_size, Hkv): "
            f"{k_pages.shape[:3]} vs {v_pages.shape[:3]}"
        )
    if page_size == 0:
        raise ValueError("k_pages must have page_size >= 1")
    _check_heads(Hq, Hkv, "k_pages")
    if isinstance(block_table, np.ndarray) and block_table.dtype.kind == "b":
        raise TypeError("block_table must have an integer dtype, got bool")
    block_table = check_int_array("block_table", block_table, 2)
    if block_table.shape[0] != B:
        raise ValueError(f"block_table must have shape (B, max_blocks) with B={B}, got {block_table.shape}")
    lengths = _check_lengths(lengths, B, block_table.shape[1] * page_size)
    # Only the blocks a sequence uses must point at real pages (vLLM pads the rest).
    nblk = -(-lengths // page_size)  # (B,)
    used = np.arange(block_table.shape[1])[None, :] < nblk[:, None]  # (B, max_blocks)
    ids = block_table[used]
    if ids.size and (ids.min() < 0 or ids.max() >= num_pages):
        raise ValueError(
            f"block_table page ids must lie in [0, {num_pages}) for used blocks, got [{ids.min()}, {ids.max()}]"
        )
    scale = _check_scale(scale, D, _common_dtype(q, k_pages, v_pages))
    window = _check_window(window)
    check_finite("q", q)
    if check_cache:
        _check_paged_cache(k_pages, v_pages, block_table, lengths)
    return q, k_pages, v_pages, block_table, lengths, scale, window, _common_dtype(q, k_pages, v_pages)


def _check_paged_cache(k_pages, v_pages, block_table, lengths, stop=None):
    """Raise naming ``k_pages``/``v_pages`` if a slot sequence ``b`` uses below ``lengths[b]``
    (or ``stop[b]``) is not finite; padding pages and the tail may hold anything."""
    page_size = k_pages.shape[1]
    for b in range(block_table.shape[0]):
        n = int(lengths[b] if stop is None else stop[b])
        full, tail = divmod(n, page_size)
        for name, pages in (("k_pages", k_pages), ("v_pages", v_pages)):
            where = f" in the slots sequence {b} uses"
            check_finite(name, pages[block_table[b, :full]], where)
            if tail:
                check_finite(name, pages[block_table[b, full], :tail], where)


# --------------------------------------------------------------------------- Numba leaves


def _zero_of(a):  # typed zero of an array's dtype, dispatched below
    raise NotImplementedError


@overload(_zero_of)
def _zero_of_overload(a):
    dt = a.dtype
    return lambda a: dt(0)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True, inline="always")
def _key_scores(A, i0, M, B, rj, C, cj, K):
    """C[i0 + i, cj] = sum_k A[i0 + i, k] * B[rj, k] for i < M: one key row against M query rows.

    Blocks of 4 query rows (:func:`~scalelab.kernels._tiles.dot_tile_nt_for`),
    then 2 and 1 for the last ``M % 4``; the key row is loaded once per block
    and feeds every query row of it. Every block shape sums each dot product
    in the same order, so the shape choice never changes a bit.
    """
    M4 = M - M % 4
    M2 = M - M % 2
    for i in range(i0, i0 + M4, 4):
        dot_tile_nt_4x1(A, i, B, rj, 1, C, i, cj, K)
    if M4 < M2:
        dot_tile_nt_2x1(A, i0 + M4, B, rj, 1, C, i0 + M4, cj, K)
    if M2 < M:
        dot_tile_nt_1x1(A, i0 + M2, B, rj, 1, C, i0 + M2, cj, K)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _mm_nt_store(A, B, br0, C, c0, M, N, K):
    """C[i, c0 + j] = sum_k A[i, k] * B[br0 + j, k] for i < M, j < N (key rows in memory order).

    One key at a time (:func:`_key_scores`), so the rows are read in memory
    order, one stream. Tiles over several keys at once (2 x 4) read their 4
    rows interleaved, 32 bytes from each in turn, which the hardware
    prefetcher followed badly: on a Zen 3 core streaming a 128 MiB cache the
    2 x 4 tile read 5.9 GB/s and the 4 x 1 tile 10.1 GB/s, while from L2 the
    2 x 4 tile was faster (24.5 against 14.3 GB/s). The key row
    ``DECODE_PREFETCH`` keys ahead is prefetched (a hint: it never faults,
    so rows past the segment are fine).
    """
    for j in range(N):
        rj = br0 + j
        prefetch_row(B, rj + DECODE_PREFETCH)
        _key_scores(A, 0, M, B, rj, C, c0 + j, K)


# Index note for the Numba loops below: the innermost index is always a bare
# loop variable. Numba wraps negative indices, and for ``offset + kk`` with a
# run-time offset that check cannot be proved away, which turns contiguous
# loads into gathers; row offsets are fine because they are loop invariant.


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _pv_tail_columns(P, V, kv0, acc, alpha, rows, nk, c0):
    """acc[r, c] = alpha[r] * acc[r, c] + sum_k P[r, k] * V[kv0 + k, c] for c >= c0.

    The columns of an odd Dv that do not fill a register tile (e.g. Dv = 65);
    plain loops, only for correctness of unusual head sizes.
    """
    Dv = acc.shape[1]
    zero = _zero_of(acc)
    for r in range(rows):
        a = alpha[r]
        for c in range(c0, Dv):
            t = zero
            for kk in range(nk):
                t += P[r, kk] * V[kv0 + kk, c]
            acc[r, c] = a * acc[r, c] + t


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _row_range(i, Lk, off, causal, window):
    """First and last key query row ``i`` may see (empty when lo > hi); window 0 = unlimited."""
    hi = Lk - 1
    if causal:
        hi = min(hi, i + off)
    lo = 0
    if window > 0:
        lo = max(0, hi - window + 1)
    return lo, hi


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _mask_tile(S, q0, nq, kv0, nk, Lk, off, causal, window):
    """Set scores of keys a row may not see to -inf (diagonal / window-edge tiles only)."""
    ninf = -np.inf
    for r in range(nq):
        lo, hi = _row_range(q0 + r, Lk, off, causal, window)
        jlo = max(0, lo - kv0)
        jhi = min(nk - 1, hi - kv0)
        if jlo > jhi:
            jlo = nk
        for j in range(0, min(jlo, nk)):
            S[r, j] = ninf
        for j in range(max(jhi + 1, jlo), nk):
            S[r, j] = ninf


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _exp2_row_sum(S, r, n, mx):
    """In place S[r, :n] <- 2**(S[r, :n] - mx); returns their sum, in a fixed order.

    Two passes over the row (in L1): the exponentials, a loop without a
    reduction that LLVM vectorises as it stands, then
    :func:`~scalelab.kernels._tiles.row_sum`, whose lane order is written in
    its IR. Fused into one loop the sum needs ``reassoc`` to vectorise, and
    then every compile (fresh or from the Numba cache) may split it differently.
    """
    for j in range(n):
        S[r, j] = exp2_nonpositive(S[r, j] - mx)
    return row_sum(S, r, n)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _online_softmax(S, m, l, alpha, rows, nk):
    """In place: S[r, :nk] <- 2**(S - m_new), update running max m and sum l.

    Rows that have seen no visible key so far keep m = -inf, l = 0 and get
    P = 0, alpha = 1 (so nothing is ever computed from -inf - -inf).
    """
    ninf = -np.inf
    for r in range(rows):
        mx = row_max(S, r, nk, m[r])
        if mx == ninf:
            alpha[r] = 1.0
            for j in range(nk):
                S[r, j] = 0.0
            continue
        a = exp2_nonpositive(m[r] - mx)
        l[r] = l[r] * a + _exp2_row_sum(S, r, nk, mx)
        m[r] = mx
        alpha[r] = a


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _attention_block(Q, KP, VP, V, O, q0, nq, qscale, causal, window, block_k, qbuf, S, acc, m,
                     l, alpha):
    """One query block of one head: rows q0 .. q0+nq-1 of Q (Lq, D) -> O (Lq, Dv).

    K and V come packed in register-tile strips of W columns (W = 16 float32,
    8 float64): KP (ceil(Lk / W), D, W) holds keys s*W .. s*W+W-1 transposed
    (zero padded), VP (Dv // W, Lk, W) holds value columns s*W .. s*W+W-1; V
    (Lk, Dv) row-major serves the columns of an odd Dv beyond the last strip.
    Scratch: qbuf (R, D), S (R, block_k), acc (R, Dv), m / l / alpha (R,),
    with R >= nq rounded up to whole register tiles.
    """
    Lq, D = Q.shape
    Lk, Dv = V.shape
    off = Lk - Lq
    W = TILE_ROW_BYTES // Q.itemsize  # columns of a register tile: 16 float32, 8 float64
    rows = -(-nq // TILE_ROWS) * TILE_ROWS  # padding rows are zero queries, masked to P = 0
    dv_main = Dv - Dv % W
    lo_f, hi_f = _row_range(q0, Lk, off, causal, window)
    lo_l, hi_l = _row_range(q0 + nq - 1, Lk, off, causal, window)
    klo = lo_f
    khi = hi_l
    if khi < 0 or khi < klo:  # no row of the block sees any key
        for r in range(nq):
            for c in range(Dv):
                O[q0 + r, c] = 0.0
        return
    for r in range(rows):
        m[r] = -np.inf
        l[r] = 0.0
        for c in range(Dv):
            acc[r, c] = 0.0
        if r < nq:
            for d in range(D):
                qbuf[r, d] = Q[q0 + r, d] * qscale
        else:
            for d in range(D):
                qbuf[r, d] = 0.0
    for kv0 in range((klo // block_k) * block_k, khi + 1, block_k):
        nk = min(block_k, khi + 1 - kv0)
        for j in range(0, nk, W):  # S (rows, nk rounded up to W) = Qs K^T, one key strip at a time
            strip = KP[(kv0 + j) // W]  # (D, W)
            for i in range(0, rows, TILE_ROWS):
                mm_tile_store(qbuf, i, strip, 0, 0, S, j, D)
        if kv0 + nk - 1 > hi_f or kv0 < lo_l:
            _mask_tile(S, q0, nq, kv0, nk, Lk, off, causal, window)
        # The softmax runs over whole strips (keys past khi at -inf): its row sums then group every key
        # by its absolute position, so a row's result does not depend on which other rows share its
        # query block (a prompt prefilled in chunks gives the same bits as the whole prompt).
        nks = min(block_k, -(-nk // W) * W)
        for r in range(rows):
            for j in range(nk, nks):
                S[r, j] = -np.inf
        for r in range(nq, rows):  # padding rows contribute nothing
            for j in range(nk):
                S[r, j] = -np.inf
        _online_softmax(S, m, l, alpha, rows, nks)
        for c in range(0, dv_main, W):  # acc = alpha * acc + P V, one value strip at a time
            strip = VP[c // W]  # (Lk, W)
            for i in range(0, rows, TILE_ROWS):
                mm_tile_rescale_add(S, i, strip, kv0, 0, acc, c, nk, alpha)
        if dv_main < Dv:
            _pv_tail_columns(S, V, kv0, acc, alpha, rows, nk, dv_main)
    for r in range(nq):
        inv = 1.0 / l[r] if l[r] > 0 else 0.0
        for c in range(Dv):
            O[q0 + r, c] = acc[r, c] * inv


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _attention_kernel(q, kp, vp, v, out, qscale, causal, window, block_q, block_k):
    """Parallel driver over (batch, query head, pair of query blocks).

    q (B, Hq, Lq, D), kp (B, Hkv, ceil(Lk / W), D, W) and vp (B, Hkv, Dv // W,
    Lk, W) (K and V packed in register-tile strips, see _attention_block),
    v (B, Hkv, Lk, Dv), out (B, Hq, Lq, Dv), all C-contiguous. A work item handles query block t and block nqb-1-t so
    causal items cost the same; each output row is written by one item, so
    the result does not depend on the thread count.
    """
    B, Hq, Lq, D = q.shape
    Hkv = kp.shape[1]
    Dv = v.shape[3]
    group = Hq // Hkv
    nqb = (Lq + block_q - 1) // block_q
    npairs = (nqb + 1) // 2
    rows_max = -(-block_q // TILE_ROWS) * TILE_ROWS
    for item in prange(B * Hq * npairs):
        pair = item % npairs
        bh = item // npairs
        h = bh % Hq
        b = bh // Hq
        hk = h // group
        qbuf = np.empty((rows_max, D), dtype=q.dtype)  # (R, D)
        S = np.empty((rows_max, block_k), dtype=q.dtype)  # (R, BK)
        acc = np.empty((rows_max, Dv), dtype=q.dtype)  # (R, Dv)
        m = np.empty(rows_max, dtype=q.dtype)
        l = np.empty(rows_max, dtype=q.dtype)
        alpha = np.empty(rows_max, dtype=q.dtype)
        for which in range(2):
            t = pair if which == 0 else nqb - 1 - pair
            if which == 1 and t == pair:  # odd block count: the middle block is alone
                break
            q0 = t * block_q
            nq = min(block_q, Lq - q0)
            _attention_block(q[b, h], kp[b, hk], vp[b, hk], v[b, hk], out[b, h], q0, nq, qscale,
                             causal, window, block_k, qbuf, S, acc, m, l, alpha)


# --------------------------------------------------------------------------- decode kernels


@njit(fastmath=FASTMATH_INF_SAFE, cache=True, inline="always")
def _pv_four_keys(S, h0, cj, V2, v0, rstride, rows, acc):
    """acc[r, :] += sum_{u < 4} S[h0 + r, cj + u] * V2[v0 + u * rstride, :] for r < rows, as one fused sum.

    Each acc row is loaded and stored once per four value rows.
    """
    Dv = V2.shape[1]
    v1 = v0 + rstride
    v2 = v1 + rstride
    v3 = v2 + rstride
    for r in range(rows):
        p0 = S[h0 + r, cj]
        p1 = S[h0 + r, cj + 1]
        p2 = S[h0 + r, cj + 2]
        p3 = S[h0 + r, cj + 3]
        for c in range(Dv):
            acc[r, c] += p0 * V2[v0, c] + p1 * V2[v1, c] + p2 * V2[v2, c] + p3 * V2[v3, c]


@njit(fastmath=FASTMATH_INF_SAFE, cache=True, inline="always")
def _pv_one_key(S, h0, cj, V2, v0, rows, acc):
    """acc[r, :] += S[h0 + r, cj] * V2[v0, :] for r < rows."""
    Dv = V2.shape[1]
    for r in range(rows):
        p = S[h0 + r, cj]
        for c in range(Dv):
            acc[r, c] += p * V2[v0, c]


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _decode_pv(S, c0, V2, row0, nk, rows, acc):
    """acc[r, :] += sum_j S[r, c0 + j] * V2[row0 + j, :] for j < nk (contiguous rows).

    Keys go four at a time (:func:`_pv_four_keys`), the last ``nk % 4`` one
    by one; the value rows are read once for all heads. The rows
    ``DECODE_PREFETCH`` keys ahead are prefetched (past the segment end they
    belong to the next tile or are unused hints, which never fault).
    """
    nk4 = nk - nk % 4
    for j in range(0, nk4, 4):
        v0 = row0 + j
        for u in range(4):
            prefetch_row(V2, v0 + u + DECODE_PREFETCH)
        _pv_four_keys(S, 0, c0 + j, V2, v0, 1, rows, acc)
    for j in range(nk4, nk):
        _pv_one_key(S, 0, c0 + j, V2, row0 + j, rows, acc)


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _page_run(block_table, b, Hkv, page_size, pos, end, n):
    """Rows of keys pos.. of sequence b in a paged cache, all kv heads, in memory order.

    Returns (first row, keys until the page or ``end`` ends, the row that
    follows in the sequence). Row ``row0 + f`` is key ``pos + f // Hkv`` of kv
    head ``f % Hkv``. The following row is where a prefetch continues past the
    run: the start of the next page if the run ends at a page boundary below
    ``n`` (the sequence length, which keeps the table entries read to the
    validated ones), else the next row in memory (past ``n`` only a hint).
    """
    blk = pos // page_size
    cnt = min(end, (blk + 1) * page_size) - pos
    row0 = (block_table[b, blk] * page_size + pos - blk * page_size) * Hkv
    nxt = pos + cnt
    nrow0 = row0 + cnt * Hkv
    if nxt < n and nxt % page_size == 0:
        nrow0 = block_table[b, blk + 1] * page_size * Hkv
    return row0, cnt, nrow0


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _row_ahead(row0, nrows, nrow0, f):
    """Cache row ``f`` rows past ``row0`` in memory order, continuing at ``nrow0`` after ``nrows`` rows."""
    if f < nrows:
        return row0 + f
    return nrow0 + f - nrows


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _paged_scores(qbuf, K2, block_table, b, Hkv, page_size, a0, a1, n, S):
    """S[h, j - a0] = qbuf[h] . key j of kv head h // group, for a0 <= j < a1, over a paged cache.

    A page holds every kv head's row of each key side by side, so the rows
    are visited in memory order (key, then kv head): each page is one
    contiguous stream, and the row ``PAGED_PREFETCH_ROWS`` ahead is
    prefetched, in the next page once the current one ends.
    """
    Hq, D = qbuf.shape
    group = Hq // Hkv
    pos = a0
    while pos < a1:
        row0, cnt, nrow0 = _page_run(block_table, b, Hkv, page_size, pos, a1, n)
        nrows = cnt * Hkv
        for j in range(cnt):
            for hk in range(Hkv):
                f = j * Hkv + hk
                prefetch_row(K2, _row_ahead(row0, nrows, nrow0, f + PAGED_PREFETCH_ROWS))
                _key_scores(qbuf, hk * group, group, K2, row0 + f, S, pos - a0 + j, D)
        pos += cnt


@njit(fastmath=FASTMATH_INF_SAFE, cache=True)
def _paged_pv(S, V2, block_table, b, Hkv, page_size, a0, a1, n, part_o, s):
    """part_o[b, hk, s] += P @ V of keys a0 <= j < a1 for every kv head hk, over a paged cache.

    The same four-key blocks per page as one head at a time would use
    (:func:`_decode_pv` on the rows of each page, from its first key), so
    the sums are the same, but the kv heads go innermost: four keys of all
    heads are one contiguous piece of the page, and the rows of the next
    four keys are prefetched while these are used.
    """
    group = S.shape[0] // Hkv
    pos = a0
    while pos < a1:
        row0, cnt, nrow0 = _page_run(block_table, b, Hkv, page_size, pos, a1, n)
        nrows = cnt * Hkv
        ahead = 4 * Hkv + PAGED_PREFETCH_ROWS
        cnt4 = cnt - cnt % 4  # a page's last cnt % 4 keys go one by one, as in _decode_pv
        for j in range(0, cnt, 4):
            for hk in range(Hkv):
                f = j * Hkv + hk
                h0 = hk * group
                acc = part_o[b, hk, s]  # (g, Dv)
                if j < cnt4:
                    for u in range(4):
                        prefetch_row(V2, _row_ahead(row0, nrows, nrow0, f + u * Hkv + ahead))
                    _pv_four_keys(S, h0, pos - a0 + j, V2, row0 + f, Hkv, group, acc)
                else:
                    for u in range(cnt - j):
                        _pv_one_key(S, h0, pos - a0 + j + u, V2, row0 + f + u * Hkv, group, acc)
        pos += cnt


@njit(cache=True)
def _scores_non_finite(S, rows, n):
    """True if S[:rows, :n] holds NaN or +-inf (``x - x`` is 0 only for finite x)."""
    bad = False
    for r in range(rows):
        for j in range(n):
            x = S[r, j]
            bad |= (x - x) != 0
    return bad


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _decode_kernel(q, K2, V2, lengths, block_table, paged, page_size, Hkv, Lmax,
                   qscale, window, split, tile, out):
    """Flash-decoding driver: parallel over (batch, fixed key split), then a fixed-order merge.

    q (B, Hq, D); out (B, Hq, Dv). K2 (rows, D) / V2 (rows, Dv) hold one key /
    value of one kv head per row. Contiguous cache: key j of (b, hk) is row
    (b*Hkv + hk)*Lmax + j. Paged cache: key j lives in page
    block_table[b, j // page_size], row (page*page_size + j % page_size)*Hkv + hk.
    Splits and tiles sit at fixed absolute key positions (multiples of
    ``split`` / ``tile``) for both layouts, so the result never depends on the
    thread count and paged and contiguous caches do the same arithmetic.

    Returns whether a score was not finite. Given a finite q that happens
    exactly when a key it read holds NaN or inf (or a product overflowed); a
    non-finite value it read makes ``out`` non-finite (``0 * inf`` is NaN), so
    the caller learns of bad inputs without a separate pass over the cache.
    """
    B, Hq, D = q.shape
    Dv = out.shape[2]
    group = Hq // Hkv
    nsplit = max(1, (Lmax + split - 1) // split)
    part_m = np.empty((B, Hkv, nsplit, group), dtype=q.dtype)
    part_l = np.empty((B, Hkv, nsplit, group), dtype=q.dtype)
    part_o = np.empty((B, Hkv, nsplit, group, Dv), dtype=q.dtype)
    bad = np.zeros(B * nsplit, dtype=np.bool_)  # (B * nsplit,) per work item: no shared write
    for item in prange(B * nsplit):
        s = item % nsplit
        b = item // nsplit
        n = lengths[b]
        lo = 0
        if window > 0:
            lo = max(0, n - window)
        j0 = max(lo, s * split)
        j1 = min(n, (s + 1) * split)
        for hk in range(Hkv):
            for r in range(group):
                part_m[b, hk, s, r] = -np.inf
                part_l[b, hk, s, r] = 0.0
                for c in range(Dv):
                    part_o[b, hk, s, r, c] = 0.0
        if j0 >= j1:
            continue
        qbuf = np.empty((Hq, D), dtype=q.dtype)  # (Hq, D) pre-scaled queries
        for h in range(Hq):
            for d in range(D):
                qbuf[h, d] = q[b, h, d] * qscale
        ntiles = (j1 - 1) // tile - j0 // tile + 1
        if paged:
            # A page holds every kv head's rows, so a tile is read page by page
            # for all heads at once (see _paged_scores); per (head, tile) the
            # operations are those of the contiguous branch.
            S = np.empty((Hq, tile), dtype=q.dtype)  # (Hq, tile)
            alpha = np.empty(group, dtype=q.dtype)
            for t in range(ntiles):
                ts = (j0 // tile + t) * tile
                a0 = max(ts, j0)
                a1 = min(ts + tile, j1)
                _paged_scores(qbuf, K2, block_table, b, Hkv, page_size, a0, a1, n, S)
                if _scores_non_finite(S, Hq, a1 - a0):
                    bad[item] = True
                for hk in range(Hkv):
                    _online_softmax(S[hk * group:(hk + 1) * group], part_m[b, hk, s], part_l[b, hk, s], alpha,
                                    group, a1 - a0)
                    acc = part_o[b, hk, s]  # (g, Dv)
                    for r in range(group):
                        a = alpha[r]
                        for c in range(Dv):
                            acc[r, c] *= a
                _paged_pv(S, V2, block_table, b, Hkv, page_size, a0, a1, n, part_o, s)
            continue
        S = np.empty((group, tile), dtype=q.dtype)  # (g, tile)
        alpha = np.empty(group, dtype=q.dtype)
        for hk in range(Hkv):  # each kv head's rows are one stream
            qh = qbuf[hk * group:(hk + 1) * group]  # (g, D)
            m = part_m[b, hk, s]  # (g,)
            l = part_l[b, hk, s]  # (g,)
            acc = part_o[b, hk, s]  # (g, Dv)
            row0 = (b * Hkv + hk) * Lmax
            for t in range(ntiles):
                ts = (j0 // tile + t) * tile
                a0 = max(ts, j0)
                a1 = min(ts + tile, j1)
                _mm_nt_store(qh, K2, row0 + a0, S, 0, group, a1 - a0, D)
                if _scores_non_finite(S, group, a1 - a0):
                    bad[item] = True
                _online_softmax(S, m, l, alpha, group, a1 - a0)
                for r in range(group):
                    a = alpha[r]
                    for c in range(Dv):
                        acc[r, c] *= a
                _decode_pv(S, 0, V2, row0 + a0, a1 - a0, group, acc)
    # fixed-order merge of the splits
    for bh in prange(B * Hkv):
        hk = bh % Hkv
        b = bh // Hkv
        for r in range(group):
            h = hk * group + r
            mx = -np.inf
            for s in range(nsplit):
                mx = max(mx, part_m[b, hk, s, r])
            for c in range(Dv):
                out[b, h, c] = 0.0
            if mx == -np.inf:  # nothing visible: zeros
                continue
            tot = _zero_of(out)
            for s in range(nsplit):
                w = exp2_nonpositive(part_m[b, hk, s, r] - mx)
                tot += w * part_l[b, hk, s, r]
                for c in range(Dv):
                    out[b, h, c] += w * part_o[b, hk, s, r, c]
            inv = 1.0 / tot
            for c in range(Dv):
                out[b, h, c] *= inv
    return bad.any()


@njit(parallel=True, fastmath=FASTMATH_INF_SAFE, cache=True)
def _pack_strips_kernel(k, v, kp, vp):
    """kp[b, h, s, d, w] = k[b, h, s*W + w, d] (0 past Lk); vp[b, h, c, j, w] = v[b, h, j, c*W + w]."""
    B, Hkv, Lk, D = k.shape
    ns, W = kp.shape[2], kp.shape[4]
    nv = vp.shape[2]
    for item in prange(B * Hkv * ns):
        s = item % ns
        bh = item // ns
        h = bh % Hkv
        b = bh // Hkv
        nw = min(W, Lk - s * W)  # keys in this strip; the last one is zero padded
        for d in range(D):
            for w in range(nw, W):
                kp[b, h, s, d, w] = 0.0
        for w in range(nw):
            for d in range(D):
                kp[b, h, s, d, w] = k[b, h, s * W + w, d]
        for w in range(nw):
            j = s * W + w
            for c in range(nv):
                for x in range(W):
                    vp[b, h, c, j, x] = v[b, h, j, c * W + x]


#: Largest packed K + V kept between prefill calls (bytes); bigger ones are allocated per call.
STRIP_WORKSPACE_BYTES = 64 * 2**20
_STRIP_WORKSPACE = threading.local()


def _strip_workspace(nbytes):
    """A 64-byte aligned uint8 buffer of at least ``nbytes``, reused by the calling thread's next calls.

    Fresh memory for the packed strips on every call cost the page faults of
    touching it (about one per 4 KB page; 1-3 ms of a 20 ms call at L = 1024,
    D = 64, one thread, more on a loaded machine), and whether glibc served
    the block from a fresh mapping or from its heap depended on the earlier
    calls. A buffer per thread keeps concurrent Python threads apart; the
    kernel finishes with it before the call returns.
    """
    if nbytes > STRIP_WORKSPACE_BYTES:
        return aligned_empty(nbytes, np.uint8)
    buf = getattr(_STRIP_WORKSPACE, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = aligned_empty(nbytes, np.uint8)
        _STRIP_WORKSPACE.buf = buf
    return buf


def _pack_strips(k, v, dtype):
    """K and V cut into register-tile strips of W = TILE_ROW_BYTES // itemsize columns.

    Returns kp (B, Hkv, ceil(Lk / W), D, W), keys transposed strip by strip
    and zero padded, and vp (B, Hkv, Dv // W, Lk, W), whole value-column
    strips, both 64-byte aligned (one pass over K and V, on all threads). A
    strip is one contiguous block, so the micro-kernel walks it with unit
    stride: a K^T tile with a 1-2 KB row stride maps a strip's rows onto a
    few L1 sets and ran ~1.4x slower.
    """
    B, Hkv, Lk, D = k.shape
    Dv = v.shape[3]
    W = TILE_ROW_BYTES // dtype.itemsize
    kshape, vshape = (B, Hkv, -(-Lk // W), D, W), (B, Hkv, Dv // W, Lk, W)
    kbytes = -(-math.prod(kshape) * dtype.itemsize // 64) * 64  # vp starts 64-byte aligned too
    raw = _strip_workspace(kbytes + math.prod(vshape) * dtype.itemsize)
    kp = raw[:kbytes].view(dtype)[:math.prod(kshape)].reshape(kshape)
    vp = raw[kbytes:].view(dtype)[:math.prod(vshape)].reshape(vshape)
    _pack_strips_kernel(k, v, kp, vp)
    return kp, vp


# --------------------------------------------------------------------------- decode's finiteness rule
# Every slot below lengths[b] must be finite, as the references check up front.
# The kernel reads the slots a window keeps and reports bad ones itself, so
# the cache is read once; only the slots it skips are checked beforehand. Either
# way a failure reruns the full check, which names the first bad input in the
# references' order.


def _check_unread_slots(check_cache, lengths, window):
    """Check the slots a window keeps the kernel from reading (none without a window)."""
    if window is None:
        return
    stop = np.maximum(lengths - window, 0)  # (B,) first slot the kernel reads
    if stop.any():
        try:
            check_cache(stop)
        except ValueError:
            check_cache()  # raises for the first bad slot in the references' order
            raise


def _check_read_slots(check_cache, flagged, out):
    """After the kernel: a non-finite score or output means a bad slot or an overflow; tell which."""
    if flagged or not np.isfinite(out).all():
        check_cache()  # raises naming the input; passes if only a finite product overflowed


# --------------------------------------------------------------------------- public kernels


def attention(q, k, v, *, causal=True, scale=None, window=None):
    """Multi-head / grouped-query attention, tiled with an online softmax (Numba).

    Parameters
    ----------
    q : ndarray, shape (B, Hq, Lq, D)
    k : ndarray, shape (B, Hkv, Lk, D)
        ``Hq`` must be a multiple of ``Hkv``; query head ``h`` reads kv head
        ``h // (Hq // Hkv)``.
    v : ndarray, shape (B, Hkv, Lk, Dv)
    causal : bool
        Bottom-right aligned causal mask: query ``i`` sees key ``j`` iff
        ``j <= i + Lk - Lq``.
    scale : float, optional
        Score scale, default ``1 / sqrt(D)``.
    window : int >= 1, optional
        Keep only the ``window`` most recent keys each query may see.

    Returns
    -------
    out : ndarray, shape (B, Hq, Lq, Dv)
        dtype is the common dtype of the inputs (float32 or float64). Rows
        that see no key are zeros.

    Notes
    -----
    Working memory is O(tile) per thread plus one packed copy each of ``k``
    and ``v`` (and contiguous copies of non-contiguous inputs); a packed copy
    up to ``STRIP_WORKSPACE_BYTES`` stays allocated for the calling thread's
    next call (no page faults on reuse). The result is
    bitwise identical for any Numba thread count, and each query row's result
    depends only on that row and the keys and values: the last ``n`` queries
    against all keys (a prompt chunk continuing a cache) give the same bits as
    those rows of the whole prompt's attention.
    """
    q, k, v, scale, window, dtype = _check_prefill(q, k, v, causal, scale, window)
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    out = np.zeros((B, Hq, Lq, Dv), dtype=dtype)
    if out.size == 0 or Lk == 0:
        return out
    qc = np.ascontiguousarray(q, dtype=dtype)  # (B, Hq, Lq, D)
    kc = np.ascontiguousarray(k, dtype=dtype)  # (B, Hkv, Lk, D)
    vc = np.ascontiguousarray(v, dtype=dtype)  # (B, Hkv, Lk, Dv)
    kp, vp = _pack_strips(kc, vc, dtype)
    _attention_kernel(qc, kp, vp, vc, out, dtype.type(scale * LOG2E), bool(causal),
                      0 if window is None else window, BLOCK_Q, BLOCK_K)
    return out


def decode_attention(q, k_cache, v_cache, lengths, *, scale=None, window=None):
    """Attention of one new query token per sequence against a contiguous KV cache.

    Parameters
    ----------
    q : ndarray, shape (B, Hq, D)
    k_cache : ndarray, shape (B, Hkv, Lmax, D)
    v_cache : ndarray, shape (B, Hkv, Lmax, Dv)
    lengths : integer array, shape (B,)
        Valid cache length per sequence, in ``[0, Lmax]``; positions
        ``>= lengths[b]`` are never read. The query is position ``lengths[b] - 1``.
    scale, window : as in :func:`attention`.

    Returns
    -------
    out : ndarray, shape (B, Hq, Dv); zeros for sequences of length 0.
    """
    q, k_cache, v_cache, lengths, scale, window, dtype = _check_decode(
        q, k_cache, v_cache, lengths, scale, window, check_cache=False
    )
    B, Hq, D = q.shape
    Hkv, Lmax, Dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[3]

    def check_cache(stop=None):
        _check_decode_cache(k_cache, v_cache, lengths, stop)

    out = np.zeros((B, Hq, Dv), dtype=dtype)
    if out.size == 0 or Lmax == 0:
        check_cache()
        return out
    _check_unread_slots(check_cache, lengths, window)
    qc = np.ascontiguousarray(q, dtype=dtype)
    K2 = np.ascontiguousarray(k_cache, dtype=dtype).reshape(B * Hkv * Lmax, D)  # (B*Hkv*Lmax, D)
    V2 = np.ascontiguousarray(v_cache, dtype=dtype).reshape(B * Hkv * Lmax, Dv)  # (B*Hkv*Lmax, Dv)
    dummy_table = np.zeros((1, 1), dtype=np.int64)
    flagged = _decode_kernel(qc, K2, V2, lengths, dummy_table, False, 1, Hkv, Lmax,
                             dtype.type(scale * LOG2E), 0 if window is None else window,
                             DECODE_SPLIT, DECODE_TILE, out)
    _check_read_slots(check_cache, flagged, out)
    return out


def paged_decode_attention(q, k_pages, v_pages, block_table, lengths, *, scale=None, window=None):
    """Decode attention over a paged KV cache (vLLM layout).

    Parameters
    ----------
    q : ndarray, shape (B, Hq, D)
    k_pages : ndarray, shape (num_pages, page_size, Hkv, D)
    v_pages : ndarray, shape (num_pages, page_size, Hkv, Dv)
    block_table : integer array, shape (B, max_blocks)
        ``block_table[b, i]`` is the physical page holding keys
        ``i*page_size .. (i+1)*page_size - 1`` of sequence ``b``; entries of
        blocks beyond ``ceil(lengths[b] / page_size)`` are ignored.
    lengths : integer array, shape (B,), in ``[0, max_blocks * page_size]``
    scale, window : as in :func:`attention`.

    Returns
    -------
    out : ndarray, shape (B, Hq, Dv)
    """
    q, k_pages, v_pages, block_table, lengths, scale, window, dtype = _check_paged(
        q, k_pages, v_pages, block_table, lengths, scale, window, check_cache=False
    )
    B, Hq, D = q.shape
    num_pages, page_size, Hkv, _ = k_pages.shape
    Dv = v_pages.shape[3]

    def check_cache(stop=None):
        _check_paged_cache(k_pages, v_pages, block_table, lengths, stop)

    out = np.zeros((B, Hq, Dv), dtype=dtype)
    if out.size == 0 or block_table.shape[1] == 0:
        check_cache()
        return out
    _check_unread_slots(check_cache, lengths, window)
    qc = np.ascontiguousarray(q, dtype=dtype)
    K2 = np.ascontiguousarray(k_pages, dtype=dtype).reshape(num_pages * page_size * Hkv, D)
    V2 = np.ascontiguousarray(v_pages, dtype=dtype).reshape(num_pages * page_size * Hkv, Dv)
    flagged = _decode_kernel(qc, K2, V2, lengths, np.ascontiguousarray(block_table), True, page_size, Hkv,
                             block_table.shape[1] * page_size, dtype.type(scale * LOG2E),
                             0 if window is None else window, DECODE_SPLIT, DECODE_TILE, out)
    _check_read_slots(check_cache, flagged, out)
    return out
