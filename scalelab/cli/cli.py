"""The ``scalelab`` console script.

Each subcommand lives in its own module under :mod:`scalelab.cli.commands` and
exposes ``register(subparsers)``; the module adds its parser and sets
``func`` (called with the parsed namespace, returning an exit code).

Errors follow one rule: bad input is one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from scalelab import __version__

# Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "scalelab.cli.commands.report",
    "scalelab.cli.commands.scaling",
    "scalelab.cli.commands.hparams",
    "scalelab.cli.commands.data",
    "scalelab.cli.commands.energy",
    "scalelab.cli.commands.inference",
    "scalelab.cli.commands.serve",
    "scalelab.cli.commands.regress",
    "scalelab.cli.commands.warmup",
)


class UsageError(Exception):
    """Raised for bad command-line input; reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse hook
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scalelab",
        description="Measure and model what foundation models cost.",
    )
    parser.add_argument("--version", action="version", version=f"scalelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that subcommand is not part of this build
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        code = args.func(args)
    except UsageError as exc:
        print(str(exc).splitlines()[0] if str(exc) else "scalelab: error", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"scalelab: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scalelab: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
