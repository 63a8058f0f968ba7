"""Small helpers shared by benchmark modules: optional torch, thread control, timing.

Not a benchmark module: asv collects only ``time_``/``track_``/... names, and
this file defines none.
"""

from __future__ import annotations

import time

import numba


def require_torch():
    """Return the torch module, or raise NotImplementedError (asv: "skipped") if absent."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    return torch


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class ThreadLimit:
    """Set Numba, BLAS (threadpoolctl) and, if imported, torch to ``n`` threads; ``restore()`` undoes it.

    Benchmarks call this in ``setup`` and ``restore`` in ``teardown`` so peers
    always run with the same number of threads as our kernels.
    """

    def __init__(self, n: int):
        from threadpoolctl import threadpool_limits

        self.n = min(int(n), numba.config.NUMBA_NUM_THREADS)
        self._numba = numba.get_num_threads()
        numba.set_num_threads(self.n)
        self._blas = threadpool_limits(limits=self.n)
        self._torch = None
        if torch_available():
            import torch

            self._torch = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def restore(self) -> None:
        numba.set_num_threads(self._numba)
        self._blas.restore_original_limits()
        if self._torch is not None:
            import torch

            torch.set_num_threads(self._torch)


def blas_info() -> list[dict]:
    """Which BLAS / OpenMP libraries are loaded and with how many threads (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for d in threadpool_info()]


def best_time(fn, repeats: int = 5, min_time: float = 0.2) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls, continuing until ``min_time`` has passed."""
    best = float("inf")
    start = time.perf_counter()
    n = 0
    while n < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        n += 1
        if n >= 100:
            break
    return best
