"""``scalelab regress``: the performance-regression gate for CI.

Runs ``asv continuous BASE HEAD`` with interleaved rounds on this machine and
prints a Markdown table. Exit codes: 0 no significant slowdown beyond the
factor, 1 at least one, 2 something broke (bad revision, failed build,
benchmark error). See docs/regression-gate.md.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from scalelab.bench.regress import ALPHA, DEFAULT_FACTOR, DEFAULT_REPEAT, DEFAULT_ROUNDS, MACHINE_NAME

    parser = subparsers.add_parser(
        "regress",
        help="performance-regression gate: asv continuous BASE vs HEAD",
        description=(
            "Run `asv continuous BASE HEAD` with interleaved rounds and judge the stored "
            f"samples: exit 1 when a benchmark is slower by more than --factor and the "
            f"difference is significant (Mann-Whitney U, p < {ALPHA:g}), 0 when none is, "
            "2 when something broke (bad revision, failed build, benchmark error)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("base", nargs="?", default=None, metavar="BASE",
                        help="base revision (default: merge base of HEAD with main)")
    parser.add_argument("head", nargs="?", default="HEAD", metavar="HEAD",
                        help="revision under test (default: HEAD)")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR, metavar="F",
                        help=f"slowdown factor that counts as a regression (default {DEFAULT_FACTOR:g}, "
                             "chosen from the A/A experiment in docs/regression-gate.md)")
    parser.add_argument("--bench", metavar="REGEX", default=None,
                        help="only benchmarks whose name matches (asv --bench)")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="also write the Markdown table here")
    parser.add_argument("--json", dest="json_output", metavar="FILE", default=None,
                        help="write every compared row (ratios, p-values) as JSON")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, metavar="N",
                        help=f"interleaved rounds per revision (default {DEFAULT_ROUNDS})")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, metavar="N",
                        help=f"timing samples per round (default {DEFAULT_REPEAT})")
    parser.add_argument("--machine", default=MACHINE_NAME, metavar="NAME",
                        help=f"asv machine name; registered automatically if missing (default {MACHINE_NAME})")
    parser.add_argument("--repo", "-C", metavar="DIR", default=".",
                        help="run in the git work tree containing DIR (default: current directory)")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="gate on the first run alone (by default a flagged benchmark is "
                             "re-measured and gates only if the rerun flags it too)")
    parser.add_argument("--log", metavar="FILE", default=None, help="keep asv's full output here")
    parser.add_argument("--quiet", action="store_true", help="do not echo asv's output to stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scalelab.bench.regress import run_gate

    echo = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = run_gate(
        args.base, args.head, factor=args.factor, bench=args.bench, output=args.output,
        json_output=args.json_output, repo=args.repo, machine=args.machine, rounds=args.rounds,
        repeat=args.repeat, log_path=args.log, echo=echo, confirm=args.confirm,
    )
    if result.table:
        print(result.table, end="")
    for problem in result.problems:
        print(f"scalelab regress: {problem}", file=sys.stderr)
    cache = ", ".join(f"{sha[:10]}: {n}" for sha, n in result.numba_cache_files.items())
    print(f"scalelab regress: exit {result.exit_code}; Numba cache index files per revision: {cache}",
          file=sys.stderr)
    return result.exit_code
