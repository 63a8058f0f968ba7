"""The sampling performance bars: our kernels against the float32 NumPy peers and PyTorch, interleaved.

Usage: ``python tools/bench_bars_sampling.py`` from the repository root. Not a benchmark: it
reuses the asv suite's inputs and torch peers (``asv_benchmarks/sampling.py``) and prints
ratios of peers timed in the same process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the asv suite's data builders and peers

from asv_benchmarks._util import require_torch  # noqa: E402
from asv_benchmarks.sampling import K, TEMPERATURE, TOP_P, _logits, _torch_top_p_sample  # noqa: E402
from scalelab.kernels import peers  # noqa: E402
from scalelab.kernels import sampling as S  # noqa: E402


def _interleaved(fns, reps, block=3):
    """Median and minimum seconds per callable, peers interleaved round-robin.

    Each turn makes ``block`` calls and drops the first: right after a torch
    call, torch's OpenMP threads keep spinning for a while on the same two
    cores, which slowed the next Numba call by up to ~1.5x at B=1 (measured:
    0.73 ms median alone, 1.1-1.3 ms straight after a torch top-p call).
    """
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            for i in range(block):
                t0 = time.perf_counter()
                f()
                if i:
                    ts[k].append(time.perf_counter() - t0)
    return {k: (float(np.median(v)), min(v)) for k, v in ts.items()}


def measure_bars(reps=9, threads=2):
    """Print the sampling performance bars as ratios against peers timed in the same process."""
    torch = require_torch()
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = _logits(32, 128256)
    xt = torch.from_numpy(x)
    seeds = np.arange(32)
    S.top_k(x, K)
    S.sample(x, temperature=TEMPERATURE, top_p=TOP_P, seed=seeds)
    r = _interleaved({
        "top_k": lambda: S.top_k(x, K),
        "torch.topk": lambda: torch.topk(xt, K),
        "sample": lambda: S.sample(x, temperature=TEMPERATURE, top_p=TOP_P, seed=seeds),
        "torch sort top-p": lambda: _torch_top_p_sample(torch, xt, TEMPERATURE, TOP_P, gen),
        "numpy f32 top_k": lambda: peers.top_k(x, K),
        "numpy f32 sample": lambda: peers.sample(x, temperature=TEMPERATURE, top_p=TOP_P, seed=0),
    }, reps)
    for k, (med, mn) in r.items():
        print(f"B=32 V=128256 {k:18s} median {med * 1e3:9.3f} ms   min {mn * 1e3:9.3f} ms")
    for a, b in [("torch.topk", "top_k"), ("numpy f32 top_k", "top_k"),
                 ("torch sort top-p", "sample"), ("numpy f32 sample", "sample")]:
        print(f"  {a} / {b}: median {r[a][0] / r[b][0]:.2f}x   min {r[a][1] / r[b][1]:.2f}x")
    x1 = _logits(1, 256000)
    xt1 = torch.from_numpy(x1)
    S.sample(x1, temperature=TEMPERATURE, top_p=TOP_P, seed=1)
    r = _interleaved({
        "sample": lambda: S.sample(x1, temperature=TEMPERATURE, top_p=TOP_P, seed=1),
        "torch.topk": lambda: torch.topk(xt1, K),
        "torch sort top-p": lambda: _torch_top_p_sample(torch, xt1, TEMPERATURE, TOP_P, gen),
    }, reps * 5)
    for k, (med, mn) in r.items():
        print(f"B=1 V=256000 {k:18s} median {med * 1e3:9.3f} ms   min {mn * 1e3:9.3f} ms")
    print(f"  sample / torch.topk: median {r['sample'][0] / r['torch.topk'][0]:.2f}   "
          f"min {r['sample'][1] / r['torch.topk'][1]:.2f}")


if __name__ == "__main__":
    measure_bars()
