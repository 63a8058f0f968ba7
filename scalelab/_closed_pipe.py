"""Ending a command quietly when the reader of its stdout went away.

``scalelab ... | head -1`` and ``python -m scalelab.bench.select ... | head -1``
close the pipe before the command has written everything. The next write (or
the interpreter's final flush) raises ``BrokenPipeError``; a shell tool ends
there with no message and exit status 128 + SIGPIPE. The ``scalelab`` command
line (:mod:`scalelab.cli.cli`) and the ``python -m scalelab.bench.*`` tools do
the same through this module.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

#: Exit code after the reader of stdout went away (128 + SIGPIPE, what a shell reports for ``yes | head``).
EXIT_BROKEN_PIPE = 141


def silence_stdout() -> None:
    """Point stdout at the null device so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass


def run_tool(main: Callable[[], int]) -> int:
    """Run a tool's ``main`` and return its exit code.

    A closed pipe ends the tool quietly with :data:`EXIT_BROKEN_PIPE`, no traceback.
    """
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe surfaces here at the latest
    except BrokenPipeError:
        silence_stdout()
        return EXIT_BROKEN_PIPE
    return int(code or 0)
