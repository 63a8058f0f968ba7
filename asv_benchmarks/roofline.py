"""asv benchmarks of this machine's ceilings: read bandwidth, fp32 matmul peak, last-level cache.

The kernel report draws each kernel's achieved GB/s or GFLOP/s against a
ceiling. A ceiling measured while building the report comes from another
process at another moment than the kernels asv timed, and on a shared machine
the two can differ by a factor of two; so the ceilings are benchmarks of the
suite itself and come from the same run, machine and environment as the kernels.

* ``ReadStream.track_read_gbps``: the Numba read-only reduction ``sum(a * b)``
  (:func:`scalelab.simulations.calibration.measure_stream_bandwidth`, the access
  pattern of decode) over float32 arrays of at least four times the last-level
  cache and 128 MiB each, so the bytes come from DRAM; best of 7 repeats; 1 and 2 threads.
* ``MatmulPeak.track_sgemm_gflops``: float32 ``A @ B`` (n = 1024) through NumPy's
  BLAS, best of 7; the ``blas`` parameter records which library, version and
  kernel (OpenBLAS ``coretype``) ran, as threadpoolctl reports it.
* ``LastLevelCache.track_mib``: the size of the largest CPU cache (Linux sysfs),
  so the report can tell shapes whose working set fits in it (which DRAM does
  not bound) from shapes streamed from memory. Skipped where sysfs has no cache entry.

Ceilings are best-of-repeat figures: interference only ever slows a run down,
so the fastest repeat is the least disturbed.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from asv_benchmarks._util import Threaded, blas_description

THREADS = [1, 2]
MATMUL_N = 1024
REPEATS = 7
#: Smallest stream array (bytes): four times a 32 MiB L3, the DRAM-bound size calibration.py uses.
MIN_STREAM_BYTES = 128 * 2**20
BLAS = blas_description()
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def last_level_cache_bytes() -> int | None:
    """Size in bytes of the highest-level data or unified cache of CPU 0, from Linux sysfs; None if unknown."""
    best_level, best_size = 0, None
    for index in sorted(_SYSFS_CACHE.glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            kind = (index / "type").read_text().strip()
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not text:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1], 1)
        try:
            size = int(text.rstrip("KMG")) * scale
        except ValueError:
            continue
        if level > best_level:
            best_level, best_size = level, size
    return best_size


def _calibration():
    """:mod:`scalelab.simulations.calibration`, or NotImplementedError (asv: "skipped") without it."""
    try:
        return importlib.import_module("scalelab.simulations.calibration")
    except ImportError:
        raise NotImplementedError("this revision has no scalelab.simulations.calibration") from None


class ReadStream(Threaded):
    """Read-only stream bandwidth from DRAM, per thread count."""

    params = [THREADS]
    param_names = ["threads"]
    timeout = 300

    def setup(self, threads):
        self.limit_threads(threads)
        self.n_bytes = max(MIN_STREAM_BYTES, 4 * (last_level_cache_bytes() or 0))

    def track_read_gbps(self, threads):
        read, _triad = _calibration().measure_stream_bandwidth(self.n_bytes, REPEATS, threads)
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
