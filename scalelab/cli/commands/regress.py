"""``scalelab regress``: the performance-regression gate for CI.

Runs ``asv continuous BASE HEAD`` with interleaved rounds on this machine and
prints a Markdown table. Exit codes: 0 no confirmed significant slowdown
beyond the factor, 1 at least one, 2 something broke (bad revision, failed
build, benchmark error, a ``--bench`` that selects nothing). ``--help`` shows
an example table for each. See docs/regression-gate.md.
"""

from __future__ import annotations

import argparse
import sys

from scalelab.cli import args as types


EXIT_CODES = """\
exit codes, each with the table of a real run on this 2-core VM:

  0  no benchmark is slower by more than --factor with p < 0.002, or a flag was
     not repeated by the confirmation run ("unconfirmed"), or --select auto
     found nothing the diff can affect (docs, tests, tools only: it says so per
     path and builds nothing). A/A: HEAD changes
     only README.md; B=1 flagged at 1.52x, its confirmation measured 0.91x:

     Benchmarks, base `d05979a3f6` vs head `aa4d8d3230` (regression = slower by more than 1.5x with p < 0.002):

     | benchmark | parameters | base | head | ratio | significant | verdict |
     |---|---|---:|---:|---:|---|---|
     | `gate_probe.TopKProbe.time_top_k` | 1 | 87.2 μs | 132 μs | 1.518 | yes (p=5.5e-12) | unconfirmed (rerun 0.91x) |
     | `gate_probe.DecodeProbe.time_decode_attention` | - | 149 μs | 190 μs | 1.272 | no (p=1.0e-01) | same |
     | `gate_probe.TopKProbe.time_top_k` | 4 | 406 μs | 343 μs | 0.847 | no (p=3.5e-02) | same |

  1  at least one benchmark x parameter combination is, in the first run and
     again in the confirmation run of just those combinations. top_k
     validated by a second pass on copies, and decode_attention spinning three
     times as long as each call took, --bench gate_probe:

     Benchmarks, base `d05979a3f6` vs head `8039a96d27` (regression = slower by more than 1.5x with p < 0.002):

     | benchmark | parameters | base | head | ratio | significant | verdict |
     |---|---|---:|---:|---:|---|---|
     | `gate_probe.DecodeProbe.time_decode_attention` | - | 179 μs | 1.85 ms | 10.349 | yes (p=1.9e-25) | **regression** (rerun 8.45x) |
     | `gate_probe.TopKProbe.time_top_k` | 4 | 377 μs | 3.14 ms | 8.325 | yes (p=8.0e-21) | **regression** (rerun 3.75x) |
     | `gate_probe.TopKProbe.time_top_k` | 1 | 116 μs | 235 μs | 2.022 | yes (p=1.1e-21) | **regression** (rerun 2.10x) |

  2  something broke: bad revision or argument, a --bench that selects nothing
     (said before any build), failed build, a benchmark that raised on HEAD,
     asv failing. decode_attention raising on HEAD, --bench gate_probe --rounds 1:

     Benchmarks, base `d05979a3f6` vs head `55856852c0` (regression = slower by more than 1.5x with p < 0.002):

     | benchmark | parameters | base | head | ratio | significant | verdict |
     |---|---|---:|---:|---:|---|---|
     | `gate_probe.DecodeProbe.time_decode_attention` | - | 199 μs | failed | n/a | n/a | **failed** |
     | `gate_probe.TopKProbe.time_top_k` | 4 | 389 μs | 466 μs | 1.199 | no (p=9.0e-03) | same |
     | `gate_probe.TopKProbe.time_top_k` | 1 | 92.8 μs | 81.1 μs | 0.874 | no (p=3.2e-02) | same |

     scalelab regress: benchmarks failed: gate_probe.DecodeProbe.time_decode_attention
     scalelab regress: exit 2; Numba cache index files per revision: d05979a3f6: 14, 55856852c0: 5
"""


def register(subparsers) -> None:
    from scalelab.bench.regress import ALPHA, DEFAULT_FACTOR, DEFAULT_REPEAT, DEFAULT_ROUNDS, MACHINE_NAME

    parser = types.command(
        subparsers, "regress", "performance-regression gate: asv continuous BASE vs HEAD",
        "Run `asv continuous BASE HEAD` with interleaved rounds and judge the stored "
        f"samples: exit 1 when a benchmark is slower by more than --factor and the "
        f"difference is significant (Mann-Whitney U, p < {ALPHA:g}), 0 when none is, "
        "2 when something broke (bad revision, failed build, benchmark error, a --bench "
        "that selects nothing).",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("base", nargs="?", default=None, metavar="BASE",
                        help="base revision (default: merge base of HEAD with main)")
    parser.add_argument("head", nargs="?", default="HEAD", metavar="HEAD",
                        help="revision under test (default: HEAD)")
    parser.add_argument("--factor", type=float, default=DEFAULT_FACTOR, metavar="F",
                        help=f"slowdown factor that counts as a regression (default {DEFAULT_FACTOR:g}, "
                             "chosen from the A/A experiment in docs/regression-gate.md)")
    parser.add_argument("--bench", metavar="REGEX", default=None,
                        help="only benchmarks whose name matches (asv --bench); asv searches a "
                             "parameterized benchmark's name with its parameters, "
                             "'name(p1, p2)', so end a pattern with '\\(' rather than '$'. "
                             "Checked before anything is built")
    parser.add_argument("--select", choices=("auto", "all"), default="auto",
                        help="without --bench: 'auto' (default) runs the benchmarks the diff between "
                             "the merge base and HEAD can affect, our implementations at 1 thread, "
                             "plus a headline set (every module, same filtering, when a shared helper "
                             "changed), and nothing (exit 0) for a docs-only diff; 'all' runs the whole "
                             "suite, peers and 2 threads included. The choice and its reasons go to stderr")
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
        repeat=args.repeat, log_path=args.log, echo=echo, confirm=args.confirm, select=args.select,
    )
    if args.quiet and result.selection:
        print("\n".join(f"scalelab regress: {line}" for line in result.selection.splitlines()), file=sys.stderr)
    if result.table:
        print(result.table, end="")
    for problem in result.problems:
        print(f"scalelab regress: {problem}", file=sys.stderr)
    cache = ", ".join(f"{sha[:10]}: {n}" for sha, n in result.numba_cache_files.items())
    print(f"scalelab regress: exit {result.exit_code}; Numba cache index files per revision: {cache}",
          file=sys.stderr)
    return result.exit_code
