"""The sampling performance bars: our kernels against the float32 NumPy peers and PyTorch, interleaved.

Usage: ``python tools/bench_bars_sampling.py`` from the repository root. Not a benchmark: it
reuses the asv suite's inputs and torch peers (``asv_benchmarks/sampling.py``) and prints
ratios of peers timed in the same process.

``python tools/bench_bars_sampling.py --family [--threads N] [--reps R]`` prints instead the
spread of ``sample`` over the logit-distribution family (``FAMILY`` x ``FAMILY_FILTERS`` of the
asv module) at B in {1, 32} and V in {128256, 256000}: the median time of every member, all
members interleaved in one process, and the slowest / fastest ratio against the 2x bar.
``--baseline OLD.py`` times an older copy of the kernel module in the same round-robin
(``git show main:kernels/sampling.py > /tmp/old_sampling.py``); ``--shapes 1:256000`` picks shapes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the asv suite's data builders and peers

from asv_benchmarks._util import require_torch  # noqa: E402
from asv_benchmarks.sampling import (  # noqa: E402
    FAMILY, FAMILY_FILTERS, K, TEMPERATURE, TOP_P, _logits, _torch_top_p_sample, family_logits)
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


#: Slowest family member over fastest, at one (B, V), that the sampling kernels must stay within.
FAMILY_BAR = 2.0


def _load_baseline(path):
    """A copy of an older ``kernels/sampling.py`` (e.g. ``git show main:kernels/sampling.py``) as a module."""
    spec = importlib.util.spec_from_file_location("sampling_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # Numba's cache finds the module of a cached function by name
    spec.loader.exec_module(mod)
    return mod


def measure_family(reps=21, threads=1, shapes=((1, 128256), (1, 256000), (32, 128256), (32, 256000)),
                   baseline=None):
    """Print ``sample``'s median time over the distribution family and its max / min ratio at each (B, V).

    Every (distribution, filter) member is timed in one round-robin (:func:`_interleaved`), so
    a burst of load on the shared machine slows all members alike and the ratio survives it.
    With ``baseline`` (the path of an older copy of the kernel module) that version's calls join
    the same round-robin and its table and ratio are printed beside ours.
    Returns ``{(B, V): max / min}`` (ours).
    """
    numba.set_num_threads(threads)
    versions = {"": S}
    if baseline:
        versions = {"baseline ": _load_baseline(baseline), "": S}
    ratios = {}
    for B, V in shapes:
        seeds = np.arange(B)
        fns = {}
        for dist in FAMILY:
            x = family_logits(dist, B, V)
            for filt, kw in FAMILY_FILTERS.items():
                for tag, mod in versions.items():
                    fns[tag, dist, filt] = lambda x=x, kw=kw, mod=mod: mod.sample(x, seed=seeds, **kw)
        for f in fns.values():
            f()  # compile / warm the workspace
        allmed = {k: v[0] for k, v in _interleaved(fns, reps, block=2).items()}
        for tag in versions:
            med = {k[1:]: v for k, v in allmed.items() if k[0] == tag}
            print(f"{tag}B={B} V={V} threads={threads}: median ms of {reps} interleaved calls "
                  f"(load average {os.getloadavg()[0]:.1f})")
            print(f"  {'dist':10s}" + "".join(f"{f:>16s}" for f in FAMILY_FILTERS))
            for dist in FAMILY:
                print(f"  {dist:10s}" + "".join(f"{med[dist, f] * 1e3:16.3f}" for f in FAMILY_FILTERS))
            hi, lo = max(med, key=med.get), min(med, key=med.get)
            ratio = med[hi] / med[lo]
            verdict = "meets" if ratio <= FAMILY_BAR else "MISSES"
            print(f"  max {hi} {med[hi] * 1e3:.3f} ms / min {lo} {med[lo] * 1e3:.3f} ms = {ratio:.2f}x "
                  f"({verdict} the {FAMILY_BAR:g}x bar)")
        ratios[B, V] = ratio
    return ratios


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", action="store_true", help="the distribution-family spread of sample()")
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (family: 1, peers: 2)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved rounds")
    ap.add_argument("--baseline", default=None,
                    help="family: also time this copy of an older kernels/sampling.py in the same round-robin")
    ap.add_argument("--shapes", default=None, help="family: B:V pairs, e.g. 1:256000,32:128256")
    args = ap.parse_args()
    if args.family:
        shapes = ((1, 128256), (1, 256000), (32, 128256), (32, 256000))
        if args.shapes:
            shapes = tuple(tuple(int(v) for v in pair.split(":")) for pair in args.shapes.split(","))
        measure_family(reps=args.reps or 21, threads=args.threads or 1, shapes=shapes, baseline=args.baseline)
    else:
        measure_bars(reps=args.reps or 9, threads=args.threads or 2)
