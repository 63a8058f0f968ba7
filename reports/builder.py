"""Build the plotted report: run every section, write its files, render the pages.

The builder is the only code that writes report output. For each section it

1. imports ``scalelab.report.sections.<name>`` and calls ``build(ctx)``; an import
   error or an exception inside ``build`` becomes a *failed* section that the
   pages show with its message and traceback, while the other sections still
   build (the command then exits 1);
2. renders every :class:`~scalelab.report.section.FigureItem` as PNG and SVG (plus its
   data as CSV) and every :class:`~scalelab.report.section.TableItem` as CSV, each to a
   temporary name in the output folder, and renames them into place only once
   the whole section rendered, so a failure never leaves half a section;
3. writes ``report.md`` and a self-contained ``index.html`` (inline CSS, no
   scripts, relative links only, so it opens from disk with no server).

Re-running into the same folder replaces the previous output: a manifest
(``.scalelab-manifest.json``) lists every file a run produced, and files that
an earlier run produced but this one did not are removed. Files the builder
did not produce are never touched.

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

import importlib
import os
import re
import secrets
import tempfile
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
    DATA_DIR, FIGURE_DIR, Staging, read_manifest, remove_leftover_temps, safe_relative, write_manifest,
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
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory, but {out} is a file")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    root = find_repo_root() if repo_root is None else Path(repo_root)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    remove_leftover_temps(out)
    previous = read_manifest(out)
    build = builder or _build_one

    progress = Progress(len(specs) + 1, stream, tty=tty)
    outcomes: list[SectionOutcome] = []
    written: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="scalelab-report-") as scratch:
            for index, spec in enumerate(specs, start=1):
                progress.begin(index, spec.name)
                work = Path(scratch) / spec.name
                work.mkdir()
                ctx = SectionContext(quick=quick, seed=seed, work_dir=work, repo_root=root,
                                     progress=progress.update)
                started = time.perf_counter()
                staging = Staging(out, token)
                title = spec.title
                try:
                    title, section = build(spec, ctx)
                    items = _render_section(section, spec.name, staging)
                    # Until every file of the section rendered, nothing was renamed into place;
                    # the manifest first lists them so an interrupted commit is cleaned next run.
                    write_manifest(out, previous + written + [rel for _, rel in staging.staged], token)
                    files = staging.commit()
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
            pages = Staging(out, token)
            pages.write_text("index.html", render_html(outcomes, machine, quick=quick, seconds=seconds))
            pages.write_text("report.md", render_markdown(outcomes, machine, quick=quick, seconds=seconds))
            write_manifest(out, previous + written + [rel for _, rel in pages.staged], token)
            written += pages.commit()
            progress.end("ok")
    finally:
        progress.close()

    keep = set(written)
    removed = []
    for rel in previous:
        if rel in keep or not safe_relative(rel):
            continue
        path = out / rel
        try:
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(rel)
        except OSError:
            pass
    for folder in (out / FIGURE_DIR, out / DATA_DIR):
        try:
            folder.rmdir()  # only succeeds when empty: nothing of anyone else's is lost
        except OSError:
            pass
    write_manifest(out, written, token)
    return ReportResult(out_dir=out, sections=outcomes, files=sorted(written), removed=sorted(removed),
                        seconds=time.perf_counter() - t0, machine=machine)


__all__ = ["build_report"]
