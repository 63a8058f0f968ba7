"""Our engine against transformers' LlamaForCausalLM on the same weights, interleaved in one process.

    python tools/bench_engine_peers.py [--model tiny|llama-3.2-1b] [--rounds 3] [--threads 2]

Prints prefill tokens/s (one prompt of ``--prompt`` tokens) and decode tokens/s (batch 1 and 16,
prompts of 16 tokens, 32 new tokens, temperature 1, top-k 50), the best of ``--rounds``
interleaved rounds for each side, and the ratio ours / theirs; also the max relative difference
of the two models' prefill logits. Needs ``make bench-hf``. The asv suite holds the same
measurements (``asv_benchmarks/engine.py``); this script is the quick side-by-side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    args = ap.parse_args()

    import torch
    import transformers
    from threadpoolctl import threadpool_limits

    import numba
    from scalelab.kernels.model import LlamaModel, PagedKVCache, SeqChunk
    from scalelab.simulations.serving.live import Engine, get_engine_model

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    cfg = get_engine_model(args.model)
    ours = LlamaModel.random(cfg, seed=0)
    tmp = tempfile.TemporaryDirectory()
    ours.to_hf_directory(tmp.name)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp.name, torch_dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, args.prompt)
    cache = PagedKVCache(ours.config, -(-args.prompt // 16), 16)
    chunk = SeqChunk(prompt, 0, cache.allocate(-(-args.prompt // 16)))
    ids = torch.from_numpy(prompt)[None]

    with torch.no_grad():
        theirs_logits = hf(ids).logits[0, -1].numpy()
    ours_logits = ours.forward_cached(cache, [chunk])[0]
    rel = float(np.abs(ours_logits - theirs_logits).max() / np.abs(theirs_logits).max())

    def hf_prefill():
        with torch.no_grad():
            hf(ids, logits_to_keep=1)

    def hf_generate(batch_ids):
        def run():
            torch.manual_seed(0)
            with torch.no_grad():
                hf.generate(batch_ids, max_new_tokens=32, min_new_tokens=32, do_sample=True, temperature=1.0,
                            top_k=50, top_p=1.0, pad_token_id=0)
        return run

    cases = {"prefill": (args.prompt, lambda: ours.forward_cached(cache, [chunk]), hf_prefill)}
    for b in (1, 16):
        prompts = rng.integers(0, cfg.vocab_size, (b, 16))
        eng = Engine(ours, kv_blocks=4 * b + 4)
        cases[f"decode b={b}"] = (
            32 * b,
            (lambda e=eng, p=prompts: e.generate(list(p), max_new_tokens=32, temperature=1.0, top_k=50)),
            hf_generate(torch.from_numpy(prompts)),
        )
    best = {k: [np.inf, np.inf] for k in cases}
    for _ in range(args.rounds + 1):  # the first round warms up both sides and is discarded
        for k, (_, f_ours, f_hf) in cases.items():
            for side, f in enumerate((f_ours, f_hf)):
                t = time.perf_counter()
                f()
                best[k][side] = min(best[k][side], time.perf_counter() - t) if _ else np.inf
    print(f"{cfg.name}, float32, {args.threads} threads, best of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f}; prefill logits max rel diff {rel:.2e}")
    print(f"{'case':<14} {'ours tok/s':>12} {'hf tok/s':>12} {'ours/hf':>8}")
    for k, (n, _, _) in cases.items():
        o, h = n / best[k][0], n / best[k][1]
        print(f"{k:<14} {o:12.1f} {h:12.1f} {o / h:8.2f}")


if __name__ == "__main__":
    main()
