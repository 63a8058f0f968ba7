"""``scalelab energy``: electricity and emissions of training.

    scalelab energy train --params 70e9 --tokens 1.4e12 --gpu h100 --mfu 0.4
    scalelab energy train --gpu-hours 30.84e6 --gpu h100 --power-w 700 --pue 1.0 --carbon 0.414
    scalelab energy published
    scalelab energy frontier [--from 2024 --to 2035] [--samples N] [--seed S]

Each prints a plain-text table; bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse

from scalelab.cli import args as types
from scalelab.cli.table import print_table


def register(subparsers) -> None:
    sub = types.command_group(
        subparsers, "energy", "electricity: training energy and emissions, frontier power by year",
        "Energy and emissions of training runs (Patterson et al. 2021; Llama 3.1 model card) and "
        "the power of the largest run by year against grid shares (Epoch AI, IEA).")

    from scalelab.simulations.energy import FRONTIER_YEARS, HARDWARE, PATTERSON_2021_GPT3
    from scalelab.simulations.hardware import ALIASES

    names = ", ".join(sorted(HARDWARE) + sorted(ALIASES))
    tr = sub.add_parser(
        "train", help="energy and emissions of one training run",
        description="From --params and --tokens (6ND FLOPs, needs --mfu), from --flops, or from --gpu-hours.",
    )
    tr.add_argument("--params", type=types.positive, default=None, metavar="N", help="parameters (with --tokens)")
    tr.add_argument("--tokens", type=types.positive, default=None, metavar="D", help="training tokens (with --params)")
    tr.add_argument("--flops", type=types.positive, default=None, metavar="C", help="training FLOPs")
    tr.add_argument("--gpu-hours", type=types.positive, default=None, metavar="H", help="device-hours, instead of FLOPs")
    tr.add_argument("--gpu", default="h100", metavar="NAME", help=f"device preset (default h100; one of {names})")
    tr.add_argument("--mfu", type=types.fraction, default=None, metavar="F", help="model FLOPs utilisation in (0, 1]")
    tr.add_argument("--power-w", type=types.positive, default=None, metavar="W", help="watts per device (default its TDP)")
    tr.add_argument("--pue", type=types.real(1.0), default=1.1, metavar="P", help="power usage effectiveness (default 1.1)")
    tr.add_argument("--carbon", type=types.non_negative, default=PATTERSON_2021_GPT3["carbon_kg_per_kwh"], metavar="KG",
                    help="grid intensity, kgCO2e/kWh (default 0.429, Patterson et al. 2021)")
    tr.add_argument("--gpus", type=types.positive_int, default=None, metavar="G", help="device count, to print wall-clock days")
    tr.set_defaults(func=run_train)

    pb = sub.add_parser("published", help="our estimates next to published training energy and emissions")
    pb.set_defaults(func=run_published)

    fr = sub.add_parser("frontier", help="power of the largest training run by year, against grid shares")
    fr.add_argument("--from", dest="start", type=types.integer(*FRONTIER_YEARS), default=2024, metavar="YEAR", help="first year (default 2024)")
    fr.add_argument("--to", dest="stop", type=types.integer(*FRONTIER_YEARS), default=2035, metavar="YEAR", help="last year (default 2035)")
    fr.add_argument("--samples", type=types.samples, default=100_000, metavar="N",
                    help=f"Monte Carlo samples (default 1e5, at most {types.MAX_SAMPLES:.0e})")
    fr.add_argument("--seed", type=types.seed, default=0, metavar="S", help="seed (default 0)")
    fr.set_defaults(func=run_frontier)


def run_train(args: argparse.Namespace) -> int:
    from scalelab.simulations.energy import get_hardware, training_energy, training_flops

    sources = [args.params is not None or args.tokens is not None, args.flops is not None, args.gpu_hours is not None]
    if sum(sources) != 1:
        raise ValueError("give one of: --params with --tokens, --flops, or --gpu-hours")
    flops = args.flops
    if sources[0]:
        if args.params is None or args.tokens is None:
            raise ValueError("--params and --tokens go together")
        flops = training_flops(args.params, args.tokens)
    if flops is not None and args.mfu is None:
        raise ValueError("--mfu is required when the run is given in FLOPs")
    hw = get_hardware(args.gpu)
    est = training_energy(
        flops=flops, gpu_hours=args.gpu_hours, hardware=hw, mfu=args.mfu, power_w=args.power_w,
        pue=args.pue, carbon_kg_per_kwh=args.carbon,
    )
    if args.gpus is not None and args.gpus < 1:
        raise ValueError(f"--gpus must be a positive integer, got {args.gpus}")
    headers = ["device", "flops", "gpu_hours", "power_w", "pue", "mwh", "tco2e"]
    row = [hw.name, flops if flops is not None else float("nan"), est.gpu_hours,
           args.power_w if args.power_w is not None else hw.tdp_w, args.pue, est.mwh, est.tco2e]
    if args.gpus is not None:
        headers.append("days")
        row.append(est.gpu_hours / args.gpus / 24.0)
    print_table(headers, [row])
    return 0


def run_published(args: argparse.Namespace) -> int:
    from scalelab.simulations.energy import reproduce_published

    t = reproduce_published()
    print_table(
        ["model", "mwh", "published_mwh", "tco2e", "published_tco2e", "kg_per_kwh"],
        t[["model", "mwh", "published_mwh", "tco2e", "published_tco2e", "carbon_kg_per_kwh"]].itertuples(index=False),
    )
    return 0


def run_frontier(args: argparse.Namespace) -> int:
    import numpy as np

    from scalelab.simulations.energy import frontier_power_projection

    if args.stop < args.start:
        raise ValueError(f"--to ({args.stop}) must not be before --from ({args.start})")
    res = frontier_power_projection(np.arange(args.start, args.stop + 1, dtype=float),
                                    n_samples=args.samples, seed=args.seed)
    t = res.table()
    print_table(
        ["year", "power_mw", "p05", "p95", "run_twh", "dc_twh", "world_share", "us_share"],
        t[["year", "power_mw_p50", "power_mw_p05", "power_mw_p95", "run_energy_twh_p50", "data_centre_twh",
           "share_of_world_p50", "share_of_us_p50"]].itertuples(index=False),
    )
    print()
    print_table(
        ["grid", "share", "year_p50", "year_p05", "year_p95"],
        [[g, s, y[1], y[0], y[2]] for (g, s), y in res.share_years.items()],
    )
    return 0
