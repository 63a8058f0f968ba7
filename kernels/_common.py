"""Small helpers shared by the kernel modules: validation at the public
boundary, 64-byte aligned allocation and a Numba thread-count context.

Kernels validate their inputs once, here at the boundary; the jitted inner
loops trust what they are given.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator

import numba
import numpy as np

#: Cache-line / AVX-512 alignment for hot buffers (NumPy only guarantees 16 bytes).
ALIGNMENT = 64

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Largest integer a kernel argument may hold: jitted code takes int64.
INT64_MAX = 2**63 - 1


def aligned_empty(shape, dtype=np.float32, alignment: int = ALIGNMENT) -> np.ndarray:
    """Return an uninitialised C-contiguous array whose data is ``alignment``-byte aligned.

    Kept cheap (~2 us) because the kernels call it on every invocation.
    """
    dtype = np.dtype(dtype)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    else:
        shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must be non-negative, got {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    offset = -raw.__array_interface__["data"][0] % alignment
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype=np.float32, alignment: int = ALIGNMENT) -> np.ndarray:
    """Like :func:`aligned_empty` but zero-filled."""
    out = aligned_empty(shape, dtype, alignment)
    out[...] = 0
    return out


def as_aligned(a: np.ndarray, alignment: int = ALIGNMENT) -> np.ndarray:
    """Return ``a`` if it is C-contiguous and aligned, else an aligned C-contiguous copy."""
    if a.flags.c_contiguous and a.ctypes.data % alignment == 0:
        return a
    out = aligned_empty(a.shape, a.dtype, alignment)
    out[...] = a
    return out


def check_float_array(name: str, a, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Validate that ``a`` is a real floating array (float32/float64) of the given rank.

    Raises ``TypeError`` for non-arrays, integer, bool or complex dtypes and
    ``ValueError`` for a wrong rank; the message names the argument.
    """
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple)) or np.isscalar(a):
            a = np.asarray(a)
        else:
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if ndim is not None:
        ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise ValueError(f"{name} must have rank {want}, got shape {a.shape}")
    return a


@numba.njit(cache=True)
def _has_non_finite(a):
    """True if the 3-D array ``a`` (any strides) holds NaN or +-inf.

    ``x - x`` is 0 for finite x and NaN otherwise; the integer OR reduction
    vectorises without fast-math, so this is one read of ``a`` (memory speed),
    half of a ``min`` plus ``max`` pair, with no temporary.
    """
    bad = 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            for k in range(a.shape[2]):
                x = a[i, j, k]
                bad |= (x - x) != 0
    return bad != 0


def check_finite(name: str, a: np.ndarray, where: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` if the float array ``a`` holds NaN or +-inf."""
    if a.size == 0:
        return
    a3 = a.reshape((-1,) + a.shape[-2:]) if a.ndim >= 3 else a.reshape((1,) * (3 - a.ndim) + a.shape)
    if _has_non_finite(a3):
        raise ValueError(f"{name} must be finite (no NaN or inf){where}")


def check_int(name: str, v, lo: int | None = None, hi: int = INT64_MAX) -> int:
    """Validate a scalar integer argument in ``[lo, hi]`` and return it as a Python int.

    ``hi`` defaults to the int64 maximum, so a value the jitted code could not
    hold is a ``ValueError`` naming the argument, not an ``OverflowError`` from
    the call into Numba. Bools are rejected (``TypeError``).
    """
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return v


def check_int_array(name: str, a, ndim: int | None = None) -> np.ndarray:
    """Validate an integer array (any signed/unsigned integer dtype) and return it as int64.

    Bool arrays are rejected (``TypeError``), and so are uint64 values above the
    int64 maximum (``ValueError``): the cast would wrap them to negative numbers.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim}, got shape {a.shape}")
    if a.dtype == np.uint64 and a.size and a.max() > INT64_MAX:
        raise ValueError(f"{name} values must be <= {INT64_MAX} (int64), got {int(a.max())}")
    return a.astype(np.int64, copy=False)


@contextlib.contextmanager
def numba_threads(n: int | None) -> Iterator[int]:
    """Run the body with ``n`` Numba threads (None leaves the count alone), then restore it."""
    old = numba.get_num_threads()
    if n is not None:
        n = int(n)
        if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
            raise ValueError(
                f"threads must be in [1, {numba.config.NUMBA_NUM_THREADS}], got {n}"
            )
        numba.set_num_threads(n)
    try:
        yield numba.get_num_threads()
    finally:
        numba.set_num_threads(old)
