"""Batch-invariant linear layers: ``x @ W`` whose every row is the same bits whatever the other rows.

==============================  ===========================================================================
name                            what it is
==============================  ===========================================================================
:func:`pack_weight`             ``W (K, N)`` -> :class:`PackedWeight`: column panels, once per weight
:func:`linear`                  ``y = x @ W``, float32 or float64, parallel over panels and row blocks
:func:`linear_ref`              NumPy reference: the same product in float64
==============================  ===========================================================================

Why not BLAS
------------
A BLAS ``sgemm`` picks its summation order per call: a one-row product goes
through ``gemv``, small products through a "small matrix" kernel, larger ones
through the packed GEMM, and the split between threads changes with the
shape. Measured with OpenBLAS 0.3.31 here, the same token's row of a model's
logits differs in the last bits between a step of 1 and of 16 sequences and
between 1 and 2 threads (``kernels/_threads.py``). In a serving engine that
means a request's tokens depend, rarely but really, on which other requests
shared its steps. This kernel fixes the order instead: every output element
``y[m, n]`` is

    acc_0 = fma chain over k in [0, KC)            (k increasing, float32 or float64 FMAs)
    y     = acc_0, then y = y + (fma chain over the next KC values of k), ...

with ``KC = K_BLOCK`` fixed. That order depends on ``K`` only, not on ``M``,
on which rows share the call, on the thread count or on the schedule, so a
row's result is a function of that row and ``W`` alone (bitwise; the tests
check it across row subsets, batch sizes and thread counts). It also does not
depend on the SIMD width: each vector lane owns one output column, so an
AVX2 and an AVX-512 build compute the same bits.

How
---
The inner loop is the register tile of :mod:`scalelab.kernels._tiles`
(``TILE_ROWS`` rows by two vectors of columns, FMAs into accumulators held
in registers). ``W`` is stored as panels of that tile's width, ``(P, K,
width)`` C-contiguous, so a tile streams its panel sequentially (weights are
packed once, when a model is loaded). ``x`` is copied per call into
``(K / KC, M, KC)`` blocks, so each block of ``KC`` columns is one
C-contiguous matrix for the tile. The work items are (row block, panel group) pairs; per block of ``k``
the row block's slice of ``x`` (64 x KC) stays in L2 while the group's panels
pass under it, and each panel's ``KC x width`` slice (16 KiB for float32 at
256-bit vectors) stays in L1 while the row block's tiles use it. Rows past the last whole tile use a one-row tile
(the same chain per element), so a decode step of one token reads each
weight once and computes one row, not four.

Measured (2026-12-02, AMD EPYC Zen 3, AVX2 + FMA, 2 cores, nothing else running; float32,
Llama-3.2-1B shapes, our time over OpenBLAS 0.3.31 ``sgemm``/``sgemv`` (Haswell kernel) in
alternating blocks in one process, best of several): ``M = 512`` (prefill) 1.16-1.36x at 1 and
2 threads (about 105 GFLOP/s against 130-145 at 2 threads); ``M = 16`` (a batch of decodes)
0.82-1.12x; ``M = 1`` (one decode token) 1.1-1.5x, 23 GB/s at 2 threads from a 256 MiB weight
against BLAS's 27 GB/s and a plain two-thread read of 22 GB/s. End to end, the 1B-shaped model
ran at 46.3 prefill and 3.0 batch-1 decode tokens/s, against 62.8 and 3.9 for the BLAS version
(measured a day earlier in another process, so roughly a quarter slower), and kept its lead over
transformers in the same run (``tools/bench_engine_peers.py``: 1.26x prefill, 1.58x and 2.80x
decode at batch 1 and 16). ``asv_benchmarks/linear.py`` records the ratio (``track_vs_blas``).

Dtype rule: ``x`` and the weight have one dtype (float32 or float64); the
products accumulate in that dtype with fused multiply-adds. NaN and inf
propagate as in any matrix product; nothing is masked here.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from scalelab.kernels._common import aligned_empty, aligned_zeros, check_float_array
from scalelab.kernels._tiles import (TILE_ROW_BYTES, TILE_ROWS, mm_row_rescale_add, mm_row_store,
                                     mm_tile_rescale_add, mm_tile_store)

__all__ = ["K_BLOCK", "PackedWeight", "linear", "linear_ref", "pack_weight"]

#: Columns of ``x`` (rows of ``W``) per accumulation block. Part of the summation order, so it is a
#: constant, never tuned per shape or per machine: changing it changes results in the last bits.
K_BLOCK = 256

#: Rows of ``x`` per work item: a (ROWS_PER_ITEM x K_BLOCK) block of ``x`` (64 KiB in float32) stays in
#: L2 while the item's panels pass under it.
_ROWS_PER_ITEM = 64
#: Panels per work item (16 x 16 = 256 float32 columns at 256-bit vectors).
_PANELS_PER_ITEM = 16
#: Up to this many rows per item, each panel is read front to back instead (decode steps).
_FEW_ROWS = 8


class PackedWeight:
    """A weight ``W (K, N)`` in column panels for :func:`linear`.

    Attributes
    ----------
    panels : ndarray, shape (P, K, width)
        ``panels[p, k, c] = W[k, p * width + c]``, zero past column ``N``.
    shape : tuple (K, N)
        The shape of ``W``.
    width : int
        Columns per panel: the register tile's width for this dtype and host
        (16 float32 or 8 float64 columns with 256-bit vectors).
    """

    __slots__ = ("panels", "shape", "width")

    def __init__(self, panels: np.ndarray, shape: tuple[int, int]) -> None:
        self.panels = panels
        self.shape = (int(shape[0]), int(shape[1]))
        self.width = panels.shape[2]

    @property
    def dtype(self) -> np.dtype:
        return self.panels.dtype

    @property
    def nbytes(self) -> int:
        """Bytes held (the panels, padding included)."""
        return self.panels.nbytes

    @property
    def size(self) -> int:
        """Elements of ``W``: ``K * N``."""
        return self.shape[0] * self.shape[1]

    def unpack(self) -> np.ndarray:
        """``W`` again, shape (K, N), C-contiguous."""
        K, N = self.shape
        return np.ascontiguousarray(self.panels.transpose(1, 0, 2).reshape(K, -1)[:, :N])

    def __repr__(self) -> str:
        return f"PackedWeight(shape={self.shape}, dtype={self.dtype}, width={self.width})"


def panel_width(dtype) -> int:
    """Columns per panel for ``dtype``: the register tile's width on this host."""
    return TILE_ROW_BYTES // np.dtype(dtype).itemsize


def pack_weight(w) -> PackedWeight:
    """Pack ``w (K, N)`` (float32 or float64) into column panels for :func:`linear`.

    Parameters
    ----------
    w : ndarray, shape (K, N)
        The weight, ``in x out`` (a Hugging Face ``(out, in)`` tensor is ``w.T``).

    Returns
    -------
    PackedWeight
        The panels; ``K * ceil(N / width) * width`` elements.
    """
    w = check_float_array("w", w, ndim=2)
    K, N = w.shape
    width = panel_width(w.dtype)
    P = -(-N // width)
    panels = aligned_zeros((P, K, width), w.dtype)  # (P, K, width)
    full = N // width
    if full:
        panels[:full] = w[:, :full * width].reshape(K, full, width).transpose(1, 0, 2)
    if N % width:
        panels[full, :, :N % width] = w[:, full * width:]
    return PackedWeight(panels, (K, N))


@njit(inline="always")
def _panel_block(A, B, kb, kk, y, jc, r0, whole, r1, first, ones):
    """y[r0:r1, jc:jc + width] (+)= A[r0:r1, :kk] @ B[kb:kb + kk]: 4-row tiles, then single rows."""
    if first:
        for i in range(r0, whole, TILE_ROWS):
            mm_tile_store(A, i, B, kb, 0, y, jc, kk)
        for i in range(whole, r1):
            mm_row_store(A, i, B, kb, 0, y, jc, kk)
    else:
        for i in range(r0, whole, TILE_ROWS):
            mm_tile_rescale_add(A, i, B, kb, 0, y, jc, kk, ones)
        for i in range(whole, r1):
            mm_row_rescale_add(A, i, B, kb, 0, y, jc, kk, ones)


@njit(parallel=True, cache=True)
def _linear_kernel(xb, panels, y, K, ones):
    # xb (nkb, M, KC): x in column blocks; panels (P, K, width); y (M, P * width); ones (M,)
    nkb, M, KC = xb.shape
    P, _, width = panels.shape
    nrb = (M + _ROWS_PER_ITEM - 1) // _ROWS_PER_ITEM
    npg = (P + _PANELS_PER_ITEM - 1) // _PANELS_PER_ITEM
    for item in prange(nrb * npg):
        rb = item // npg
        pg = item - rb * npg
        r0 = rb * _ROWS_PER_ITEM
        r1 = min(M, r0 + _ROWS_PER_ITEM)
        whole = r0 + (r1 - r0) // TILE_ROWS * TILE_ROWS  # rows [r0, whole) in 4-row tiles, then one by one
        p0 = pg * _PANELS_PER_ITEM
        p1 = min(P, p0 + _PANELS_PER_ITEM)
        # Either loop order keeps every element's blocks of k in increasing order (its summation order).
        if r1 - r0 <= _FEW_ROWS:
            # few rows: read each panel front to back (one sequential stream; x is a few KiB)
            for p in range(p0, p1):
                for kbi in range(nkb):
                    kb = kbi * KC
                    _panel_block(xb[kbi], panels[p], kb, min(KC, K - kb), y, p * width, r0, whole, r1,
                                 kbi == 0, ones)
        else:
            # many rows: the row block's slice of x (rows x KC) stays in L2 across the group's panels,
            # each panel's KC x width slice in L1 across the row tiles
            for kbi in range(nkb):
                kb = kbi * KC
                for p in range(p0, p1):
                    _panel_block(xb[kbi], panels[p], kb, min(KC, K - kb), y, p * width, r0, whole, r1,
                                 kbi == 0, ones)


def linear(x, w: PackedWeight) -> np.ndarray:
    """``x @ W`` with a fixed summation order: each row's bits depend on that row and ``W`` only.

    Parameters
    ----------
    x : ndarray, shape (M, K)
        float32 or float64, the dtype of ``w``; any strides.
    w : PackedWeight
        From :func:`pack_weight`, ``W`` of shape (K, N).

    Returns
    -------
    ndarray, shape (M, N)
        Same dtype, C-contiguous (64-byte aligned when ``N`` is a multiple of ``w.width``).

    Notes
    -----
    Each element is a chain of fused multiply-adds in increasing ``k``, in
    blocks of :data:`K_BLOCK` added in order (see the module docstring), so
    the result is bitwise the same for any ``M``, any other rows, any thread
    count and any SIMD width. Against the float64 product the error is that
    of a float32 dot product of length ``K``.
    """
    if not isinstance(w, PackedWeight):
        raise TypeError(f"w must be a PackedWeight (from pack_weight), got {type(w).__name__}")
    x = check_float_array("x", x, ndim=2)
    K, N = w.shape
    if x.dtype != w.dtype:
        raise TypeError(f"x must have the weight's dtype {w.dtype}, got {x.dtype}")
    M = x.shape[0]
    if x.shape[1] != K:
        raise ValueError(f"x must have shape (M, {K}) to match w of shape {w.shape}, got {x.shape}")
    if M == 0 or N == 0 or K == 0:
        return np.zeros((M, N), dtype=x.dtype)
    nkb = -(-K // K_BLOCK)
    KC = min(K, K_BLOCK)
    xb = aligned_empty((nkb, M, KC), x.dtype)  # (nkb, M, KC)
    for kbi in range(nkb):
        kb = kbi * KC
        xb[kbi, :, :min(KC, K - kb)] = x[:, kb:kb + KC]
    P = w.panels.shape[0]
    y = aligned_empty((M, P * w.width), x.dtype)  # (M, P * width)
    _linear_kernel(xb, w.panels, y, K, np.ones(M, dtype=x.dtype))
    return y if P * w.width == N else np.ascontiguousarray(y[:, :N])


def linear_ref(x, w) -> np.ndarray:
    """NumPy reference: ``x @ w`` in float64 for ``x (M, K)`` and ``w (K, N)`` (array or PackedWeight)."""
    if isinstance(w, PackedWeight):
        w = w.unpack()
    x = check_float_array("x", x, ndim=2)
    w = check_float_array("w", w, ndim=2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x must have shape (M, {w.shape[0]}) to match w of shape {w.shape}, got {x.shape}")
    return x.astype(np.float64) @ w.astype(np.float64)
