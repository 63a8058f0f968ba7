"""``scalelab report``: build the plotted report (figures, CSV, report.md, index.html).

Exit codes: 0 when every section built, 1 when any section failed (the report
is still written, with the failure shown in its place), 2 for bad input or
when another report is being built into the same folder, 143 after SIGTERM
(the previous report is left as it was).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scalelab.cli import args as types

DEFAULT_OUT = Path("reports") / "output"


def register(subparsers) -> None:
    from scalelab.report.registry import SECTION_NAMES

    parser = types.command(
        subparsers, "report", "build every figure and the HTML/Markdown report",
        "Build the plotted report: PNG and SVG figures, the numbers behind each as CSV, "
        "report.md and a self-contained index.html that opens from disk. "
        f"Sections: {', '.join(SECTION_NAMES)}.",
        epilog="Exit status: 0 when every section built, 1 when any failed (it is shown in the report), "
               "2 for bad arguments.",
    )
    parser.add_argument(
        "--out", metavar="DIR", type=types.folder, default=None,
        help=f"output folder (default: {DEFAULT_OUT}/ in the checkout); a previous report there is replaced",
    )
    parser.add_argument(
        "--only", metavar="SECTION", nargs="+", action="extend", default=None,
        help=f"build only these sections (any of: {', '.join(SECTION_NAMES)})",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="reduced sample counts: the whole report in under a minute",
    )
    parser.add_argument(
        "--seed", type=types.seed, default=0, metavar="N",
        help="base seed for every Monte Carlo draw (default 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from scalelab.report.builder import build_report
    from scalelab.report.machine import find_repo_root
    from scalelab.report.registry import select_sections

    select_sections(args.only)  # an unknown name is a usage error before anything runs
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    out = args.out
    if out is None:
        root = find_repo_root()
        out = (root / DEFAULT_OUT) if root is not None else DEFAULT_OUT
    from scalelab.report.staging import ReportBusyError, ReportInterrupted

    try:
        result = build_report(out, only=args.only, quick=args.quick, seed=args.seed, stream=sys.stderr)
    except ReportBusyError as exc:
        raise ValueError(str(exc)) from None
    except ReportInterrupted:
        print("scalelab report: terminated; the previous report is unchanged", file=sys.stderr)
        return 143  # 128 + SIGTERM

    print(result.summary())
    return result.exit_code
