"""Kernel performance: our Numba kernels against fair peers on this machine.

The peers are PyTorch (when installed) and, always, the float32 NumPy
implementations of :mod:`scalelab.kernels.peers`, written the way a competent
NumPy user would. The float64 ``*_ref`` references are oracles written for
clarity, not programs anyone would run for speed: they appear in accuracy
columns and, in the asv time table, as a listed time, never as a peer.

Two sources, in this order of preference:

* **asv results** (``.asv/results/<machine>/<commit>-<env>.json`` in the
  checkout, written by ``asv run``), read by :mod:`scalelab.report.sections.kernels_asv`:
  per kernel family the speed-up over the hardest fair peer, small multiples of
  every implementation's time per shape, achieved GFLOP/s and GB/s against
  ceilings measured by the same asv run (``asv_benchmarks/roofline.py``), and
  our time across commits when several were benchmarked.
* otherwise a **built-in measurement** of a few seconds: causal prefill and
  decode attention (plus the sampling and MoE kernels when their modules
  exist) against the float32 NumPy peers and, when installed, PyTorch; every
  implementation timed interleaved in the same process, best of repeats,
  because this machine is shared and noisy. The page says which source it used.

For the built-in measurement the roofline is measured here too
(:func:`scalelab.simulations.calibration.measure_cpu`: BLAS fp32 matmul and a
Numba read stream), never typed in; asv results bring their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import socket
import time
from typing import Callable

import numpy as np
import pandas as pd

from scalelab.bench import asv_results
from scalelab.report.figures import kernels as kfig
from scalelab.report.section import FigureItem, Section, SectionContext, TableItem, TextItem
from scalelab.report.sections import kernels_asv

TITLE = "Kernel performance"

IMPL_NAME = {"numba": "scalelab (Numba)", "numpy_f32": "NumPy float32 peer", "torch": "PyTorch",
             "numpy": "NumPy float64 reference"}

#: One line for pages that compare without PyTorch.
ADD_TORCH = "PyTorch is not installed here; `make bench-torch` adds it as a peer (CPU wheel)."


# --------------------------------------------------------------------------- roofline


def measure_roofline(quick: bool) -> dict:
    """This machine's fp32 compute and read-bandwidth ceilings, measured now.

    Returns ``peak_flops`` (FLOP/s), ``bandwidth`` (bytes/s), ``source`` (one
    sentence saying how) and ``seconds``.
    """
    from scalelab.simulations.calibration import measure_cpu

    t0 = time.perf_counter()
    # stream_bytes=None: default_stream_bytes() (4x the last-level cache, at least 128 MiB) in both modes, so
    # the read ceiling comes from DRAM; in quick mode it costs ~1 s more than the 64 MiB it replaces.
    m = measure_cpu(matmul_n=768 if quick else 1024, stream_bytes=None, repeats=3 if quick else 7)
    return dict(
        peak_flops=m.matmul_flops_per_s, bandwidth=m.read_bytes_per_s,
        source=(f"fp32 {m.matmul_n}x{m.matmul_n} matmul through {m.blas}: "
                f"{m.matmul_flops_per_s / 1e9:.0f} GFLOP/s; Numba read stream over "
                f"{m.stream_bytes / 2**20:.0f} MiB arrays: {m.read_bytes_per_s / 1e9:.1f} GB/s "
                f"(STREAM triad {m.triad_bytes_per_s / 1e9:.1f} GB/s); best of repeats "
                "(scalelab.simulations.calibration)"),
        seconds=time.perf_counter() - t0,
    )


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                     min_sample_s: float = 0.004, outputs: dict | None = None,
                     budget_s: float = 2.0) -> dict[str, float]:
    """Best seconds per call of each function, timed round-robin in one process.

    Each function runs once to warm up (compile, page faults); then each repeat
    times every function in turn, with enough calls per sample that one sample
    lasts ``min_sample_s``, so a burst of load from other processes hits all
    implementations alike rather than one of them. ``outputs``, when given,
    receives each function's warm-up result (to check accuracy without another call).
    A slow function (a NumPy reference at a long length) stops after ``budget_s``
    seconds of samples, but always gets at least two.
    """
    number = {}
    reps = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        result = fn()
        first = time.perf_counter() - t0
        if outputs is not None:
            outputs[name] = result
        number[name] = max(1, min(200, int(min_sample_s / max(first, 1e-7))))
        reps[name] = max(2, min(repeats, int(budget_s / max(first * number[name], 1e-9))))
    best = {name: math.inf for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            if r >= reps[name]:
                continue
            n = number[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    return best


# --------------------------------------------------------------------------- built-in: attention


def _budget(repeats: int) -> float:
    """Seconds of samples one slow function may take: 1.5 s in quick mode (3 repeats), 5 s else."""
    return 1.5 if repeats <= 3 else 5.0


def _torch():
    """The torch module when installed (an optional peer), else None."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception:  # a broken torch install is a missing peer, not a failed report
        return None
    return torch


def _prefill_counts(attn, L: int, B: int, H: int, D: int) -> tuple[float, float]:
    """(FLOPs, compulsory bytes) of causal float32 prefill with Lq = Lk = L.

    FLOPs from :func:`scalelab.kernels.attention.attention_flops` (unmasked work only);
    bytes: q, k, v read once and out written once.
    """
    flops = float(attn.attention_flops(L, L, D, D, causal=True)) * B * H
    nbytes = 4.0 * B * H * L * D * 4
    return flops, nbytes


def _decode_counts(attn, B: int, Hq: int, Hkv: int, L: int, D: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step over a KV cache of length L (bytes = KV read,
    :func:`scalelab.kernels.attention.kv_bytes_read`)."""
    flops = float(attn.attention_flops(1, L, D, D, causal=True)) * B * Hq
    nbytes = float(attn.kv_bytes_read(np.full(B, L), Hkv, D, D, itemsize=4))
    return flops, nbytes


def _max_err(a, ref) -> float:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().numpy()
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(ref, dtype=np.float64))))


def measure_attention(quick: bool, seed: int, progress: Callable[[str], None]) -> pd.DataFrame:
    """Time causal prefill and decode attention: ours, the float32 NumPy peer, PyTorch SDPA.

    Shapes follow the asv suite at a size that fits in seconds: prefill
    B=1, H=8, D=64, float32, causal; decode B=8 (4 quick), Hq=32, Hkv=8 (GQA),
    D=128. Returns one row per (kernel, shape, implementation), with each
    implementation's largest absolute difference from the float64 reference
    (computed once, not timed).
    """
    from scalelab.kernels import attention as attn
    from scalelab.kernels import peers

    torch = _torch()
    rng = np.random.default_rng(seed)
    repeats = 3 if quick else 5
    rows = []
    lengths = (128, 256, 512) if quick else (256, 512, 1024, 2048)
    B, H, D = 1, 8, 64
    for L in lengths:
        progress(f"prefill attention L={L}")
        q = rng.standard_normal((B, H, L, D), dtype=np.float32)  # (B, H, L, D)
        k = rng.standard_normal((B, H, L, D), dtype=np.float32)  # (B, H, L, D)
        v = rng.standard_normal((B, H, L, D), dtype=np.float32)  # (B, H, L, D)
        fns = {"numba": lambda: attn.attention(q, k, v, causal=True),
               "numpy_f32": lambda: peers.prefill_attention(q, k, v)}
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
            fns["torch"] = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        outs: dict = {}
        seconds = _timed_with_torch_threads(torch, fns, repeats, outs)
        ref = attn.attention_ref(q, k, v, causal=True)
        flops, nbytes = _prefill_counts(attn, L, B, H, D)
        for impl, s in seconds.items():
            rows.append(dict(kernel="prefill", shape=f"L={L}", L=L, impl=impl, seconds=s, flops=flops,
                             bytes=nbytes, max_abs_err_vs_ref=_max_err(outs[impl], ref)))

    Bd, Hq, Hkv, Dd = (4, 32, 8, 128) if quick else (8, 32, 8, 128)
    Ld = 1024 if quick else 2048
    progress(f"decode attention B={Bd} kv={Ld}")
    q = rng.standard_normal((Bd, Hq, Dd), dtype=np.float32)  # (B, Hq, D)
    kc = rng.standard_normal((Bd, Hkv, Ld, Dd), dtype=np.float32)  # (B, Hkv, L, D)
    vc = rng.standard_normal((Bd, Hkv, Ld, Dd), dtype=np.float32)  # (B, Hkv, L, D)
    lengths_b = np.full(Bd, Ld, dtype=np.int64)  # (B,)
    fns = {"numba": lambda: attn.decode_attention(q, kc, vc, lengths_b),
           "numpy_f32": lambda: peers.decode_attention(q, kc, vc, lengths_b)}
    if torch is not None:
        tq = torch.from_numpy(q).unsqueeze(2)  # (B, Hq, 1, D)
        tk, tv = torch.from_numpy(kc), torch.from_numpy(vc)
        fns["torch"] = lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True)
    outs = {}
    seconds = _timed_with_torch_threads(torch, fns, repeats, outs)
    if "torch" in outs:
        outs["torch"] = outs["torch"].squeeze(2)  # (B, Hq, D)
    ref = attn.decode_attention_ref(q, kc, vc, lengths_b)
    flops, nbytes = _decode_counts(attn, Bd, Hq, Hkv, Ld, Dd)
    for impl, s in seconds.items():
        rows.append(dict(kernel="decode", shape=f"B={Bd}, Hq={Hq}, Hkv={Hkv}, kv={Ld}", L=Ld, impl=impl, seconds=s,
                         flops=flops, bytes=nbytes, max_abs_err_vs_ref=_max_err(outs[impl], ref)))
    frame = pd.DataFrame(rows)
    frame["gflops"] = frame["flops"] / frame["seconds"] / 1e9
    frame["gbps"] = frame["bytes"] / frame["seconds"] / 1e9
    frame["intensity"] = frame["flops"] / frame["bytes"]
    return frame


def _timed_with_torch_threads(torch, fns, repeats, outputs=None):
    """Time with torch on as many threads as Numba uses, so the comparison is like for like."""
    import numba

    budget = _budget(repeats)
    if torch is None:
        return time_interleaved(fns, repeats, outputs=outputs, budget_s=budget)
    old = torch.get_num_threads()
    torch.set_num_threads(numba.get_num_threads())
    try:
        return time_interleaved(fns, repeats, outputs=outputs, budget_s=budget)
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- built-in: sampling, MoE


def measure_optional_kernels(quick: bool, seed: int, progress: Callable[[str], None]) -> pd.DataFrame:
    """Time the sampling and MoE kernels against the float32 NumPy peers when those modules exist."""
    rows = []
    for module_name, cases in (("scalelab.kernels.sampling", _sampling_cases), ("scalelab.kernels.moe", _moe_cases)):
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        progress(module_name)
        for label, fns in cases(module, quick, seed):
            reps = 3 if quick else 5
            for impl, s in time_interleaved(fns, reps, budget_s=_budget(reps)).items():
                rows.append(dict(module=module_name.split(".")[-1], label=label, impl=impl, seconds=s))
    return pd.DataFrame(rows, columns=["module", "label", "impl", "seconds"])


def _sampling_cases(module, quick: bool, seed: int):
    """(label, {impl: fn}) for scalelab.kernels.sampling's public functions and their float32 NumPy peers."""
    from scalelab.kernels import peers

    rng = np.random.default_rng(seed)
    B, V = (8, 32_000) if quick else (32, 128_000)
    logits = rng.standard_normal((B, V), dtype=np.float32) * 3  # (B, V)
    cases = []
    if hasattr(module, "top_k"):
        cases.append((f"top_k k=50, B={B}, V={V}",
                      {"numba": lambda: module.top_k(logits, 50), "numpy_f32": lambda: peers.top_k(logits, 50)}))
    if hasattr(module, "sample"):
        cases.append((f"sample top_p=0.9, B={B}, V={V}",
                      {"numba": lambda: module.sample(logits, top_p=0.9, seed=seed),
                       "numpy_f32": lambda: peers.sample(logits, top_p=0.9, seed=seed)}))
    if hasattr(module, "filter_logits"):
        cases.append((f"filter_logits top_k=50 top_p=0.9, B={B}, V={V}",
                      {"numba": lambda: module.filter_logits(logits, top_k=50, top_p=0.9),
                       "numpy_f32": lambda: peers.filter_logits(logits, top_k=50, top_p=0.9)}))
    return cases


def _moe_cases(module, quick: bool, seed: int):
    """(label, {impl: fn}) for scalelab.kernels.moe's routing path (route, dispatch, permute, unpermute)
    and the float32 NumPy peers."""
    from scalelab.kernels import peers

    rng = np.random.default_rng(seed)
    T, E, K, d = (2048, 64, 8, 256) if quick else (8192, 64, 8, 1024)
    logits = rng.standard_normal((T, E), dtype=np.float32)  # (T, E)
    x = rng.standard_normal((T, d), dtype=np.float32)  # (T, d)
    cases = []
    if hasattr(module, "route"):
        cases.append((f"route softmax top-{K}, T={T}, E={E}",
                      {"numba": lambda: module.route(logits, K), "numpy_f32": lambda: peers.route(logits, K)}))
        routed = module.route(logits, K)
        experts = routed[1] if isinstance(routed, tuple) else getattr(routed, "experts", None)
        weights = routed[0] if isinstance(routed, tuple) else getattr(routed, "weights", None)
        if experts is not None and hasattr(module, "dispatch"):
            cases.append((f"dispatch top-{K}, T={T}, E={E}",
                          {"numba": lambda: module.dispatch(experts, E),
                           "numpy_f32": lambda: peers.dispatch(experts, E)}))
            disp = module.dispatch(experts, E)
            order = peers.dispatch(experts, E)[0]
            if hasattr(module, "permute"):
                cases.append((f"permute T={T}, k={K}, d={d}",
                              {"numba": lambda: module.permute(x, disp),
                               "numpy_f32": lambda: peers.permute(x, order, K)}))
            if weights is not None and hasattr(module, "unpermute"):
                y = module.permute(x, disp)
                cases.append((f"unpermute T={T}, k={K}, d={d}",
                              {"numba": lambda: module.unpermute(y, disp, weights),
                               "numpy_f32": lambda: peers.unpermute(y, order, weights)}))
    return cases


# --------------------------------------------------------------------------- items


def _speedup_long(frame: pd.DataFrame, label_cols: list[str], peers=("numpy_f32", "torch")) -> pd.DataFrame:
    """Long (label, peer, speedup) rows from a wide table with ``speedup_vs_<peer>`` columns."""
    rows = []
    for rec in frame.to_dict("records"):
        label = " ".join(str(rec[c]) for c in label_cols if pd.notna(rec[c]) and str(rec[c]))
        for peer in peers:
            value = rec.get(f"speedup_vs_{peer}")
            if value is not None and pd.notna(value):
                rows.append(dict(label=label, peer=peer, speedup=float(value)))
    return pd.DataFrame(rows, columns=["label", "peer", "speedup"])


_ABOVE_CEILING = (
    "*Note:* some kernel ran above the ceiling measured for this report. The ceilings are best-of-repeat "
    "measurements taken at one moment; when other processes load the machine they come out low. Rebuild "
    "on a quiet machine for fractions you can trust; the speed-ups, which compare implementations timed "
    "side by side, are less affected."
)


def _builtin_items(ctx: SectionContext, roof: dict) -> list:
    items: list = []
    t0 = time.perf_counter()
    torch = _torch()
    att = measure_attention(ctx.quick, ctx.seed, ctx.progress)
    other = measure_optional_kernels(ctx.quick, ctx.seed, ctx.progress)
    took = time.perf_counter() - t0
    peer_labels = _peer_labels(torch)
    items.append(TextItem(
        "**No asv results were found** under `.asv/results/`, so the numbers below come from a short "
        f"built-in measurement ({took:.0f} s{', quick mode' if ctx.quick else ''}), not from asv: "
        "each kernel against " + " and ".join(f"**{v.removeprefix('vs ')}**" for v in peer_labels.values())
        + " (`scalelab.kernels.peers`: float32, vectorised, BLAS matmuls, `np.argpartition`, written the way "
        "a NumPy user would), all timed interleaved in this process, best of up to "
        f"{3 if ctx.quick else 5} repeats (at least 2), float32, {_numba_threads()} Numba threads. "
        "The float64 NumPy references are oracles, used only for the accuracy columns. "
        + ("" if torch is not None else ADD_TORCH + " ")
        + "Run `asv run --python=same` (see the README) for the full benchmark suite; this section then reports it."
    ))
    wide = att.pivot_table(index=["kernel", "shape", "L"], columns="impl", values="seconds").reset_index()
    wide = wide.sort_values(["kernel", "L"], ascending=[False, True])
    table = pd.DataFrame({"kernel": wide["kernel"], "shape": wide["shape"]})
    peer_impls = [p for p in peer_labels if p in wide]
    for impl in ("numba", *peer_impls):
        table[f"{impl}_ms"] = wide[impl] * 1e3
    for peer in peer_impls:
        table[f"speedup_vs_{peer}"] = wide[peer] / wide["numba"]
    ours = att[att["impl"] == "numba"].set_index(["kernel", "shape"])
    key = list(zip(table["kernel"], table["shape"]))
    table["numba_gflops"] = [ours.loc[k, "gflops"] for k in key]
    table["numba_gbps"] = [ours.loc[k, "gbps"] for k in key]
    roof_at = [min(roof["peak_flops"], roof["bandwidth"] * ours.loc[k, "intensity"]) for k in key]
    table["fraction_of_roofline"] = table["numba_gflops"] * 1e9 / np.array(roof_at)
    table["max_abs_err_vs_ref"] = [ours.loc[k, "max_abs_err_vs_ref"] for k in key]
    peer_err = att[att["impl"] == "numpy_f32"].set_index(["kernel", "shape"])["max_abs_err_vs_ref"]
    table["numpy_f32_max_abs_err_vs_ref"] = [peer_err.get(k, math.nan) for k in key]
    table = table.reset_index(drop=True)

    prefill = att[att["kernel"] == "prefill"][["L", "impl", "gflops", "seconds"]]
    items.append(FigureItem(
        "prefill_throughput", kfig.prefill_throughput_figure(prefill, roof["peak_flops"]),
        "Achieved GFLOP/s of causal prefill attention (B=1, H=8, D=64, float32; only unmasked work counted) "
        "against sequence length, with this machine's measured matmul peak dashed. Read the gap between "
        "the Numba kernel and its peers at each length, and how far all stay below the peak.",
        data=prefill.reset_index(drop=True),
    ))
    long = _speedup_long(table, ["kernel", "shape"])
    items.append(FigureItem(
        "speedup", kfig.speedup_figure(long, peer_labels=peer_labels),
        "Speed-up of the Numba attention kernels " + " and ".join(peer_labels.values()) + " for each shape "
        "(peer time / our time, same process, interleaved; bars right of the dashed line mean ours is faster).",
        data=long,
    ))
    points = att[["kernel", "shape", "impl", "intensity", "gflops"]].copy()
    points["label"] = points["kernel"] + " " + points["shape"].str.replace("B=.*kv=", "kv=", regex=True)
    ridge = roof["peak_flops"] / roof["bandwidth"]
    side = {kernel: ("left of the ridge, so memory bandwidth bounds it" if i < ridge else
                     "right of the ridge, so compute bounds it")
            for kernel, i in att.groupby("kernel")["intensity"].max().items()}
    items.append(FigureItem(
        "roofline", kfig.roofline_figure(points, roof["peak_flops"], roof["bandwidth"]),
        "Each kernel's achieved GFLOP/s against its arithmetic intensity under this machine's roofline "
        f"(measured now: {roof['source']}; ridge at {ridge:.1f} FLOP/byte). "
        + " ".join(f"{k.capitalize()} sits {v}." for k, v in side.items())
        + " The vertical distance to the roof is what is left on the table.",
        data=points,
    ))
    if (table["fraction_of_roofline"] > 1).any():
        items.append(TextItem(_ABOVE_CEILING))
    items.append(TableItem(
        "attention", table,
        "Attention kernels, built-in measurement: best time per call of each implementation, speed-ups "
        "(peer / ours), our achieved GFLOP/s and GB/s, the fraction of the roofline at that intensity, and "
        "the largest absolute difference of ours and of the float32 NumPy peer from the float64 reference.",
    ))
    if not other.empty:
        items.append(FigureItem(
            "sampling_moe", kfig.time_bars_figure(other, "Sampling and MoE routing kernels"),
            "Time per call of the sampling and MoE routing kernels against the float32 NumPy peers "
            "(best of interleaved repeats, log scale): shorter is faster.",
            data=other,
        ))
        wide_o = other.pivot_table(index=["module", "label"], columns="impl", values="seconds").reset_index()
        wide_o["speedup_vs_numpy_f32"] = wide_o["numpy_f32"] / wide_o["numba"]
        items.append(TableItem("sampling_moe_times",
                               wide_o.rename(columns={"numba": "numba_s", "numpy_f32": "numpy_f32_s"}),
                               "Sampling and MoE kernels: seconds per call and speed-up vs NumPy float32."))
    return items


def _asv_items(frame: pd.DataFrame, results_dir, ctx: SectionContext) -> list:
    machine = asv_results.pick_machine(frame, socket.gethostname())
    frame = frame[frame["machine"] == machine]
    commits = asv_results.commits_in_order(frame)
    now = asv_results.latest(frame)
    info = asv_results.load_machine_info(results_dir).get(machine, {})
    cpu = info.get("cpu") or "unknown CPU"
    intro = TextItem(
        f"From **asv results** in `{_short_path(results_dir, ctx)}`: machine `{machine}` ({cpu}, "
        f"{info.get('num_cpu', '?')} CPUs), {len(commits)} commit(s) benchmarked, newest "
        f"`{commits[-1][:8]}` ({now['date'].max():%Y-%m-%d}). Speed-ups are ratios of times measured in the same "
        "asv run (peer time / our time, > 1 means ours is faster); ceilings come from the same run too."
    )
    return [intro, *kernels_asv.asv_items(frame, results_dir, machine, ctx.repo_root)]


def _peer_labels(torch) -> dict[str, str]:
    """Legend text of each peer measured here, PyTorch with its version."""
    labels = {"numpy_f32": kfig.PEER_LABEL["numpy_f32"]}
    if torch is not None:
        labels["torch"] = f"vs PyTorch {torch.__version__.split('+')[0]} CPU"
    return labels


def _short_path(path, ctx: SectionContext) -> str:
    try:
        return str(path.relative_to(ctx.repo_root)) if ctx.repo_root else str(path)
    except ValueError:
        return str(path)


def _numba_threads() -> int:
    import numba

    return numba.get_num_threads()


def build(ctx: SectionContext) -> Section:
    results_dir = asv_results.find_results_dir(ctx.repo_root)
    frame = asv_results.load_results(results_dir) if results_dir is not None else pd.DataFrame()
    usable = not frame.empty and frame["type"].isin(["time", "track"]).any() and frame["value"].notna().any()
    if usable:
        ctx.progress("reading asv results")
        return Section(TITLE, _asv_items(frame, results_dir, ctx))
    ctx.progress("measuring this machine's roofline")
    roof = measure_roofline(ctx.quick)
    items = _builtin_items(ctx, roof)
    roof_table = pd.DataFrame([{
        "peak_gflops": roof["peak_flops"] / 1e9, "read_bandwidth_gbps": roof["bandwidth"] / 1e9,
        "ridge_flop_per_byte": roof["peak_flops"] / roof["bandwidth"], "measured_in_s": roof["seconds"],
        "how": roof["source"],
    }])
    items.append(TableItem("ceilings", roof_table,
                           "This machine's ceilings, measured while building this report (not typed in)."))
    return Section(TITLE, items)
