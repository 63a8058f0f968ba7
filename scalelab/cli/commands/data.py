"""``scalelab data``: the training-data bottleneck from the command line.

    scalelab data exhaustion [--overtrain 5] [--epochs 2] [--samples N] [--seed S]
    scalelab data effective --tokens 4e11 --unique 1e11
    scalelab data tokens [--context 8192] [--english-tokens 7]

Each prints a plain-text table; bad input is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse

from scalelab.cli import args as types
from scalelab.cli.table import print_table


def register(subparsers) -> None:
    sub = types.command_group(
        subparsers, "data", "training data: stock exhaustion, repeated data, tokenization cost",
        "Training data as a bottleneck (Muennighoff et al. 2023; Villalobos et al. 2024).")

    from scalelab.simulations import data_supply as ds

    ex = sub.add_parser(
        "exhaustion",
        help="year the largest training set reaches the stock of public text",
        description="Monte Carlo of the year the largest model's training set reaches the stock of "
        "public human text (defaults after Villalobos et al. 2024, Epoch AI).",
    )
    ex.add_argument("--overtrain", type=types.positive, default=1.0, metavar="K",
                    help="tokens per parameter relative to compute-optimal (default 1; Llama 3 70B is ~10)")
    ex.add_argument("--epochs", type=types.real(1.0), default=1.0, metavar="E",
                    help="extra passes over unique data beyond the stock's own allowance (default 1)")
    ex.add_argument("--stock", type=types.positive, default=ds.STOCK_TOKENS_MEDIAN, metavar="TOKENS",
                    help=f"median stock of text in tokens (default {ds.STOCK_TOKENS_MEDIAN:g})")
    ex.add_argument("--growth", type=types.positive, default=ds.DATASET_GROWTH_PER_YEAR, metavar="X",
                    help=f"median yearly growth factor of dataset size (default {ds.DATASET_GROWTH_PER_YEAR:g})")
    ex.add_argument("--samples", type=types.samples, default=100_000, metavar="N",
                    help=f"Monte Carlo samples (default 1e5, at most {types.MAX_SAMPLES:.0e})")
    ex.add_argument("--seed", type=types.seed, default=0, metavar="S", help="seed (default 0)")
    ex.set_defaults(func=run_exhaustion)

    ef = sub.add_parser("effective", help="effective tokens of repeated data (Muennighoff et al. 2023)")
    ef.add_argument("--tokens", type=types.positive, required=True, metavar="D", help="tokens seen in training")
    ef.add_argument("--unique", type=types.positive, required=True, metavar="U", help="distinct tokens")
    ef.add_argument("--params", type=types.positive, default=None, metavar="N",
                    help="also print the data-constrained loss for this many parameters")
    ef.set_defaults(func=run_effective)

    tk = sub.add_parser("tokens", help="tokenization cost by language (MASSIVE, cl100k_base)")
    tk.add_argument("--context", type=types.positive_int, default=8192, metavar="T", help="context window in tokens (default 8192)")
    tk.add_argument("--english-tokens", type=types.positive, default=None, metavar="T",
                    help="median English tokens per message, to print messages per window")
    tk.set_defaults(func=run_tokens)


def run_exhaustion(args: argparse.Namespace) -> int:
    from scalelab.simulations.data_supply import exhaustion_year

    from scalelab.simulations import data_supply as ds

    # Keep the published relative uncertainty around whatever median the user gives.
    g_rel = [b / ds.DATASET_GROWTH_PER_YEAR for b in ds.DATASET_GROWTH_90]
    s_rel = [b / ds.STOCK_TOKENS_MEDIAN for b in ds.STOCK_TOKENS_90]
    growth_interval = (args.growth * g_rel[0], args.growth * g_rel[1])
    stock_interval = (args.stock * s_rel[0], args.stock * s_rel[1])
    res = exhaustion_year(
        overtrain=args.overtrain, epochs=args.epochs, stock_tokens=args.stock, stock_interval=stock_interval,
        growth_per_year=args.growth, growth_interval=growth_interval, n_samples=args.samples, seed=args.seed,
    )
    lo, hi = res.interval
    print(f"Stock of public text reached in {res.median_year:.1f} "
          f"(90% interval {lo:.1f} to {hi:.1f}; overtrain {args.overtrain:g}, epochs {args.epochs:g}, "
          f"{args.samples} samples, seed {args.seed})")
    rows = []
    table = res.table()
    for rec in table.itertuples(index=False):
        rows.append([rec.year, rec.demand_p50, rec.demand_p05, rec.demand_p95, rec.stock_p50, rec.stock_p05, rec.stock_p95])
    print_table(["year", "demand_tok", "demand_p05", "demand_p95", "stock_tok", "stock_p05", "stock_p95"], rows)
    return 0


def run_effective(args: argparse.Namespace) -> int:
    from scalelab.simulations.data_supply import data_constrained_loss, effective_tokens

    d_eff = effective_tokens(args.tokens, args.unique)
    headers = ["tokens", "unique", "epochs", "effective", "effective/raw"]
    row = [args.tokens, args.unique, args.tokens / args.unique, d_eff, d_eff / args.tokens]
    if args.params is not None:
        headers.append("loss")
        row.append(data_constrained_loss(args.params, args.tokens, args.unique))
    print_table(headers, [row])
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    from scalelab.simulations.data_supply import tokenization_disparity

    table = tokenization_disparity(context_tokens=args.context, english_tokens_per_message=args.english_tokens)
    headers = ["language", "cost_low", "cost_high", "window_share_low", "window_share_high"]
    if args.english_tokens is not None:
        headers += ["messages_per_window_low", "messages_per_window_high"]
    print_table(headers, table[headers].itertuples(index=False))
    return 0
