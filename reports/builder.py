"""Build the plotted report: run every section, write its files, render the pages.

The builder is the only code that writes report output. For each section it

1. imports ``scalelab.report.sections.<name>`` and calls ``build(ctx)``; an import
   error or an exception inside ``build`` becomes a *failed* section that the
   pages show with its message and traceback, while the other sections still
   build (the command then exits 1);
2. renders every :class:`~scalelab.report.section.FigureItem` as PNG and SVG (plus its
   data as CSV) and every :class:`~scalelab.report.section.TableItem` as CSV, each to a
   temporary name, renamed into place only once the whole section rendered, so a
   failure never leaves half a section;
3. writes ``report.md`` and a self-contained ``index.html`` (inline CSS, no
   scripts, relative links only, so it opens from disk with no server).

All of it goes to a hidden staging folder beside the output folder, which is
swapped in by a folder rename only at the end: the output folder always holds
one whole report, old or new, never figures of one run beside the pages of
another. SIGTERM during a build unwinds it and removes the staging and scratch
folders (the old report stays); what a SIGKILL leaves is swept by the next run.
A lock file beside the folder (``.<name>.scalelab-lock``, ``flock``) makes a
second build into the same folder fail at once with a one-line error.

Re-running into the same folder replaces the previous output: a manifest
(``.scalelab-manifest.json``) lists every file a run produced, and files that
an earlier run produced but this one did not are gone afterwards. Files the
builder did not produce are carried over into the new folder (hard links).

Layout of the output folder::

    index.html, report.md
    figures/<section>_<name>.png, .svg
    data/<section>_<name>.csv       (figure data and tables)

The pieces live beside it: :mod:`~scalelab.report.registry` (which sections),
:mod:`~scalelab.report.staging` (atomic files and the manifest),
:mod:`~scalelab.report.render` (Markdown, HTML and CSS),
:mod:`~scalelab.report.progress` and :mod:`~scalelab.report.machine`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, TextIO

import pandas as pd

from scalelab.report.machine import describe_machine, find_repo_root
from scalelab.report.outcome import RenderedItem, ReportResult, SectionOutcome
from scalelab.report.progress import Progress
from scalelab.report.registry import SectionSpec, select_sections
from scalelab.report.render import render_html, render_markdown
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.report.staging import (
    DATA_DIR, FIGURE_DIR, SCRATCH_PREFIX, STAGE_TAG, ReportInterrupted, Staging, carry_foreign, output_lock,
    read_manifest, remove_leftover_temps, safe_relative, sibling, sweep_stale, swap_in, write_manifest,
)

PNG_DPI = 150
_NAME_RE = re.compile(r"^[a-z0-9_]+$")


# --------------------------------------------------------------------------- rendering items


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_csv(staging: Staging, rel: str, frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{rel}: data must be a pandas DataFrame, got {type(frame).__name__}")
    keep_index = not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None
    frame.to_csv(staging.path(rel), index=keep_index)


def _save_figure(staging: Staging, stem: str, figure) -> tuple[str, str]:
    from matplotlib.figure import Figure

    from scalelab.report.figures.style import RC
    import matplotlib

    if not isinstance(figure, Figure):
        raise TypeError(f"figure {stem!r} must be a matplotlib Figure, got {type(figure).__name__}")
    png, svg = f"{FIGURE_DIR}/{stem}.png", f"{FIGURE_DIR}/{stem}.svg"
    with matplotlib.rc_context(RC):
        # Dates in the metadata would make every re-run differ byte for byte.
        figure.savefig(staging.path(png), format="png", dpi=PNG_DPI, metadata={"Software": None})
        # The layout solved for the PNG holds for the SVG too (positions are in figure
        # fractions, sizes in points); freezing it skips a second solve, ~40% of a save.
        try:
            figure.set_layout_engine("none")
        except (RuntimeError, ValueError):
            pass
        figure.savefig(staging.path(svg), format="svg", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(figure)  # a no-op for figures built with new_figure; frees any made through pyplot
    return png, svg


def _render_section(section: Section, name: str, staging: Staging) -> list[RenderedItem]:
    """Write one section's figures and tables to staged files; return what the pages show."""
    if not isinstance(section, Section):
        raise TypeError(f"build() must return scalelab.report.section.Section, got {type(section).__name__}")
    rendered: list[RenderedItem] = []
    seen: set[str] = set()
    for item in section.items:
        if isinstance(item, TextItem):
            rendered.append(RenderedItem(kind="text", markdown=str(item.markdown)))
            continue
        if not isinstance(item, (FigureItem, TableItem)):
            raise TypeError(f"section item must be FigureItem, TableItem or TextItem, got {type(item).__name__}")
        if not isinstance(item.name, str) or not _NAME_RE.match(item.name):
            raise ValueError(f"item name must match [a-z0-9_]+, got {item.name!r}")
        if item.name in seen:
            raise ValueError(f"item name {item.name!r} is used twice in section {name!r}")
        seen.add(item.name)
        stem = f"{name}_{item.name}"
        if isinstance(item, FigureItem):
            png, svg = _save_figure(staging, stem, item.figure)
            csv = None
            if item.data is not None:
                csv = f"{DATA_DIR}/{stem}.csv"
                _write_csv(staging, csv, item.data)
            rendered.append(RenderedItem(kind="figure", name=item.name, caption=str(item.caption),
                                         png=png, svg=svg, csv=csv))
        else:
            csv = f"{DATA_DIR}/{stem}.csv"
            _write_csv(staging, csv, item.table)
            rendered.append(RenderedItem(kind="table", name=item.name, caption=str(item.caption),
                                         csv=csv, table=item.table, float_format=item.float_format))
    return rendered


# --------------------------------------------------------------------------- build


def _build_one(spec: SectionSpec, ctx: SectionContext):
    """Import the section module and call ``build``; return (title, Section)."""
    module = importlib.import_module(spec.module)
    title = getattr(module, "TITLE", spec.title)
    build = getattr(module, "build", None)
    if not callable(build):
        raise TypeError(f"{spec.module} has no build(ctx) function")
    return str(title), build(ctx)


def build_report(
    out_dir: str | os.PathLike,
    *,
    only: list[str] | tuple[str, ...] | None = None,
    quick: bool = False,
    seed: int = 0,
    stream: TextIO | None = None,
    tty: bool | None = None,
    repo_root: Path | None = None,
    builder: Callable[[SectionSpec, SectionContext], tuple[str, Section]] | None = None,
) -> ReportResult:
    """Build the report into ``out_dir``; see the module docstring for what is written.

    Parameters
    ----------
    out_dir : path
        Output folder, created when missing.
    only : list of str, optional
        Short section names (``SECTION_NAMES``) to build; default all.
    quick : bool
        Reduced sample counts (the ``--quick`` flag).
    seed : int
        Base seed handed to every section.
    stream, tty :
        Where the progress bar goes (default stderr) and whether to redraw in place.
    repo_root : Path, optional
        The checkout (for asv results and the git commit); found automatically.

    Returns
    -------
    ReportResult
        Per-section outcomes, the files written and removed; ``exit_code`` is 1
        when any section failed.
    """
    t0 = time.perf_counter()
    specs = select_sections(only)
    if os.fspath(out_dir) == "":
        raise ValueError("--out must name a folder, got an empty string (use --out . for the current folder)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory, but {out} is a file")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {out}: {parent} is a file, not a directory")
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    root = find_repo_root() if repo_root is None else Path(repo_root)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    build = builder or _build_one

    with output_lock(out), _terminate_raises():
        sweep_stale(out)
        if out.is_dir():
            remove_leftover_temps(out)
        previous = read_manifest(out)
        stage = sibling(out, STAGE_TAG, token)
        stage.mkdir()
        try:
            outcomes, written, machine = _build_into(stage, specs, build, quick=quick, seed=seed, root=root,
                                                     token=token, stream=stream, tty=tty, t0=t0)
            carry_foreign(out, stage, set(previous))
            write_manifest(stage, written, token)
            swap_in(stage, out, token)
        finally:
            shutil.rmtree(stage, ignore_errors=True)  # gone already after a swap
    keep = set(written)
    removed = [rel for rel in previous if rel not in keep and safe_relative(rel)]
    return ReportResult(out_dir=out, sections=outcomes, files=sorted(written), removed=sorted(removed),
                        seconds=time.perf_counter() - t0, machine=machine)


def _build_into(stage: Path, specs, build, *, quick, seed, root, token, stream, tty, t0):
    """Build every section and the pages into the staging folder; return (outcomes, files, machine)."""
    progress = Progress(len(specs) + 1, stream, tty=tty)
    outcomes: list[SectionOutcome] = []
    written: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as scratch:
            for index, spec in enumerate(specs, start=1):
                progress.begin(index, spec.name)
                work = Path(scratch) / spec.name
                work.mkdir()
                ctx = SectionContext(quick=quick, seed=seed, work_dir=work, repo_root=root,
                                     progress=progress.update)
                started = time.perf_counter()
                staging = Staging(stage, token)
                title = spec.title
                try:
                    title, section = build(spec, ctx)
                    items = _render_section(section, spec.name, staging)
                    files = staging.commit()  # within the staging folder: a failure never leaves half a section
                    written += files
                    outcome = SectionOutcome(spec.name, title, True, time.perf_counter() - started,
                                             items=items, files=files)
                except (Exception, SystemExit) as exc:  # a failing section is reported, never fatal
                    staging.abort()
                    outcome = SectionOutcome(
                        spec.name, title, False, time.perf_counter() - started,
                        error=_short_error(exc), traceback=traceback.format_exc(),
                    )
                outcomes.append(outcome)
                progress.end("ok" if outcome.ok else f"FAILED: {outcome.error}")

            progress.begin(len(specs) + 1, "pages")
            machine = describe_machine(root)
            seconds = time.perf_counter() - t0
            pages = Staging(stage, token)
            pages.write_text("index.html", render_html(outcomes, machine, quick=quick, seconds=seconds))
            pages.write_text("report.md", render_markdown(outcomes, machine, quick=quick, seconds=seconds))
            written += pages.commit()
            progress.end("ok")
    finally:
        progress.close()
    return outcomes, written, machine


@contextlib.contextmanager
def _terminate_raises():
    """While building, SIGTERM unwinds the build (removing staging and scratch) instead of killing it.

    Only the main thread may set signal handlers; elsewhere the default stays
    and the next run's sweep removes what a killed build left.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise ReportInterrupted(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["build_report"]
