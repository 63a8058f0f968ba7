"""asv benchmarks of this machine's ceilings: read bandwidth, fp32 matmul peak, last-level cache.

The kernel report draws each kernel's achieved GB/s or GFLOP/s against a
ceiling. A ceiling measured while building the report comes from another
process at another moment than the kernels asv timed, and on a shared machine
the two can differ by a factor of two; so the ceilings are benchmarks of the
suite itself and come from the same run, machine and environment as the kernels.

* ``ReadStream.track_read_gbps``: the read-only stream of
  :func:`scalelab.simulations.calibration.measure_stream_bandwidth` (the access
  pattern of decode): the better of two read patterns (two arrays side by side;
  one array as four streams) through explicit-lane FMA reductions that run far
  faster than DRAM, so memory bounds them, over float32 arrays of four times the
  last-level cache and at least 128 MiB each, filled before timing, chunks handed
  to threads dynamically; best of 7 interleaved repeats per pattern; 1 and 2
  threads. About 1 s on a quiet machine.
* ``MatmulPeak.track_sgemm_gflops``: float32 ``A @ B`` (n = 1024) through NumPy's
  BLAS, best of 7; the ``blas`` parameter records which library, version and
  kernel (OpenBLAS ``coretype``) ran, as threadpoolctl reports it.
* ``LastLevelCache.track_mib``: the size of the largest CPU cache (Linux sysfs),
  so the report can tell shapes whose working set is within four times it (partly
  cache-resident, which DRAM does not bound) from shapes streamed from memory. Skipped where sysfs has no cache entry.

Ceilings are best-of-repeat figures: interference only ever slows a run down,
so the fastest repeat is the least disturbed.
"""

from __future__ import annotations

import importlib

from asv_benchmarks._util import Threaded, blas_description

THREADS = [1, 2]
MATMUL_N = 1024
REPEATS = 7
BLAS = blas_description()


def _calibration():
    """:mod:`scalelab.simulations.calibration`, or NotImplementedError (asv: "skipped") without it."""
    try:
        return importlib.import_module("scalelab.simulations.calibration")
    except ImportError:
        raise NotImplementedError("this revision has no scalelab.simulations.calibration") from None


def last_level_cache_bytes() -> int | None:
    """The last-level cache size (:func:`scalelab.simulations.calibration.last_level_cache_bytes`)."""
    find = getattr(_calibration(), "last_level_cache_bytes", None)
    if find is None:
        raise NotImplementedError("this revision's calibration module cannot read the cache size")
    return find()


class ReadStream(Threaded):
    """Read-only stream bandwidth from DRAM, per thread count."""

    params = [THREADS]
    param_names = ["threads"]
    timeout = 300

    def setup(self, threads):
        self.limit_threads(threads)

    def track_read_gbps(self, threads):
        cal = _calibration()
        # four times the last-level cache, at least 128 MiB (a revision without the helper: 128 MiB)
        n_bytes = getattr(cal, "default_stream_bytes", lambda: 128 * 2**20)()
        read, _triad = cal.measure_stream_bandwidth(n_bytes, REPEATS, threads)
        return read / 1e9

    track_read_gbps.unit = "GB/s"


class MatmulPeak(Threaded):
    """fp32 BLAS matmul throughput, per thread count, with the BLAS kernel that ran."""

    params = [THREADS, [BLAS]]
    param_names = ["threads", "blas"]
    timeout = 300

    def setup(self, threads, blas):
        self.limit_threads(threads)

    def track_sgemm_gflops(self, threads, blas):
        return _calibration().measure_matmul_flops(MATMUL_N, REPEATS) / 1e9

    track_sgemm_gflops.unit = "GFLOP/s"


class LastLevelCache:
    """The last-level cache size of the machine that ran the suite."""

    def setup(self):
        if last_level_cache_bytes() is None:
            raise NotImplementedError("no CPU cache description in sysfs")

    def track_mib(self):
        return last_level_cache_bytes() / 2**20

    track_mib.unit = "MiB"
