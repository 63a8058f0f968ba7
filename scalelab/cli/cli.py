"""The ``scalelab`` console script.

Each subcommand lives in its own module under :mod:`scalelab.cli.commands` and
exposes ``register(subparsers)``; the module adds its parser and sets
``func`` (called with the parsed namespace, returning an exit code).

Errors follow one rule: bad input is one line on stderr and exit code 2,
never a traceback. That includes a file that cannot be read or written (the
message names the path) and a size too large to run (the option types in
:mod:`scalelab.cli.args` bound them up front; a ``MemoryError`` that still
happens is reported the same way). When the reader of the output goes away
(``scalelab data exhaustion | head -1``) the command stops quietly with exit
code 141 (128 + SIGPIPE), as a Unix tool killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from scalelab import __version__
from scalelab._closed_pipe import EXIT_BROKEN_PIPE, silence_stdout

# Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "scalelab.cli.commands.report",
    "scalelab.cli.commands.scaling",
    "scalelab.cli.commands.hparams",
    "scalelab.cli.commands.data",
    "scalelab.cli.commands.energy",
    "scalelab.cli.commands.inference",
    "scalelab.cli.commands.serve",
    "scalelab.cli.commands.engine",
    "scalelab.cli.commands.regress",
    "scalelab.cli.commands.warmup",
)


class UsageError(Exception):
    """Raised for bad command-line input; reported as one line, exit code 2."""


# argparse only treats "-5" and "-.5" as numbers; "-1e24" and "-inf" would be read as an
# unknown option ("expected one argument") instead of reaching the option's range check.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _os_error_message(exc: OSError) -> str:
    """``PATH: reason`` for an OSError, naming the path as the user typed it."""
    reason = exc.strerror or _one_line(exc)
    if exc.filename is None:
        return reason
    text = f"{os.fsdecode(exc.filename)}: {reason}"
    if exc.filename2 is not None:
        text += f" (-> {os.fsdecode(exc.filename2)})"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return 2
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler below
    except UsageError as exc:
        print(str(exc).splitlines()[0] if str(exc) else "scalelab: error", file=sys.stderr)
        return 2
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        print(f"scalelab: error: {_os_error_message(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("scalelab: error: out of memory; use smaller sizes", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError) as exc:
        print(f"scalelab: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scalelab: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
