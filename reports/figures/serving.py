"""Figures of the serving section: latency and goodput against load, the Azure traces, the capacity frontier."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import ScalarFormatter

from .style import PALETTE, new_figure

SCHEDULER_COLOR = {"static": PALETTE[3], "continuous": PALETTE[1], "chunked": PALETTE[0],
                   "disaggregated": PALETTE[2]}


def latency_vs_rate_figure(data: pd.DataFrame, title: str = ""):
    """TTFT (left) and TPOT (right), p50 dashed and p99 solid, against request rate, one colour per scheduler.

    ``data`` columns: ``scheduler, rate, ttft_p50, ttft_p99, tpot_p50, tpot_p99`` (seconds).
    """
    fig, axes = new_figure(1, 2, width=9.5, height=3.8)
    for scheduler, g in data.groupby("scheduler", sort=False):
        g = g.sort_values("rate")
        color = SCHEDULER_COLOR.get(scheduler)
        for ax, metric in zip(axes, ("ttft", "tpot")):
            ax.plot(g["rate"], g[f"{metric}_p99"] * 1e3, color=color, marker="o", markersize=3,
                    label=f"{scheduler} p99")
            ax.plot(g["rate"], g[f"{metric}_p50"] * 1e3, color=color, linestyle="--", label=f"{scheduler} p50")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("time to first token (ms, log scale)")
    axes[1].set_ylabel("time per output token (ms)")
    for ax in axes:
        ax.set_xlabel("request rate (requests/s, one GPU)")
    axes[1].legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    return fig


def goodput_figure(data: pd.DataFrame, title: str = ""):
    """Goodput per GPU against request rate, colocated deployments against disaggregated ones.

    ``data`` columns: ``deployment, rate, goodput_per_gpu``.
    """
    fig, ax = new_figure()
    for i, (deployment, g) in enumerate(data.groupby("deployment", sort=False)):
        g = g.sort_values("rate")
        ax.plot(g["rate"], g["goodput_per_gpu"], marker="o", markersize=3, color=PALETTE[i % len(PALETTE)],
                label=deployment)
    lim = float(data["rate"].max())
    ax.plot([0, lim], [0, lim / 2], color="0.6", linestyle=":", label="every request meets its SLOs (2 GPUs)")
    ax.set_xlabel("request rate (requests/s, whole deployment of 2 GPUs)")
    ax.set_ylabel("goodput per GPU (requests/s within both SLOs)")
    ax.legend(fontsize=7.5)
    ax.set_title(title or "Goodput per GPU: colocated against disaggregated")
    return fig


def _ecdf_pair(data: pd.DataFrame, columns: tuple[str, str], title: str, scale: float = 1.0,
               with_median: bool = False):
    """Two panels of empirical CDFs of ``columns``, one curve per ``trace``; the caller labels the x axes."""
    fig, axes = new_figure(1, 2, width=9.5, height=3.6)
    for i, (trace, g) in enumerate(data.groupby("trace", sort=False)):
        for ax, col in zip(axes, columns):
            v = np.sort(g[col].dropna().to_numpy()) * scale  # (n,)
            label = f"{trace} (median {np.median(v):g})" if with_median else trace
            ax.plot(v, np.arange(1, v.size + 1) / v.size, color=PALETTE[i], label=label)
    for ax in axes:
        ax.set_ylabel("fraction of requests")
        ax.legend(fontsize=7.5)
    if title:
        fig.suptitle(title)
    return fig, axes


def trace_lengths_figure(data: pd.DataFrame, title: str = ""):
    """Empirical CDFs of prompt (left) and output (right) lengths of each trace.

    ``data`` columns: ``trace, prompt_tokens, output_tokens`` (one row per request).
    """
    fig, axes = _ecdf_pair(data, ("prompt_tokens", "output_tokens"), title, with_median=True)
    for ax, what in zip(axes, ("prompt", "output")):
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} tokens (log scale)")
    return fig


def latency_cdf_figure(data: pd.DataFrame, title: str = ""):
    """Empirical CDFs of TTFT (left) and TPOT (right) of each replayed trace.

    ``data`` columns: ``trace, ttft, tpot`` (seconds, one row per request).
    """
    fig, axes = _ecdf_pair(data, ("ttft", "tpot"), title, scale=1e3)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("time to first token (ms, log scale)")
    axes[1].set_xlabel("time per output token (ms)")
    return fig


def frontier_figure(data: pd.DataFrame, title: str = ""):
    """GPUs needed against target request rate: the best configuration of each scheduler.

    ``data`` columns: ``scheduler, target_rate, gpus`` (GPUs of the cheapest configuration).
    """
    fig, ax = new_figure()
    for scheduler, g in data.groupby("scheduler", sort=False):
        g = g.sort_values("target_rate")
        # between two targets the larger target's count suffices: step "pre" draws that upper bound
        ax.step(g["target_rate"], g["gpus"], where="pre", marker="o", markersize=3,
                color=SCHEDULER_COLOR.get(scheduler), label=scheduler)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("target request rate (requests/s, log scale)")
    ax.set_ylabel("GPUs needed within the SLOs (log scale)")
    ax.legend(fontsize=7.5)
    ax.set_title(title or "Capacity-planning frontier")
    return fig
