"""asv benchmarks for kernels/attention.py: prefill, decode and paged decode.

Peers side by side in one run (the ``impl`` parameter): our Numba kernel,
the float32 NumPy peer (:mod:`scalelab.kernels.peers`: batched BLAS matmuls
with a causal or length mask) and, when installed, PyTorch
``scaled_dot_product_attention`` (left out of the grid otherwise). The float64
reference is an oracle for the tests, not a peer, and is not timed. Every case
runs with 1 and 2 threads; the thread count is applied to Numba, BLAS and torch.

* Prefill: causal, float32, B=1, H=8, D=64, L in {512, 1024, 2048}.
  ``track_gflops`` counts 2 * (D + Dv) FLOPs per *unmasked* (query, key) pair.
* Decode: B=8, Hq=32, Hkv in {32, 8}, D=128, kv length 4096, float32.
  ``track_kv_gbps`` reports GB/s of K and V read (each byte once).
* Paged decode: same shape, page size 16, pages shuffled; ours only. Neither
  torch nor the NumPy peer has a paged kernel: compare with their
  ``DecodeAttention`` entries (the equivalent contiguous cache).
* Compile time: ``timeraw_compile_cold`` imports and compiles every kernel in
  a fresh interpreter with an empty Numba cache, once per run and only with
  ``SCALELAB_BENCH_FULL=1`` (the nightly job): a minute or more of CPU.
"""

from __future__ import annotations

import numpy as np

from asv_benchmarks._util import (Threaded, best_time, blas_info, kernel_peers, require_full, require_torch, tiled_normal,
                                  torch_peers)
from scalelab.kernels import attention as A

THREADS = [1, 2]
PREFILL_L = [512, 1024, 2048]
PREFILL_B, PREFILL_H, PREFILL_D = 1, 8, 64
DECODE_B, DECODE_HQ, DECODE_D, DECODE_LEN = 8, 32, 128, 4096
DECODE_HKV = [32, 8]
PAGE_SIZE = 16
SEED = 20240601


IMPLS = ["numba", "numpy_f32", *torch_peers("torch")]


class _Impls(Threaded):
    """Sets ``self.fn`` to the implementation ``impl`` names, at ``threads`` threads, warmed up."""

    def _use(self, impl, threads, ours, numpy_f32, make_torch):
        torch = require_torch() if impl == "torch" else None
        if impl == "numpy_f32":
            kernel_peers()  # skipped, not failed, in a revision without the peers
        self.fn = make_torch(torch) if torch is not None else (numpy_f32 if impl == "numpy_f32" else ours)
        self.limit_threads(threads, torch)
        self.fn()  # warm: compiles (or loads) the Numba kernel for exactly these dtypes/layouts
        self.slow = impl == "numpy_f32"


def _torch_prefill(torch, q, k, v):
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda: sdpa(tq, tk, tv, is_causal=True)


class PrefillAttention(_Impls):
    """Causal prefill, float32, B=1, H=8, D=64."""

    params = [IMPLS, PREFILL_L, THREADS]
    param_names = ["impl", "L", "threads"]
    number = 1  # the NumPy peer at L=2048 takes a large part of a second per call
    repeat = (2, 10, 20.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, impl, L, threads):
        rng = np.random.default_rng(SEED)
        shape = (PREFILL_B, PREFILL_H, L, PREFILL_D)
        q, k, v = (rng.standard_normal(shape, dtype=np.float32) for _ in range(3))  # (B, H, L, D)
        self._use(impl, threads, lambda: A.attention(q, k, v, causal=True),
                  lambda: kernel_peers().prefill_attention(q, k, v), lambda torch: _torch_prefill(torch, q, k, v))
        self.flops = PREFILL_B * PREFILL_H * A.attention_flops(L, L, PREFILL_D, PREFILL_D, causal=True)

    def time_prefill(self, impl, L, threads):
        self.fn()

    def track_gflops(self, impl, L, threads):
        return self.flops / best_time(self.fn, repeats=1 if self.slow else 5, min_time=0.2) / 1e9

    track_gflops.unit = "GFLOP/s"


def _decode_data(Hkv):
    rng = np.random.default_rng(SEED)
    q = rng.standard_normal((DECODE_B, DECODE_HQ, DECODE_D), dtype=np.float32)  # (B, Hq, D)
    # up to 1 GiB each: tiled seeded normals (the speed of a streaming kernel does not depend on the values)
    kc = tiled_normal((DECODE_B, Hkv, DECODE_LEN, DECODE_D), SEED + 1)  # (B, Hkv, L, D)
    vc = tiled_normal((DECODE_B, Hkv, DECODE_LEN, DECODE_D), SEED + 2)  # (B, Hkv, L, D)
    lengths = np.full(DECODE_B, DECODE_LEN, dtype=np.int64)
    return rng, q, kc, vc, lengths


def _torch_decode(torch, q, kc, vc):
    tq = torch.from_numpy(q)[:, :, None, :]  # (B, Hq, 1, D)
    tk, tv = torch.from_numpy(kc), torch.from_numpy(vc)  # (B, Hkv, L, D)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return lambda: sdpa(tq, tk, tv, enable_gqa=True)


class DecodeAttention(_Impls):
    """One query token per sequence, contiguous cache: B=8, Hq=32, D=128, kv 4096, float32."""

    params = [IMPLS, DECODE_HKV, THREADS]
    param_names = ["impl", "Hkv", "threads"]
    number = 1
    repeat = (3, 20, 20.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, impl, Hkv, threads):
        _, q, kc, vc, lengths = _decode_data(Hkv)
        self._use(impl, threads, lambda: A.decode_attention(q, kc, vc, lengths),
                  lambda: kernel_peers().decode_attention(q, kc, vc, lengths), lambda torch: _torch_decode(torch, q, kc, vc))
        self.bytes = A.kv_bytes_read(lengths, Hkv, DECODE_D, DECODE_D, itemsize=4)

    def time_decode(self, impl, Hkv, threads):
        self.fn()

    def track_kv_gbps(self, impl, Hkv, threads):
        return self.bytes / best_time(self.fn, repeats=2 if self.slow else 10, min_time=0.2) / 1e9

    track_kv_gbps.unit = "GB/s"


class PagedDecodeAttention(DecodeAttention):
    """The decode shape over a shuffled paged cache (page size 16, vLLM layout).

    Ours only: neither torch nor the NumPy peer has a paged kernel, and their
    contiguous-cache entries at the same shapes are ``DecodeAttention``'s.
    """

    params = [["numba"], DECODE_HKV, THREADS]

    def setup(self, impl, Hkv, threads):
        rng, q, kc, vc, lengths = _decode_data(Hkv)
        B, L, D = DECODE_B, DECODE_LEN, DECODE_D
        nblk = L // PAGE_SIZE
        table = rng.permutation(B * nblk).reshape(B, nblk)  # (B, max_blocks)
        kp = np.empty((B * nblk, PAGE_SIZE, Hkv, D), np.float32)  # (pages, page_size, Hkv, D)
        vp = np.empty_like(kp)
        # (B, Hkv, nblk, ps, D) -> (B, nblk, ps, Hkv, D), scattered to the table's pages
        kp[table.reshape(-1)] = kc.reshape(B, Hkv, nblk, PAGE_SIZE, D).transpose(0, 2, 3, 1, 4).reshape(-1, PAGE_SIZE, Hkv, D)
        vp[table.reshape(-1)] = vc.reshape(B, Hkv, nblk, PAGE_SIZE, D).transpose(0, 2, 3, 1, 4).reshape(-1, PAGE_SIZE, Hkv, D)
        del kc, vc  # up to 1 GiB each
        self._use(impl, threads, lambda: A.paged_decode_attention(q, kp, vp, table, lengths), None, None)
        self.bytes = A.kv_bytes_read(lengths, Hkv, DECODE_D, DECODE_D, itemsize=4)

    def time_decode(self, impl, Hkv, threads):
        self.fn()


class AttentionCompile:
    """Cold Numba compile of all three kernels (float32) in a fresh interpreter."""

    timeout = 900
    # One compile per run: a warm-up or a second round would each compile everything again.
    number = 1
    repeat = 1
    rounds = 1
    warmup_time = 0.0

    def setup(self):
        require_full("the cold compile")  # a minute or more of CPU; followed nightly

    def timeraw_compile_cold(self):
        return """
import os, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="scalelab-numba-")  # empty cache: real compile
import numpy as np
from scalelab.kernels import attention as A
q = np.ones((1, 2, 8, 16), np.float32)
A.attention(q, q, q)
qd = np.ones((1, 2, 16), np.float32)
kc = np.ones((1, 2, 8, 16), np.float32)
A.decode_attention(qd, kc, kc, np.array([8]))
A.paged_decode_attention(qd, kc.transpose(0, 2, 1, 3), kc.transpose(0, 2, 1, 3), np.array([[0]]), np.array([8]))
"""


def _blas_libraries():
    libs = [f"{d['internal_api']}-{d['architecture'] or d['version'] or 'na'}" for d in blas_info()]
    return libs or ["none"]


class AttentionBlasEnvironment:
    """Records which BLAS/OpenMP libraries the NumPy peer ran on (as the parameter) and their threads."""

    params = [_blas_libraries()]
    param_names = ["library"]

    def track_threads(self, library):
        for d in blas_info():
            if library.startswith(f"{d['internal_api']}-"):
                return d["num_threads"] or 0
        return 0

    track_threads.unit = "threads"
