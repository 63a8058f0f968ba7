"""Report section: serving under load (the request-level simulator of :mod:`simulations.serving`).

Four pieces, one model and one GPU type (Llama-3-8B on an H100 SXM): latency
percentiles against request rate per scheduler; goodput per GPU of
colocated against disaggregated deployments; the Azure 2023 traces replayed
(their lengths and latency CDFs); the capacity-planning frontier. Request
lengths are drawn from the Azure conversation trace, so only the arrival
process is synthetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scalelab.report.figures import serving as figs
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.simulations.serving import Empirical, load_trace, poisson_workload, simulate
from scalelab.simulations.serving.planning import evaluate_config, expand_space, gpus_for_rate

TITLE = "Serving under load"

MODEL, HW = "llama-3-8b", "h100-sxm"
SLO_TTFT, SLO_TPOT = 0.5, 0.006  # seconds; the TPOT SLO is tight: ~1.2 x an unloaded decode step here


def _workload(conv, rate: float, n: int, seed: int):
    return poisson_workload(rate, n, prompt_len=Empirical(conv.prompt_tokens),
                            output_len=Empirical(conv.output_tokens), seed=seed)


def latency_sweep(conv, rates, n: int, seed: int) -> pd.DataFrame:
    rows = []
    for rate in rates:
        w = _workload(conv, rate, n, seed)
        for scheduler in ("static", "continuous", "chunked"):
            s = simulate(MODEL, HW, w, scheduler=scheduler).summary()
            rows.append({"scheduler": scheduler, "rate": rate, **{k: s[k] for k in (
                "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "throughput_rps", "preemptions")}})
    return pd.DataFrame(rows)


def goodput_sweep(conv, rates, n: int, seed: int) -> pd.DataFrame:
    deployments = {
        "colocated, continuous (2 replicas)": dict(scheduler="continuous", replicas=2),
        "colocated, chunked (2 replicas)": dict(scheduler="chunked", replicas=2),
        "disaggregated (1 prefill + 1 decode)": dict(scheduler="disaggregated", n_prefill=1, n_decode=1),
    }
    rows = []
    for rate in rates:
        w = _workload(conv, rate, n, seed)
        for name, kw in deployments.items():
            s = simulate(MODEL, HW, w, slo_ttft=SLO_TTFT, slo_tpot=SLO_TPOT, **kw).summary()
            rows.append({"deployment": name, "rate": rate, "goodput_per_gpu": s["goodput_per_gpu"],
                         "slo_attainment": s["slo_attainment"], "tpot_p99": s["tpot_p99"]})
    return pd.DataFrame(rows)


def frontier(conv, per_gpu_rates, targets, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each configuration tested at ``rate x n_gpus`` for each per-GPU rate; its best goodput sets its GPUs per target."""
    configs = expand_space({"scheduler": ["continuous", "chunked", "disaggregated"], "tp": [1, 2]})
    found = []
    for r in per_gpu_rates:
        for c in configs:
            gpus = c["tp"] * (c["n_prefill"] + c["n_decode"] if c["scheduler"] == "disaggregated" else c["replicas"])
            w = _workload(conv, r * gpus, n, seed)
            found.append({**evaluate_config(c, MODEL, HW, w, SLO_TTFT, SLO_TPOT), "load_per_gpu": r})
    table = pd.DataFrame(found)
    best = table.sort_values("goodput_rps", ascending=False).drop_duplicates(
        ["scheduler", "tp", "replicas", "n_prefill", "n_decode"])
    rows = []
    for scheduler, g in best.groupby("scheduler", sort=False):
        for t in targets:
            need = min(gpus_for_rate(gp, ng, t) for gp, ng in zip(g["goodput_rps"], g["n_gpus"]))
            rows.append({"scheduler": scheduler, "target_rate": t, "gpus": need})
    cols = ["scheduler", "tp", "replicas", "n_prefill", "n_decode", "n_gpus", "load_per_gpu", "goodput_rps",
            "goodput_per_gpu", "slo_attainment", "ttft_p99", "tpot_p99"]
    return pd.DataFrame(rows), best[cols].reset_index(drop=True)


def build(ctx: SectionContext) -> Section:
    quick = ctx.quick
    conv = load_trace("conv")
    n = 200 if quick else 1500
    items: list = [TextItem(
        f"A request-level simulation of {MODEL} on {HW}: every iteration's duration comes from the per-operation "
        "roofline (no measured step times, efficiency 1.0, so absolute latencies are lower bounds), the KV cache "
        "lives in 16-token blocks with preemption by recompute, and requests arrive as a Poisson process with "
        "prompt and output lengths resampled from the Azure 2023 conversation trace (Patel et al. 2024, "
        f"Splitwise). SLOs: TTFT {SLO_TTFT:g} s, TPOT {SLO_TPOT * 1e3:g} ms."
    )]
    ctx.progress("serving: latency against rate")
    rates = [2, 8] if quick else [2, 4, 6, 8, 10, 12, 14]
    lat = latency_sweep(conv, rates, n, ctx.seed)
    items.append(FigureItem(
        "latency_vs_rate", figs.latency_vs_rate_figure(lat, f"{MODEL} on one {HW}"),
        "Static batching queues every arrival behind a whole batch, so its TTFT is orders of magnitude worse. "
        "Prefill-priority continuous batching admits prompts at once (lowest TTFT) but each admitted prompt stalls "
        "every running decode, which shows in its TPOT p99; chunked prefill bounds each iteration's tokens and "
        "keeps TPOT p99 lower at the price of a slightly higher TTFT (Sarathi-Serve's trade-off).", lat))
    ctx.progress("serving: goodput, colocated against disaggregated")
    grates = [4, 16] if quick else [4, 8, 12, 16, 20, 24]
    good = goodput_sweep(conv, grates, n, ctx.seed + 1)
    top = good[good["rate"] == good["rate"].max()].set_index("deployment")["goodput_per_gpu"]
    items.append(FigureItem(
        "goodput", figs.goodput_figure(good),
        "Under a tight TPOT SLO, a decode instance that never runs prefills keeps its step time steady, so the "
        "disaggregated pair holds its goodput to higher rates than two colocated replicas with prefill priority "
        f"(DistServe's result). At {good['rate'].max():g} requests/s the best is {top.idxmax()} "
        f"({top.max():.2f} requests/s per GPU): on this decode-heavy conversation mix chunked prefill also keeps "
        "prefills from stalling decodes, without leaving a prefill GPU idle between prompts.", good))
    ctx.progress("serving: Azure traces")
    limit = 1000 if quick else None
    traces, lat_rows = [], []
    for name in ("conv", "code"):
        w = load_trace(name, limit=limit)
        traces.append(w.table.assign(trace=f"{name} ({len(w)} requests)"))
        r = simulate(MODEL, HW, w, scheduler="chunked").requests
        lat_rows.append(r[["ttft", "tpot"]].assign(trace=f"{name}, chunked, 1 GPU"))
    lengths = pd.concat(traces, ignore_index=True)
    items.append(FigureItem(
        "trace_lengths", figs.trace_lengths_figure(lengths, "Azure LLM inference traces, November 2023"),
        "The code service sends long prompts and asks for a few tokens (median output 13): prefill-heavy. The "
        "conversation service has shorter prompts and ten times longer outputs: decode-heavy.",
        lengths[["trace", "prompt_tokens", "output_tokens"]]))
    lat_cdf = pd.concat(lat_rows, ignore_index=True)
    p99 = lat_cdf.groupby("trace", sort=False)[["ttft", "tpot"]].quantile(0.99) * 1e3
    stats = "; ".join(f"{t}: TTFT p99 {row.ttft:.0f} ms, TPOT p99 {row.tpot:.1f} ms" for t, row in p99.iterrows())
    items.append(FigureItem(
        "trace_latency_cdf", figs.latency_cdf_figure(lat_cdf, "The traces replayed at their recorded rate"),
        f"At their recorded rates (2.6 and 5.5 requests/s) one GPU serves both traces ({stats}). The code "
        "trace's long prompts are cut into 512-token chunks that share most iterations with its few decodes, "
        "so both its TTFT and its TPOT are the higher; conversation decodes mostly run in decode-only steps.",
        lat_cdf))
    ctx.progress("serving: capacity frontier")
    targets = [5, 10, 20, 50, 100, 200]
    front, best = frontier(conv, [4] if quick else [4, 8, 12], targets, 150 if quick else 600, ctx.seed + 2)
    items.append(FigureItem(
        "capacity_frontier", figs.frontier_figure(front),
        "GPUs needed to serve a target rate within both SLOs, replicating each scheduler's best deployment "
        "(tensor parallelism 1 or 2, colocated replicas or a prefill/decode split), each tested at 4"
        + ("" if quick else ", 8 and 12") + " requests/s per GPU.", front))
    items.append(TableItem("best_deployments", best,
                           "The search behind the frontier: each configuration at the per-GPU load where it "
                           "served the most requests within the SLOs."))
    return Section(TITLE, items)
