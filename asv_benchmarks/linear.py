"""asv benchmarks for kernels/linear.py: the batch-invariant ``x @ W`` beside BLAS.

Peers (``impl``): ``numba`` (:func:`~scalelab.kernels.linear.linear` on a packed weight),
``numpy_f32`` (``x @ W`` in float32: NumPy's BLAS, named in ``blas``), and ``torch``
(``torch.matmul``, listed when torch is installed). Shape: Llama-3.2-1B's MLP up projection,
``W (2048, 8192)`` float32 (64 MiB, past the last-level cache), at ``M`` = 1 (one decode
token), 16 (a batch of decodes) and 512 (a prefill chunk); 1 and 2 threads for every peer
(Numba, BLAS and torch set alike).

``track_vs_blas`` is the ratio the kernel is judged by: our time over NumPy's BLAS time,
in alternating blocks of 3 calls in one process (best of 15 each), so the machine's speed cancels. Above 1 is slower
than BLAS: the price of a summation order that does not depend on the batch.
"""

from __future__ import annotations

import time

import numpy as np

from asv_benchmarks._util import Threaded, blas_description, tiled_normal, torch_peers
from scalelab.kernels.linear import linear, pack_weight

K, N = 2048, 8192  # Llama-3.2-1B: d_model, d_ff
ROWS = [1, 16, 512]
THREADS = [1, 2]
BLAS = blas_description()


class _Data(Threaded):
    def make(self, M, threads, torch=None):
        self.limit_threads(threads, torch)
        self.w = tiled_normal((K, N), seed=1) * np.float32(K ** -0.5)  # (K, N)
        self.x = np.random.default_rng(2).standard_normal((M, K), dtype=np.float32)  # (M, K)
        self.pw = pack_weight(self.w)
        linear(self.x, self.pw)  # compile or load from the cache before timing


class Linear(_Data):
    params = (ROWS, ["numba", "numpy_f32", *torch_peers("torch")], THREADS, [BLAS])
    param_names = ["M", "impl", "threads", "blas"]

    def setup(self, M, impl, threads, blas):
        torch = None
        if impl == "torch":
            import torch
        self.make(M, threads, torch)
        if impl == "torch":
            self.tx, self.tw = torch.from_numpy(self.x), torch.from_numpy(self.w)
            self.fn = lambda: torch.matmul(self.tx, self.tw)
        elif impl == "numpy_f32":
            self.fn = lambda: self.x @ self.w
        else:
            self.fn = lambda: linear(self.x, self.pw)
        self.fn()

    def time_linear(self, M, impl, threads, blas):
        self.fn()


class LinearVsBlas(_Data):
    params = (ROWS, THREADS, [BLAS])
    param_names = ["M", "threads", "blas"]
    unit = "time / BLAS time"

    def setup(self, M, threads, blas):
        self.make(M, threads)
        self.x @ self.w

    def track_vs_blas(self, M, threads, blas):
        # Blocks of calls, not single calls, alternate: OpenBLAS's idle threads spin for up to 2^28
        # cycles (~0.1 s) after a call and would take the second core from the Numba calls right after
        # it. The 0.2 s pause lets them sleep first.
        ours, theirs = [], []
        for _ in range(5):
            for fn, out in ((lambda: linear(self.x, self.pw), ours), (lambda: self.x @ self.w, theirs)):
                time.sleep(0.2)
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    out.append(time.perf_counter() - t0)
        return min(ours) / min(theirs)
