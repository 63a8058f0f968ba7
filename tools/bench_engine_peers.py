"""Our engine against its end-to-end peers on the same weights, interleaved in one process.

    python tools/bench_engine_peers.py [--model tiny|llama-3.2-1b] [--peers hf,llamacpp]
                                       [--rounds 3] [--threads 2] [--prompt 512] [--flash-attn]

Peers: ``hf`` is transformers' ``LlamaForCausalLM`` on PyTorch (``make bench-hf``); ``llamacpp``
is llama.cpp through ``llama-cpp-python`` on an F32 GGUF file of the same weights, its K/V cache
in float32 too (``make bench-llamacpp``). Each gets the same thread count.

Prints prefill tokens/s (one prompt of ``--prompt`` tokens, last-token logits) and decode
tokens/s (batch 1 and, for ``hf``, 16: prompts of 16 tokens, 32 new tokens including their
prefill, temperature 1, top-k 50), the best of ``--rounds`` interleaved rounds for each side
(ours, peer, ours, peer, ...; a first round warms every side and is discarded), the ratio
ours / peer, and the max relative difference of each peer's last-token prefill logits from
ours. The weights files go to a temporary directory that is deleted at exit (the Llama-3.2-1B
shape is about 5 GB per file: free disk space is checked first). The asv suite holds the same
measurements (``asv_benchmarks/engine.py``); this script is the quick side-by-side.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time

import numpy as np

PEERS = ("hf", "llamacpp")
NEW_TOKENS, SHORT_PROMPT, TOP_K = 32, 16, 50


def hf_peer(ours, tmp, prompt, decode_prompts, threads):
    """transformers on PyTorch: (prefill logits, {case: callable})."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    ours.to_hf_directory(tmp)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).eval()
    ids = torch.from_numpy(prompt)[None]
    with torch.no_grad():
        logits = hf(ids).logits[0, -1].numpy()

    def prefill():
        with torch.no_grad():
            hf(ids, logits_to_keep=1)

    def generate(batch_ids):
        def run():
            torch.manual_seed(0)
            with torch.no_grad():
                hf.generate(batch_ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=True,
                            temperature=1.0, top_k=TOP_K, top_p=1.0, pad_token_id=0)
        return run

    cases = {"prefill": prefill}
    for b, p in decode_prompts.items():
        cases[f"decode b={b}"] = generate(torch.from_numpy(p))
    return logits, cases


def llamacpp_peer(ours, tmp, prompt, decode_prompts, threads, flash_attn=False):
    """llama.cpp through llama-cpp-python: (prefill logits, {case: callable}); batch 1 only."""
    import llama_cpp

    from scalelab.kernels.gguf_export import open_in_llamacpp, write_gguf

    path = write_gguf(ours, os.path.join(tmp, "model.gguf"))
    llm = open_in_llamacpp(path, n_ctx=max(len(prompt), SHORT_PROMPT + NEW_TOKENS) + 16, n_threads=threads,
                           n_batch=max(512, len(prompt)), flash_attn=flash_attn)
    V = ours.config.vocab_size
    toks = prompt.tolist()

    def prefill():
        llm.reset()  # forget the cache: every call is a fresh prompt
        llm.eval(toks)

    prefill()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(V,)).copy()

    def generate(p):
        def run():
            llm.reset()
            gen = llm.generate(p, top_k=TOP_K, top_p=1.0, min_p=0.0, typical_p=1.0, temp=1.0, repeat_penalty=1.0)
            out = list(itertools.islice(gen, NEW_TOKENS))
            gen.close()
            assert len(out) == NEW_TOKENS
        return run

    cases = {"prefill": prefill}
    if 1 in decode_prompts:
        cases["decode b=1"] = generate(decode_prompts[1][0].tolist())
    info = (f"llama-cpp-python {llama_cpp.__version__}, flash_attn={flash_attn}, KV cache F32, "
            f"n_batch={max(512, len(prompt))}; system info: {llama_cpp.llama_print_system_info().decode().strip()}")
    return logits, cases, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--peers", default="hf", help=f"comma-separated subset of {','.join(PEERS)}")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--flash-attn", action="store_true", help="llama.cpp's fused attention (off by default)")
    args = ap.parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    bad = [p for p in peers if p not in PEERS]
    if bad or not peers:
        ap.error(f"--peers must name some of {', '.join(PEERS)}, got {args.peers!r}")
    if args.rounds < 1 or args.threads < 1 or args.prompt < 1:
        ap.error("--rounds, --threads and --prompt must be >= 1")

    import numba
    from threadpoolctl import threadpool_limits

    from scalelab.kernels.model import LlamaModel, PagedKVCache, SeqChunk, hf_tensor_shapes
    from scalelab.simulations.serving.live import Engine, get_engine_model

    numba.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    cfg = get_engine_model(args.model)
    if args.prompt > cfg.max_position:
        ap.error(f"--prompt {args.prompt} exceeds the model's context ({cfg.max_position})")
    weights_bytes = 4 * sum(int(np.prod(s)) for s in hf_tensor_shapes(cfg).values())
    tmp = tempfile.TemporaryDirectory(prefix="scalelab-peers-")
    free = shutil.disk_usage(tmp.name).free
    if free < 1.2 * weights_bytes * len(peers):
        sys.exit(f"bench_engine_peers: {free / 2**30:.1f} GiB free in {tmp.name}, need about "
                 f"{1.2 * weights_bytes * len(peers) / 2**30:.1f} GiB for the weights files")
    ours = LlamaModel.random(cfg, seed=0)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, args.prompt)
    batches = (1, 16) if "hf" in peers else (1,)
    decode_prompts = {b: rng.integers(0, cfg.vocab_size, (b, SHORT_PROMPT)) for b in batches}

    cache = PagedKVCache(ours.config, -(-args.prompt // 16), 16)
    chunk = SeqChunk(prompt, 0, cache.allocate(-(-args.prompt // 16)))
    ours_logits = ours.forward_cached(cache, [chunk])[0]
    cases = {"prefill": (args.prompt, {"ours": lambda: ours.forward_cached(cache, [chunk])})}
    for b, p in decode_prompts.items():
        eng = Engine(ours, kv_blocks=4 * b + 4)
        cases[f"decode b={b}"] = (NEW_TOKENS * b, {"ours": (
            lambda e=eng, p=p: e.generate(list(p), max_new_tokens=NEW_TOKENS, temperature=1.0, top_k=TOP_K))})

    notes = []
    for peer in peers:
        sub = os.path.join(tmp.name, peer)
        os.mkdir(sub)
        if peer == "hf":
            logits, fns = hf_peer(ours, sub, prompt, decode_prompts, args.threads)
        else:
            logits, fns, info = llamacpp_peer(ours, sub, prompt, decode_prompts, args.threads, args.flash_attn)
            notes.append(info)
        rel = float(np.abs(ours_logits - logits).max() / np.abs(ours_logits).max())
        notes.append(f"{peer}: prefill last-token logits max rel diff from ours {rel:.2e}")
        for k, f in fns.items():
            cases[k][1][peer] = f

    sides = ["ours", *peers]
    best = {k: dict.fromkeys(fns, np.inf) for k, (_, fns) in cases.items()}
    for r in range(args.rounds + 1):  # round 0 warms every side and is discarded
        for k, (_, fns) in cases.items():
            for side, f in fns.items():
                t = time.perf_counter()
                f()
                if r:
                    best[k][side] = min(best[k][side], time.perf_counter() - t)
    tmp.cleanup()

    print(f"{cfg.name}, float32, {args.threads} threads, best of {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.2f} (1 min) after the run")
    for n in notes:
        print("  " + n)
    head = f"{'case':<12} " + " ".join(f"{s + ' tok/s':>15}" for s in sides)
    head += "".join(f" {'ours/' + p:>14}" for p in peers)
    print(head)
    for k, (n, _) in cases.items():
        rate = {s: n / best[k][s] if s in best[k] else None for s in sides}
        row = f"{k:<12} " + " ".join(f"{rate[s]:15.1f}" if rate[s] else f"{'-':>15}" for s in sides)
        row += "".join(f" {rate['ours'] / rate[p]:14.2f}" if rate[p] else f" {'-':>14}" for p in peers)
        print(row)


if __name__ == "__main__":
    main()
