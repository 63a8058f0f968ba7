"""``scalelab engine``: serve a workload on the live CPU engine and measure its latencies.

    scalelab engine run --model tiny --qps 2 --duration 30 [--scheduler chunked] [--compare]
                        [--draft perturbed --draft-noise 0.3 --spec-k 4]
    scalelab engine closed-loop --model tiny --loads 0.3,0.8 --duration 40

``run`` replays Poisson arrivals in real time through :class:`~scalelab.simulations.serving.live.Engine`
(a seeded random-weight model, or ``--weights FILE.safetensors``) and prints the measured latency
table in the format of ``scalelab serve simulate``; ``--compare`` also prints the simulator's
prediction for the same workload on this CPU's ceilings, measured first (a few seconds).
``--draft`` turns on speculative decoding: ``perturbed`` is the target with its weights
perturbed by ``--draft-noise`` (sets the acceptance rate), or an engine preset with seeded
random weights that shares the target's vocabulary; the measured acceptance rate is printed.
``closed-loop`` fits a step cost to the engine's own iterations, then serves Poisson traffic at
fractions of the predicted capacity and prints predicted beside measured TTFT and TPOT
(:mod:`~scalelab.simulations.serving.closed_loop`); exit 0 whether or not the rows meet the bars.
Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import math

from scalelab.cli import args as types
from scalelab.cli.table import print_table


def register(subparsers) -> None:
    sub = types.command_group(
        subparsers, "engine", "the live CPU engine: serve a workload on our kernels, measured latencies",
        "Continuous batching of a Llama-architecture model on our CPU kernels.")
    run = sub.add_parser("run", help="replay Poisson arrivals in real time; print the measured latency table",
                         description="Serve a Poisson workload on the live engine; print latency percentiles.")
    run.add_argument("--model", default="tiny", help="engine model preset: tiny, llama-3.2-1b (default tiny)")
    run.add_argument("--weights", metavar="FILE", help="Hugging Face safetensors weights (default: seeded random)")
    run.add_argument("--qps", type=float, default=2.0, help="Poisson arrival rate, requests/s (default 2)")
    run.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals (default 30)")
    types.request_length_args(run, prompt=128, output=32)
    run.add_argument("--scheduler", default="chunked", help="static, continuous or chunked (default chunked)")
    run.add_argument("--token-budget", type=int, default=512, help="tokens per chunked iteration (default 512)")
    run.add_argument("--kv-blocks", type=int, help="KV cache blocks of 16 tokens (default 1024)")
    run.add_argument("--seed", type=int, default=0, help="seed of the workload, weights and sampling (default 0)")
    run.add_argument("--draft", help="speculative decoding's draft: 'perturbed' (the target plus noise) or an "
                                     "engine model preset of the same vocabulary (default: none)")
    run.add_argument("--draft-noise", type=float, default=0.3,
                     help="noise of the perturbed draft, times each tensor's std (default 0.3)")
    run.add_argument("--spec-k", type=int, default=4, help="tokens the draft proposes per step (default 4)")
    run.add_argument("--compare", action="store_true",
                     help="also print the simulator's prediction on this CPU's measured ceilings")
    run.set_defaults(func=run_engine)
    loop = sub.add_parser(
        "closed-loop", help="the simulator against the live engine: predicted vs measured TTFT/TPOT at two loads",
        description="Calibrate a step cost on the live engine, then serve Poisson traffic at fractions of its "
                    "capacity and compare the simulator's prediction with the measured latencies.")
    loop.add_argument("--model", default="tiny", help="engine model preset: tiny, llama-3.2-1b (default tiny)")
    loop.add_argument("--loads", default="0.3,0.8", help="fractions of the capacity, comma-separated (default 0.3,0.8)")
    loop.add_argument("--duration", type=float, default=40.0, help="seconds of arrivals per load (default 40)")
    types.request_length_args(loop, prompt=128, output=32)
    loop.add_argument("--seed", type=int, default=0, help="seed of the workloads and sampling (default 0)")
    loop.set_defaults(func=run_closed_loop)


def _print_result(title: str, r) -> None:
    s = r.summary()
    print(title)
    t = r.latency_table()
    print_table(list(t.columns), t.itertuples(index=False))
    print(f"finished {s['finished']:.0f}/{s['requests']:.0f}; throughput {s['throughput_rps']:.3g} req/s, "
          f"{s['output_tokens_per_s']:.4g} output tokens/s; preemptions {s['preemptions']:.0f}")


def run_engine(args: argparse.Namespace) -> int:
    from scalelab.kernels.model import LlamaModel
    from scalelab.simulations.serving import LogNormal, poisson_workload
    from scalelab.simulations.serving.live import Engine, get_engine_model

    for name in ("qps", "duration"):
        v = getattr(args, name)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{name} must be a positive number, got {v}")
    for name in ("prompt", "output", "token_budget"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    cfg = get_engine_model(args.model)
    n = max(1, round(args.qps * args.duration))
    cap = max(1, min(cfg.max_position // 2, 8 * args.prompt)), max(1, min(cfg.max_position // 2, 8 * args.output))
    w = poisson_workload(args.qps, n, prompt_len=LogNormal(args.prompt, 0.5, cap[0]),
                         output_len=LogNormal(args.output, 0.5, cap[1]), seed=args.seed)
    model = (LlamaModel.from_safetensors(args.weights, cfg) if args.weights
             else LlamaModel.random(cfg, seed=args.seed))
    draft, draft_cfg = _draft(args, model, cfg)
    engine = Engine(model, scheduler=args.scheduler, kv_blocks=args.kv_blocks, token_budget=args.token_budget,
                    draft=draft, spec_k=args.spec_k if draft is not None else 0)
    print(f"{cfg.name} ({engine.sched.__class__.__name__}, KV {engine.cache.n_blocks} blocks of 16); {w!r}")
    r = engine.serve(w, seed=args.seed)
    _print_result("measured (live engine, this CPU, float32):", r)
    if draft is not None:
        a = r.config["spec_accept"]
        print(f"speculative decoding: draft {args.draft}, k {args.spec_k}; measured acceptance rate "
              f"{'n/a' if a is None else f'{a:.3f}'}")
    if args.compare:
        from scalelab.simulations.calibration import cpu_hardware
        from scalelab.simulations.inference import kv_cache_bytes_per_token, weight_bytes
        from scalelab.simulations.serving import simulate
        from scalelab.simulations.serving.live import compare_latencies
        from scalelab.simulations.serving.memory import BLOCK_TOKENS, GPU_MEMORY_UTILIZATION

        hw = cpu_hardware()
        # the simulator sizes the KV cache from memory; reserve the rest so it holds the engine's blocks
        kv_bytes = engine.cache.n_blocks * BLOCK_TOKENS * kv_cache_bytes_per_token(cfg, dtype_bytes=4)
        reserve = hw.memory_bytes * GPU_MEMORY_UTILIZATION - weight_bytes(cfg, dtype_bytes=4) - kv_bytes
        # speculative decoding is simulated at the acceptance rate the engine measured
        spec = ({} if r.config["spec_accept"] is None else
                dict(spec_k=engine.spec_k, spec_accept=r.config["spec_accept"], draft_model=draft_cfg))
        p = simulate(cfg, hw, w, scheduler=args.scheduler, token_budget=args.token_budget, dtype_bytes=4,
                     reserve_bytes=max(0.0, reserve), **spec)
        print()
        _print_result(f"predicted (simulator on {hw.name}; KV capacity {p.config['kv_capacity_blocks']} blocks):", p)
        print()
        t = compare_latencies(r, p)
        print_table(list(t.columns), t.itertuples(index=False))
    return 0


def _draft(args: argparse.Namespace, model, cfg):
    """The draft model ``--draft`` names and its ``ModelConfig`` (``cfg`` is the target's), or (None, None)."""
    from scalelab.kernels.model import LlamaModel
    from scalelab.kernels.speculative import perturbed_model
    from scalelab.simulations.serving.live import get_engine_model

    if args.draft is None:
        return None, None
    if args.spec_k < 1:
        raise ValueError(f"--spec-k must be an integer >= 1, got {args.spec_k}")
    if args.draft.lower() == "perturbed":
        if not (args.draft_noise >= 0 and math.isfinite(args.draft_noise)):
            raise ValueError(f"--draft-noise must be a finite number >= 0, got {args.draft_noise}")
        return perturbed_model(model, args.draft_noise, seed=args.seed + 1), cfg
    dcfg = get_engine_model(args.draft)
    if dcfg.vocab_size != model.config.vocab_size:
        raise ValueError(f"--draft {args.draft} has a vocabulary of {dcfg.vocab_size} tokens, the model "
                         f"{model.config.vocab_size}")
    return LlamaModel.random(dcfg, seed=args.seed + 1), dcfg


def run_closed_loop(args: argparse.Namespace) -> int:
    from scalelab.simulations.serving.closed_loop import closed_loop

    try:
        loads = tuple(float(x) for x in args.loads.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--loads must be comma-separated numbers in (0, 1], got {args.loads!r}") from None
    if not loads or not all(0 < x <= 1 for x in loads):
        raise ValueError(f"--loads must be comma-separated numbers in (0, 1], got {args.loads!r}")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        raise ValueError(f"--duration must be a positive number, got {args.duration}")
    for name in ("prompt", "output"):
        if getattr(args, name) < 2:
            raise ValueError(f"--{name} must be an integer >= 2, got {getattr(args, name)}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    res = closed_loop(args.model, loads=loads, duration_s=args.duration, prompt=args.prompt, output=args.output,
                      seed=args.seed)
    print(res.fit)
    if res.wake is not None:
        print("a decode iteration after an idle gap (the fit's wake cost is fitted to the excess):")
        print_table(list(res.wake.columns), res.wake.itertuples(index=False))
    print(f"predicted capacity: {res.capacity_rps:.3g} requests/s")
    t = res.table.drop(columns=["bar"])
    print_table(list(t.columns), t.itertuples(index=False))
    print(f"{int(res.table['within_bar'].sum())} of {len(res.table)} rows within the bars "
          "(p50 +-25%, p99 +-40%)")
    served = res.served_iterations()
    if not served.empty:
        print("served iterations against the fit's price (priced/measured < 1: dearer than priced; "
              "the measured/priced spread: noise the simulator's mean leaves out)")
        print_table(list(served.columns), served.itertuples(index=False))
    return 0
