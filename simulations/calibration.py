"""Measurement on this machine: its roofline ceilings and how well the model predicts our kernels.

The analytic models (:mod:`scalelab.simulations.inference`,
:mod:`scalelab.simulations.hardware`) take numbers; this module measures them.

* :func:`measure_cpu` / :class:`CeilingProbe` / :func:`cpu_hardware`: the CPU's ceilings as a
  :class:`~scalelab.simulations.hardware.Hardware`;
* :func:`calibrate_attention_kernels`: the roofline's prediction for our attention
  kernels beside their measured run times, with the ceilings measured around every call.

Nothing about the CPU is typed in. Three micro-benchmarks, a few seconds in all:

* **compute ceiling**: float32 ``A @ B`` through NumPy's BLAS (the best dense
  fp32 throughput any code on this machine reaches), ``2 n^3`` FLOPs per call;
* **compiled-loop ceiling**: the register-tile matmul our Numba kernels are
  built on (:mod:`scalelab.kernels._tiles`) on cache-resident 64 x 64 tiles: what our
  own compiled code reaches without BLAS's hand-written assembly;
* **bandwidth ceiling**: read-only reductions over float32 arrays of
  :data:`DRAM_LLC_MULTIPLE` (4) times the last-level cache, at least 128 MiB each
  (sysfs gives the cache size; the arrays are filled before timing, so no timed run
  pays page faults), the access pattern of decode, which reads weights and KV
  cache and writes almost nothing. Two read patterns, interleaved, each the best
  of its repeats; the ceiling is the better of the two (:func:`best_read_rate`):
  two arrays read side by side (``x[r] . y[r]`` per row, like K and V) and one
  array read as four streams with four accumulators. Threads take contiguous
  chunks of rows dynamically (16 per thread); the reductions are the lane-order FMA intrinsics of
  :mod:`scalelab.kernels._tiles`, which run several times faster than DRAM on
  cache-resident data, so memory and not the loop bounds the probe. (The
  earlier probe, a reassoc-vectorised ``sum(a * b)`` prange loop, ran at 7-8 GB/s
  per core even on L2-resident arrays: it was compute-bound and read 2.5-3.5x
  slower than these patterns and than ``np.dot``, measured interleaved on 1 and
  2 threads here, so decode seemed to beat the "ceiling".) The STREAM triad
  ``a = b + s * c`` is reported for reference.

The machine is shared and noisy, so every figure is the best of several timed
repeats (the least-disturbed run), which is what a ceiling is.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple

import numba
import numpy as np
import pandas as pd
from numba import prange

from scalelab.kernels._common import aligned_empty, numba_threads
from scalelab.kernels._tiles import TILE_ROW_BYTES, dot_tile_nt_for, mm_tile_rescale_add
from scalelab.simulations.hardware import Hardware
from scalelab.simulations.inference import attention_kernel_roofline


#: float32 elements per row of the read-stream arrays (16 KiB rows): long enough
#: that the per-row reduction tail is negligible, short enough to split rows evenly over threads.
STREAM_ROW = 4096
#: A working set of at least this many times the last-level cache is streamed from DRAM.
#: Caches do not evict in strict LRU order, so data re-read across calls from a working set
#: of one or two LLC sizes partly stays cached; the read-stream probe sizes its arrays by
#: this multiple, and the kernel report calls a rate DRAM-bound only past it.
DRAM_LLC_MULTIPLE = 4
#: Chunks of rows per thread in the read probes (4 MiB of each array per chunk: 128 MiB arrays, 2 threads).
READ_CHUNKS_PER_THREAD = 16
#: Smallest read-stream array (bytes): four times a 32 MiB L3 where sysfs tells nothing.
MIN_STREAM_BYTES = 128 * 2**20

_dot_1x1 = dot_tile_nt_for(1, 1)
_dot_1x4 = dot_tile_nt_for(1, 4)


# The read probes reduce through the lane-order intrinsics of kernels/_tiles.py (explicit
# host-width vector FMAs, the decode kernel's own loads) instead of a reassoc-vectorised loop: a
# prange loop ``acc += a[i] * b[i]`` with reassoc reached only 7-8 GB/s on one core on
# L2-resident arrays here, below DRAM speed, so it measured its own loop and not memory.
@numba.njit(parallel=True, cache=True)
def _read_rows(x, y, n_chunks, four_streams):
    """Read every row of ``x`` (R, C) float32 once and return a sum of dot products.

    The rows are cut into ``n_chunks`` contiguous chunks, one prange iteration
    each (the caller sets the chunk size of the schedule: 1 hands the chunks out
    dynamically). ``four_streams`` False: ``sum_r x[r] . y[r]`` (y (R, C)), two
    streams, as decode reads K and V. True: ``sum_r x[r] . y[0]`` (y (1, C) of
    ones), each chunk read as four quarters side by side with four accumulators.
    """
    rows, cols = x.shape
    per = (rows + n_chunks - 1) // n_chunks
    out = np.zeros((n_chunks, 4), dtype=np.float32)  # (chunks, 4) the dot products of one step per chunk
    partial = np.zeros(n_chunks, dtype=np.float64)  # (chunks,)
    for c in prange(n_chunks):
        o = out[c:c + 1]
        lo = c * per
        hi = min(rows, lo + per)
        quarter = max(hi - lo, 0) // 4 if four_streams else 0
        acc = 0.0
        for r in range(lo, lo + quarter):
            _dot_1x4(y, 0, x, r, quarter, o, 0, 0, cols)
            acc += o[0, 0] + o[0, 1] + o[0, 2] + o[0, 3]
        for r in range(lo + 4 * quarter, hi):  # one row at a time (all of them with two arrays)
            _dot_1x1(y, 0 if four_streams else r, x, r, 1, o, 0, 0, cols)
            acc += o[0, 0]
        partial[c] = acc
    return partial.sum()


class StreamArrays(NamedTuple):
    """Buffers of the read-stream probe, filled (every page touched) before anything is timed."""

    x: np.ndarray  # (R, C) float32, 1.0
    y: np.ndarray  # (R, C) float32, 2.0
    ones: np.ndarray  # (1, C) float32


def _stream_shape(n_bytes: int) -> tuple[int, int]:
    """(rows, columns) of a float32 stream array of at most ``n_bytes``: whole rows of :data:`STREAM_ROW`."""
    n = n_bytes // 4
    cols = min(STREAM_ROW, n)
    return n // cols, cols


def stream_arrays_bytes(n_bytes: int) -> int:
    """Bytes one stream array asked for ``n_bytes`` really holds."""
    rows, cols = _stream_shape(n_bytes)
    return 4 * rows * cols


def stream_arrays(n_bytes: int) -> StreamArrays:
    """Two float32 arrays of ``n_bytes`` each (rounded down to whole rows of :data:`STREAM_ROW`)."""
    rows, cols = _stream_shape(n_bytes)
    x = aligned_empty((rows, cols), np.float32)  # (R, C)
    y = aligned_empty((rows, cols), np.float32)  # (R, C)
    x[:] = 1.0  # first touch here: page faults never land in a timed call
    y[:] = 2.0
    return StreamArrays(x, y, np.ones((1, cols), dtype=np.float32))


def best_read_rate(arrays: StreamArrays, repeats: int, nt: int) -> float:
    """The best read rate (bytes/s) of the two read patterns, interleaved, best of ``repeats`` each.

    Patterns: two arrays read side by side (``x . y`` per row, decode's K and V)
    and one array read as four streams. The maximum of their best repeats is
    the ceiling: each is a way to read memory, and interference only ever slows
    a run down. The rows go out in :data:`READ_CHUNKS_PER_THREAD` contiguous
    chunks per thread, handed out dynamically, so a thread the OS deschedules
    for a while does not hold the others up at the final barrier.
    """
    x, y, ones = arrays
    chunks = READ_CHUNKS_PER_THREAD * nt
    patterns = ((lambda: _read_rows(x, y, chunks, False), x.nbytes + y.nbytes),
                (lambda: _read_rows(x, ones, chunks, True), x.nbytes))
    best = [math.inf] * len(patterns)
    with numba.parallel_chunksize(1):
        for _ in range(repeats):
            for i, (call, _n) in enumerate(patterns):
                best[i] = min(best[i], best_time(call, 1))
    return max(n / t for (_call, n), t in zip(patterns, best))


@numba.njit(parallel=True, cache=True)
def _stream_triad(out, b, c, scalar, n_blocks):
    """STREAM triad ``out = b + scalar * c``; each thread owns whole blocks."""
    n = out.shape[0]
    block = (n + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        lo = blk * block
        hi = min(n, lo + block)
        for i in range(lo, hi):
            out[i] = b[i] + scalar * c[i]


@numba.njit(cache=True)
def _tile_mm_acc(a, b, c, ones):
    """``c += a @ b`` with the attention kernels' 4 x 16 register tile (M % 4 == 0, N % 16 == 0).

    The same :func:`scalelab.kernels._tiles.mm_tile_rescale_add` the prefill kernel
    runs (with ``alpha = 1``); accumulating into ``c`` keeps repeated calls
    from being folded.
    """
    m, k = a.shape
    n = b.shape[1]
    for j in range(0, n, TILE_ROW_BYTES // 4):  # float32 tile columns
        for i in range(0, m, 4):
            mm_tile_rescale_add(a, i, b, 0, j, c, j, k, ones)


@numba.njit(parallel=True, cache=True)
def _tile_mm_loop(a, b, c, ones, reps):
    """Each thread multiplies its own cache-resident tiles ``reps`` times: a (T, M, K), b (T, K, N), c (T, M, N)."""
    for t in prange(a.shape[0]):
        for _ in range(reps):
            _tile_mm_acc(a[t], b[t], c[t], ones)


#: Seconds to wait after a BLAS call before timing anything else. OpenBLAS's
#: worker threads keep spinning for a while after a call returns; measured
#: here, a read-stream probe started right after the BLAS probe reached
#: 5.0-6.0 GB/s instead of 9.0-9.2, and the L=512 attention kernel took
#: 16.8 ms instead of 4.8 ms (2 threads). 0.2 s of sleep removed both.
BLAS_SETTLE_S = 0.2
_SYSFS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class CPUMeasurement:
    """What :func:`measure_cpu` found (all best-of-repeats)."""

    matmul_flops_per_s: float  # fp32 BLAS matmul, FLOP/s
    matmul_n: int  # square matrix size used
    numba_loop_flops_per_s: float  # our register-tile matmul on cache-resident 64x64x64 tiles, FLOP/s
    read_bytes_per_s: float  # Numba read-only stream (best of two read patterns), bytes/s
    triad_bytes_per_s: float  # Numba STREAM triad, counting 3 arrays moved, bytes/s
    stream_bytes: int  # size of one stream array, bytes
    numba_threads: int
    blas: str  # which BLAS ran (threadpoolctl), for the record
    memory_bytes: int  # physical memory reported by the OS
    seconds: float  # wall time the measurement took


def _blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            i = infos[0]
            return f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, {i.get('num_threads')} threads)"
    except Exception:  # pragma: no cover - informational only
        pass
    return "unknown BLAS"


def _physical_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def best_time(fn, repeats: int = 5, min_time: float = 0.0, max_calls: int = 100) -> float:
    """Minimum wall time in seconds of ``fn()`` over ``repeats`` calls.

    With ``min_time`` > 0, calls continue until that many seconds have passed
    (at most ``max_calls`` calls), so a fast function gets enough samples for
    its minimum to be the undisturbed time on a shared machine. The minimum,
    not the mean: interference only ever adds time. Warm ``fn`` up first
    (compile, page faults): every call counts.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = float("inf")
    start = time.perf_counter()
    n = 0
    while n < repeats or (time.perf_counter() - start < min_time and n < max_calls):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def measure_matmul_flops(n: int = 1024, repeats: int = 7, seed: int = 0) -> float:
    """Best fp32 BLAS matmul rate in FLOP/s for ``(n, n) @ (n, n)``."""
    if n <= 0 or repeats <= 0:
        raise ValueError(f"n and repeats must be positive, got n={n}, repeats={repeats}")
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    b = rng.standard_normal((n, n), dtype=np.float32)  # (n, n)
    out = np.empty((n, n), dtype=np.float32)  # (n, n)
    np.matmul(a, b, out=out)  # warm: thread pool start-up, page faults
    return 2.0 * n**3 / best_time(lambda: np.matmul(a, b, out=out), repeats)


def measure_numba_loop_flops(tile: int = 64, reps: int = 400, repeats: int = 5, threads: int | None = None) -> float:
    """Best FLOP/s of the Numba kernels' register-tile matmul on cache-resident fp32 tiles.

    This is the compute ceiling for our own compiled code (the micro-kernel of
    :mod:`scalelab.kernels._tiles` that the prefill attention kernel is built on), as
    opposed to BLAS's hand-tuned assembly.
    """
    if tile <= 0 or tile % 16 or reps <= 0 or repeats <= 0:
        raise ValueError(f"tile must be a positive multiple of 16 and reps/repeats positive, got {tile}, {reps}, {repeats}")
    with numba_threads(threads) as nt:
        rng = np.random.default_rng(0)
        a = rng.standard_normal((nt, tile, tile), dtype=np.float32)  # (T, M, K)
        b = rng.standard_normal((nt, tile, tile), dtype=np.float32)  # (T, K, N)
        c = np.zeros((nt, tile, tile), dtype=np.float32)  # (T, M, N)
        ones = np.ones(tile, dtype=np.float32)  # (M,)
        _tile_mm_loop(a, b, c, ones, 1)  # compile / load from cache
        t = best_time(lambda: _tile_mm_loop(a, b, c, ones, reps), repeats)
    return 2.0 * nt * reps * tile**3 / t


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


def default_stream_bytes() -> int:
    """Bytes per read-stream array: :data:`DRAM_LLC_MULTIPLE` times the last-level cache, at least 128 MiB."""
    return max(MIN_STREAM_BYTES, DRAM_LLC_MULTIPLE * (last_level_cache_bytes() or 0))


def measure_stream_bandwidth(
    n_bytes: int | None = None, repeats: int = 7, threads: int | None = None
) -> tuple[float, float]:
    """Best (read-only, triad) bandwidth in bytes/s with float32 arrays of ``n_bytes`` each.

    The read figure is :func:`best_read_rate`: the better of two read patterns
    (two arrays side by side, one array as four streams per thread), each the
    best of ``repeats`` interleaved runs, on ``threads`` Numba threads, each
    thread reading a contiguous block. Arrays are filled before timing, so no
    run pays page faults. ``n_bytes=None`` sizes them by
    :func:`default_stream_bytes` (four times the last-level cache, at least
    128 MiB), so the bytes come from DRAM. The triad ``a = b + s c`` (three
    arrays moved) is reported for reference. About 1 s at 10 GB/s.
    """
    n_bytes = default_stream_bytes() if n_bytes is None else n_bytes
    if n_bytes < 4 or repeats <= 0:
        raise ValueError(f"n_bytes must be >= 4 and repeats positive, got {n_bytes}, {repeats}")
    arrays = stream_arrays(n_bytes)
    a = arrays.x.reshape(-1)  # (n,) the triad's output
    b = arrays.y.reshape(-1)  # (n,)
    c = np.full_like(a, 0.5)  # (n,)
    n = a.shape[0]
    with numba_threads(threads) as nt:
        n_blocks = 8 * nt
        best_read_rate(arrays, 1, nt)  # compile (or load from cache)
        _stream_triad(a, b, c, np.float32(3.0), n_blocks)
        read = best_read_rate(arrays, repeats, nt)
        t_triad = best_time(lambda: _stream_triad(a, b, c, np.float32(3.0), n_blocks), repeats)
    return read, 3 * n * 4 / t_triad


class CeilingProbe:
    """All three ceilings from preallocated, warmed buffers: one short timed run each per :meth:`measure`.

    Used to measure the ceilings right next to each kernel call (the
    calibration in :mod:`scalelab.simulations.inference`), where allocating and warming
    fresh buffers every time would cost more than the measurement. ``stream_bytes=None``
    sizes each read-stream array by :func:`default_stream_bytes`, as the one-off read
    probe does, so the bytes come from DRAM whatever the last-level cache.
    """

    # Defaults make each probe run ~0.1-0.3 s, the order of the kernels it is paired with: on a shared
    # machine a short multi-threaded run loses a larger share to one preempted thread at its final barrier.
    def __init__(self, *, matmul_n: int = 1536, stream_bytes: int | None = None, tile: int = 64, reps: int = 1600,
                 threads: int | None = None, seed: int = 0) -> None:
        stream_bytes = default_stream_bytes() if stream_bytes is None else stream_bytes
        rng = np.random.default_rng(seed)
        self.threads = threads
        self.a = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)  # (n, n)
        self.b = rng.standard_normal((matmul_n, matmul_n), dtype=np.float32)  # (n, n)
        self.c = np.empty((matmul_n, matmul_n), dtype=np.float32)  # (n, n)
        self.matmul_flops = 2.0 * matmul_n**3
        self.stream = stream_arrays(stream_bytes)
        with numba_threads(threads) as nt:
            self.nt = nt
            self.ta = rng.standard_normal((nt, tile, tile), dtype=np.float32)  # (T, M, K)
            self.tb = rng.standard_normal((nt, tile, tile), dtype=np.float32)  # (T, K, N)
            self.tc = np.zeros((nt, tile, tile), dtype=np.float32)  # (T, M, N)
            self.ones = np.ones(tile, dtype=np.float32)  # (M,)
            self.reps = reps
            self.loop_flops = 2.0 * nt * reps * tile**3
            self.measure()  # warm: compile/load kernels, fault pages in

    def measure(self, runs: int = 1) -> tuple[float, float, float]:
        """(BLAS matmul FLOP/s, Numba-loop FLOP/s, read-stream bytes/s): best of ``runs`` short runs each."""
        with numba_threads(self.threads):
            blas = self.matmul_flops / best_time(lambda: np.matmul(self.a, self.b, out=self.c), runs)
            time.sleep(BLAS_SETTLE_S)
            loop = self.loop_flops / best_time(lambda: _tile_mm_loop(self.ta, self.tb, self.tc, self.ones, self.reps), runs)
            read = best_read_rate(self.stream, runs, self.nt)
        return blas, loop, read


def measure_cpu(
    *, matmul_n: int = 1024, stream_bytes: int | None = None, repeats: int = 7, threads: int | None = None
) -> CPUMeasurement:
    """Measure this CPU's fp32 matmul peak and stream bandwidth (a few seconds).

    ``stream_bytes`` is the size of each read-stream array; None: four times the
    last-level cache, at least 128 MiB (:func:`measure_stream_bandwidth`).
    """
    t0 = time.perf_counter()
    stream_bytes = default_stream_bytes() if stream_bytes is None else stream_bytes
    flops = measure_matmul_flops(matmul_n, repeats)
    time.sleep(BLAS_SETTLE_S)
    loop_flops = measure_numba_loop_flops(repeats=repeats, threads=threads)
    read_bw, triad_bw = measure_stream_bandwidth(stream_bytes, repeats, threads)
    return CPUMeasurement(
        matmul_flops_per_s=flops,
        matmul_n=matmul_n,
        numba_loop_flops_per_s=loop_flops,
        read_bytes_per_s=read_bw,
        triad_bytes_per_s=triad_bw,
        stream_bytes=stream_arrays_bytes(stream_bytes),
        numba_threads=threads if threads is not None else numba.get_num_threads(),
        blas=_blas_description(),
        memory_bytes=_physical_memory_bytes(),
        seconds=time.perf_counter() - t0,
    )


def _rapl_max_power_w() -> float | None:
    """The package power limit from Linux powercap, if this machine exposes it."""
    path = "/sys/class/powercap/intel-rapl:0/constraint_0_max_power_uw"
    try:
        with open(path) as f:
            value = float(f.read().strip()) / 1e6
        return value if value > 0 else None
    except (OSError, ValueError):
        return None


def cpu_hardware(
    measurement: CPUMeasurement | None = None, *, compute_ceiling: str = "blas", tdp_w: float | None = None, **kwargs
):
    """Build a :class:`scalelab.simulations.hardware.Hardware` for this CPU from a measurement.

    ``compute_ceiling`` picks ``peak_flops``: ``"blas"`` (fp32 BLAS matmul, the
    machine's best) or ``"numba"`` (our register-tile Numba matmul, the best
    that plain compiled loops reach).

    ``bandwidth_bytes_per_s`` is the read-only stream figure, because the
    workloads this roofline models (decode) read weights and KV cache and write
    almost nothing. ``tdp_w`` cannot be measured from user space on most VMs: it
    is taken from the argument, else from RAPL when readable, else left as
    ``None`` (unknown), which the energy model refuses to use.
    """
    if compute_ceiling not in ("blas", "numba"):
        raise ValueError(f"compute_ceiling must be 'blas' or 'numba', got {compute_ceiling!r}")
    m = measurement if measurement is not None else measure_cpu(**kwargs)
    peak = m.matmul_flops_per_s if compute_ceiling == "blas" else m.numba_loop_flops_per_s
    power = tdp_w if tdp_w is not None else _rapl_max_power_w()
    power_note = f"{power:.0f} W" if power is not None else "tdp_w unknown"
    return Hardware(
        name=f"this CPU ({os.cpu_count()} logical cores, {m.numba_threads} threads, {compute_ceiling} peak)",
        peak_flops=peak,
        bandwidth_bytes_per_s=m.read_bytes_per_s,
        memory_bytes=float(m.memory_bytes) if m.memory_bytes > 0 else None,
        tdp_w=power,
        source=(
            f"measured here: fp32 {m.matmul_n}^3 matmul via {m.blas} = {m.matmul_flops_per_s / 1e9:.1f} GFLOP/s; "
            f"Numba register-tile matmul {m.numba_loop_flops_per_s / 1e9:.1f} GFLOP/s; "
            f"Numba read stream {m.read_bytes_per_s / 1e9:.1f} GB/s (triad {m.triad_bytes_per_s / 1e9:.1f} GB/s) "
            f"over {m.stream_bytes / 2**20:.0f} MiB arrays; best of repeats; {power_note}"
        ),
    )


# --------------------------------------------------------------------------- attention kernel calibration

#: The attention shapes benchmarked in ``asv_benchmarks/attention.py``, float32.
ATTENTION_CALIBRATION_SHAPES: tuple[dict, ...] = tuple(
    [dict(kernel="attention", batch=1, n_q_heads=8, n_kv_heads=8, q_len=n, kv_len=n, head_dim=64, causal=True)
     for n in (512, 1024, 2048)]
    + [dict(kernel="decode_attention", batch=8, n_q_heads=32, n_kv_heads=hkv, q_len=1, kv_len=4096, head_dim=128,
            causal=False) for hkv in (32, 8)]
)

#: Predicted / measured must fall in these ranges for the calibration to count as a pass.
CALIBRATION_BAR = {"attention": (0.5, 2.0), "decode_attention": (0.75, 1.33)}


def _shape_label(s: dict) -> str:
    if s["kernel"] == "attention":
        return f"B={s['batch']} H={s['n_q_heads']} L={s['q_len']} D={s['head_dim']}" + (" causal" if s["causal"] else "")
    return f"B={s['batch']} Hq={s['n_q_heads']} Hkv={s['n_kv_heads']} kv={s['kv_len']} D={s['head_dim']}"


def _make_call(s: dict, rng: np.random.Generator):
    """Build fp32 inputs for one shape and return a zero-argument call of our kernel."""
    from scalelab.kernels import attention as attn  # lazy: the kernels are only needed to calibrate

    b, hq, hkv, lq, lk, d = (s[k] for k in ("batch", "n_q_heads", "n_kv_heads", "q_len", "kv_len", "head_dim"))
    # run time does not depend on the values, so K and V repeat a 4 MiB random block (a 1 GB cache fills fast)
    q = rng.standard_normal((b, hq, lq, d), dtype=np.float32)  # (B, Hq, Lq, D)
    k = np.resize(rng.standard_normal(2**20, dtype=np.float32), (b, hkv, lk, d))  # (B, Hkv, Lk, D)
    v = np.resize(rng.standard_normal(2**20, dtype=np.float32), (b, hkv, lk, d))  # (B, Hkv, Lk, D)
    if s["kernel"] == "attention":
        return lambda: attn.attention(q, k, v, causal=s["causal"])
    if lq != 1:
        raise ValueError(f"decode_attention shapes need q_len == 1, got {lq}")
    q1 = np.ascontiguousarray(q[:, :, 0, :])  # (B, Hq, D)
    lengths = np.full(b, lk, dtype=np.int64)  # (B,)
    return lambda: attn.decode_attention(q1, k, v, lengths)


def calibrate_attention_kernels(
    hw: Hardware | None = None, *, shapes: Iterable[dict] | None = None, repeats: int = 5, seed: int = 0,
    threads: int | None = None,
) -> pd.DataFrame:
    """Predict our attention kernels' run times from this CPU's roofline, measure them, compare.

    With ``hw=None`` the ceilings are measured here (:class:`CeilingProbe`)
    right before and right after every kernel call (their geometric mean
    stands for the machine during the call), so each prediction / measurement
    pair sees the same load on this shared machine; the reported ratio is the
    median over ``repeats`` such pairs, with its range. Compute-bound predictions use the ceiling of
    the register-tile micro-kernel the prefill kernel is built on; ``predicted_blas_s`` shows the BLAS-peak
    roofline beside it. With a given ``hw`` its ``peak_flops`` serves as both
    ceilings and nothing but the kernels is timed. ``threads`` sets the Numba
    and BLAS thread counts for kernels and ceilings alike (None: leave them).

    Returns one row per shape: ``kernel, shape, threads, flops, bytes,
    intensity, bound, predicted_s, predicted_blas_s, measured_s, ratio``
    (predicted / measured, median), ``ratio_min, ratio_max, ratio_blas``,
    ``predicted_serial_s, ratio_serial`` (compute and memory time added, no
    overlap: the opposite extreme from the roofline's max), ``bar_lo, bar_hi,
    within_bar`` and the ceilings (medians) used.
    """
    import time

    from threadpoolctl import threadpool_limits

    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)):
        raise TypeError(f"repeats must be an int, got {type(repeats).__name__}")
    if repeats <= 0:
        raise ValueError(f"repeats must be positive, got {repeats}")
    shapes = list(shapes) if shapes is not None else list(ATTENTION_CALIBRATION_SHAPES)
    if not shapes:
        raise ValueError("shapes must not be empty")
    for s in shapes:
        if s.get("kernel") not in CALIBRATION_BAR:
            raise ValueError(f"kernel must be one of {sorted(CALIBRATION_BAR)}, got {s.get('kernel')!r}")
    rng = np.random.default_rng(seed)
    calls = [_make_call(s, rng) for s in shapes]
    keys = ("batch", "n_q_heads", "n_kv_heads", "q_len", "kv_len", "head_dim", "causal")
    samples: list[list[tuple]] = [[] for _ in shapes]  # per shape: (blas, loop, bw, seconds)
    with numba_threads(threads) as nt, threadpool_limits(limits=threads, user_api="blas"):
        for call in calls:  # compile and warm every kernel on the exact dtypes used
            call()
        if hw is None:
                    probe = CeilingProbe(threads=nt)
        for _ in range(repeats):
            for i, call in enumerate(calls):
                before = probe.measure() if hw is None else None
                t0 = time.perf_counter()
                call()
                seconds = time.perf_counter() - t0
                if hw is None:
                    after = probe.measure()
                    # the machine as the kernel saw it: geometric mean of the runs just before and after
                    samples[i].append((*np.sqrt(np.multiply(before, after)), seconds))
                else:
                    samples[i].append((hw.peak_flops, hw.peak_flops, hw.bandwidth_bytes_per_s, seconds))
    rows = []
    for s, smp in zip(shapes, samples):
        args = {k: s[k] for k in keys}
        preds, preds_blas, preds_serial, times = [], [], [], []
        for blas, loop, bw, seconds in smp:
            mk = lambda peak: Hardware(name="this CPU", peak_flops=peak, bandwidth_bytes_per_s=bw,  # noqa: E731
                                       memory_bytes=None, tdp_w=None)
            r = attention_kernel_roofline(mk(loop), dtype_bytes=4, **args)
            preds.append(r["predicted_s"])
            # no overlap at all between arithmetic and memory traffic: the other extreme from max()
            preds_serial.append(r["flops"] / loop + r["bytes"] / bw)
            preds_blas.append(attention_kernel_roofline(mk(blas), dtype_bytes=4, **args)["predicted_s"])
            times.append(seconds)
        preds, preds_blas, times = np.array(preds), np.array(preds_blas), np.array(times)
        preds_serial = np.array(preds_serial)
        ratios = preds / times
        arr = np.array(smp)  # (repeats, 4)
        med = Hardware(name="this CPU", peak_flops=float(np.median(arr[:, 1])),
                       bandwidth_bytes_per_s=float(np.median(arr[:, 2])), memory_bytes=None, tdp_w=None)
        info = attention_kernel_roofline(med, dtype_bytes=4, **args)
        lo, hi = CALIBRATION_BAR[s["kernel"]]
        ratio = float(np.median(ratios))
        rows.append({
            "kernel": s["kernel"], "shape": _shape_label(s),
            "label": f"L={s['q_len']}" if s["kernel"] == "attention" else f"Hkv={s['n_kv_heads']}", "threads": nt,
            "flops": info["flops"], "bytes": info["bytes"], "intensity": info["intensity"], "bound": info["bound"],
            "predicted_s": float(np.median(preds)), "predicted_blas_s": float(np.median(preds_blas)),
            "measured_s": float(np.median(times)), "ratio": ratio, "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()), "ratio_blas": float(np.median(preds_blas / times)),
            "predicted_serial_s": float(np.median(preds_serial)),
            "ratio_serial": float(np.median(preds_serial / times)),
            "bar_lo": lo, "bar_hi": hi, "within_bar": bool(lo <= ratio <= hi),
            "ceiling": "given peak" if hw is not None else "Numba-loop peak",
            "compute_ceiling_flops": float(np.median(arr[:, 1])), "blas_flops": float(np.median(arr[:, 0])),
            "bandwidth_bytes_per_s": float(np.median(arr[:, 2])),
            "achieved_flops_per_s": info["flops"] / float(np.median(times)),
            "achieved_bytes_per_s": info["bytes"] / float(np.median(times)),
        })
    return pd.DataFrame(rows)
