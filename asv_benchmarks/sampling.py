"""asv benchmarks for kernels/sampling.py: top-k, top-p filtering and full sampling.

Peers, side by side in one run: the float32 NumPy peers of
:mod:`scalelab.kernels.peers` (``np.argpartition`` top-k, sorted-cumsum top-p)
and, when PyTorch is importable, ``torch.topk`` and a transformers-style sort-based top-p
path (sort, softmax, cumsum, mask, ``torch.multinomial``).  Shapes: B in
{1, 32}, V in {128256, 256000} (Llama 3, Gemma), float32; Numba/torch threads
in {1, 2}. V=32000 is timed by ``gate_probe.TopKProbe``.
"""

import numpy as np

from asv_benchmarks._util import Threaded, best_time, kernel_peers, require_torch, torch_peers
from scalelab.kernels import sampling as S

BATCHES = [1, 32]
VOCABS = [128256, 256000]
THREADS = [1, 2]
K = 50
TEMPERATURE = 0.7
TOP_P = 0.9


def _logits(B, V):
    # scale 3 gives a realistic spread: top-p 0.9 at T=0.7 keeps a few % of V
    return (np.random.default_rng(1234).standard_normal((B, V)) * 3.0).astype(np.float32)


def _torch_top_p_sample(torch, x, temperature, top_p, generator):
    """transformers' TopPLogitsWarper followed by softmax + multinomial."""
    x = x / temperature
    sorted_logits, sorted_idx = torch.sort(x, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[..., -1:] = 0  # always keep the most probable token
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    x = x.masked_fill(remove, -float("inf"))
    return torch.multinomial(torch.softmax(x, dim=-1), 1, generator=generator)


class _Threads(Threaded):
    params = [BATCHES, VOCABS, THREADS]
    param_names = ["B", "V", "threads"]
    timeout = 300

    def _setup_peers(self):
        # None in a revision without the peers: only the *_numpy_f32 methods fail there
        try:
            self.peers = kernel_peers()
        except NotImplementedError:
            self.peers = None


class TopK(_Threads):
    def setup(self, B, V, threads):
        self.limit_threads(threads)
        self._setup_peers()
        self.x = _logits(B, V)
        S.top_k(self.x, K)  # compile/warm on this dtype and layout

    def time_top_k(self, B, V, threads):
        S.top_k(self.x, K)

    def time_top_k_numpy_f32(self, B, V, threads):
        self.peers.top_k(self.x, K)

    def track_top_k_bandwidth(self, B, V, threads):
        return self.x.nbytes / best_time(lambda: S.top_k(self.x, K), repeats=5) / 1e9

    track_top_k_bandwidth.unit = "GB/s"


class FilterTopP(_Threads):
    def setup(self, B, V, threads):
        self.limit_threads(threads)
        self._setup_peers()
        self.x = _logits(B, V)
        S.filter_logits(self.x, temperature=TEMPERATURE, top_p=TOP_P)

    def time_filter_top_p(self, B, V, threads):
        S.filter_logits(self.x, temperature=TEMPERATURE, top_p=TOP_P)

    def time_filter_top_p_numpy_f32(self, B, V, threads):
        self.peers.filter_logits(self.x, temperature=TEMPERATURE, top_p=TOP_P)


class Sample(_Threads):
    def setup(self, B, V, threads):
        self.limit_threads(threads)
        self._setup_peers()
        self.x = _logits(B, V)
        self.seeds = np.arange(B)
        S.sample(self.x, temperature=TEMPERATURE, top_p=TOP_P, seed=self.seeds)

    def time_sample_top_p(self, B, V, threads):
        S.sample(self.x, temperature=TEMPERATURE, top_p=TOP_P, seed=self.seeds)

    def time_sample_top_p_numpy_f32(self, B, V, threads):
        self.peers.sample(self.x, temperature=TEMPERATURE, top_p=TOP_P, seed=0)


# The torch peers exist only where torch is installed (see _util.torch_peers): asv starts a process
# for each parameter combination even when the combination is then skipped.
if torch_peers("torch"):

    class TopKTorch(_Threads):
        def setup(self, B, V, threads):
            self.torch = torch = require_torch()
            self.limit_threads(threads, torch)
            self.xt = torch.from_numpy(_logits(B, V))
            torch.topk(self.xt, K)

        def time_torch_topk(self, B, V, threads):
            self.torch.topk(self.xt, K)

    class SampleTorch(_Threads):
        def setup(self, B, V, threads):
            self.torch = torch = require_torch()
            self.limit_threads(threads, torch)
            self.xt = torch.from_numpy(_logits(B, V))
            self.gen = torch.Generator().manual_seed(0)
            _torch_top_p_sample(torch, self.xt, TEMPERATURE, TOP_P, self.gen)

        def time_torch_sort_top_p_sample(self, B, V, threads):
            _torch_top_p_sample(self.torch, self.xt, TEMPERATURE, TOP_P, self.gen)


class Compile:
    """Numba compile time of each public entry point, in a fresh process and empty cache."""

    timeout = 900
    repeat = 1
    number = 1

    _PRELUDE = (
        "import os, tempfile\n"
        "os.environ['NUMBA_CACHE_DIR'] = tempfile.mkdtemp(prefix='scalelab-numba-')\n"
        "import numpy as np\n"
        "from scalelab.kernels import sampling as S\n"
        "x = np.zeros((2, 8), dtype=np.float32)\n"
    )

    def timeraw_compile_sample_and_top_k(self):
        # one interpreter for both entry points: a cold compile costs up to minutes on a busy 2-core machine
        return self._PRELUDE + ("S.sample(x, top_p=0.9, seed=0); S.sample(x[:1], top_p=0.9, seed=0)\n"
                                "S.top_k(x, 3); S.top_k(x[:1], 3)\n")
