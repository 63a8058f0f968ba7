"""``scalelab warmup``: compile the kernels' common signatures into the Numba cache.

    scalelab warmup [--dtype float32] [--only attention]

A first kernel call in a fresh environment otherwise pays the compilation
(tens of seconds); after this, every process loads the machine code from the
cache. Prints one line per kernel group and dtype with the time it took.
"""

from __future__ import annotations

import argparse

from scalelab.cli import args as types


def register(subparsers) -> None:
    from scalelab.kernels.warmup import DTYPES, GROUPS

    parser = types.command(subparsers, "warmup", "compile the kernels ahead of time into the Numba cache",
                           "Compile attention, sampling and MoE kernels for the common signatures so later "
                           "processes load them from the Numba cache (NUMBA_CACHE_DIR) instead of compiling.",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", action="append", choices=DTYPES, metavar="DTYPE",
                        help="float32 or float64 (repeatable; default both)")
    parser.add_argument("--only", action="append", choices=sorted(GROUPS), metavar="GROUP",
                        help="attention, sampling or moe (repeatable; default all)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from scalelab.kernels.warmup import DTYPES, GROUPS, warm_up

    def report(group, dtype, seconds):
        print(f"{group:<10} {dtype:<8} {seconds:7.1f} s", flush=True)

    warm_up(args.dtype or DTYPES, args.only or tuple(GROUPS), progress=report)
    return 0
