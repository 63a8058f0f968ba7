"""What a report build produced: rendered items, per-section outcomes and the overall result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scalelab.report.staging import DATA_DIR, FIGURE_DIR


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
