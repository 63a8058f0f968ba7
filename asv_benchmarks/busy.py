"""The parallel kernels with a busy competitor: does a second process on the machine stall them?

On a two-core machine where another process holds a core, a parallel region
can wait a whole scheduler time slice for a thread the operating system has
descheduled. Issue 19's bar: with one competing CPU-bound process, each
parallel kernel takes at most 1.5x its quiet single-thread time.

``time_kernel`` is parameterised by kernel, thread count and ``busy``: with
``busy`` true, ``setup`` starts one CPU-bound competitor process (a Python
busy loop) and ``teardown`` stops it, so the ratio
``time(busy, 2 threads) / time(quiet, 1 thread)`` of one run is the figure.
The slowdown is bimodal (a region either waits for a time slice or it does
not), so the timing takes many samples.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from ._util import ThreadLimit

KERNELS = ["prefill", "decode", "sample_b1", "sample_b32", "top_k", "moe_dispatch_permute"]


def _inputs(kernel: str):
    """A zero-argument callable running ``kernel`` on seeded float32 inputs of the headline shapes."""
    from scalelab.kernels import attention as A
    from scalelab.kernels import moe as M
    from scalelab.kernels import sampling as S

    rng = np.random.default_rng(0)
    if kernel == "prefill":
        q = rng.standard_normal((1, 8, 1024, 64), dtype=np.float32)  # (B, H, L, D)
        k = rng.standard_normal((1, 8, 1024, 64), dtype=np.float32)
        return lambda: A.attention(q, k, k, causal=True)
    if kernel == "decode":
        q = rng.standard_normal((8, 32, 128), dtype=np.float32)  # (B, Hq, D)
        kv = rng.standard_normal((8, 8, 2048, 128), dtype=np.float32)  # (B, Hkv, L, D)
        lengths = np.full(8, 2048)
        return lambda: A.decode_attention(q, kv, kv, lengths)
    if kernel in ("sample_b1", "sample_b32"):
        logits = rng.standard_normal((1 if kernel == "sample_b1" else 32, 128256), dtype=np.float32)  # (B, V)
        return lambda: S.sample(logits, temperature=1.0, top_p=0.9, seed=1)
    if kernel == "top_k":
        logits = rng.standard_normal((32, 128256), dtype=np.float32)  # (B, V)
        return lambda: S.top_k(logits, 50)
    if kernel == "moe_dispatch_permute":
        x = rng.standard_normal((4096, 1024), dtype=np.float32)  # (T, d)
        experts = rng.integers(0, 64, (4096, 2))  # (T, k)
        return lambda: M.permute(x, M.dispatch(experts, 64))
    raise ValueError(f"unknown kernel {kernel!r}")


class BusyCore:
    """Kernel time with and without one CPU-bound competitor process, at 1 and 2 threads."""

    params = [KERNELS, [1, 2], [False, True]]
    param_names = ["kernel", "threads", "busy"]
    number = 1
    repeat = (15, 31, 4.0)  # at least 15 samples: the slowdown is bimodal
    warmup_time = 0.0
    timeout = 300

    def setup(self, kernel, threads, busy):
        self.limit = ThreadLimit(threads)
        self.fn = _inputs(kernel)
        self.fn()  # compile / load from cache before timing
        self.competitor = None
        if busy:
            self.competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def teardown(self, kernel, threads, busy):
        if self.competitor is not None:
            self.competitor.kill()
            self.competitor.wait()
        self.limit.restore()

    def time_kernel(self, kernel, threads, busy):
        self.fn()
