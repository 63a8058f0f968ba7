"""Cheap, deterministic benchmarks for exercising the regression gate.

tests/test_regress.py runs ``scalelab regress --bench gate_probe`` on commits
that slow down or break ``scalelab.kernels.attention.decode_attention`` and
``scalelab.kernels.sampling.top_k``. ``DecodeProbe`` has no parameters; ``TopKProbe``
is parameterized, because asv selects and names parameterized benchmarks
differently (``gate_probe.TopKProbe.time_top_k(4)``) and nearly every other
benchmark in the suite is one. Small single-thread shapes keep each asv
process short. They are ordinary benchmarks otherwise: fixed seed, data and
warm-up in ``setup()``, a one-line timed method.
"""

from __future__ import annotations

import numba
import numpy as np


class DecodeProbe:
    """decode_attention, float32, B=2, Hq=8, Hkv=2, D=64, kv length 512, one Numba thread."""

    # The gate gives every revision a cold Numba cache, so the first round of
    # each revision compiles the attention module in setup(): measured 113 s
    # on this machine under load ~10 (asv's default timeout is 60 s).
    timeout = 900
    # One call (~0.2-0.3 ms) per sample instead of asv's ~10 ms samples: on a
    # loaded machine nearly every 10 ms window is preempted, while most
    # sub-millisecond ones run clean, so the median stays the undisturbed time.
    # (With the default, a committed 2x slowdown measured only 1.38x, p = 0.02,
    # at load ~6 here.)
    number = 1

    def setup(self):
        try:
            from scalelab.kernels.attention import decode_attention
        except ImportError as exc:  # revision without the kernel: asv records a skip
            raise NotImplementedError(f"scalelab.kernels.attention unavailable: {exc}") from None
        self._old_threads = numba.get_num_threads()
        numba.set_num_threads(1)
        rng = np.random.default_rng(9)
        b, hq, hkv, lmax, d = 2, 8, 2, 512, 64
        self.q = rng.standard_normal((b, hq, d)).astype(np.float32)  # (B, Hq, D)
        self.k = rng.standard_normal((b, hkv, lmax, d)).astype(np.float32)  # (B, Hkv, Lmax, D)
        self.v = rng.standard_normal((b, hkv, lmax, d)).astype(np.float32)  # (B, Hkv, Lmax, D)
        self.lengths = np.full(b, lmax, dtype=np.int64)  # (B,)
        self.fn = decode_attention
        self.fn(self.q, self.k, self.v, self.lengths)  # warm: compile / load from cache

    def teardown(self):
        numba.set_num_threads(self._old_threads)

    def time_decode_attention(self):
        self.fn(self.q, self.k, self.v, self.lengths)


class TopKProbe:
    """top_k, k=50 of V=32000 float32 logits, B rows, one Numba thread."""

    params = [[1, 4]]
    param_names = ["B"]
    timeout = 900  # cold per-revision Numba cache, as in DecodeProbe
    number = 1  # 0.1-0.4 ms calls; see DecodeProbe

    def setup(self, B):
        from scalelab.kernels.sampling import top_k

        self._old_threads = numba.get_num_threads()
        numba.set_num_threads(1)
        self.x = (np.random.default_rng(1234).standard_normal((B, 32000)) * 3.0).astype(np.float32)  # (B, V)
        self.fn = top_k
        self.fn(self.x, 50)  # warm: compile / load from cache

    def teardown(self, B):
        numba.set_num_threads(self._old_threads)

    def time_top_k(self, B):
        self.fn(self.x, 50)
