"""The MoE performance bars: our kernels against NumPy, PyTorch and a dense FFN, timed interleaved.

Usage: ``THREADS=2 python tools/bench_bars_moe.py [REPEATS]`` from the repository root. Not a
benchmark: it reuses the asv suite's data builders and torch peers
(``asv_benchmarks/moe.py``) and prints ratios of peers timed round-robin in one process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the asv suite's data builders and peers

from asv_benchmarks.moe import (  # noqa: E402
    BLAS, D_MODEL_PERMUTE, LAYER_D, LAYER_E, LAYER_FFN, LAYER_K, LAYER_T, SEED, _layer_data, _route_data,
    permute_bytes, torch_dispatch, torch_moe_layer, torch_permute, torch_route, torch_swiglu, torch_unpermute,
)
from asv_benchmarks._util import optional_torch  # noqa: E402
from scalelab.kernels import moe  # noqa: E402
from scalelab.kernels._common import aligned_empty  # noqa: E402


def _interleaved(fns: dict, repeats: int, inner: int = 1) -> dict:
    """Per-call seconds of each fn, timed round-robin (rotating the start) in one process."""
    names = list(fns)
    samples = {n: [] for n in names}
    for r in range(repeats):
        for i in range(len(names)):
            n = names[(r + i) % len(names)]
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[n]()
            samples[n].append((time.perf_counter() - t0) / inner)
    return {n: (float(np.min(v)), float(np.median(v))) for n, v in samples.items()}


def measure_bars(threads: int = 2, repeats: int = 30) -> None:
    """Print the MoE performance bars: ratios of peers timed interleaved, float32."""
    from threadpoolctl import threadpool_limits

    torch = optional_torch()
    numba.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"threads={threads}, numba {numba.__version__}, numpy {np.__version__}, "
          f"torch {getattr(torch, '__version__', 'absent')}, BLAS {BLAS}; min / median ms over {repeats}")

    def show(title, res, ours, peer, bar=None):
        print(f"\n{title}")
        for n, (mn, md) in res.items():
            print(f"  {n:24s} min {mn * 1e3:9.3f}  median {md * 1e3:9.3f}")
        if peer in res:
            r_min, r_med = res[peer][0] / res[ours][0], res[peer][1] / res[ours][1]
            print(f"  {peer}/{ours}: {r_min:.2f}x (min)  {r_med:.2f}x (median)"
                  + (f"   bar >= {bar}x: {'MET' if min(r_min, r_med) >= bar else 'NOT met'}" if bar else ""))

    with threadpool_limits(limits=threads, user_api="blas"):
        for config, bar in (("E64k2", 2.0), ("E256k8g8", 1.7)):
            logits, E, k, opts = _route_data(8192, config)
            fns = {"numba route+dispatch": lambda: moe.dispatch(moe.route(logits, k, **opts)[1], E),
                   "numpy route+dispatch": lambda: moe.dispatch_ref(moe.route_ref(logits, k, **opts)[1], E)}
            if torch is not None:
                lt = torch.from_numpy(logits)
                topts = {a: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for a, v in opts.items()}
                fns["torch route+dispatch"] = lambda: torch_dispatch(torch, torch_route(torch, lt, k, **topts)[1], E)
            for f in fns.values():
                f()
            res = _interleaved(fns, repeats, inner=3)
            show(f"route + dispatch, T=8192, {config}", res, "numba route+dispatch", "torch route+dispatch", bar)
            print(f"  numpy/numba: {res['numpy route+dispatch'][0] / res['numba route+dispatch'][0]:.1f}x (min)")

        for T, config in ((8192, "E64k2"), (8192, "E8k2"), (512, "E64k2")):
            logits, E, k, opts = _route_data(T, config)
            w, e = moe.route(logits, k, **opts)
            D = moe.dispatch(e, E)
            x = np.random.default_rng(SEED + 1).standard_normal((T, D_MODEL_PERMUTE), dtype=np.float32)
            xs = aligned_empty((D.n_kept, D_MODEL_PERMUTE), np.float32)
            y = aligned_empty((T, D_MODEL_PERMUTE), np.float32)
            y2 = aligned_empty((T, D_MODEL_PERMUTE), np.float32)
            fns = {"numba permute+unpermute": lambda: (moe.permute(x, D, out=xs), moe.unpermute(xs, D, w, out=y)),
                   "numpy copy x->y (peer)": lambda: np.copyto(y2, x)}
            if torch is not None:
                xt, wt, order = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(D.order.astype(np.int64))
                xst = torch_permute(torch, xt, order, k)
                fns["torch index_select+index_add_"] = lambda: (torch_permute(torch, xt, order, k),
                                                              torch_unpermute(torch, xst, order, k, wt, T))
            for f in fns.values():
                f()
            res = _interleaved(fns, max(5, repeats // 3))
            nbytes = permute_bytes(T, D_MODEL_PERMUTE, D.n_kept, k)
            show(f"permute + unpermute, T={T}, {config}, d={D_MODEL_PERMUTE} ({nbytes / 1e6:.0f} MB moved)",
                 res, "numba permute+unpermute", "torch index_select+index_add_")
            mn, md = res["numba permute+unpermute"]
            cp = res["numpy copy x->y (peer)"]
            print(f"  numba: {nbytes / mn / 1e9:.1f} GB/s (min)  {nbytes / md / 1e9:.1f} GB/s (median); "
                  f"bar 30 GB/s (60% of ~50): {'MET' if nbytes / md / 1e9 >= 30 else 'NOT met'}; "
                  f"np.copyto of x in the same run: {2 * x.nbytes / cp[0] / 1e9:.1f} GB/s (min)")

    x, router_w, w1, w3, w2, dense = _layer_data()
    fns = {"numba moe_layer": lambda: moe.moe_layer(x, router_w, w1, w3, w2, LAYER_K),
           "dense swiglu (k*ffn)": lambda: moe.swiglu_ffn(x, *dense)}
    if torch is not None:
        tx, tr = torch.from_numpy(x), torch.from_numpy(router_w)
        t1, t3, t2 = (torch.from_numpy(a) for a in (w1, w3, w2))
        td = [torch.from_numpy(a) for a in dense]
        fns["torch moe"] = lambda: torch_moe_layer(torch, tx, tr, t1, t3, t2, LAYER_K)
        fns["torch dense swiglu"] = lambda: torch_swiglu(torch, tx, *td)
    with threadpool_limits(limits=threads, user_api="blas"):
        for f in fns.values():
            f()
        res = _interleaved(fns, max(5, repeats // 2))
    show(f"moe_layer T={LAYER_T} d={LAYER_D} ffn={LAYER_FFN} top-{LAYER_K} of {LAYER_E}", res,
         "numba moe_layer", "dense swiglu (k*ffn)")
    r_min = res["numba moe_layer"][0] / res["dense swiglu (k*ffn)"][0]
    r_med = res["numba moe_layer"][1] / res["dense swiglu (k*ffn)"][1]
    print(f"  moe/dense: {r_min:.2f}x (min)  {r_med:.2f}x (median)   bar <= 1.3x: "
          f"{'MET' if max(r_min, r_med) <= 1.3 else 'NOT met'}")
    if torch is not None:
        print(f"  torch moe / numba moe: {res['torch moe'][0] / res['numba moe_layer'][0]:.2f}x (min)")


if __name__ == "__main__":
    measure_bars(threads=int(os.environ.get("THREADS", "2")),
                 repeats=int(sys.argv[1]) if len(sys.argv) > 1 else 30)
