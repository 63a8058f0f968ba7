"""Build the plotted report: run every section, write its files, render the pages.

The builder is the only code that writes report output. For each section it

1. imports ``reports.sections.<name>`` and calls ``build(ctx)``; an import
   error or an exception inside ``build`` becomes a *failed* section that the
   pages show with its message and traceback, while the other sections still
   build (the command then exits 1);
2. renders every :class:`~reports.section.FigureItem` as PNG and SVG (plus its
   data as CSV) and every :class:`~reports.section.TableItem` as CSV, each to a
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
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import pandas as pd

from . import __version__
from .section import FigureItem, Section, SectionContext, TableItem, TextItem

# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SectionSpec:
    """One report section: its short name (for ``--only``), module and fallback title."""

    name: str
    module: str
    title: str  # used when the module cannot be imported


#: The report's sections, in page order.
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("scaling", "reports.sections.scaling", "Scaling laws"),
    SectionSpec("data_supply", "reports.sections.data_supply", "Data supply"),
    SectionSpec("energy", "reports.sections.energy", "Electricity"),
    SectionSpec("inference", "reports.sections.inference", "Inference cost"),
    SectionSpec("kernels", "reports.sections.kernels", "Kernel performance"),
    SectionSpec("test_time_compute", "reports.sections.test_time_compute", "Test-time compute"),
    SectionSpec("recurrent", "reports.sections.recurrent", "Beyond attention"),
)
SECTION_NAMES: tuple[str, ...] = tuple(spec.name for spec in SECTIONS)

MANIFEST = ".scalelab-manifest.json"
TMP_SUFFIX = ".scalelab-tmp"
FIGURE_DIR = "figures"
DATA_DIR = "data"
PNG_DPI = 150
_NAME_RE = re.compile(r"^[a-z0-9_]+$")
#: Rows of a table shown on the pages; the CSV always holds every row.
MAX_TABLE_ROWS = 60


def select_sections(only: list[str] | tuple[str, ...] | None) -> tuple[SectionSpec, ...]:
    """Return the sections to build, in page order; ``only`` holds short names.

    Raises ``ValueError`` naming the unknown name and the known ones.
    """
    if not only:
        return SECTIONS
    wanted = []
    for entry in only:
        wanted.extend(part for part in str(entry).split(",") if part)
    unknown = [name for name in wanted if name not in SECTION_NAMES]
    if unknown:
        raise ValueError(
            f"unknown section {unknown[0]!r} for --only; known sections: {', '.join(SECTION_NAMES)}"
        )
    return tuple(spec for spec in SECTIONS if spec.name in set(wanted))


def available_sections() -> tuple[str, ...]:
    """Short names of the sections whose module exists in this checkout."""
    import importlib.util

    names = []
    for spec in SECTIONS:
        try:
            found = importlib.util.find_spec(spec.module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            names.append(spec.name)
    return tuple(names)


def find_repo_root(start: Path | None = None) -> Path | None:
    """The scalelab checkout holding ``asv.conf.json``: near this package, else above ``start``."""
    here = Path(__file__).resolve().parents[1]
    candidates = [here]
    start = Path.cwd() if start is None else Path(start)
    candidates += [start.resolve(), *start.resolve().parents]
    for path in candidates:
        if (path / "asv.conf.json").is_file():
            return path
    return None


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _git_commit(repo_root: Path | None) -> str | None:
    if repo_root is None or not (repo_root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_root, capture_output=True, text=True, timeout=10,
        )
        suffix = " (with uncommitted changes)" if dirty.returncode == 0 and dirty.stdout.strip() else ""
        return sha.stdout.strip()[:12] + suffix
    except (OSError, subprocess.SubprocessError):
        return None


def describe_machine(repo_root: Path | None = None) -> dict[str, str]:
    """What ran the report: CPU, cores, BLAS kernel, library versions, date, commit.

    The BLAS entry comes from ``threadpoolctl.threadpool_info()`` so it names the
    kernel OpenBLAS actually selected (e.g. ``Haswell``), not just the library.
    """
    import numpy as np

    info: dict[str, str] = {}
    info["CPU"] = _cpu_model()
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    info["Cores"] = f"{usable} usable of {logical} logical"
    try:
        info["Memory"] = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (AttributeError, ValueError, OSError):
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            parts = []
            for pool in blas:
                # Which package shipped the library (numpy.libs, scipy.libs, torch/lib ...).
                owner = Path(str(pool.get("filepath", ""))).parent.name.replace(".libs", "") or "?"
                parts.append(
                    f"{pool.get('internal_api', '?')} {pool.get('version') or ''}".strip()
                    + f" ({owner}): kernel {pool.get('architecture') or '?'}"
                    + f", {pool.get('num_threads', '?')} threads"
                )
            info["BLAS"] = "; ".join(parts)
        else:
            info["BLAS"] = "no BLAS loaded"
    except Exception as exc:  # threadpoolctl is a dependency, but never let it break a report
        info["BLAS"] = f"unknown ({type(exc).__name__})"
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    info["Python"] = platform.python_version()
    info["NumPy"] = np.__version__
    try:
        import numba

        info["Numba"] = f"{numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads)"
    except ImportError:
        info["Numba"] = "not installed"
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git_commit(repo_root)
    if commit:
        info["Git commit"] = commit
    info["scalelab"] = __version__
    return info


# --------------------------------------------------------------------------- progress


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


# --------------------------------------------------------------------------- atomic files


class _Staging:
    """Files written under temporary names in the output folder, renamed together.

    ``path(rel)`` returns a temporary path beside the final one (same folder, so
    ``os.replace`` is an atomic rename on the same file system); ``commit``
    renames every staged file into place; ``abort`` deletes them.
    """

    def __init__(self, out_dir: Path, token: str):
        self.out_dir = out_dir
        self.token = token
        self.staged: list[tuple[Path, str]] = []

    def path(self, rel: str) -> Path:
        final = self.out_dir / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{self.token}{TMP_SUFFIX}"
        self.staged.append((tmp, rel))
        return tmp

    def write_text(self, rel: str, text: str) -> None:
        with open(self.path(rel), "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)

    def commit(self) -> list[str]:
        done = []
        for tmp, rel in self.staged:
            os.replace(tmp, self.out_dir / rel)
            done.append(rel)
        self.staged = []
        return done

    def abort(self) -> None:
        for tmp, _ in self.staged:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self.staged = []


def _remove_leftover_temps(out_dir: Path) -> None:
    """Delete temporary files a crashed earlier run left (only our own suffix)."""
    for folder in (out_dir, out_dir / FIGURE_DIR, out_dir / DATA_DIR):
        if folder.is_dir():
            for path in folder.glob(f".*{TMP_SUFFIX}"):
                try:
                    path.unlink()
                except OSError:
                    pass


def _read_manifest(out_dir: Path) -> list[str]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        files = data.get("files", [])
        return [f for f in files if isinstance(f, str)]
    except (OSError, ValueError, AttributeError):
        return []


def _write_manifest(out_dir: Path, files: list[str], token: str) -> None:
    tmp = out_dir / f".{MANIFEST}.{token}{TMP_SUFFIX}"
    body = {
        "generator": f"scalelab {__version__}",
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(set(files)),
    }
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / MANIFEST)


def _safe_relative(rel: str) -> bool:
    """A manifest entry we may delete: relative, inside the folder, no parent steps."""
    path = Path(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


# --------------------------------------------------------------------------- outcome


@dataclass
class RenderedItem:
    kind: str  # "figure", "table" or "text"
    name: str = ""
    caption: str = ""
    markdown: str = ""
    png: str | None = None
    svg: str | None = None
    csv: str | None = None
    table: pd.DataFrame | None = None
    float_format: str = "{:.4g}"


@dataclass
class SectionOutcome:
    name: str
    title: str
    ok: bool
    seconds: float
    items: list[RenderedItem] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def n_figures(self) -> int:
        return sum(item.kind == "figure" for item in self.items)

    @property
    def n_tables(self) -> int:
        return sum(item.kind == "table" for item in self.items)


@dataclass
class ReportResult:
    out_dir: Path
    sections: list[SectionOutcome]
    files: list[str]
    removed: list[str]
    seconds: float
    machine: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sections)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def summary(self) -> str:
        """The closing summary: each section's status and what was written where."""
        n_ok = sum(s.ok for s in self.sections)
        n_fail = len(self.sections) - n_ok
        lines = [
            f"scalelab report: {len(self.sections)} section(s), {n_ok} ok"
            + (f", {n_fail} FAILED" if n_fail else "")
            + f", in {self.seconds:.1f} s"
        ]
        width = max((len(s.name) for s in self.sections), default=8)
        for s in self.sections:
            if s.ok:
                what = f"{s.n_figures} figure(s), {s.n_tables} table(s)"
                lines.append(f"  {s.name:<{width}}  ok      {what:<26} {s.seconds:6.1f} s")
            else:
                lines.append(f"  {s.name:<{width}}  FAILED  {s.error}")
        by_kind: dict[str, int] = {}
        for rel in self.files:
            by_kind[Path(rel).suffix or rel] = by_kind.get(Path(rel).suffix or rel, 0) + 1
        counts = ", ".join(f"{n} {ext.lstrip('.').upper()}" for ext, n in sorted(by_kind.items()))
        lines.append(f"Wrote {len(self.files)} file(s) to {self.out_dir}: {counts}")
        lines.append(f"  {self.out_dir / 'index.html'}   (open in a browser; works from disk)")
        lines.append(f"  {self.out_dir / 'report.md'}")
        lines.append(f"  {self.out_dir / FIGURE_DIR}/   PNG + SVG figures")
        lines.append(f"  {self.out_dir / DATA_DIR}/   CSV data behind every figure and table")
        if self.removed:
            lines.append(f"Removed {len(self.removed)} stale file(s) from the previous run.")
        return "\n".join(lines)


# --------------------------------------------------------------------------- rendering items


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _write_csv(staging: _Staging, rel: str, frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{rel}: data must be a pandas DataFrame, got {type(frame).__name__}")
    keep_index = not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None
    frame.to_csv(staging.path(rel), index=keep_index)


def _save_figure(staging: _Staging, stem: str, figure) -> tuple[str, str]:
    from matplotlib.figure import Figure

    from .figures.style import RC
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


def _render_section(section: Section, name: str, staging: _Staging) -> list[RenderedItem]:
    """Write one section's figures and tables to staged files; return what the pages show."""
    if not isinstance(section, Section):
        raise TypeError(f"build() must return reports.section.Section, got {type(section).__name__}")
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


# --------------------------------------------------------------------------- markdown


_INLINE_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])")


def _inline_html(text: str) -> str:
    """Inline Markdown (code, links, bold, italic) to escaped HTML."""
    codes: list[str] = []

    def keep_code(match: re.Match) -> str:
        codes.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\x00{len(codes) - 1}\x00"

    text = _INLINE_CODE.sub(keep_code, text)
    text = html.escape(text, quote=False)
    text = _LINK.sub(lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return re.sub(r"\x00(\d+)\x00", lambda m: codes[int(m.group(1))], text)


def markdown_to_html(markdown: str) -> str:
    """The small Markdown subset sections use: paragraphs, lists, headings, code blocks."""
    out: list[str] = []
    lines = str(markdown).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            level = min(len(heading.group(1)) + 2, 6)  # section titles are <h2>
            out.append(f"<h{level}>{_inline_html(heading.group(2))}</h{level}>")
            i += 1
            continue
        bullet = re.match(r"^([-*+]|\d+[.)])\s+", stripped)
        if bullet:
            ordered = bullet.group(1)[0].isdigit()
            entries: list[str] = []
            while i < len(lines) and lines[i].strip():
                s = lines[i].strip()
                m = re.match(r"^([-*+]|\d+[.)])\s+(.*)$", s)
                if m:
                    entries.append(m.group(2))
                elif entries:  # continuation line of the previous entry
                    entries[-1] += " " + s
                i += 1
            tag = "ol" if ordered else "ul"
            body = "".join(f"<li>{_inline_html(e)}</li>" for e in entries)
            out.append(f"<{tag}>{body}</{tag}>")
            continue
        para = []
        while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith("```"):
            if para and re.match(r"^([-*+]|\d+[.)])\s+|^#{1,6}\s", lines[i].strip()):
                break
            para.append(lines[i].strip())
            i += 1
        out.append(f"<p>{_inline_html(' '.join(para))}</p>")
    return "\n".join(out)


# --------------------------------------------------------------------------- tables


def _format_cell(value, float_format: str) -> str:
    try:
        if value is None or bool(pd.isna(value)):  # None, NaN, NaT and pd.NA all show as blank
            return ""
    except (TypeError, ValueError):  # array-like cell: pd.isna is elementwise
        pass
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        try:
            return float_format.format(float(value))
        except (ValueError, TypeError):
            return str(value)
    return str(value)


def _table_rows(frame: pd.DataFrame, float_format: str) -> tuple[list[str], list[list[str]]]:
    shown = frame
    keep_index = not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None
    if keep_index:
        shown = frame.reset_index()
    header = [str(c) for c in shown.columns]
    rows = [[_format_cell(v, float_format) for v in row]
            for row in shown.head(MAX_TABLE_ROWS).itertuples(index=False, name=None)]
    return header, rows


def table_markdown(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    header, rows = _table_rows(frame, float_format)

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def table_html(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    header, rows = _table_rows(frame, float_format)
    numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in
               (frame.reset_index() if (not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None)
                else frame).dtypes]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(c)}</td>' if numeric[j] else f"<td>{html.escape(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- pages


CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --soft:#f6f8fa;
        --ok:#1a7f37; --bad:#cf222e; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.35em; margin-top: 2.2em; padding-bottom: 0.25em; border-bottom: 1px solid var(--line); }
h3, h4 { margin-top: 1.4em; }
a { color: var(--accent); }
.sub { color: var(--muted); margin-top: 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
code { background: var(--soft); padding: 0.1em 0.3em; border-radius: 4px; }
pre { background: var(--soft); padding: 10px 12px; border-radius: 6px; overflow-x: auto; }
figure { margin: 1.4em 0; }
figure img { display:block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--fg); font-size: 0.93em; margin-top: 0.45em; }
figcaption .files, .tablefiles { color: var(--muted); font-size: 0.9em; }
.tablewrap { overflow-x: auto; margin: 0.6em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: var(--soft); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fbfcfd; }
.caption { font-size: 0.93em; margin: 0.2em 0; }
.machine th { width: 9em; }
.status-ok { color: var(--ok); font-weight: 600; }
.status-failed { color: var(--bad); font-weight: 600; }
.error { border: 1px solid var(--bad); border-left-width: 5px; border-radius: 6px; padding: 8px 12px; background: #fff5f5; }
details summary { cursor: pointer; color: var(--muted); }
nav ol { padding-left: 1.4em; }
footer { margin-top: 3em; color: var(--muted); font-size: 0.85em; }
@media print { h2 { break-before: page; } figure { break-inside: avoid; } }
"""


def _anchor(name: str) -> str:
    return f"sec-{name.replace('_', '-')}"


def render_html(result_sections: list[SectionOutcome], machine: dict[str, str], *,
                quick: bool, seconds: float) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>scalelab report</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>scalelab report</h1>",
        f'<p class="sub">What foundation models cost: simulations and kernel measurements, '
        f"built {esc(machine.get('Date', ''))}{' in quick mode (reduced sample counts)' if quick else ''}.</p>",
        "<h2 id=\"machine\" style=\"margin-top:1.2em\">Machine</h2>",
        '<div class="tablewrap"><table class="machine"><tbody>',
    ]
    for key, value in machine.items():
        parts.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
    parts.append("</tbody></table></div>")
    parts.append("<nav><h3>Contents</h3><ol>")
    for s in result_sections:
        status = ('<span class="status-ok">ok</span>' if s.ok
                  else '<span class="status-failed">failed</span>')
        parts.append(f'<li><a href="#{_anchor(s.name)}">{esc(s.title)}</a> '
                     f"&middot; {status} &middot; {s.n_figures} figure(s), {s.seconds:.1f} s</li>")
    parts.append("</ol></nav>")
    for s in result_sections:
        parts.append(f'<section id="{_anchor(s.name)}"><h2>{esc(s.title)}</h2>')
        if not s.ok:
            parts.append('<div class="error">')
            parts.append(f"<p><strong>This section failed to build:</strong> <code>{esc(s.error or '')}</code></p>")
            if s.traceback:
                parts.append(f"<details><summary>Traceback</summary><pre>{esc(s.traceback)}</pre></details>")
            parts.append("</div>")
        figure_no = 0
        for item in s.items:
            if item.kind == "text":
                parts.append(markdown_to_html(item.markdown))
            elif item.kind == "figure":
                figure_no += 1
                links = [f'<a href="{esc(item.svg)}">SVG</a>', f'<a href="{esc(item.png)}">PNG</a>']
                if item.csv:
                    links.append(f'<a href="{esc(item.csv)}">data (CSV)</a>')
                parts.append(
                    f'<figure id="{esc(s.name)}-{esc(item.name)}">'
                    f'<img src="{esc(item.png)}" alt="{esc(item.caption)}">'
                    f"<figcaption><strong>{esc(s.title)}, figure {figure_no}.</strong> "
                    f"{_inline_html(item.caption)} <span class=\"files\">[{' &middot; '.join(links)}]</span>"
                    "</figcaption></figure>"
                )
            else:
                n = len(item.table)
                more = (f" Showing {MAX_TABLE_ROWS} of {n} rows; the CSV holds all."
                        if n > MAX_TABLE_ROWS else "")
                parts.append(
                    f'<p class="caption">{_inline_html(item.caption)}{esc(more)} '
                    f'<span class="tablefiles">[<a href="{esc(item.csv)}">CSV</a>]</span></p>'
                    f'<div class="tablewrap">{table_html(item.table, item.float_format)}</div>'
                )
        parts.append("</section>")
    parts.append(
        f"<footer>Generated by scalelab {esc(__version__)} in {seconds:.1f} s. "
        'The same content as Markdown: <a href="report.md">report.md</a>.</footer>'
    )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def render_markdown(result_sections: list[SectionOutcome], machine: dict[str, str], *,
                    quick: bool, seconds: float) -> str:
    lines = ["# scalelab report", ""]
    lines.append(f"Built {machine.get('Date', '')}" + (" in quick mode (reduced sample counts)." if quick else "."))
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in machine.items()]
    lines += ["", "## Contents", ""]
    for s in result_sections:
        lines.append(f"- [{s.title}](#{_md_slug(s.title)}): {'ok' if s.ok else 'FAILED'}, "
                     f"{s.n_figures} figure(s), {s.seconds:.1f} s")
    for s in result_sections:
        lines += ["", f"## {s.title}", ""]
        if not s.ok:
            lines += [f"> **This section failed to build:** `{s.error}`", ""]
            if s.traceback:
                lines += ["<details><summary>Traceback</summary>", "", "```text",
                          s.traceback.rstrip(), "```", "", "</details>", ""]
        figure_no = 0
        for item in s.items:
            if item.kind == "text":
                lines += [item.markdown.strip(), ""]
            elif item.kind == "figure":
                figure_no += 1
                files = f"[SVG]({item.svg})" + (f" · [data (CSV)]({item.csv})" if item.csv else "")
                lines += [f"![{s.title}, figure {figure_no}]({item.png})", "",
                          f"*{s.title}, figure {figure_no}.* {item.caption} {files}", ""]
            else:
                n = len(item.table)
                more = f" Showing {MAX_TABLE_ROWS} of {n} rows; the CSV holds all." if n > MAX_TABLE_ROWS else ""
                lines += [f"{item.caption}{more} [CSV]({item.csv})", "",
                          table_markdown(item.table, item.float_format), ""]
    lines += ["", "---", f"Generated by scalelab {__version__} in {seconds:.1f} s. "
              "The same content as a page: [index.html](index.html).", ""]
    return "\n".join(lines)


def _md_slug(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip()
    return re.sub(r"\s", "-", slug)


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
    _remove_leftover_temps(out)
    previous = _read_manifest(out)
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
                staging = _Staging(out, token)
                title = spec.title
                try:
                    title, section = build(spec, ctx)
                    items = _render_section(section, spec.name, staging)
                    # Until every file of the section rendered, nothing was renamed into place;
                    # the manifest first lists them so an interrupted commit is cleaned next run.
                    _write_manifest(out, previous + written + [rel for _, rel in staging.staged], token)
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
            pages = _Staging(out, token)
            pages.write_text("index.html", render_html(outcomes, machine, quick=quick, seconds=seconds))
            pages.write_text("report.md", render_markdown(outcomes, machine, quick=quick, seconds=seconds))
            _write_manifest(out, previous + written + [rel for _, rel in pages.staged], token)
            written += pages.commit()
            progress.end("ok")
    finally:
        progress.close()

    keep = set(written)
    removed = []
    for rel in previous:
        if rel in keep or not _safe_relative(rel):
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
    _write_manifest(out, written, token)
    return ReportResult(out_dir=out, sections=outcomes, files=sorted(written), removed=sorted(removed),
                        seconds=time.perf_counter() - t0, machine=machine)


__all__ = [
    "SECTIONS", "SECTION_NAMES", "SectionSpec", "SectionOutcome", "ReportResult", "Progress",
    "build_report", "select_sections", "available_sections", "describe_machine", "find_repo_root",
    "markdown_to_html", "render_html", "render_markdown", "table_html", "table_markdown",
]
