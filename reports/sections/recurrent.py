"""Report section: what a constant-size recurrent state (Mamba, RWKV-6, the Jamba hybrid) does to inference cost.

All numbers come from the roofline model in :mod:`simulations.inference`
(bf16 weights, cache and state; batch 1), not from measurements of a GPU.
"""

from __future__ import annotations

import pandas as pd

from scalelab.report.figures import recurrent as figs
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.simulations.inference import (
    MODELS,
    decode_cost,
    get_hardware,
    kv_cache_bytes,
    state_bytes_per_sequence,
)

TITLE = "Beyond attention: recurrent state instead of a KV cache"

MODELS_SHOWN = ("llama-3-8b", "mamba-2.8b", "jamba-v0.1")
HW = "h100-sxm"
GIB = 2**30

#: Lieber et al. 2024, 'Jamba', Table 1: KV cache at 256K context, 16-bit (GB = 2**30 bytes).
JAMBA_TABLE1_KV_GB = {"llama-2-7b": 128, "mistral-7b": 32, "mixtral-8x7b": 32, "jamba-v0.1": 4}


def context_sweep(models=MODELS_SHOWN, hw: str = HW, contexts=None) -> pd.DataFrame:
    """Memory per sequence and decode time per token against context length (batch 1, bf16).

    Columns: ``model, context, kv_cache_GiB, state_GiB, memory_GiB, decode_ms``.
    """
    contexts = contexts if contexts is not None else [2**i for i in range(10, 21)]
    rows = []
    for key in models:
        m = MODELS[key]
        state = state_bytes_per_sequence(m)
        for c in contexts:
            kv = kv_cache_bytes(m, batch=1, seq_len=c)
            rows.append({"model": m.name, "context": c, "kv_cache_GiB": kv / GIB, "state_GiB": state / GIB,
                         "memory_GiB": (kv + state) / GIB,
                         "decode_ms": decode_cost(m, hw, batch=1, context_len=c).time_s * 1e3})
    return pd.DataFrame(rows)


def jamba_table1() -> pd.DataFrame:
    """Our KV cache at 256K tokens (16-bit) beside Jamba's Table 1, with parameter counts."""
    rows = []
    for key, published in JAMBA_TABLE1_KV_GB.items():
        m = MODELS[key]
        rows.append({"model": m.name, "params_total_B": m.params_total / 1e9, "params_active_B": m.params_active / 1e9,
                     "kv_cache_256K_GiB_model": kv_cache_bytes(m, batch=1, seq_len=256 * 1024) / GIB,
                     "kv_cache_256K_GB_Table1": published})
    return pd.DataFrame(rows)


def build(ctx: SectionContext) -> Section:
    ctx.progress("beyond attention: context sweep")
    sweep = context_sweep()
    h = get_hardware(HW)
    mem_gib = h.memory_bytes / GIB if h.memory_bytes else None
    at = sweep.set_index(["model", "context"])
    names = {k: MODELS[k].name for k in MODELS_SHOWN}
    lo, hi = sweep["context"].min(), sweep["context"].max()

    def ratio(key):
        return at.loc[(names[key], hi), "decode_ms"] / at.loc[(names[key], lo), "decode_ms"]

    items: list = [TextItem(
        "Attention keeps every past token's keys and values, so a decode step reads a cache that grows with the "
        "context. Mamba (Gu & Dao 2023) and RWKV-6 (Peng et al. 2024) keep a state of fixed size instead: "
        "`d_inner x (d_state + d_conv)` numbers per Mamba layer, `heads x head_size^2` (plus two token-shift "
        "vectors) per RWKV layer. Jamba (Lieber et al. 2024) keeps one attention layer in eight. The kernels are "
        "`kernels.recurrent` (selective scan and WKV, prefill and decode); the curves below are the roofline model "
        f"on {h.name}, batch 1, bf16."
    )]
    items.append(FigureItem(
        "memory_per_sequence", figs.memory_per_sequence_figure(sweep, mem_gib, f"one sequence, bf16, {HW}"),
        f"Mamba-2.8B holds {at.loc[(names['mamba-2.8b'], lo), 'memory_GiB'] * 1024:.1f} MiB per sequence at any "
        f"length; Llama-3-8B's KV cache grows linearly to {at.loc[(names['llama-3-8b'], hi), 'memory_GiB']:.0f} GiB at "
        f"{hi:,} tokens, Jamba's (4 attention layers of 32, plus a constant Mamba state) to "
        f"{at.loc[(names['jamba-v0.1'], hi), 'memory_GiB']:.0f} GiB.", sweep))
    items.append(FigureItem(
        "decode_time", figs.decode_time_figure(sweep, f"time per output token, batch 1, {HW}"),
        f"From {lo:,} to {hi:,} tokens of context the modelled decode step grows {ratio('llama-3-8b'):.1f}x for "
        f"Llama-3-8B (it reads the whole KV cache), {ratio('jamba-v0.1'):.2f}x for Jamba (only its attention layers "
        f"read a cache; its 12B active parameters dominate) and {ratio('mamba-2.8b'):.2f}x for Mamba-2.8B, whose "
        "step reads the weights and a fixed state.", sweep))
    table = jamba_table1()
    rel = (table["kv_cache_256K_GiB_model"] / table["kv_cache_256K_GB_Table1"] - 1.0).abs().max()
    items.append(TableItem(
        "jamba_table1", table,
        "KV cache at 256K tokens in 16-bit from our configs beside Lieber et al. 2024, Table 1 (their GB are GiB): "
        f"largest relative difference {rel:.1%}. Jamba's cache is 8x smaller than Mixtral's because 4 of its 32 "
        "layers attend; the other 28 keep a Mamba state that does not grow."))
    return Section(TITLE, items)
