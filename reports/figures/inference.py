"""Figures of the inference-cost section, one function per figure.

Each ``*_data`` function computes the tidy DataFrame a figure draws (the
report writes it as CSV); each ``*_figure`` function takes that DataFrame and
returns a ``Figure`` built with :func:`scalelab.report.figures.style.new_figure`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, NullFormatter

from scalelab.simulations import inference as inf

from scalelab.report.figures.style import PALETTE, new_figure

_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")


# --------------------------------------------------------------------------- roofline with ops


def roofline_ops_data(model: str, hw: str, *, batch: int, prompt_len: int, context_len: int) -> pd.DataFrame:
    """Every op of one prefill and one decode step: intensity and achieved FLOP/s under the roofline."""
    frames = []
    for phase, seq in (("prefill", prompt_len), ("decode", context_len)):
        df = inf.roofline_table(model, hw, phase, batch, seq)
        df.insert(0, "phase", phase)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["flops"] > 0) & (df["bytes"] > 0)].copy()
    df["achieved_flops_per_s"] = df["flops"] / df["time_s"]
    return df


def roofline_figure(data: pd.DataFrame, hw: str, title: str = ""):
    """Log-log roofline of ``hw`` with every prefill (circles) and decode (crosses) op placed on it."""
    h = inf.get_hardware(hw)
    fig, ax = new_figure(width=7.2, height=4.8)
    lo = max(min(data["intensity"].min() / 3, 0.05), 1e-3)
    hi = max(data["intensity"].max() * 3, inf.ridge_point(h) * 10)
    x = np.geomspace(lo, hi, 200)
    ax.plot(x, np.minimum(h.peak_flops, x * h.bandwidth_bytes_per_s) / 1e12, color="0.25", linewidth=1.6,
            label=f"roofline: {h.peak_flops / 1e12:.0f} TFLOP/s, {h.bandwidth_bytes_per_s / 1e12:.2f} TB/s")
    ax.axvline(inf.ridge_point(h), color="0.5", linestyle=":", linewidth=1.0,
               label=f"ridge point {inf.ridge_point(h):.0f} FLOP/byte")
    # the matmuls carry almost all the time; annotate the ones that matter
    for phase, marker, color in (("prefill", "o", PALETTE[0]), ("decode", "X", PALETTE[1])):
        d = data[data["phase"] == phase]
        ax.scatter(d["intensity"], d["achieved_flops_per_s"] / 1e12, s=16 + 260 * d["time_share"], marker=marker,
                   color=color, alpha=0.75, edgecolor="white", linewidth=0.5,
                   label=f"{phase} ops (area ~ share of phase time)")
        # ops at nearly the same intensity share one label, so names do not overprint
        big = d[d["time_share"] >= 0.03].sort_values("intensity")
        clusters: list[list] = []
        for _, r in big.iterrows():
            if clusters and r["intensity"] <= 1.25 * clusters[-1][0]["intensity"]:
                clusters[-1].append(r)
            else:
                clusters.append([r])
        for k, group in enumerate(clusters):
            r = max(group, key=lambda row: row["time_share"])
            names = "\n".join(g["op"] for g in group)
            below = phase == "decode"
            left = below or (len(clusters) - 1 - k) % 2 == 0  # neighbours alternate sides
            ax.annotate(names, (r["intensity"], r["achieved_flops_per_s"] / 1e12),
                        xytext=(6 if left else -6, -8 if below else 8), textcoords="offset points", fontsize=7,
                        color=color, ha="left" if left else "right", va="top" if below else "bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte, log scale)")
    ax.set_ylabel("attainable throughput (TFLOP/s, log scale)")
    ax.set_title(title or f"Roofline on {h.name}")
    ax.legend(loc="lower right", fontsize=7.5)
    return fig


# --------------------------------------------------------------------------- TTFT / TPOT


def ttft_tpot_data(model: str, hw: str, *, batches, prompt_lens, contexts) -> pd.DataFrame:
    """Time to first token (prefill) and time per output token (decode) over batch and length."""
    rows = []
    for b in batches:
        for p in prompt_lens:
            c = inf.prefill_cost(model, hw, batch=b, prompt_len=p)
            rows.append({"metric": "ttft", "batch": b, "length": p, "time_s": c.time_s, "bound": c.bound,
                         "fits": c.fits})
        for n in contexts:
            c = inf.decode_cost(model, hw, batch=b, context_len=n)
            rows.append({"metric": "tpot", "batch": b, "length": n, "time_s": c.time_s, "bound": c.bound,
                         "fits": c.fits})
    return pd.DataFrame(rows)


def ttft_tpot_figure(data: pd.DataFrame, title: str = ""):
    """Two panels: TTFT against batch per prompt length; TPOT against batch per context length.

    A cross marks a configuration whose weights and KV cache do not fit in device memory
    (``fits`` is False): its time is what the roofline gives, for a run that cannot happen.
    """
    fig, axes = new_figure(1, 2, width=9.0, height=4.0)
    for ax, metric, what in ((axes[0], "ttft", "prompt"), (axes[1], "tpot", "context")):
        d = data[data["metric"] == metric]
        for i, (length, g) in enumerate(d.groupby("length")):
            g = g.sort_values("batch")
            ax.plot(g["batch"], g["time_s"] * 1e3, marker="o", markersize=3.5, color=PALETTE[i % len(PALETTE)],
                    label=f"{what} {length}")
            comp = g[g["bound"] == "compute"]
            ax.scatter(comp["batch"], comp["time_s"] * 1e3, s=40, facecolor="none",
                       edgecolor=PALETTE[i % len(PALETTE)], linewidth=1.0)
            if "fits" in g:
                over = g[g["fits"] == False]  # noqa: E712 - None (memory unknown) is not flagged
                ax.scatter(over["batch"], over["time_s"] * 1e3, s=55, marker="x", color="0.2", linewidth=1.0,
                           zorder=4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlabel("batch (sequences, log scale)")
        ax.legend(fontsize=7.5, title="open ring = compute-bound\ncross = does not fit in memory", title_fontsize=7.5)
    axes[0].set_ylabel("time to first token (ms, log scale)")
    axes[1].set_ylabel("time per output token (ms, log scale)")
    axes[0].set_title("Prefill")
    axes[1].set_title("Decode step")
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- KV cache


def kv_cache_data(models, contexts, dtype_bytes: float = 2) -> pd.DataFrame:
    """KV cache bytes of one sequence against context, per model."""
    rows = []
    for key in models:
        m = inf.get_model(key)
        kind = "MLA" if m.is_mla else ("MHA" if m.n_kv_heads == m.n_heads else f"GQA {m.n_heads // m.n_kv_heads}:1")
        for n in contexts:
            rows.append({"model": key, "attention": kind, "context": n,
                         "kv_bytes": inf.kv_cache_bytes(m, batch=1, seq_len=n, dtype_bytes=dtype_bytes)})
    return pd.DataFrame(rows)


def kv_cache_figure(data: pd.DataFrame, memory_bytes: float | None = None, memory_label: str = ""):
    """KV cache of one sequence (GiB) against context length, one line per model, log-log."""
    fig, ax = new_figure()
    for i, (key, g) in enumerate(data.groupby("model", sort=False)):
        ax.plot(g["context"], g["kv_bytes"] / 2**30, marker="o", markersize=3, color=PALETTE[i % len(PALETTE)],
                label=f"{key} ({g['attention'].iloc[0]})")
    if memory_bytes:
        ax.axhline(memory_bytes / 2**30, color="0.3", linestyle="--", linewidth=1.0, label=memory_label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("context length (tokens, log scale)")
    ax.set_ylabel("KV cache per sequence, fp16 (GiB, log scale)")
    ax.set_title("KV cache against context: GQA and MLA against MHA")
    ax.legend(fontsize=7.5)
    return fig


# --------------------------------------------------------------------------- throughput-latency


def throughput_latency_data(pairs, *, prompt_len: int, gen_len: int, batches) -> pd.DataFrame:
    """Throughput against request latency over batch size, for (model, hardware) pairs."""
    frames = []
    for model, hw in pairs:
        df = inf.throughput_latency_sweep(model, hw, prompt_len=prompt_len, gen_len=gen_len, batches=batches)
        df.insert(0, "hardware", hw)
        df.insert(0, "model", model)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def throughput_latency_figure(data: pd.DataFrame, title: str = ""):
    """Generated tokens/s against time to finish the request, one curve per (model, hardware); points are batch sizes."""
    fig, ax = new_figure()
    for i, ((model, hw), g) in enumerate(data.groupby(["model", "hardware"], sort=False)):
        color = PALETTE[i % len(PALETTE)]
        ax.plot(g["latency_s"], g["throughput_tokens_per_s"], color=color, marker="o", markersize=3.5,
                label=f"{model} on {hw}")
        over = g[~g["fits_memory"]]
        ax.scatter(over["latency_s"], over["throughput_tokens_per_s"], s=55, marker="x", color=color, linewidth=1.2)
        for _, r in g.iloc[[0, len(g) // 2, len(g) - 1]].iterrows():
            ax.annotate(f"b={int(r['batch'])}", (r["latency_s"], r["throughput_tokens_per_s"]), xytext=(4, -9),
                        textcoords="offset points", fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("request latency: prefill + all decode steps (s, log scale)")
    ax.set_ylabel("generated tokens per second (log scale)")
    ax.set_title(title or "Throughput against latency (x = batch does not fit in memory)")
    ax.legend(fontsize=7.5)
    return fig


# --------------------------------------------------------------------------- MoE


def moe_weight_bytes_data(models, hw: str, *, batches, context_len: int) -> pd.DataFrame:
    """Expected distinct experts per MoE layer and weight bytes read per decode step, against batch."""
    rows = []
    for key in models:
        m = inf.get_model(key)
        for b in batches:
            df = inf.roofline_table(m, hw, "decode", b, context_len)
            weights = df[df["op"].str.startswith("experts_")]["bytes"].sum()
            rows.append({
                "model": key, "batch": b,
                "experts_touched": inf.expected_experts_touched(m.n_experts, m.experts_per_token, b),
                "n_experts": m.n_experts,
                "routed_expert_bytes": weights,
                "all_routed_expert_bytes": m.n_moe_layers * m.n_experts * m.expert_params() * 2,
                "step_bytes": df["bytes"].sum(),
                "active_weight_bytes": m.params_active * 2,
                "total_weight_bytes": m.params_total * 2,
            })
    return pd.DataFrame(rows)


def moe_weight_bytes_figure(data: pd.DataFrame):
    """Fraction of routed experts a decode step touches (left) and bytes read per step over active-weight bytes (right)."""
    fig, axes = new_figure(1, 2, width=9.0, height=3.8)
    for i, (key, g) in enumerate(data.groupby("model", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        axes[0].plot(g["batch"], g["experts_touched"] / g["n_experts"], marker="o", markersize=3.5, color=color,
                     label=f"{key} ({int(g['n_experts'].iloc[0])} experts)")
        axes[1].plot(g["batch"], g["step_bytes"] / g["active_weight_bytes"], marker="o", markersize=3.5, color=color,
                     label=key)
        axes[1].axhline(g["total_weight_bytes"].iloc[0] / g["active_weight_bytes"].iloc[0], color=color,
                        linestyle="--", linewidth=0.9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlabel("decode batch (log scale)")
        ax.legend(fontsize=7.5)
    axes[0].set_ylabel("expected fraction of experts touched")
    axes[0].set_title("Uniform routing: E(1 - (1 - k/E)^B)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("bytes read per step / active-weight bytes")
    axes[1].set_title("Decode reads more than the active weights\n(dashed: all weights)")
    return fig


# --------------------------------------------------------------------------- calibration


def calibration_figure(data: pd.DataFrame):
    """Predicted against measured run time of our attention kernels on this CPU (log-log, y = x and the bars).

    ``data`` is :func:`scalelab.simulations.calibration.calibrate_attention_kernels` output (one or more thread counts).
    """
    fig, ax = new_figure(width=7.0, height=5.0)
    lo = min(data["predicted_s"].min(), data["measured_s"].min()) / 2
    hi = max(data["predicted_s"].max(), data["measured_s"].max()) * 2
    x = np.geomspace(lo, hi, 50)
    ax.plot(x, x, color="0.3", linewidth=1.0, label="predicted = measured")
    ax.fill_between(x, 0.5 * x, 2.0 * x, color=PALETTE[0], alpha=0.08, label="prefill bar 0.5-2")
    ax.fill_between(x, 0.75 * x, 1.33 * x, color=PALETTE[1], alpha=0.12, label="decode bar 0.75-1.33")
    colors = {"attention": PALETTE[0], "decode_attention": PALETTE[1]}
    markers = {1: "o", 2: "D"}
    for (kernel, threads), g in data.groupby(["kernel", "threads"], sort=False):
        color = colors.get(kernel, PALETTE[2])
        # vertical bar: the range of predicted / measured over the interleaved rounds
        yerr = np.vstack([g["predicted_s"] - g["ratio_min"] * g["measured_s"],
                          g["ratio_max"] * g["measured_s"] - g["predicted_s"]]).clip(min=0)
        ax.errorbar(g["measured_s"], g["predicted_s"], yerr=yerr, fmt=markers.get(int(threads), "^"), color=color,
                    markersize=6, capsize=2, linewidth=0.8, zorder=3, label=f"{kernel}, {threads} thread(s)")
        for _, r in g.iterrows():
            ax.annotate(f"{r.get('label', r['shape'])}: {r['ratio']:.2f}", (r["measured_s"], r["predicted_s"]),
                        xytext=(6, -3), textcoords="offset points", fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured run time on this CPU, median (s, log scale)")
    ax.set_ylabel("roofline prediction from measured ceilings (s, log scale)")
    ax.set_title("Our attention kernels: predicted / measured")
    ax.legend(fontsize=7, loc="upper left")
    return fig
