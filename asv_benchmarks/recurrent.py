"""asv benchmarks for kernels/recurrent.py: the Mamba selective scan and RWKV-6 WKV, prefill and decode.

Peers side by side in one run (the ``impl`` parameter), float32, 2 threads
(Numba, BLAS and torch):

* ``MambaScan``: B=1, L=4096, D=2048 (d_inner of a 1B-class model), N=16.
  Peers: a float32 NumPy loop over time (vectorised over channels and state
  per step) and, when importable, the same loop in PyTorch (what reference
  implementations without the CUDA kernel run). ``track_read_bw_fraction``
  is the bytes the scan must move (:func:`kernels.recurrent.mamba_scan_bytes`)
  per second over this machine's read-stream bandwidth, measured in the same
  setup (:func:`simulations.calibration.measure_stream_bandwidth`).
* ``RwkvWkv``: B=1, L=4096, H=32, head size 64. Peers: the chunked kernel,
  our token-by-token Numba loop (``rwkv_wkv_loop``), a NumPy loop and a
  PyTorch loop. ``track_gflops`` counts the recurrence's ``5 K V`` FLOPs per
  token and head.
* ``DecodeStep``: one decode step against the context length. The Mamba and
  RWKV steps read a state whose size does not depend on the context (so the
  state is random numbers, not the result of a long prefill: its values do
  not change the work); decode attention over a KV cache of ``context``
  tokens is the contrast. Shapes are one layer of Mamba-2.8B (d_inner 5120,
  N 16), RWKV-6 7B (64 heads of 64) and Llama-3-8B (32 query heads, 8 KV
  heads of 128), batch 1.

Every Numba kernel is compiled (or loaded from cache) in ``setup``.
"""

from __future__ import annotations

import numpy as np

from asv_benchmarks._util import ThreadLimit, best_time, require_torch, torch_peers
from scalelab.kernels import attention as A
from scalelab.kernels import recurrent as R

THREADS = 2
SEED = 20240602
SCAN_B, SCAN_L, SCAN_D, SCAN_N = 1, 4096, 2048, 16
WKV_B, WKV_L, WKV_H, WKV_K = 1, 4096, 32, 64
CONTEXTS = [1024, 8192, 32768]


def mamba_data(nb, L, d, n, seed=SEED):
    """Inputs of a selective scan with Mamba-like statistics (delta after softplus, A = -exp(.)), float32."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((nb, L, d), dtype=np.float32)  # (B, L, D)
    delta = np.log1p(np.exp(rng.standard_normal((nb, L, d), dtype=np.float32) - 3.0))  # (B, L, D)
    A_ = -np.exp(rng.standard_normal((d, n), dtype=np.float32))  # (D, N)
    B_ = rng.standard_normal((nb, L, n), dtype=np.float32)  # (B, L, N)
    C_ = rng.standard_normal((nb, L, n), dtype=np.float32)  # (B, L, N)
    D_ = rng.standard_normal(d, dtype=np.float32)  # (D,)
    return x, delta, A_, B_, C_, D_


def rwkv_data(nb, L, H, K, seed=SEED):
    """Inputs of RWKV-6 WKV with RWKV-6's decay parametrisation ``exp(-exp(.))``, float32."""
    rng = np.random.default_rng(seed)
    r = rng.standard_normal((nb, L, H, K), dtype=np.float32)  # (B, L, H, K)
    k = rng.standard_normal((nb, L, H, K), dtype=np.float32) / np.float32(np.sqrt(K))  # (B, L, H, K)
    v = rng.standard_normal((nb, L, H, K), dtype=np.float32)  # (B, L, H, V)
    w = np.exp(-np.exp(rng.standard_normal((nb, L, H, K), dtype=np.float32) - 1.0))  # (B, L, H, K)
    u = rng.standard_normal((H, K), dtype=np.float32)  # (H, K)
    return r, k, v, w, u


def mamba_loop(xp, x, delta, A_, B_, C_, D_):
    """Selective scan as a loop over time of whole-array ops (``xp`` is numpy or torch)."""
    h = xp.zeros((x.shape[0], x.shape[2], A_.shape[1]), dtype=x.dtype)  # (B, D, N)
    ys = []
    for t in range(x.shape[1]):
        dt = delta[:, t, :, None]  # (B, D, 1)
        h = xp.exp(dt * A_) * h + dt * x[:, t, :, None] * B_[:, t, None, :]  # (B, D, N)
        ys.append((h * C_[:, t, None, :]).sum(-1) + D_ * x[:, t])  # (B, D)
    return xp.stack(ys, 1)


def rwkv_loop(xp, r, k, v, w, u):
    """WKV as a loop over time of whole-array ops (``xp`` is numpy or torch)."""
    nb, L, H, K = r.shape
    S = xp.zeros((nb, H, K, v.shape[3]), dtype=r.dtype)  # (B, H, K, V)
    ys = []
    for t in range(L):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V)
        ys.append((r[:, t, :, :, None] * (S + u[:, :, None] * kv)).sum(2))  # (B, H, V)
        S = w[:, t, :, :, None] * S + kv
    return xp.stack(ys, 1)


def _torch_args(*arrays):
    torch = require_torch()
    return torch, [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


class _PrefillPeers:
    """Shared set-up of the prefill benchmarks: ``self.peers(impl)`` returns the callable to time."""

    number = 1
    repeat = (2, 5, 30.0)
    warmup_time = 0.0
    timeout = 600
    fast = ()  # impls timed with more repeats in the track_ methods

    def setup(self, impl):
        self.fn = self.peers(impl)
        self.threads = ThreadLimit(THREADS)
        self.fn()  # warm: compiles (or loads) the kernels
        self.repeats = 3 if impl in self.fast else 1

    def teardown(self, impl):
        self.threads.restore()


class MambaScan(_PrefillPeers):
    """Selective scan prefill, float32, B=1, L=4096, D=2048, N=16, 2 threads."""

    params = [["numba", "numpy_loop", *torch_peers("torch_loop")]]
    param_names = ["impl"]
    fast = ("numba",)

    def peers(self, impl):
        args = mamba_data(SCAN_B, SCAN_L, SCAN_D, SCAN_N)
        if impl == "torch_loop":
            torch, targs = _torch_args(*args)
            return lambda: mamba_loop(torch, *targs)
        if impl == "numpy_loop":
            return lambda: mamba_loop(np, *args)
        return lambda: R.mamba_scan(*args)

    def time_scan(self, impl):
        self.fn()

    def track_read_bw_fraction(self, impl):
        from scalelab.simulations.calibration import measure_stream_bandwidth

        read_bps, _ = measure_stream_bandwidth(repeats=3, threads=THREADS)
        nbytes = R.mamba_scan_bytes(SCAN_B, SCAN_L, SCAN_D, SCAN_N)
        return nbytes / best_time(self.fn, repeats=self.repeats) / read_bps

    track_read_bw_fraction.unit = "fraction"


class RwkvWkv(_PrefillPeers):
    """RWKV-6 WKV prefill, float32, B=1, L=4096, H=32, head size 64, 2 threads."""

    params = [["chunked", "numba_loop", "numpy_loop", *torch_peers("torch_loop")]]
    param_names = ["impl"]
    fast = ("chunked", "numba_loop")

    def peers(self, impl):
        args = rwkv_data(WKV_B, WKV_L, WKV_H, WKV_K)
        if impl == "torch_loop":
            torch, targs = _torch_args(*args)
            return lambda: rwkv_loop(torch, *targs)
        if impl == "numpy_loop":
            return lambda: rwkv_loop(np, *args)
        if impl == "numba_loop":
            return lambda: R.rwkv_wkv_loop(*args)
        return lambda: R.rwkv_wkv(*args)

    def time_wkv(self, impl):
        self.fn()

    def track_gflops(self, impl):
        flops = R.rwkv_wkv_flops(WKV_B, WKV_L, WKV_H, WKV_K)
        return flops / best_time(self.fn, repeats=self.repeats) / 1e9

    track_gflops.unit = "GFLOP/s"


class DecodeStep:
    """One decode step of one layer, batch 1, against the context length (2 threads)."""

    params = [["mamba_step", "rwkv_step", "decode_attention"], CONTEXTS]
    param_names = ["impl", "context"]
    number = 20
    repeat = (3, 10, 10.0)
    warmup_time = 0.0
    timeout = 300

    def setup(self, impl, context):
        if impl != "decode_attention" and context != CONTEXTS[0]:
            # a recurrent step reads a fixed-size state: its time at the first context is its time at all
            raise NotImplementedError(f"{impl} does not depend on the context; timed at {CONTEXTS[0]}")
        rng = np.random.default_rng(SEED)
        if impl == "mamba_step":
            d, n = 5120, 16  # Mamba-2.8B: d_inner, d_state
            x, delta, A_, B_, C_, D_ = (a[:, 0] if a.ndim == 3 else a for a in mamba_data(1, 1, d, n))
            state = rng.standard_normal((1, d, n), dtype=np.float32)  # (B, D, N)
            self.fn = lambda: R.mamba_step(x, delta, A_, B_, C_, D_, state)
        elif impl == "rwkv_step":
            r, k, v, w, u = (a[:, 0] if a.ndim == 4 else a for a in rwkv_data(1, 1, 64, 64))
            state = rng.standard_normal((1, 64, 64, 64), dtype=np.float32)  # (B, H, K, V)
            self.fn = lambda: R.rwkv_step(r, k, v, w, u, state)
        else:
            q = rng.standard_normal((1, 32, 128), dtype=np.float32)  # (B, Hq, D)
            kc = rng.standard_normal((1, 8, context, 128), dtype=np.float32)  # (B, Hkv, L, D)
            vc = rng.standard_normal((1, 8, context, 128), dtype=np.float32)  # (B, Hkv, L, D)
            lengths = np.array([context])
            self.fn = lambda: A.decode_attention(q, kc, vc, lengths)
        self.threads = ThreadLimit(THREADS)
        self.fn()

    def teardown(self, impl, context):
        if hasattr(self, "threads"):  # not set when setup skipped the case
            self.threads.restore()

    def time_step(self, impl, context):
        self.fn()
