"""``scalelab hparams``: published optimal learning-rate and batch-size laws, and fits of a sweep.

    scalelab hparams optimal --compute 1e23 [--law deepseek2024]
    scalelab hparams optimal --params 1e9 --tokens 1e11 --law steplaw2025
    scalelab hparams optimal --loss 3.0 --law kaplan2020
    scalelab hparams fit sweep.csv [--margin 0.0025] [--bootstrap 1000] [--seed 0] [--target 1e23] [--plot f.png]

``fit`` reads ``compute`` (or ``N`` and ``D``), ``lr``, ``batch_size`` (tokens) and ``loss`` columns.
"""

from __future__ import annotations

from scalelab.cli import args as types


_FLAGS = {"compute": "compute", "n": "params", "d": "tokens", "loss": "loss"}


def _run_optimal(args) -> int:
    from scalelab.simulations.hyperparams import LawInputError, get_hparam_law, optimal_batch_size, optimal_lr

    law = get_hparam_law(args.law)
    given = {"compute": args.compute, "n": args.params, "d": args.tokens, "loss": args.loss}
    lines = [f"law:                {law.key}  ({law.source})"]
    for key, label, unit in (("compute", "compute C", "FLOPs"), ("n", "parameters N", ""),
                             ("d", "tokens D", ""), ("loss", "loss L", "nats/token")):
        if given[key] is not None:
            lines.append(f"{label + ':':20s}{given[key]:.4g} {unit}".rstrip())
    supplied = {k for k, v in given.items() if v is not None}
    if not law.traced:
        optimal_lr(law, **given)  # raises UntracedLawError naming the paper
    if supplied != set(law.inputs):
        raise LawInputError(f"{law.key} takes --{' --'.join(_FLAGS[k] for k in law.inputs)} ({law.variables}); "
                            f"got {', '.join('--' + _FLAGS[k] for k in sorted(supplied)) or 'none'}")
    lr_inputs = {k: given[k] for k in (law.lr.inputs if law.lr else ())}
    batch_inputs = {k: given[k] for k in (law.batch.inputs if law.batch else ())}
    if law.lr is not None:
        lines.append(f"learning rate:      {optimal_lr(law, **lr_inputs):.3e}   ({law.lr_formula})")
    if law.batch is not None:
        b = optimal_batch_size(law, **batch_inputs)
        lines.append(f"{law.batch_kind} batch:{'':{13 - len(law.batch_kind)}s}{b:.4g} tokens   ({law.batch_formula})")
    print("\n".join(lines))
    return 0


def _run_fit(args) -> int:
    from scalelab.simulations.hyperparams import fit_hparam_sweep, read_sweep

    runs = read_sweep(args.runs)
    fit = fit_hparam_sweep(runs, margin=args.margin, n_bootstrap=args.bootstrap, seed=args.seed)
    pct = round(100 * fit.level)
    print(f"{fit.n_runs} runs over {len(fit.optima)} compute budgets; near-optimal margin {100 * fit.margin:.3g}%")
    print(f"{'':16s} {'estimate':>11s} {f'{pct}% interval':>27s}")
    for name, row in fit.summary().iterrows():
        print(f"{name:16s} {row.estimate:11.5g}   [{row.lo:11.5g}, {row.hi:11.5g}]")
    if args.bootstrap < 2:
        print("no bootstrap (use --bootstrap N >= 2 for intervals)")
    else:
        print(f"bootstrap: {fit.bootstrap.shape[0]} stratified resamples (seed {fit.seed})")
    if args.target:
        p = fit.predict(args.target).iloc[0]
        print(f"at C = {args.target:.4g}: lr {p.lr:.3g} [{p.lr_lo:.3g}, {p.lr_hi:.3g}], "
              f"batch {p.batch_size:.4g} [{p.batch_lo:.4g}, {p.batch_hi:.4g}] tokens")
    if args.plot:
        from scalelab.report.figures.hparams import sweep_fit_figure

        sweep_fit_figure(fit, runs, targets=[args.target] if args.target else None).savefig(args.plot)
        print(f"figure written to {args.plot}")
    return 0


def register(subparsers) -> None:
    actions = types.command_group(
        subparsers, "hparams", "optimal learning rate and batch size: published laws and sweep fits",
        "Scaling extrapolation of hyperparameters: the published laws for the optimal learning "
        "rate and batch size, or a DeepSeek-style fit of your own sweep.",
        dest="hparams_action", metavar="ACTION")

    from scalelab.simulations.hyperparams import DEEPSEEK_NEAR_OPTIMAL_MARGIN, HPARAM_LAWS

    opt = actions.add_parser("optimal", help="a published law's optimal learning rate and batch size")
    opt.add_argument("--law", choices=sorted(HPARAM_LAWS), default="deepseek2024", help="law (default deepseek2024)")
    opt.add_argument("--compute", type=types.positive, help="training FLOPs (deepseek2024: C = M D)")
    opt.add_argument("--params", type=types.positive, help="non-embedding parameters N (steplaw2025)")
    opt.add_argument("--tokens", type=types.positive, help="training tokens D (steplaw2025)")
    opt.add_argument("--loss", type=types.positive, help="loss reached, nats/token (kaplan2020)")
    opt.set_defaults(func=_run_optimal)

    fit = actions.add_parser("fit", help="fit lr_opt and B_opt against compute from a sweep CSV")
    fit.add_argument("runs", help="CSV with compute (or N, D), lr, batch_size, loss")
    fit.add_argument("--margin", type=types.real(0.0, 1.0, high_open=True), default=DEEPSEEK_NEAR_OPTIMAL_MARGIN,
                     help=f"near-optimal relative margin (default {DEEPSEEK_NEAR_OPTIMAL_MARGIN})")
    fit.add_argument("--bootstrap", type=types.non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=types.seed, default=0, help="bootstrap seed (default 0)")
    fit.add_argument("--target", type=types.positive, help="also predict at this compute budget (FLOPs)")
    fit.add_argument("--plot", metavar="PNG", type=types.figure_path, help="write the sweep with the fitted laws to this file")
    fit.set_defaults(func=_run_fit)
