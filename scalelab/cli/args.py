"""Shared argparse value types: every numeric option is range-checked when it is parsed.

A bad value becomes argparse's own error, which names the option
(``argument --samples: expected an integer in [1, 10000000], got '1e12'``), so
no command repeats the check and no simulation sees a value it would reject
later with a message that does not say which option was wrong.

Sizes (Monte Carlo samples, generated tokens) have upper bounds here, chosen so
the largest accepted value runs in seconds and well inside a laptop's memory;
running out of memory is never the mechanism that rejects an input.
"""

from __future__ import annotations

import argparse
import math

#: Largest Monte Carlo sample count a command accepts (8 bytes x a few arrays x 1e7 = a few hundred MB at most).
MAX_SAMPLES = 10_000_000
#: Largest seed: NumPy's ``default_rng`` takes any non-negative integer; 2**63 keeps it a plain int64.
MAX_SEED = 2**63 - 1


def _parse_number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """``> 0``, ``>= 1``, ``in (0, 1]``: the accepted range in words a user reads at a glance."""
    def show(v) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if high is None:
        return f"{'>' if low_open else '>='} {show(low)}" if low is not None else ""
    if low is None:
        return f"{'<' if high_open else '<='} {show(high)}"
    return f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False):
    """argparse type: a finite float in the interval ``low .. high`` (``None`` is unbounded)."""

    def parse(text: str) -> float:
        value = _parse_number(text)
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise argparse.ArgumentTypeError(
                f"expected a finite number {_range(low, high, low_open, high_open)}, got {text!r}".replace("  ", " "))
        return value

    return parse


def integer(low: int | None = None, high: int | None = None):
    """argparse type: an integer in ``[low, high]``; ``1e6`` is accepted when it is a whole number."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            number = _parse_number(text)
            if not (math.isfinite(number) and number.is_integer()):
                raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
            value = int(number)
        if (low is not None and value < low) or (high is not None and value > high):
            words = _range(low, None if high == MAX_SEED else high)
            raise argparse.ArgumentTypeError(f"expected an integer {words}, got {text!r}")
        return value

    return parse


positive = real(0.0, low_open=True)
non_negative = real(0.0)
fraction = real(0.0, 1.0, low_open=True)  # (0, 1]
positive_int = integer(1)
non_negative_int = integer(0)
samples = integer(1, MAX_SAMPLES)
seed = integer(0, MAX_SEED)


def figure_path(text: str) -> str:
    """argparse type for ``--plot``: the file actually written (``.png`` added when there is no suffix).

    Matplotlib appends its default format to a name without a suffix, so the
    command must print that name, not the one given.
    """
    from pathlib import Path

    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    path = Path(text)
    return str(path if path.suffix else path.with_name(path.name + ".png"))


def folder(text: str):
    """argparse type for an output folder: a non-empty path (``""`` would silently mean the current folder)."""
    from pathlib import Path

    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty string (use . for the current folder)")
    return Path(text)



def command(subparsers, name: str, help: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """Add the parser of the command ``name``: one line of ``help`` for the command list, a ``description`` for its own ``--help``."""
    return subparsers.add_parser(name, help=help, description=description, **kwargs)


def command_group(subparsers, name: str, help: str, description: str, *, dest: str | None = None,
                  metavar: str = "WHAT"):
    """Add the command ``name``; its own sub-commands go on the returned argparse action.

    Run without one of them, the command prints its help and exits 2 (a usage error),
    the same for every group. ``dest`` defaults to ``"<name>_command"``.
    """
    parser = command(subparsers, name, help, description)
    actions = parser.add_subparsers(dest=dest or f"{name}_command", metavar=metavar)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return actions


def request_length_args(parser: argparse.ArgumentParser, *, prompt: int, output: int) -> None:
    """``--prompt`` and ``--output``: median request lengths in tokens, log-normal with sigma 0.5.

    The generated workloads of ``serve`` and ``engine`` draw lengths this way; each
    command gives its own defaults and checks the values where it builds the workload.
    """
    parser.add_argument("--prompt", type=int, default=prompt,
                        help=f"median prompt tokens, log-normal sigma 0.5 (default {prompt})")
    parser.add_argument("--output", type=int, default=output,
                        help=f"median output tokens, log-normal sigma 0.5 (default {output})")
