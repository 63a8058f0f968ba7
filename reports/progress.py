"""A dependency-free progress bar for the report build (redrawn on a terminal, one line per step elsewhere)."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO


class Progress:
    """A dependency-free progress bar on a text stream.

    On a terminal it redraws one line with ``\\r`` (section i/n, name, elapsed
    time and the section's latest message); on anything else (CI logs, pipes)
    it prints one line per finished section and never a carriage return.
    """

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO | None = None, *, tty: bool | None = None):
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                tty = False
        self.tty = tty
        self.start = time.perf_counter()
        self.index = 0
        self.name = ""
        self.message = ""
        self._section_start = self.start
        self._last_draw = 0.0
        self._width = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        if self.tty:
            # Keeps the elapsed time moving while a section computes without reporting.
            self._ticker = threading.Thread(target=self._tick, name="scalelab-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._draw(force=True)

    def begin(self, index: int, name: str) -> None:
        self.index, self.name, self.message = index, name, "building"
        self._section_start = time.perf_counter()
        self._draw(force=True)

    def update(self, message: str) -> None:
        self.message = " ".join(str(message).split())
        self._draw()

    def end(self, status: str) -> None:
        seconds = time.perf_counter() - self._section_start
        if self.tty:
            self.message = f"{status} ({seconds:.1f} s)"
            self._draw(force=True)
        else:
            self._write(f"[{self.index}/{self.total}] {self.name}: {status} ({seconds:.1f} s)\n")

    def note(self, message: str) -> None:
        """A step outside any section (e.g. writing the pages)."""
        self.name, self.message = message, ""
        if self.tty:
            self._draw(force=True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        with self._lock:
            if self.tty and self._width:
                self._write("\r" + " " * self._width + "\r")
                self._width = 0

    def _draw(self, force: bool = False) -> None:
        if not self.tty or self._stop.is_set():
            return
        with self._lock:
            self._draw_locked(force)

    def _draw_locked(self, force: bool) -> None:
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        done = self.index - 1 if self.index else 0
        filled = int(self.WIDTH * done / self.total)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = f"[{bar}] {self.index}/{self.total} {self.name} {now - self.start:5.1f}s"
        if self.message:
            line += f"  {self.message}"
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        if columns <= 0:  # a pseudo-terminal may report no size
            columns = 100
        line = line[: max(columns - 1, 20)]
        pad = max(self._width - len(line), 0)
        self._write("\r" + line + " " * pad)
        self._width = len(line)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass
