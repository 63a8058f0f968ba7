"""asv benchmarks for the live engine end to end: prefill and decode tokens/s, ours beside transformers.

Peers, side by side in one run, on the same weights (our seeded random model written as a Hugging
Face safetensors checkpoint): ``scalelab`` (:class:`~scalelab.simulations.serving.live.Engine` on
:class:`~scalelab.kernels.model.LlamaModel`) and ``transformers`` (``LlamaForCausalLM`` on PyTorch,
skipped when transformers or torch is not installed). float32, 2 threads for Numba, BLAS and torch.

* prefill: one prompt of 512 tokens, logits of its last position;
* decode: a batch of 1 or 16 prompts of 16 tokens, 32 new tokens each, temperature 1 and top-k 50
  (``generate`` with a KV cache on both sides); tokens/s counts generated tokens.

Models: ``tiny`` and the Llama-3.2-1B shape (about 5 GB of float32 weights, seconds to tens of
seconds per call on 2 cores: runs only with ``SCALELAB_BENCH_FULL=1``, as the nightly job sets it,
and is skipped when the machine has less than 12 GB of memory available).
"""

import tempfile

import numpy as np

from asv_benchmarks._util import ThreadLimit, best_time, full_only, require_full, torch_peers

MODELS = ["tiny", *full_only("llama-3.2-1b")]
IMPLS = ["scalelab", *torch_peers("transformers")]  # transformers runs on torch; skipped if it is absent
PROMPT = 512
DECODE_PROMPT, DECODE_NEW = 16, 32
TOP_K = 50
THREADS = 2


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _model(name):
    from scalelab.kernels.model import LlamaModel
    from scalelab.simulations.serving.live import get_engine_model

    cfg = get_engine_model(name)
    if name != "tiny":
        require_full(f"the {name} model")
    if name != "tiny" and _available_bytes() < 12 * 2**30:
        raise NotImplementedError("not enough memory for the 1B-shaped model and its peer")
    return cfg, LlamaModel.random(cfg, seed=0)


def _hf(model):
    try:
        import torch
        import transformers
    except ImportError:
        raise NotImplementedError("transformers / torch are not installed") from None
    tmp = tempfile.TemporaryDirectory()
    model.to_hf_directory(tmp.name)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp.name, torch_dtype=torch.float32).eval()
    return torch, hf, tmp


class _EndToEnd:
    params = [IMPLS, MODELS]
    param_names = ["impl", "model"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    timeout = 1800

    def teardown(self, *args):
        if hasattr(self, "threads"):  # setup skipped (peer absent) before limiting threads
            self.threads.restore()
        if hasattr(self, "tmp"):
            self.tmp.cleanup()


class Prefill(_EndToEnd):
    """One prompt of 512 tokens through the whole model."""

    def setup(self, impl, model):
        cfg, m = _model(model)
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, PROMPT)
        if impl == "transformers":
            torch, hf, self.tmp = _hf(m)
            ids = torch.from_numpy(tokens)[None]

            def run():
                with torch.no_grad():
                    return hf(ids, logits_to_keep=1).logits
        else:
            from scalelab.kernels.model import PagedKVCache, SeqChunk

            cache = PagedKVCache(m.config, PROMPT // 16, 16)
            chunk = SeqChunk(tokens, 0, cache.allocate(PROMPT // 16))

            def run():
                return m.forward_cached(cache, [chunk])
        self.threads = ThreadLimit(THREADS)
        self.fn = run
        run()

    def time_prefill(self, impl, model):
        self.fn()

    def track_prefill_tokens_per_s(self, impl, model):
        return PROMPT / best_time(self.fn, repeats=2, min_time=0.0)

    track_prefill_tokens_per_s.unit = "tokens/s"


class Decode(_EndToEnd):
    """``batch`` prompts of 16 tokens, 32 sampled tokens each (temperature 1, top-k 50)."""

    params = [IMPLS, MODELS, [1, 16]]
    param_names = ["impl", "model", "batch"]

    def setup(self, impl, model, batch):
        cfg, m = _model(model)
        prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, DECODE_PROMPT))
        if impl == "transformers":
            torch, hf, self.tmp = _hf(m)
            ids = torch.from_numpy(prompts)

            def run():
                torch.manual_seed(0)  # generate draws from torch's global generator
                with torch.no_grad():
                    return hf.generate(ids, max_new_tokens=DECODE_NEW, min_new_tokens=DECODE_NEW, do_sample=True,
                                       temperature=1.0, top_k=TOP_K, top_p=1.0, use_cache=True,
                                       pad_token_id=0)
        else:
            from scalelab.simulations.serving.live import Engine

            eng = Engine(m, kv_blocks=batch * 4 + 4)

            def run():
                return eng.generate(list(prompts), max_new_tokens=DECODE_NEW, temperature=1.0, top_k=TOP_K)
        self.threads = ThreadLimit(THREADS)
        self.fn = run
        run()

    def time_generate(self, impl, model, batch):
        self.fn()

    def track_decode_tokens_per_s(self, impl, model, batch):
        return batch * DECODE_NEW / best_time(self.fn, repeats=2, min_time=0.0)

    track_decode_tokens_per_s.unit = "tokens/s"
