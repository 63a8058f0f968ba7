"""The contract between the report builder and its sections.

A section is a module in :mod:`scalelab.report.sections` with a ``TITLE`` string and
a function ``build(ctx: SectionContext) -> Section``. It computes, draws and
returns its items; it never writes files itself: the builder writes every
figure (PNG + SVG), every table (CSV) and the pages, each to a temporary name
then renamed, so a failed section never leaves half-written output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import pandas as pd


@dataclass
class FigureItem:
    """A figure, the numbers behind it, and what to read from it."""

    name: str  # file stem, unique within the section: [a-z0-9_]+
    figure: "matplotlib.figure.Figure"  # noqa: F821
    caption: str  # one or two sentences: what to read from the figure
    data: pd.DataFrame | None = None  # written as <section>_<name>.csv


@dataclass
class TableItem:
    """A table shown on the page and written as CSV."""

    name: str
    table: pd.DataFrame
    caption: str
    float_format: str = "{:.4g}"


@dataclass
class TextItem:
    """A paragraph of Markdown (kept simple: paragraphs, lists, inline code)."""

    markdown: str


Item = Union[FigureItem, TableItem, TextItem]


@dataclass
class Section:
    title: str
    items: list[Item] = field(default_factory=list)


@dataclass
class SectionContext:
    """What a section may use while it builds.

    quick: build with reduced sample counts (the ``--quick`` flag).
    seed: base seed for every Monte Carlo draw, so reports are reproducible.
    work_dir: a scratch directory the section may use (e.g. to find asv results, ``repo_root``).
    progress: call with a short message while working (drives the progress bar).
    """

    quick: bool = False
    seed: int = 0
    work_dir: Path | None = None
    repo_root: Path | None = None
    progress: Callable[[str], None] = lambda message: None
