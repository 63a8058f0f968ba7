"""The report's sections: their names, modules and fallback titles, in page order."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SectionSpec:
    """One report section: its short name (for ``--only``), module and fallback title."""

    name: str
    module: str
    title: str  # used when the module cannot be imported


#: The report's sections, in page order.
SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("scaling", "scalelab.report.sections.scaling", "Scaling laws"),
    SectionSpec("hparams", "scalelab.report.sections.hparams", "Hyperparameter transfer"),
    SectionSpec("data_supply", "scalelab.report.sections.data_supply", "Data supply"),
    SectionSpec("energy", "scalelab.report.sections.energy", "Electricity"),
    SectionSpec("inference", "scalelab.report.sections.inference", "Inference cost"),
    SectionSpec("serving", "scalelab.report.sections.serving", "Serving under load"),
    SectionSpec("closed_loop", "scalelab.report.sections.closed_loop", "Simulator against the live engine"),
    SectionSpec("recurrent", "scalelab.report.sections.recurrent", "Beyond attention"),
    SectionSpec("kernels", "scalelab.report.sections.kernels", "Kernel performance"),
    SectionSpec("test_time_compute", "scalelab.report.sections.test_time_compute", "Test-time compute"),
)
SECTION_NAMES: tuple[str, ...] = tuple(spec.name for spec in SECTIONS)


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
