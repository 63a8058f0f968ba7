"""asv benchmarks for kernels/sampling.py: top-k, top-p filtering and full sampling.

Peers, side by side in one run: the float32 NumPy peers of
:mod:`scalelab.kernels.peers` (``np.argpartition`` top-k, sorted-cumsum top-p)
and, when PyTorch is importable, ``torch.topk`` and a transformers-style sort-based top-p
path (sort, softmax, cumsum, mask, ``torch.multinomial``).  Shapes: B in
{1, 32}, V in {128256, 256000} (Llama 3, Gemma), float32; Numba/torch threads
in {1, 2}. V=32000 is timed by ``gate_probe.TopKProbe``.

:class:`SampleFamily` times ``sample`` over a family of logit distributions
(:data:`FAMILY`: normal at scales 0.5 to 10, Zipf with exponents 0.8 to 1.5,
one dominant token, all equal) as the ``dist`` parameter: the kernel's cost
should hardly depend on the distribution, and the slowest ``dist`` over the
fastest at one (B, V) says how far it does.
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


#: The logit-distribution family sampling is timed over (cost should hardly depend on it):
#: name -> (kind, shape parameter). ``normal``: standard normal times the scale; ``zipf``:
#: ``-a * log(rank)`` over a random permutation of the ranks (probability ~ rank**-a);
#: ``dominant``: standard normal with one token 20 nats above the rest (~99.9% of the mass
#: at V=256000); ``equal``: every logit 0 (the widest possible boundary bucket).
FAMILY = {
    "normal0.5": ("normal", 0.5),
    "normal1": ("normal", 1.0),
    "normal3": ("normal", 3.0),
    "normal10": ("normal", 10.0),
    "zipf0.8": ("zipf", 0.8),
    "zipf1.1": ("zipf", 1.1),
    "zipf1.5": ("zipf", 1.5),
    "dominant": ("dominant", 20.0),
    "equal": ("equal", 0.0),
}

#: Filter settings of the family (temperature 1): the issue's top-p range and min-p.
FAMILY_FILTERS = {
    "p0.5": {"top_p": 0.5},
    "p0.9": {"top_p": 0.9},
    "p0.99": {"top_p": 0.99},
    "minp0.05": {"min_p": 0.05},
    "p0.95+minp0.02": {"top_p": 0.95, "min_p": 0.02},
}


#: The filters one asv call of :class:`SampleFamily` runs in turn (the ends of the top-p range, and min-p).
FAMILY_TIMED = (FAMILY_FILTERS["p0.5"], FAMILY_FILTERS["p0.99"], FAMILY_FILTERS["minp0.05"])


def family_logits(name, B, V, seed=1234):
    """(B, V) float32 logits of family member ``name`` (see :data:`FAMILY`), seeded."""
    kind, a = FAMILY[name]
    rng = np.random.default_rng(seed)
    if kind == "equal":
        return np.zeros((B, V), dtype=np.float32)
    if kind == "zipf":
        ranks = rng.permuted(np.tile(np.arange(1, V + 1, dtype=np.float64), (B, 1)), axis=1)  # (B, V)
        return (-a * np.log(ranks)).astype(np.float32)
    x = rng.standard_normal((B, V)) * (a if kind == "normal" else 1.0)  # (B, V)
    if kind == "dominant":
        x[np.arange(B), rng.integers(V, size=B)] = a
    return x.astype(np.float32)


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


class SampleFamily(Threaded):
    """``sample`` over the logit-distribution family (:data:`FAMILY`): its cost should barely depend on it.

    One call samples the same logits with each of top-p 0.5, top-p 0.99 and
    min-p 0.05 (:data:`FAMILY_TIMED`), so the ratio of the slowest to the
    fastest ``dist`` at one (B, V) is the spread over the family. This class
    is the pull-request share (one thread, B=1, V=128256: nine cases);
    :class:`SampleFamilyFull` has the issue's whole grid at two threads, which
    the gate leaves to the nightly run (it times one thread on pull requests).
    ``tools/bench_bars_sampling_family.py`` prints the same family interleaved
    in one process, with every filter of :data:`FAMILY_FILTERS`.
    """

    params = [list(FAMILY), [1], [128256], [1]]
    param_names = ["dist", "B", "V", "threads"]
    timeout = 300

    def setup(self, dist, B, V, threads):
        self.limit_threads(threads)
        self.x = family_logits(dist, B, V)
        self.seeds = np.arange(B)
        self.time_sample_family(dist, B, V, threads)  # compile/warm

    def time_sample_family(self, dist, B, V, threads):
        for kw in FAMILY_TIMED:
            S.sample(self.x, seed=self.seeds, **kw)


class SampleFamilyFull(SampleFamily):
    params = [list(FAMILY), BATCHES, VOCABS, [2]]


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
