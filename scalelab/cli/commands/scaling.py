"""``scalelab scaling``: compute-optimal allocation and Approach-3 fits from the command line.

    scalelab scaling optimal --compute 1e24 [--law besiroglu2024]
    scalelab scaling fit runs.csv [--bootstrap 1000] [--seed 0] [--drop-highest 0] [--plot out.png]

``fit`` reads ``N, D, loss`` columns or the Chinchilla Figure-4 extraction's
``Model Size, Training FLOP, loss`` (then ``D = C / (6N)``).
"""

from __future__ import annotations

from scalelab.cli import args as types


def _run_optimal(args) -> int:
    from scalelab.simulations.scaling import get_law

    law = get_law(args.law)
    n, d = law.compute_optimal(args.compute)
    print(f"law:                   {law.name}  ({law.source})")
    print(f"compute C:             {args.compute:.4g} FLOPs")
    print(f"parameters N_opt:      {n:.4g}")
    print(f"training tokens D_opt: {d:.4g}")
    print(f"tokens per parameter:  {d / n:.4g}")
    print(f"predicted loss:        {law.loss(n, d):.4f} nats/token")
    return 0


def _run_fit(args) -> int:
    from scalelab.simulations.scaling import drop_highest_loss, fit_scaling_law, read_runs

    runs = read_runs(args.runs)
    if args.drop_highest:
        runs = drop_highest_loss(runs, args.drop_highest)
    fit = fit_scaling_law(runs, n_bootstrap=args.bootstrap, seed=args.seed)
    pct = round(100 * fit.level)
    print(f"Approach-3 fit on {fit.n_runs} runs ({fit.n_starts} starts, objective {fit.objective:.6g})")
    if args.bootstrap >= 2:
        table = fit.summary()
        print(f"{'':6s} {'estimate':>12s} {'SE':>12s} {f'{pct}% interval':>27s}")
        for name, row in table.iterrows():
            print(f"{name:6s} {row.estimate:12.5g} {row.se:12.4g}   [{row.lo:11.5g}, {row.hi:11.5g}]")
        print(f"bootstrap: {fit.bootstrap.shape[0]} refits (seed {fit.seed}), {fit.n_bootstrap_failed} dropped")
    else:
        for name, value in fit.estimates.items():
            print(f"{name:6s} {value:12.5g}")
        print("no bootstrap (use --bootstrap N >= 2 for intervals)")
    if args.plot:
        from scalelab.report.figures.scaling import fitted_law_figure

        fig = fitted_law_figure(fit, runs)
        fig.savefig(args.plot)
        print(f"figure written to {args.plot}")
    return 0


def register(subparsers) -> None:
    actions = types.command_group(
        subparsers, "scaling", "compute-optimal allocation and scaling-law fits",
        "Scaling laws: compute-optimal (N, D) for a budget, or an Approach-3 fit of training runs.",
        dest="scaling_action", metavar="ACTION")

    from scalelab.simulations.scaling import LAWS

    opt = actions.add_parser("optimal", help="compute-optimal N and D for a FLOP budget")
    opt.add_argument("--compute", type=types.positive, required=True, help="training budget in FLOPs, e.g. 1e24")
    opt.add_argument("--law", choices=sorted(LAWS), default="besiroglu2024", help="preset (default besiroglu2024)")
    opt.set_defaults(func=_run_optimal)

    fit = actions.add_parser("fit", help="fit L(N, D) = E + A/N^alpha + B/D^beta to runs (Approach 3)")
    fit.add_argument("runs", help="CSV with N, D, loss (or Model Size, Training FLOP, loss)")
    fit.add_argument("--bootstrap", type=types.non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=types.seed, default=0, help="bootstrap seed (default 0)")
    fit.add_argument("--drop-highest", type=types.non_negative_int, default=0,
                     help="drop this many highest-loss runs first (Besiroglu et al. 2024 drop 5)")
    fit.add_argument("--plot", metavar="PNG", type=types.figure_path, help="write the fitted law with its bootstrap band to this file")
    fit.set_defaults(func=_run_fit)
