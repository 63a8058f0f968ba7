"""Helpers shared by every benchmark module: thread counts, optional torch, timing, BLAS.

Not a benchmark module: asv collects only ``time_``/``track_``/... names, and
this file defines none.

* :class:`Threaded` is the base of every benchmark class that sets a thread
  count: ``self.limit_threads(n)`` in ``setup`` sets Numba, BLAS/OpenMP
  (threadpoolctl) and, for torch cases, torch to ``n`` threads; ``teardown``
  restores them (also after a setup that raised, e.g. torch absent).
* :func:`require_torch` raises NotImplementedError, which asv reports as
  "skipped", when torch is not installed. torch is imported only by the cases
  that time it, so its import and thread pool stay out of the processes that
  time the other peers.
* :func:`best_time` is the measurement layer's best-of timer
  (:func:`scalelab.simulations.calibration.best_time`), for ``track_`` rates.

The regression gate runs this suite against older revisions of the package,
so what a revision may lack is imported when used, never at import time: a
module that fails to import fails every benchmark in it.
"""

from __future__ import annotations

import importlib

import numba

__all__ = ["Threaded", "ThreadLimit", "best_time", "blas_description", "blas_info", "kernel_peers", "optional_torch",
           "require_torch"]


def best_time(fn, repeats: int = 5, min_time: float = 0.0) -> float:
    """:func:`scalelab.simulations.calibration.best_time` (imported when called; see above)."""
    return importlib.import_module("scalelab.simulations.calibration").best_time(fn, repeats, min_time)


def kernel_peers():
    """:mod:`scalelab.kernels.peers`, or NotImplementedError (asv: "skipped") in a revision without it."""
    try:
        return importlib.import_module("scalelab.kernels.peers")
    except ImportError:
        raise NotImplementedError("this revision has no scalelab.kernels.peers") from None


def optional_torch():
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def require_torch():
    """Return the torch module, or raise NotImplementedError (asv: "skipped") if absent."""
    torch = optional_torch()
    if torch is None:
        raise NotImplementedError("torch is not installed")
    return torch


class ThreadLimit:
    """Set Numba, BLAS/OpenMP (threadpoolctl) and optionally torch to ``n`` threads; ``restore()`` undoes it.

    More threads than Numba was started with raise NotImplementedError (asv:
    "skipped"): a result labelled with a thread count it did not run on would mislead.
    """

    def __init__(self, n: int, torch=None):
        from threadpoolctl import threadpool_limits

        if int(n) > numba.config.NUMBA_NUM_THREADS:
            raise NotImplementedError(f"only {numba.config.NUMBA_NUM_THREADS} Numba threads")
        self.n = int(n)
        self._numba = numba.get_num_threads()
        numba.set_num_threads(self.n)
        self._blas = threadpool_limits(limits=self.n)
        self._torch = torch
        if torch is not None:
            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def restore(self) -> None:
        numba.set_num_threads(self._numba)
        self._blas.restore_original_limits()
        if self._torch is not None:
            self._torch.set_num_threads(self._torch_threads)


class Threaded:
    """Base of benchmark classes that run at a set thread count (see the module docstring)."""

    def limit_threads(self, n: int, torch=None) -> None:
        self._thread_limit = ThreadLimit(n, torch)

    def teardown(self, *params):
        limit = getattr(self, "_thread_limit", None)
        if limit is not None:  # None when setup was skipped before limiting threads
            limit.restore()
            self._thread_limit = None


def blas_info() -> list[dict]:
    """Which BLAS / OpenMP libraries are loaded and with how many threads (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    return [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for d in threadpool_info()]


def blas_description() -> str:
    """The BLAS numpy's matmul runs here as one parameter-safe string (``openblas-0.3.27-Haswell-pthreads``)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return (f"{lib.get('internal_api')}-{lib.get('version')}-{lib.get('architecture')}"
                    f"-{lib.get('threading_layer')}")
    return "none"
