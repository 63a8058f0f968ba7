"""Figures of the "Beyond attention" section: memory per sequence and decode time against context length."""

from __future__ import annotations

import pandas as pd

from .style import PALETTE, new_figure

_MARKERS = ["o", "s", "^", "D", "v"]


def _per_model(ax, data: pd.DataFrame, column: str) -> None:
    for i, (model, g) in enumerate(data.groupby("model", sort=False)):
        g = g.sort_values("context")
        ax.plot(g["context"], g[column], marker=_MARKERS[i % len(_MARKERS)], markersize=3.5,
                color=PALETTE[i % len(PALETTE)], label=model)


def _finish(ax, ylabel: str, title: str) -> None:
    """Log-log axes over context length, labels, legend."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens, log scale)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)


def memory_per_sequence_figure(data: pd.DataFrame, hw_memory_gib: float | None = None, title: str = ""):
    """KV cache plus recurrent state of one sequence against its length, per model (log-log).

    ``data`` columns: ``model, context, memory_GiB``. A dotted line marks the
    device memory when given.
    """
    fig, ax = new_figure()
    _per_model(ax, data, "memory_GiB")
    if hw_memory_gib is not None:
        ax.axhline(hw_memory_gib, color="0.4", linestyle=":", linewidth=1.2, label=f"device memory ({hw_memory_gib:g} GiB)")
    _finish(ax, "KV cache + state per sequence (GiB, log scale)", title)
    return fig


def decode_time_figure(data: pd.DataFrame, title: str = ""):
    """Modelled time per output token against context length, per model (batch 1).

    ``data`` columns: ``model, context, decode_ms``.
    """
    fig, ax = new_figure()
    _per_model(ax, data, "decode_ms")
    _finish(ax, "decode time per token (ms, log scale)", title)
    return fig
