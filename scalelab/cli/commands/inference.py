"""``scalelab inference``: prefill and decode cost of one model on one accelerator."""

from __future__ import annotations

import argparse

from scalelab.cli import args as types


#: Largest batch: far past what any single accelerator's memory holds for a real model.
MAX_BATCH = 2**20


def register(subparsers) -> None:
    from scalelab.simulations.inference import MAX_TOKENS

    p = types.command(subparsers, "inference", "roofline cost of prefill and decode for a model on an accelerator",
                      "Print the prefill/decode phase table (time, FLOPs, bytes, bound, MFU/MBU) "
                      "from the per-operation roofline model in scalelab.simulations.inference.")
    p.add_argument("--model", default="llama-3-8b", help="model preset (default llama-3-8b)")
    p.add_argument("--hw", default="h100-sxm", help="hardware preset (default h100-sxm)")
    p.add_argument("--batch", type=types.integer(1, MAX_BATCH), default=16, help="sequences served together (default 16)")
    p.add_argument("--prompt", type=types.integer(1, MAX_TOKENS), default=2048, help="prompt tokens per sequence (default 2048)")
    p.add_argument("--gen", type=types.integer(1, MAX_TOKENS), default=256, help="generated tokens per sequence (default 256)")
    p.add_argument("--dtype-bytes", type=types.real(0.125, 8.0), default=2.0, help="bytes per weight/activation/KV value (default 2)")
    p.add_argument("--ops", action="store_true", help="also print the per-operation roofline of both phases")
    p.set_defaults(func=run)


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def run(args: argparse.Namespace) -> int:
    from scalelab.simulations.inference import (
        ACTIVATION_RESERVE_FRACTION, MAX_TOKENS, get_hardware, get_model, kv_cache_bytes, last_decode_context, max_batch, phase_table, request_latency,
        ridge_point,
        roofline_table, weight_bytes,
    )

    m, h = get_model(args.model), get_hardware(args.hw)
    if args.prompt + args.gen > MAX_TOKENS:
        raise ValueError(f"--prompt + --gen must be at most {MAX_TOKENS} tokens, got {args.prompt + args.gen}")
    dt = args.dtype_bytes
    table = phase_table(m, h, batch=args.batch, prompt=args.prompt, gen=args.gen, dtype_bytes=dt)
    lat = request_latency(m, h, batch=args.batch, prompt_len=args.prompt, gen_len=args.gen, dtype_bytes=dt)
    end = args.prompt + args.gen
    print(f"{m.name} on {h.name}: batch {args.batch}, prompt {args.prompt}, generate {args.gen}, "
          f"{dt:g} bytes per value")
    print(f"params {m.params_total / 1e9:.1f}B total, {m.params_active / 1e9:.1f}B active; "
          f"weights {_fmt_bytes(weight_bytes(m, dtype_bytes=dt))}; "
          f"KV cache at {end} tokens {_fmt_bytes(kv_cache_bytes(m, batch=args.batch, seq_len=end, dtype_bytes=dt))}; "
          f"memory {_fmt_bytes(h.memory_bytes)}; ridge point {ridge_point(h):.0f} FLOP/byte")
    print()
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    if (table["fits"] == "NO").any():
        print(f"NOTE: rows with fits = NO need more than {1 - ACTIVATION_RESERVE_FRACTION:.0%} of {h.name}'s memory "
              "for weights and KV cache; their times are for a run that cannot happen on one device")
    print()
    print(f"time to first token {lat.ttft_s * 1e3:.1f} ms; mean time per output token {lat.tpot_s * 1e3:.2f} ms; "
          f"request {lat.total_s:.2f} s; {lat.throughput_tokens_per_s:.0f} generated tokens/s")
    fits = max_batch(m, h, end, dtype_bytes=dt)
    print(f"largest batch that fits at {end} tokens: {fits}" + ("" if lat.fits_memory else "  (this batch does NOT fit)"))
    if args.ops:
        for phase, seq in (("prefill", args.prompt), ("decode", last_decode_context(args.prompt, args.gen))):
            print(f"\n{phase} operations (seq_len {seq}):")
            df = roofline_table(m, h, phase, args.batch, seq, dtype_bytes=dt)
            print(df[["op", "layers", "flops", "bytes", "intensity", "bound", "time_s", "time_share"]]
                  .to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    return 0
