"""Shared ending of the ``python -m scalelab.bench.*`` tools."""

from __future__ import annotations

import os
import sys
from typing import Callable

#: Exit code after the reader of stdout went away (128 + SIGPIPE, as ``scalelab`` itself returns).
EXIT_BROKEN_PIPE = 141


def run_tool(main: Callable[[], int]) -> int:
    """Run a tool's ``main`` and return its exit code.

    A reader that went away (``python -m scalelab.bench.select ... | head -1``)
    ends the tool quietly with :data:`EXIT_BROKEN_PIPE`, no traceback: stdout is
    pointed at the null device so the interpreter's final flush cannot fail again.
    """
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe surfaces here at the latest
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return int(code or 0)
