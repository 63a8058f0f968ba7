"""Report section: what inference costs, prefill against decode, and how well the roofline predicts our own kernels."""

from __future__ import annotations

import pandas as pd

from scalelab.report.figures import inference as figs
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.simulations import calibration
from scalelab.simulations import inference as inf

TITLE = "Inference cost: prefill against decode"

#: The configuration the CLI prints by default and the roofline chart shows.
DEFAULT = dict(model="llama-3-8b", hw="h100-sxm", batch=16, prompt=2048, gen=256)


def _presets_table() -> pd.DataFrame:
    rows = []
    for key, m in inf.MODELS.items():
        rows.append({
            "model": key, "layers": m.n_layers, "d_model": m.d_model, "heads": m.n_heads,
            "kv heads": "latent" if m.is_mla else m.n_kv_heads,
            "experts (active)": f"{m.n_experts} ({m.experts_per_token})" if m.is_moe else "dense",
            "params (B)": m.params_total / 1e9, "active (B)": m.params_active / 1e9,
            "KV bytes/token fp16": inf.kv_cache_bytes_per_token(m),
            "GFLOP/token @4k": m.flops_per_token(4096) / 1e9, "source": m.source.split(";")[0],
        })
    return pd.DataFrame(rows)


def _crossover_table() -> pd.DataFrame:
    rows = []
    for key in ("llama-2-7b", "llama-3-8b", "llama-3-70b", "mixtral-8x7b", "deepseek-v3"):
        for hw in ("a100-80gb", "h100-sxm", "h200"):
            row = {"model": key, "hardware": hw, "ridge FLOP/byte": inf.ridge_point(hw)}
            for ctx in (128, 4096, 32768):
                b = inf.decode_compute_bound_batch(key, hw, ctx, batch_limit=2**16)
                row[f"compute-bound batch @ {ctx}"] = b if b is not None else "never (<= 65536)"
            row["max batch @ 4096 (memory)"] = inf.max_batch(key, hw, 4096)
            rows.append(row)
    return pd.DataFrame(rows)


def _phase_table() -> pd.DataFrame:
    d = DEFAULT
    return inf.phase_table(d["model"], d["hw"], batch=d["batch"], prompt=d["prompt"], gen=d["gen"])


def _calibration_note(cal: pd.DataFrame) -> str:
    lines = []
    for _, r in cal.iterrows():
        lines.append(f"- `{r['kernel']}` {r['shape']}, {r['threads']} thread(s): {r['bound']}-bound, "
                     f"predicted {r['predicted_s'] * 1e3:.1f} ms, "
                     f"measured {r['measured_s'] * 1e3:.1f} ms, ratio **{r['ratio']:.2f}** "
                     f"(bar {r['bar_lo']}-{r['bar_hi']}: {'met' if r['within_bar'] else 'missed'}; "
                     f"against the BLAS-peak roofline {r['ratio_blas']:.2f})")
    pre = cal[cal["kernel"] == "attention"]
    dec = cal[cal["kernel"] == "decode_attention"]
    missed = cal[~cal["within_bar"]]
    text = (
        "**Calibration on this CPU.** Ceilings measured in the same process right before and after every kernel "
        "call (their geometric mean stands for the machine during the call; medians over the rounds): "
        + "; ".join(f"{t} thread(s): fp32 BLAS matmul {g['blas_flops'].median() / 1e9:.1f} GFLOP/s, register-tile "
                    f"Numba matmul {g['compute_ceiling_flops'].median() / 1e9:.1f} GFLOP/s, read stream "
                    f"{g['bandwidth_bytes_per_s'].median() / 1e9:.2f} GB/s" for t, g in cal.groupby("threads"))
        + ". Predicted / measured per shape (median over rounds):\n\n"
        + "\n".join(lines) + "\n\n"
    )
    if len(pre):
        text += (
            f"Prefill is compute-bound ({pre['intensity'].min():.0f} to {pre['intensity'].max():.0f} FLOP/byte at "
            "these shapes); the prediction uses the ceiling of the register-tile micro-kernel the prefill kernel "
            "is built on; against the BLAS peak (hand-written assembly) the predicted/measured ratio would be "
            f"{(pre['ratio_blas'] / pre['ratio']).mean():.2f}x the one shown (the `ratio_blas` column). What the model "
            "misses there: the softmax (an exponential, a max and a rescale per score, not counted as FLOPs), the "
            "masked diagonal tiles, and the copies that load query tiles and pack K and V into strips. "
        )
    if len(dec):
        text += (
            f"Decode is memory-bound ({', '.join(f'{x:.1f}' for x in sorted(dec['intensity'].unique()))} FLOP/byte "
            "in fp32 at these shapes; 4:1 GQA quadruples it): the prediction is the KV bytes over the read-stream "
            "bandwidth. "
            "What it misses: the work done between loads (scores, exponentials, "
            "the output update and the merge of the key splits) is assumed to hide completely under the stream; "
            "where it does not, and GQA makes each byte serve four query heads, the kernel runs slower than "
            "predicted. The `ratio_serial` column adds compute and memory time instead (no overlap at all); the "
            "truth lies between the two. "
        )
    if len(missed):
        text += (
            "Shapes outside their bar: " + ", ".join(f"{r['kernel']} {r['shape']} at {r['threads']} thread(s) "
                                                     f"({r['ratio']:.2f})" for _, r in missed.iterrows())
            + ". A ratio below 1 means the kernel ran slower than the measured ceilings allow, above 1 faster (a "
            "ceiling measured in a noisier moment than the kernel). This machine is shared by several processes "
            "on two cores; each ratio pairs a kernel call with ceilings measured right next to it, and the "
            "min-max columns show how far single rounds spread."
        )
    return text


def build(ctx: SectionContext) -> Section:
    d = DEFAULT
    items: list = [TextItem(
        "A per-operation roofline (as in LLM-Viewer): every operation of a layer gets its FLOPs and the bytes it "
        "moves, and takes max(FLOPs / peak, bytes / bandwidth). Prefill reuses each weight across the whole prompt and "
        "is compute-bound; decode reads every weight and the whole KV cache to emit one token per sequence and is "
        "memory-bound until the batch nears the ridge point. Hardware: dense 16-bit datasheet peaks. "
        "Assumptions (no fusion beyond FlashAttention-style attention, logits for the last position only, uniform "
        "MoE routing, MLA approximated) are listed in `simulations/inference.py`."
    )]
    ctx.progress("inference: presets and phase table")
    items.append(TableItem("presets", _presets_table(),
                           "Model presets: parameter counts computed from the configurations (Mixtral 46.7B / 12.9B and "
                           "DeepSeek-V3 671B / 37B reproduced; the active count includes the input embedding)."))
    items.append(TableItem("phase_table", _phase_table(),
                           f"`scalelab inference --model {d['model']} --hw {d['hw']} --batch {d['batch']} --prompt "
                           f"{d['prompt']} --gen {d['gen']}`: prefill is compute-bound at ~90% MFU, decode memory-bound "
                           "at ~100% MBU and under 5% MFU."))

    ctx.progress("inference: roofline")
    roof = figs.roofline_ops_data(d["model"], d["hw"], batch=d["batch"], prompt_len=d["prompt"],
                                  context_len=d["prompt"] + d["gen"])
    items.append(FigureItem("roofline_ops", figs.roofline_figure(roof, d["hw"], f"{d['model']} on {d['hw']}, batch {d['batch']}"),
                            "Every prefill op (circles) sits at or right of the ridge and runs at the compute roof; "
                            "the decode projections sit near intensity = batch and decode attention near "
                            "2 x GQA ratio / 2 bytes, far left of the ridge on the bandwidth slope.", roof))

    ctx.progress("inference: TTFT / TPOT")
    batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] if not ctx.quick else [1, 4, 16, 64, 256]
    tt = figs.ttft_tpot_data(d["model"], d["hw"], batches=batches, prompt_lens=[512, 2048, 8192],
                             contexts=[512, 4096, 32768])
    items.append(FigureItem("ttft_tpot", figs.ttft_tpot_figure(tt, f"{d['model']} on {d['hw']}"),
                            "TTFT grows linearly with batch and faster than linearly with the prompt (attention is "
                            "quadratic), compute-bound throughout; TPOT is flat in batch while the "
                            "weights dominate and then grows with batch x context, the KV cache reads, which never "
                            "turn compute-bound at long context.", tt))

    ctx.progress("inference: KV cache")
    contexts = [2**i for i in range(9, 18)]
    kv = figs.kv_cache_data(["llama-2-7b", "llama-3-8b", "llama-3-70b", "mixtral-8x7b", "deepseek-v3"], contexts)
    h100 = inf.get_hardware("h100-sxm")
    items.append(FigureItem("kv_cache", figs.kv_cache_figure(kv, h100.memory_bytes, "H100 memory (80 GiB)"),
                            "Llama-2-7B (MHA) needs 4x the cache of Llama-3-8B (GQA 4:1) per token; Llama-3-70B with 8 "
                            "KV heads stores less per token than the 7B MHA model; DeepSeek-V3's latent cache is the "
                            "smallest per token of all despite 61 layers.", kv))

    ctx.progress("inference: throughput-latency")
    tl_batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024] if not ctx.quick else [1, 4, 16, 64, 256, 1024]
    tl = figs.throughput_latency_data([("llama-3-8b", "h100-sxm"), ("llama-2-7b", "h100-sxm"),
                                       ("mixtral-8x7b", "h200"), ("llama-3-8b", "a100-80gb")],
                                      prompt_len=1024, gen_len=256 if not ctx.quick else 64, batches=tl_batches)
    items.append(FigureItem("throughput_latency", figs.throughput_latency_figure(tl),
                            "Batching buys throughput almost for free while decode is memory-bound, then latency "
                            "climbs; GQA (Llama-3-8B) reaches higher throughput than MHA (Llama-2-7B) because its KV "
                            "reads are 4x smaller; crosses mark batches whose KV cache no longer fits.", tl))

    ctx.progress("inference: MoE")
    moe = figs.moe_weight_bytes_data(["mixtral-8x7b", "deepseek-v3"], "h200",
                                     batches=[1, 2, 4, 8, 16, 32, 64, 128, 256], context_len=1024)
    items.append(FigureItem("moe_weight_bytes", figs.moe_weight_bytes_figure(moe),
                            "A decode step reads the experts its batch touches, not just the active parameters: "
                            "Mixtral touches all 8 experts by batch ~16, so a batched MoE decode step reads nearly all "
                            "its weights; DeepSeek-V3's 256 experts saturate only past batch ~100.", moe))
    items.append(TableItem("decode_crossover", _crossover_table(),
                           "Smallest decode batch at which the step is compute-bound, by context length. GQA dense "
                           "models cross just above the ridge point at short context (kipply's rule of thumb); MoE "
                           "models need far larger batches, since a bigger batch touches more experts; MHA Llama-2-7B "
                           "on H100/H200 and every model at 32k tokens never cross, because KV-cache attention (a "
                           "fixed 1-4 FLOP/byte in fp16, whatever the batch) takes most of the step. The last column "
                           "is the memory limit: 0 where the fp16 weights alone do not fit."))

    ctx.progress("inference: calibrating against our attention kernels")
    shapes = list(calibration.ATTENTION_CALIBRATION_SHAPES)
    if ctx.quick:
        shapes = [s for s in shapes if (s["kernel"] == "attention" and s["q_len"] == 512)
                  or (s["kernel"] == "decode_attention" and s["n_kv_heads"] == 8)]
    thread_counts = [1] if ctx.quick else [1, 2]
    cal = pd.concat([calibration.calibrate_attention_kernels(shapes=shapes, repeats=2 if ctx.quick else 5, seed=ctx.seed,
                                                     threads=t) for t in thread_counts], ignore_index=True)
    items.append(FigureItem("calibration", figs.calibration_figure(cal),
                            "Each of our attention kernels at the asv shapes, roofline prediction from ceilings "
                            "measured on this CPU next to each call against its measured run time (medians; bars "
                            "span the rounds); shaded bands are the bars (decode 0.75-1.33, prefill 0.5-2).", cal))
    items.append(TableItem("calibration_ratios", cal[["kernel", "shape", "threads", "bound", "intensity",
                                                      "predicted_s", "measured_s", "ratio", "ratio_min", "ratio_max",
                                                      "ratio_blas", "ratio_serial", "within_bar"]],
                           "Predicted / measured per shape; the published error of the model on this CPU."))
    items.append(TextItem(_calibration_note(cal)))
    return Section(TITLE, items)
