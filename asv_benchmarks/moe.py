"""asv benchmarks for kernels/moe.py: routing, dispatch, permute/unpermute and the MoE layer.

Peers, as an ``impl`` parameter so one ``asv compare`` / ``asv show`` lists them
side by side: ``numba`` (scalelab.kernels.moe), ``numpy_f32`` (the float32 NumPy
peers of :mod:`scalelab.kernels.peers`: ``np.argpartition`` routing, stable
``np.argsort`` dispatch, fancy-index permute) and
``torch`` (``softmax``/``sigmoid`` + ``topk`` + stable ``argsort`` + ``bincount``,
``index_select`` / ``index_add_`` for the data movement), left out of the grid when
torch is not installed. Every case runs with 1 and 2 threads (Numba, BLAS and
torch are all set to the same count in ``setup``), except the NumPy peers and
references, which run the same single-threaded code at any count: they are
timed at 1 thread only (``skip_params``; asv_runner skips those before setup).

Inputs whose values do not change the work (the rows permute moves, the
expert weights of the layer) are :func:`~asv_benchmarks._util.tiled_normal`
copies of one seeded block: a fresh ``standard_normal`` of the layer's 300 MB
of weights took seconds of setup in every process.

Routing configurations (``config``):
  ``E8k2``     softmax, 8 experts, top-2 (Mixtral)
  ``E64k2``    softmax, 64 experts, top-2
  ``E256k8g8`` sigmoid + selection bias, 256 experts in 8 groups of which 4
               are kept, top-8 (DeepSeek-V3)

``tools/bench_bars_moe.py`` measures the performance bars with every peer
interleaved in one process and prints the ratios.
"""

from __future__ import annotations

import numpy as np

from asv_benchmarks._util import (Threaded, best_time, blas_description, kernel_peers, require_full, require_torch,
                                  tiled_normal, torch_peers)
from scalelab.kernels import moe
from scalelab.kernels._common import aligned_empty

SEED = 1234
# One prefill-sized batch of tokens: 512 tokens added little (the per-token cost is flat by then) and
# each extra value multiplies the grid by 18 parameter combinations per method.
TOKENS = [8192]
IMPLS = ["numba", "numpy_f32", *torch_peers("torch")]
D_MODEL_PERMUTE = 4096
# moe_layer bar shape: top-2 of 8 experts, T=512, d=1024, ffn=2816 (Mixtral-like ratio ffn/d = 2.75)
LAYER_T, LAYER_D, LAYER_FFN, LAYER_E, LAYER_K = 512, 1024, 2816, 8, 2

CONFIGS = {
    "E8k2": dict(E=8, k=2, opts={}),
    "E64k2": dict(E=64, k=2, opts={}),
    "E256k8g8": dict(E=256, k=8, opts=dict(scoring="sigmoid", n_groups=8, topk_groups=4)),
}


BLAS = blas_description()


def _single_threaded_peer(T, impl, grid) -> list[tuple]:
    """``skip_params`` tuples of ``impl`` at 2 threads over ``grid`` (the configs), for T in ``T``."""
    return [(t, config, impl, 2) for t in T for config in grid]


class _ThreadsMixin(Threaded):
    """Sets Numba, BLAS and (for torch cases) torch thread counts; teardown restores them."""

    def _set_threads(self, threads: int, need_torch: bool = False):
        self.torch = require_torch() if need_torch else None
        self.limit_threads(threads, self.torch)


# ----------------------------------------------------------------------------
# torch peers (written with the same semantics as scalelab.kernels.moe)
# ----------------------------------------------------------------------------

def torch_route(torch, logits, k, scoring="softmax", bias=None, n_groups=1, topk_groups=1, scale=1.0):
    """softmax (or DeepSeek-V3 sigmoid + group limit) + topk, renormalised."""
    T, E = logits.shape
    if scoring == "softmax":
        w, e = torch.topk(torch.softmax(logits, dim=-1), k, dim=-1)
        return w / w.sum(-1, keepdim=True), e
    s = torch.sigmoid(logits)  # (T, E)
    b = s if bias is None else s + bias
    if n_groups > 1:
        gscore = b.view(T, n_groups, -1).topk(2, dim=-1).values.sum(-1)  # (T, G)
        keep = gscore.topk(topk_groups, dim=-1).indices  # (T, kg)
        gmask = torch.zeros(T, n_groups, dtype=torch.bool).scatter_(1, keep, True)
        emask = gmask.unsqueeze(-1).expand(T, n_groups, E // n_groups).reshape(T, E)
        b = b.masked_fill(~emask, float("-inf"))
    e = b.topk(k, dim=-1).indices  # (T, k)
    w = s.gather(1, e)
    return w / w.sum(-1, keepdim=True) * scale, e


def torch_dispatch(torch, experts, E):
    """Stable argsort of the flattened assignments + counts + offsets."""
    flat = experts.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E)
    offsets = torch.cumsum(counts, 0)
    return order, counts, offsets


def torch_permute(torch, x, order, k):
    return x.index_select(0, torch.div(order, k, rounding_mode="floor"))


def torch_unpermute(torch, ys, order, k, weights, T):
    tok = torch.div(order, k, rounding_mode="floor")
    w = weights.flatten().index_select(0, order).unsqueeze(1)  # (n, 1)
    return torch.zeros(T, ys.shape[1], dtype=ys.dtype).index_add_(0, tok, ys * w)


def torch_moe_layer(torch, x, router_w, w1, w3, w2, k):
    """Same algorithm as scalelab.kernels.moe.moe_layer in torch (softmax top-k, per-expert matmuls, index_add_)."""
    E = w1.shape[0]
    w, e = torch_route(torch, x @ router_w, k)
    order, counts, _ = torch_dispatch(torch, e, E)
    xs = torch_permute(torch, x, order, k)
    ys = torch.empty_like(xs)
    lo = 0
    for j, c in enumerate(counts.tolist()):
        if c:
            xe = xs[lo:lo + c]
            ys[lo:lo + c] = (torch.nn.functional.silu(xe @ w1[j]) * (xe @ w3[j])) @ w2[j]
            lo += c
    return torch_unpermute(torch, ys, order, k, w, x.shape[0])


def torch_swiglu(torch, x, w1, w3, w2):
    return (torch.nn.functional.silu(x @ w1) * (x @ w3)) @ w2


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------

def _route_data(T, config):
    c = CONFIGS[config]
    rng = np.random.default_rng(SEED)
    logits = rng.standard_normal((T, c["E"]), dtype=np.float32)  # (T, E)
    opts = dict(c["opts"])
    if opts.get("scoring") == "sigmoid":
        opts["bias"] = (0.1 * rng.standard_normal(c["E"])).astype(np.float32)  # (E,)
    return logits, c["E"], c["k"], opts


def _layer_data(k_dense: int = LAYER_K):
    """MoE weights and the dense peer with the same active parameters.

    Each token runs top-k experts of width ffn: (2 d ffn + ffn d) k weights and
    6 d ffn k FLOPs per token. The dense SwiGLU FFN of width k * ffn applied to
    every token has exactly those active parameters and FLOPs, so
    ``moe_layer / dense`` is the overhead of sparsity (routing, data movement,
    smaller GEMMs); ideal is 1.0.
    """
    rng = np.random.default_rng(SEED)
    T, d, F, E = LAYER_T, LAYER_D, LAYER_FFN, LAYER_E
    x = rng.standard_normal((T, d), dtype=np.float32)  # (T, d)
    router_w = rng.standard_normal((d, E), dtype=np.float32) / np.float32(np.sqrt(d))  # (d, E)
    def scaled(shape, seed, fan_in):  # matmul speed does not depend on the values
        return tiled_normal(shape, SEED + seed) / np.float32(np.sqrt(fan_in))

    w1, w3, w2 = scaled((E, d, F), 1, d), scaled((E, d, F), 2, d), scaled((E, F, d), 3, F)  # (E, d, F) x2, (E, F, d)
    dense = (scaled((d, k_dense * F), 4, d), scaled((d, k_dense * F), 5, d), scaled((k_dense * F, d), 6, F))
    return x, router_w, w1, w3, w2, dense


def permute_bytes(T, d, n_kept, k, itemsize=4) -> int:
    """Bytes permute + unpermute must move at least once.

    permute reads n_kept rows of x and writes n_kept rows; unpermute reads the
    n_kept rows back and writes T rows; plus the index and weight arrays
    (order int32, position int32, weights float32). Write-allocate traffic is
    not counted, so this is a lower bound on the DRAM traffic.
    """
    rows = (2 * n_kept + n_kept + T) * d * itemsize
    index = n_kept * 4 + T * k * (4 + 4)
    return rows + index


# ----------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------

class RouteDispatch(_ThreadsMixin):
    """route, dispatch and both (the bar: against torch's softmax+topk+argsort)."""

    params = (TOKENS, list(CONFIGS), IMPLS, [1, 2])
    param_names = ["T", "config", "impl", "threads"]
    timeout = 300
    skip_params = (_single_threaded_peer(TOKENS, "numpy_f32", CONFIGS)
                   + [(t, "E256k8g8", "numpy_f32", 1) for t in TOKENS])  # the peer routes by softmax only

    def setup(self, T, config, impl, threads):
        self._set_threads(threads, need_torch=(impl == "torch"))
        self.logits, self.E, self.k, self.opts = _route_data(T, config)
        if impl == "numpy_f32" and self.opts:
            raise NotImplementedError("the NumPy peer routes by softmax top-k only")
        if impl == "numba":
            self.route = lambda: moe.route(self.logits, self.k, **self.opts)
            self.w, self.experts = self.route()
            self.dispatch = lambda: moe.dispatch(self.experts, self.E)
            self.dispatch()  # warm (compiled on exactly these dtypes)
            self.both = lambda: moe.dispatch(moe.route(self.logits, self.k, **self.opts)[1], self.E)
        elif impl == "numpy_f32":
            peers = kernel_peers()
            self.route = lambda: peers.route(self.logits, self.k)
            self.w, self.experts = self.route()
            self.dispatch = lambda: peers.dispatch(self.experts, self.E)
            self.both = lambda: peers.dispatch(peers.route(self.logits, self.k)[1], self.E)
        else:
            torch = self.torch
            lt = torch.from_numpy(self.logits)
            topts = {kk: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for kk, v in self.opts.items()}
            self.route = lambda: torch_route(torch, lt, self.k, **topts)
            self.w, self.experts = self.route()
            self.dispatch = lambda: torch_dispatch(torch, self.experts, self.E)
            self.both = lambda: torch_dispatch(torch, torch_route(torch, lt, self.k, **topts)[1], self.E)
        self.both()

    def time_route(self, *params):
        self.route()

    def time_dispatch(self, *params):
        self.dispatch()

    def time_route_dispatch(self, *params):
        self.both()


class PermuteUnpermute(_ThreadsMixin):
    """permute + unpermute at d=4096 (float32) with the routing of each config."""

    params = (TOKENS, list(CONFIGS), IMPLS, [1, 2])
    param_names = ["T", "config", "impl", "threads"]
    timeout = 300
    skip_params = _single_threaded_peer(TOKENS, "numpy_f32", CONFIGS)

    def setup(self, T, config, impl, threads):
        self._set_threads(threads, need_torch=(impl == "torch"))
        logits, E, k, opts = _route_data(T, config)
        w, e = moe.route(logits, k, **opts)
        D = moe.dispatch(e, E)
        x = tiled_normal((T, D_MODEL_PERMUTE), SEED + 1)  # (T, d)
        self.nbytes = permute_bytes(T, D_MODEL_PERMUTE, D.n_kept, k)
        if impl == "numba":
            xs = aligned_empty((D.n_kept, D_MODEL_PERMUTE), np.float32)  # (n, d) workspace
            y = aligned_empty((T, D_MODEL_PERMUTE), np.float32)  # (T, d) workspace
            self.permute = lambda: moe.permute(x, D, out=xs)
            self.unpermute = lambda: moe.unpermute(xs, D, w, out=y)
        elif impl == "numpy_f32":
            peers = kernel_peers()
            order = D.order.astype(np.int64)
            xs = peers.permute(x, order, k)
            self.permute = lambda: peers.permute(x, order, k)
            self.unpermute = lambda: peers.unpermute(xs, order, w)
        else:
            torch = self.torch
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            order = torch.from_numpy(D.order.astype(np.int64))
            xs_t = torch_permute(torch, xt, order, k)
            self.permute = lambda: torch_permute(torch, xt, order, k)
            self.unpermute = lambda: torch_unpermute(torch, xs_t, order, k, wt, T)
        self.permute()
        self.unpermute()

    def time_permute_unpermute(self, *params):
        self.permute(), self.unpermute()

    def track_permute_unpermute_gbps(self, *params):
        """Achieved GB/s of permute + unpermute (bytes of :func:`permute_bytes`, best of 5)."""
        return self.nbytes / best_time(lambda: (self.permute(), self.unpermute()), repeats=5) / 1e9

    track_permute_unpermute_gbps.unit = "GB/s"


class MoELayer(_ThreadsMixin):
    """moe_layer top-2 of 8 (T=512, d=1024, ffn=2816) vs the dense SwiGLU with the same active parameters.

    ``dense`` is :func:`scalelab.kernels.moe.swiglu_ffn` of width 2 * 2816 on all 512
    tokens: the same FLOPs and active weights as the MoE. ``blas`` records
    which BLAS kernel ran (threadpoolctl). The float64 ``moe_layer_ref`` is
    the tests' oracle, not a peer, and is not timed.
    """

    params = (["numba", "dense", *torch_peers("torch", "torch_dense")], [1, 2], [BLAS])
    param_names = ["impl", "threads", "blas"]
    timeout = 600

    def setup(self, impl, threads, blas):
        self._set_threads(threads, need_torch=impl.startswith("torch"))
        x, router_w, w1, w3, w2, dense = _layer_data()
        k = LAYER_K
        if impl == "numba":
            self.fn = lambda: moe.moe_layer(x, router_w, w1, w3, w2, k)
        elif impl == "dense":
            self.fn = lambda: moe.swiglu_ffn(x, *dense)
        else:
            torch = self.torch
            tx, tr = torch.from_numpy(x), torch.from_numpy(router_w)
            t1, t3, t2 = (torch.from_numpy(a) for a in (w1, w3, w2))
            td = [torch.from_numpy(a) for a in dense]
            if impl == "torch":
                self.fn = lambda: torch_moe_layer(torch, tx, tr, t1, t3, t2, k)
            else:
                self.fn = lambda: torch_swiglu(torch, tx, *td)
        self.fn()  # warm Numba and BLAS buffers

    def time_layer(self, *params):
        self.fn()

    def track_gflops(self, *params):
        """Useful GFLOP/s: 6 d ffn k FLOPs per token (the active parameters' matmuls), best of 3."""
        return 6 * LAYER_T * LAYER_D * LAYER_FFN * LAYER_K / best_time(self.fn, repeats=3) / 1e9

    track_gflops.unit = "GFLOP/s"


class Losses(_ThreadsMixin):
    """Auxiliary losses and expert-choice routing at T=8192, E=64."""

    params = (["numba", "numpy"], [1, 2])
    param_names = ["impl", "threads"]
    timeout = 300
    skip_params = [("numpy", 2)]

    def setup(self, impl, threads):
        self._set_threads(threads)
        self.logits, E, k, _ = _route_data(8192, "E64k2")
        _, self.experts = moe.route(self.logits, k)
        suffix = "" if impl == "numba" else "_ref"
        self.lb = getattr(moe, "load_balancing_loss" + suffix)
        self.z = getattr(moe, "router_z_loss" + suffix)
        self.ec = getattr(moe, "expert_choice" + suffix)
        self.C = moe.capacity_from_factor(8192, k, E, 1.0)
        self.lb(self.logits, self.experts), self.z(self.logits), self.ec(self.logits, self.C)

    def time_load_balancing_loss(self, *params):
        self.lb(self.logits, self.experts)

    def time_router_z_loss(self, *params):
        self.z(self.logits)

    def time_expert_choice(self, *params):
        self.ec(self.logits, self.C)


_COMPILE_SNIPPET = """
import numpy as np
from scalelab.kernels import moe
rng = np.random.default_rng(0)
l = rng.standard_normal((64, 16), dtype=np.float32)
x = rng.standard_normal((64, 32), dtype=np.float32)
w, e = moe.route(l, 2)
moe.route(l, 4, scoring="sigmoid", bias=np.zeros(16, np.float32), n_groups=4, topk_groups=2)
D = moe.dispatch(e, 16)
moe.unpermute(moe.permute(x, D), D, w)
moe.load_balancing_loss(l, e); moe.router_z_loss(l); moe.expert_choice(l, 8)
"""


def timeraw_import_and_compile_cold():
    """Import scalelab.kernels.moe and compile every kernel with an empty Numba cache (a fresh CI runner)."""
    return (
        "import os, tempfile\n"
        "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='scalelab-moe-cache-')\n"
        + _COMPILE_SNIPPET
    )


timeraw_import_and_compile_cold.timeout = 300
# One sample in one process: asv's defaults (a warm-up call, two rounds) would compile everything four times.
timeraw_import_and_compile_cold.repeat = 1
timeraw_import_and_compile_cold.rounds = 1
timeraw_import_and_compile_cold.warmup_time = 0.0
# A minute or more of CPU: followed nightly (SCALELAB_BENCH_FULL=1) only.
timeraw_import_and_compile_cold.setup = lambda: require_full("the cold compile")


def timeraw_import_and_load_cached():
    """Import scalelab.kernels.moe and load every kernel from the on-disk Numba cache (cache=True)."""
    return _COMPILE_SNIPPET


timeraw_import_and_load_cached.timeout = 300
timeraw_import_and_load_cached.repeat = (1, 3, 10.0)
timeraw_import_and_load_cached.rounds = 1
timeraw_import_and_load_cached.warmup_time = 0.0
