"""``scalelab serve``: LLM serving under load, and the deployment that meets its SLOs.

    scalelab serve simulate --model llama-3-8b --hw h100-sxm --scheduler chunked --qps 8 \\
        [--trace conv|code|FILE.csv] [--tp 2] [--slo-ttft 0.5 --slo-tpot 0.05]
    scalelab serve plan --model llama-3-8b --hw h100-sxm --qps 8 --slo-ttft 0.5 --slo-tpot 0.05 \\
        [--scheduler local|none|tcp://host:8786] [--target-rate 100] [--out plan.csv]

``simulate`` prints the latency table (mean and percentiles of TTFT, TPOT,
ITL, end-to-end and queueing) and the throughput; ``plan`` ranks deployment
configurations by goodput per GPU, on Dask (``--scheduler`` is the Dask
scheduler: a local cluster by default, ``none`` for a serial run).
Bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import math

from scalelab.cli import args as types

from scalelab.cli.table import print_table


def _workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="llama-3-8b", help="model preset (default llama-3-8b)")
    p.add_argument("--hw", default="h100-sxm", help="hardware preset (default h100-sxm)")
    p.add_argument("--qps", type=float, default=8.0, help="Poisson arrival rate, requests/s (default 8)")
    p.add_argument("--requests", type=types.integer(1, types.MAX_SAMPLES), default=2000, metavar="N", help="requests to generate (default 2000)")
    types.request_length_args(p, prompt=1024, output=256)
    p.add_argument("--trace", metavar="NAME|CSV", help="replay a trace instead: conv, code (Azure 2023) or a CSV file")
    p.add_argument("--rate-scale", type=float, default=1.0, metavar="K", help="replay the trace at K times its rate")
    p.add_argument("--limit", type=int, metavar="N", help="first N requests of the trace only")
    p.add_argument("--seed", type=types.seed, default=0, help="seed of the generated workload (default 0)")
    p.add_argument("--slo-ttft", type=float, metavar="S", help="time-to-first-token SLO, seconds")
    p.add_argument("--slo-tpot", type=float, metavar="S", help="time-per-output-token SLO, seconds")


def register(subparsers) -> None:
    sub = types.command_group(
        subparsers, "serve", "serving under load: latency percentiles, goodput, capacity planning",
        "Request-level simulation of LLM serving (static, continuous, chunked-prefill and "
        "disaggregated schedulers) on the per-operation roofline of simulations.inference.")

    sim = sub.add_parser("simulate", help="simulate one deployment and print its latency table",
                         description="Simulate one deployment under a workload; print latency percentiles.")
    _workload_args(sim)
    sim.add_argument("--scheduler", default="chunked",
                     help="static, continuous, chunked or disaggregated (default chunked)")
    sim.add_argument("--tp", type=int, default=1, help="tensor-parallel degree per instance (default 1)")
    sim.add_argument("--replicas", type=int, default=1, help="data-parallel instances (default 1)")
    sim.add_argument("--max-batch", type=int, help="sequences per instance (default 256)")
    sim.add_argument("--token-budget", type=int, default=512, help="tokens per chunked iteration (default 512)")
    sim.add_argument("--n-prefill", type=int, default=1, help="prefill instances when disaggregated (default 1)")
    sim.add_argument("--n-decode", type=int, default=1, help="decode instances when disaggregated (default 1)")
    sim.add_argument("--link", default="nvlink4", help="link preset: nvlink4, nvlink3, infiniband-ndr")
    sim.add_argument("--spec-k", type=int, default=0, help="speculative decoding: drafted tokens per step")
    sim.add_argument("--spec-accept", type=float, help="speculative decoding: acceptance rate in [0, 1]")
    sim.set_defaults(func=run_simulate)

    pl = sub.add_parser("plan", help="search deployments for the best goodput per GPU under SLOs",
                        description="Rank deployment configurations by goodput per GPU (a Dask map).")
    _workload_args(pl)
    pl.add_argument("--scheduler", dest="address", default="local", metavar="ADDRESS",
                    help="Dask scheduler: 'local' (a 2-process LocalCluster, default), 'none' (serial) or an address")
    pl.add_argument("--target-rate", type=float, metavar="QPS", help="also report the GPUs a target rate needs")
    pl.add_argument("--quick", action="store_true", help="a small search space (12 configurations)")
    pl.add_argument("--top", type=int, default=15, help="rows to print (default 15)")
    pl.add_argument("--out", metavar="CSV", help="write the whole table to this CSV file")
    pl.set_defaults(func=run_plan)


def _workload(args):
    from scalelab.simulations.serving import LogNormal, load_trace, poisson_workload

    if args.trace:
        return load_trace(args.trace, rate_scale=args.rate_scale, limit=args.limit)
    for name in ("prompt", "output", "requests"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not (args.qps > 0 and math.isfinite(args.qps)):
        raise ValueError(f"--qps must be a positive rate, got {args.qps}")
    return poisson_workload(args.qps, args.requests, prompt_len=LogNormal(args.prompt, 0.5, 32 * args.prompt),
                            output_len=LogNormal(args.output, 0.5, 32 * args.output), seed=args.seed)


def _check_slos(args, required: bool) -> None:
    for name in ("slo_ttft", "slo_tpot"):
        v = getattr(args, name)
        if v is None and required:
            raise ValueError(f"--{name.replace('_', '-')} is required")
        if v is not None and not (v > 0 and math.isfinite(v)):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v}")


def run_simulate(args: argparse.Namespace) -> int:
    from scalelab.simulations.serving import simulate

    _check_slos(args, required=False)
    w = _workload(args)
    r = simulate(args.model, args.hw, w, scheduler=args.scheduler, tp=args.tp, replicas=args.replicas,
                 max_batch=args.max_batch, token_budget=args.token_budget, slo_ttft=args.slo_ttft,
                 slo_tpot=args.slo_tpot, spec_k=args.spec_k, spec_accept=args.spec_accept,
                 n_prefill=args.n_prefill, n_decode=args.n_decode, link=args.link)
    s = r.summary()
    c = r.config
    print(f"{c['model']} on {r.n_gpus} x {c['hw']} ({c['scheduler']}, tp {c['tp']}); {w!r}; "
          f"KV capacity {c['kv_capacity_blocks']} blocks per instance")
    t = r.latency_table()
    print_table(list(t.columns), t.itertuples(index=False))
    print()
    line = (f"finished {s['finished']:.0f}/{s['requests']:.0f}; throughput {s['throughput_rps']:.3g} req/s, "
            f"{s['output_tokens_per_s']:.4g} output tokens/s; preemptions {s['preemptions']:.0f}")
    if "goodput_rps" in s:
        line += (f"; SLO attainment {s['slo_attainment']:.1%}, goodput {s['goodput_rps']:.3g} req/s "
                 f"({s['goodput_per_gpu']:.3g} per GPU)")
    print(line)
    return 0


def run_plan(args: argparse.Namespace) -> int:
    from scalelab.simulations.serving import plan

    _check_slos(args, required=True)
    if args.top <= 0:
        raise ValueError(f"--top must be a positive integer, got {args.top}")
    w = _workload(args)
    space = None
    if args.quick:
        space = {"scheduler": ["continuous", "chunked", "disaggregated"], "tp": [1, 2], "replicas": [1, 2]}
    address = None if args.address.lower() == "none" else args.address
    df = plan(args.model, args.hw, w, slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot, space=space,
              scheduler_address=address, target_rate=args.target_rate, progress=True)
    cols = ["scheduler", "tp", "replicas", "n_prefill", "n_decode", "token_budget", "max_batch", "spec_k", "n_gpus",
            "goodput_rps", "goodput_per_gpu", "slo_attainment", "ttft_p99", "tpot_p99"]
    if args.target_rate is not None:
        cols.append("gpus_for_target")
    top = df[df["feasible"]].head(args.top)
    print(f"{len(df)} configurations, {int(df['feasible'].sum())} fit; {w!r}; "
          f"SLOs TTFT {args.slo_ttft:g} s, TPOT {args.slo_tpot:g} s")
    print_table(cols, top[cols].itertuples(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0
