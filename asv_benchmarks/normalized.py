"""Machine-normalized kernel timings: kernel time / time of a fixed reference computation.

A raw ``time_`` result only means something on the machine that produced it
and under the load it had. Each ``track_`` benchmark here instead reports

    (time of one kernel call) / (time of one call of a fixed reference loop)

with the kernel and the reference timed alternately in the same process
(kernel, reference, reference, kernel, ...), so a slower CPU, a lower clock or
a neighbour stealing cycles stretches both and largely cancels. The reference
is matched to what bounds the kernel: a compute-bound float32 dot over
L1-resident vectors for compute-bound kernels (prefill attention, the
self-contained probe), a streaming float32 dot over two 32 MB vectors (twice
this machine's 32 MB L3) for bandwidth-bound decode attention.

Each ``track_`` returns ``{"samples": [ratio, ...], "number": 1}``: asv 0.6's
runner treats any benchmark result of that shape like a timing result and
stores the samples and their median/CI, so the gate (scalelab/bench/regress.py) can
test the ratios for significance exactly as it tests raw times. The ``time_``
twin of each kernel times the same call on the same data, so one A/A run
measures both signals (docs/regression-gate.md).

Everything here runs the kernels on one Numba thread: a single-thread ratio
is the part that transfers between runners with different core counts.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from asv_benchmarks._util import Threaded
from scalelab.kernels._common import as_aligned

#: Ratio samples per ``track_`` call.
PAIRS = 15
#: Alternating (kernel, reference) batches behind each ratio sample.
BLOCK = 8
#: Minimum wall time of one timed batch; short batches are dominated by timer
#: resolution and call overhead.
MIN_BATCH_SECONDS = 1e-3


# ------------------------------------------------------------------ references


@numba.njit(cache=True, fastmath=True, nogil=True)
def reference_compute(x, y, reps):
    """Compute-bound reference: ``reps`` float32 dots over L1-resident vectors.

    fastmath lets LLVM reassociate the sum into SIMD lanes; no NaN/inf can
    occur in this fixed input, so the relaxed semantics are harmless here.
    """
    acc = np.float32(0.0)
    for r in range(reps):
        s = np.float32(0.0)
        for i in range(x.size):
            s += x[i] * y[i]
        acc += s * np.float32(1e-3)
    return acc


@numba.njit(cache=True, fastmath=True, nogil=True)
def reference_stream(x, y):
    """Bandwidth-bound reference: one float32 dot over vectors larger than the L3."""
    s = np.float32(0.0)
    for i in range(x.size):
        s += x[i] * y[i]
    return s


def _make_reference(kind: str, rng: np.random.Generator):
    """A zero-argument callable running the fixed reference of ``kind``, already compiled."""
    if kind == "compute":
        # Two 4 KB vectors, 64-byte aligned: far inside L1 whatever else the
        # process holds, and no placement-dependent cache-set conflicts (a
        # 2 x 16 KB pair filled L1 here and varied 2x between processes).
        x = as_aligned(rng.standard_normal(1024).astype(np.float32))  # (1024,)
        y = as_aligned(rng.standard_normal(1024).astype(np.float32))  # (1024,)
        fn = lambda: reference_compute(x, y, 1024)  # noqa: E731 - 1M multiply-adds
    elif kind == "stream":
        n = 8 * 1024 * 1024  # (8M,) float32 = 32 MB per vector; the pair is 2x the L3
        x = as_aligned(np.ones(n, dtype=np.float32))  # (n,)
        y = as_aligned(np.full(n, 0.5, dtype=np.float32))  # (n,)
        fn = lambda: reference_stream(x, y)  # noqa: E731
    else:  # pragma: no cover - programming error
        raise ValueError(f"reference kind must be 'compute' or 'stream', got {kind!r}")
    fn()  # compile / load from cache outside any timing
    return fn


def _calibrate(fn) -> int:
    """Calls per batch so that one batch takes at least MIN_BATCH_SECONDS."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= MIN_BATCH_SECONDS or n >= 1 << 16:
            return n
        n *= 2


def _per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def normalized_samples(kernel, reference, pairs: int = PAIRS, block: int = BLOCK) -> dict:
    """Ratio samples ``t(kernel) / t(reference)``, timed alternately in this process.

    Each sample is ``min(kernel batches) / min(reference batches)`` over a block
    of ``block`` alternating batches (K R, R K, ...; the order flips so a drift
    in machine speed biases neither side). Interference on a shared machine is
    additive and positive (a descheduled batch takes a whole time slice
    longer), so the minimum of a few neighbouring batches is the estimate of
    the undisturbed time, and taking it on both sides of the ratio keeps one
    preempted batch from swinging a sample by several x.
    """
    nk, nr = _calibrate(kernel), _calibrate(reference)
    ratios = []
    for _ in range(pairs):
        tk, tr = [], []
        for i in range(block):
            if i % 2 == 0:
                tk.append(_per_call(kernel, nk))
                tr.append(_per_call(reference, nr))
            else:
                tr.append(_per_call(reference, nr))
                tk.append(_per_call(kernel, nk))
        ratios.append(min(tk) / min(tr))
    return {"samples": ratios, "number": 1}


class _SingleThread(Threaded):
    """Pins Numba and BLAS to one thread for the benchmark; teardown restores them."""

    def _pin_threads(self):
        self.limit_threads(1)


# ------------------------------------------------------------ self-contained probe


@numba.njit(cache=True, nogil=True)
def probe_softmax_rows(x, out):
    """Row-wise numerically stable softmax of a float32 matrix (the gate's own probe kernel)."""
    rows, cols = x.shape
    for r in range(rows):
        m = x[r, 0]
        for c in range(1, cols):
            if x[r, c] > m:
                m = x[r, c]
        s = np.float32(0.0)
        for c in range(cols):
            e = np.exp(x[r, c] - m)
            out[r, c] = e
            s += e
        inv = np.float32(1.0) / s
        for c in range(cols):
            out[r, c] *= inv


class ProbeSoftmax(_SingleThread):
    """A small self-contained Numba kernel; always available, whatever kernels/ holds."""

    unit = "ratio"

    def setup(self):
        self._pin_threads()
        rng = np.random.default_rng(0)
        # 64 x 1024 float32 in and out: 512 KB, inside the 1 MB L2, so the
        # probe is bound by exp() throughput like its compute reference.
        self.x = as_aligned(rng.standard_normal((64, 1024)).astype(np.float32))  # (rows, cols)
        self.out = as_aligned(np.empty_like(self.x))  # (rows, cols)
        probe_softmax_rows(self.x, self.out)  # warm: exact dtypes/layouts timed below
        self.ref = _make_reference("compute", rng)

    def _kernel(self):
        probe_softmax_rows(self.x, self.out)

    def time_softmax_rows(self):
        probe_softmax_rows(self.x, self.out)

    def track_softmax_rows_vs_reference(self):
        return normalized_samples(self._kernel, self.ref)

    track_softmax_rows_vs_reference.unit = "ratio"


# ------------------------------------------------------------------ real kernels


def _attention_module():
    try:
        from scalelab.kernels import attention
    except ImportError as exc:  # not part of this revision: asv records a skip
        raise NotImplementedError(f"scalelab.kernels.attention unavailable: {exc}") from None
    return attention


class PrefillAttention(_SingleThread):
    """Causal prefill attention, float32, B=1, H=4, L=256, D=64, one thread (compute-bound)."""

    unit = "ratio"
    timeout = 900  # a cold Numba cache compiles the attention module in setup()

    def setup(self):
        attention = _attention_module()
        self._pin_threads()
        rng = np.random.default_rng(1)
        shape = (1, 4, 256, 64)
        self.q = rng.standard_normal(shape).astype(np.float32)  # (B, H, L, D)
        self.k = rng.standard_normal(shape).astype(np.float32)  # (B, H, L, D)
        self.v = rng.standard_normal(shape).astype(np.float32)  # (B, H, L, D)
        self.fn = attention.attention
        self.fn(self.q, self.k, self.v, causal=True)  # warm
        self.ref = _make_reference("compute", rng)

    def _kernel(self):
        self.fn(self.q, self.k, self.v, causal=True)

    def time_prefill(self):
        self.fn(self.q, self.k, self.v, causal=True)

    def track_prefill_vs_reference(self):
        return normalized_samples(self._kernel, self.ref, pairs=9, block=4)

    track_prefill_vs_reference.unit = "ratio"


class DecodeAttention(_SingleThread):
    """Decode attention, float32, B=2, Hq=16, Hkv=4, D=128, kv 4096, one thread (bandwidth-bound).

    The KV cache is 33.5 MB, more than the 32 MB L3, so every call streams
    it from DRAM like the stream reference does.
    """

    unit = "ratio"
    timeout = 900  # a cold Numba cache compiles the attention module in setup()

    def setup(self):
        attention = _attention_module()
        self._pin_threads()
        rng = np.random.default_rng(2)
        b, hq, hkv, lmax, d = 2, 16, 4, 4096, 128
        self.q = rng.standard_normal((b, hq, d)).astype(np.float32)  # (B, Hq, D)
        self.k = rng.standard_normal((b, hkv, lmax, d)).astype(np.float32)  # (B, Hkv, Lmax, D)
        self.v = rng.standard_normal((b, hkv, lmax, d)).astype(np.float32)  # (B, Hkv, Lmax, D)
        self.lengths = np.full(b, lmax, dtype=np.int64)  # (B,)
        self.fn = attention.decode_attention
        self.fn(self.q, self.k, self.v, self.lengths)  # warm
        self.ref = _make_reference("stream", rng)

    def _kernel(self):
        self.fn(self.q, self.k, self.v, self.lengths)

    def time_decode(self):
        self.fn(self.q, self.k, self.v, self.lengths)

    def track_decode_vs_reference(self):
        return normalized_samples(self._kernel, self.ref, pairs=9, block=4)

    track_decode_vs_reference.unit = "ratio"
