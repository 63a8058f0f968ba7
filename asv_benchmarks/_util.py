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
* :func:`tiled_normal` fills a DRAM-sized float32 array with seeded normals
  in a fraction of the time a full ``standard_normal`` takes (setup runs once
  per parameter combination, and a 1 GiB KV cache took seconds each time).
* :func:`full_only` / :func:`require_full` leave out the cases that take
  minutes per call (a 1B-parameter model, a full-size published peer) unless
  ``SCALELAB_BENCH_FULL=1``: the default suite stays affordable on 2 cores
  (docs/regression-gate.md has the figures); the nightly job sets it.
* :func:`torch_peers` lists torch implementations only when torch is
  installed (checked without importing it). asv starts a process for every
  parameter combination, and a skipped one still pays for the interpreter and
  the imports (seconds on a busy 2-core machine), so absent peers are left out
  of the grid rather than skipped.

The regression gate runs this suite against older revisions of the package,
so what a revision may lack is imported when used, never at import time: a
module that fails to import fails every benchmark in it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import numba
import numpy as np

__all__ = ["FULL_ENV", "Threaded", "ThreadLimit", "best_time", "blas_description", "blas_info", "kernel_peers",
           "full_only", "optional_torch", "require_full", "require_torch", "tiled_normal", "torch_peers"]

#: Environment variable that turns on the minutes-per-call cases (see :func:`require_full`).
FULL_ENV = "SCALELAB_BENCH_FULL"

#: Distinct values behind :func:`tiled_normal`: 4 MiB of float32, larger than L2, so the
#: repetition is invisible to a kernel streaming the array from DRAM.
TILE_ELEMENTS = 1 << 20


def best_time(fn, repeats: int = 5, min_time: float = 0.0) -> float:
    """:func:`scalelab.simulations.calibration.best_time` (imported when called; see above)."""
    return importlib.import_module("scalelab.simulations.calibration").best_time(fn, repeats, min_time)


def kernel_peers():
    """:mod:`scalelab.kernels.peers`, or NotImplementedError (asv: "skipped") in a revision without it."""
    try:
        return importlib.import_module("scalelab.kernels.peers")
    except ImportError:
        raise NotImplementedError("this revision has no scalelab.kernels.peers") from None


def full_only(*values) -> list:
    """``values`` as a list when ``SCALELAB_BENCH_FULL=1``, else an empty list (for a ``params`` grid)."""
    return list(values) if os.environ.get(FULL_ENV) == "1" else []


def torch_peers(*values) -> list:
    """``values`` (torch implementation names) as a list when torch is installed, else an empty list."""
    return list(values) if importlib.util.find_spec("torch") is not None else []


def require_full(what: str) -> None:
    """Raise NotImplementedError (asv: "skipped") unless ``SCALELAB_BENCH_FULL=1``; ``what`` names the case."""
    if os.environ.get(FULL_ENV) != "1":
        raise NotImplementedError(f"{what}: minutes per call; set {FULL_ENV}=1 to run it (the nightly job does)")


def tiled_normal(shape, seed: int) -> np.ndarray:
    """A float32 array of ``shape`` holding one seeded block of standard normals, repeated.

    For bandwidth-bound kernels (decode attention over a KV cache), whose
    speed does not depend on the values; a fresh ``standard_normal`` of 1 GiB
    costs seconds of setup per parameter combination, a tiled copy a few
    hundred milliseconds.
    """
    n = int(np.prod(shape))
    block = np.random.default_rng(seed).standard_normal(min(n, TILE_ELEMENTS), dtype=np.float32)  # (tile,)
    out = np.empty(n, dtype=np.float32)  # (n,)
    whole = n - n % block.size
    out[:whole].reshape(-1, block.size)[:] = block  # (n // tile, tile) broadcast copies
    out[whole:] = block[: n - whole]
    return out.reshape(shape)


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
