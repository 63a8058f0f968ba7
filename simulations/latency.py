"""Request-level latency: a batch of requests from prefill to their last token,
throughput against latency over batch sizes, and best-of-n sampling.

Built on the per-step roofline of :mod:`simulations.roofline`: a request is
one prefill then ``gen_len - 1`` decode steps whose context grows by one token
each; their sum is taken in closed form (:func:`decode_steps_sum`), so the cost
of a call does not depend on ``gen_len``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from scalelab.simulations.checks import check_count as _check_count
from scalelab.simulations.hardware import Hardware
from scalelab.simulations.memory_footprint import fits_memory, kv_cache_bytes, kv_cache_bytes_per_token, weight_bytes
from scalelab.simulations.model_config import ModelConfig
from scalelab.simulations.roofline import _phase_args, _phase_cost, decode_cost, decode_steps_sum, prefill_cost

__all__ = [
    "RequestLatency", "MAX_TOKENS", "request_latency", "throughput_latency_sweep", "BestOfNCost", "best_of_n_cost",
    "last_decode_context", "phase_table",
]


@dataclass(frozen=True)
class RequestLatency:
    """A batch of requests served together: prefill, then ``gen_len - 1`` decode steps."""

    batch: int
    prompt_len: int
    gen_len: int
    ttft_s: float  # time to first token (the prefill)
    tpot_s: float  # mean time per output token over the decode steps
    total_s: float  # time until the last token
    throughput_tokens_per_s: float  # generated tokens per second over the whole request
    fits_memory: bool | None  # weights + KV cache at the end fit in device memory (None: memory size unknown)


#: Longest sequence (prompt + generated tokens) the latency model accepts: 16M tokens, past
#: any published context window (Gemini 1.5 reports 10M in research tests). A plausibility
#: bound only: the cost of a call does not grow with the length.
MAX_TOKENS = 2**24


def request_latency(
    model: ModelConfig | str, hw: Hardware | str, *, batch: int, prompt_len: int, gen_len: int, dtype_bytes: float = 2
) -> RequestLatency:
    """Latency of ``batch`` requests with ``prompt_len``-token prompts generating ``gen_len`` tokens each.

    The prefill yields the first token; decode step ``i`` (``1 <= i < gen_len``)
    attends to ``prompt_len + i`` tokens. The steps are summed in closed form
    (:func:`decode_steps_sum`): time and memory do not grow with ``gen_len``.
    """
    m, h = _phase_args(model, hw, "prefill", batch, prompt_len, dtype_bytes, "prompt_len")
    _check_count(gen_len=gen_len)
    if prompt_len + gen_len > MAX_TOKENS:
        raise ValueError(f"prompt_len + gen_len must be at most {MAX_TOKENS} tokens, got {prompt_len + gen_len}")
    pre = _phase_cost(m, h, "prefill", batch, prompt_len, dtype_bytes)
    decode_s, _ = decode_steps_sum(m, h, batch, prompt_len + 1, prompt_len + gen_len - 1, dtype_bytes)
    total = pre.time_s + decode_s
    end_len = prompt_len + gen_len
    need = weight_bytes(m, dtype_bytes=dtype_bytes) + kv_cache_bytes(m, batch=batch, seq_len=end_len, dtype_bytes=dtype_bytes)
    return RequestLatency(
        batch=batch, prompt_len=prompt_len, gen_len=gen_len, ttft_s=pre.time_s,
        tpot_s=decode_s / (gen_len - 1) if gen_len > 1 else 0.0, total_s=total,
        throughput_tokens_per_s=batch * gen_len / total, fits_memory=fits_memory(h, need),
    )


def throughput_latency_sweep(
    model: ModelConfig | str, hw: Hardware | str, *, prompt_len: int, gen_len: int,
    batches: Iterable[int] | None = None, dtype_bytes: float = 2,
) -> pd.DataFrame:
    """Throughput against latency over batch sizes (default powers of two up to 1024).

    Columns: ``batch, ttft_s, tpot_s, latency_s, throughput_tokens_per_s, fits_memory``.
    """
    batches = list(batches) if batches is not None else [2**i for i in range(11)]
    if not batches:
        raise ValueError("batches must not be empty")
    rows = []
    for b in batches:
        r = request_latency(model, hw, batch=int(b) if isinstance(b, np.integer) else b,
                            prompt_len=prompt_len, gen_len=gen_len, dtype_bytes=dtype_bytes)
        rows.append({"batch": r.batch, "ttft_s": r.ttft_s, "tpot_s": r.tpot_s, "latency_s": r.total_s,
                     "throughput_tokens_per_s": r.throughput_tokens_per_s, "fits_memory": r.fits_memory})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class BestOfNCost:
    """Best-of-n sampling from one prompt: one shared prefill, then n sequences decoded together."""

    n: int
    prompt_len: int
    gen_len: int
    prefill_s: float
    decode_s: float
    total_s: float
    independent_total_s: float  # n requests batched together, each prefilling its own copy of the prompt
    sequential_total_s: float  # n requests served one after another at batch 1
    flops: float
    kv_cache_bytes: float  # shared prompt cache + n continuations, at the end
    fits_memory: bool | None  # None when the device memory size is unknown


def best_of_n_cost(
    model: ModelConfig | str, hw: Hardware | str, *, n: int, prompt_len: int, gen_len: int, dtype_bytes: float = 2
) -> BestOfNCost:
    """Test-time compute: cost of drawing ``n`` samples of ``gen_len`` tokens for one prompt.

    The prompt is prefilled once and its KV cache shared (held once in
    memory); the ``n`` continuations decode as one batch. Each sequence still
    reads the whole prefix from the cache at every step (no cascade attention
    that would read a shared prefix once), so attention bytes grow with ``n``.
    """
    m, h = _phase_args(model, hw, "prefill", 1, prompt_len, dtype_bytes, "prompt_len")
    _check_count(n=n, gen_len=gen_len)
    pre = _phase_cost(m, h, "prefill", 1, prompt_len, dtype_bytes)
    decode_s, decode_flops = decode_steps_sum(m, h, n, prompt_len + 1, prompt_len + gen_len - 1, dtype_bytes)
    flops = pre.flops + decode_flops
    per_tok = kv_cache_bytes_per_token(m, dtype_bytes=dtype_bytes)
    kv = per_tok * (prompt_len + n * gen_len)
    single = request_latency(m, h, batch=1, prompt_len=prompt_len, gen_len=gen_len, dtype_bytes=dtype_bytes)
    unshared = request_latency(m, h, batch=n, prompt_len=prompt_len, gen_len=gen_len, dtype_bytes=dtype_bytes)
    return BestOfNCost(
        n=n, prompt_len=prompt_len, gen_len=gen_len, prefill_s=pre.time_s, decode_s=decode_s,
        total_s=pre.time_s + decode_s, independent_total_s=unshared.total_s,
        sequential_total_s=n * single.total_s, flops=flops,
        kv_cache_bytes=kv, fits_memory=fits_memory(h, weight_bytes(m, dtype_bytes=dtype_bytes) + kv),
    )


def last_decode_context(prompt: int, gen: int) -> int:
    """Context of the last decode step, as ``request_latency`` counts it: step ``gen - 1`` sees ``prompt + gen - 1``.

    With ``gen == 1`` the prefill makes the only token and there is no decode step;
    the first step's context (``prompt + 1``) is shown instead.
    """
    return prompt + max(gen - 1, 1)


def phase_table(model, hw, *, batch: int, prompt: int, gen: int, dtype_bytes: float = 2) -> pd.DataFrame:
    """Prefill, the first and the last decode step as one table (what ``scalelab inference`` prints)."""
    rows = []
    for label, c in (
        ("prefill", prefill_cost(model, hw, batch=batch, prompt_len=prompt, dtype_bytes=dtype_bytes)),
        ("decode (first step)", decode_cost(model, hw, batch=batch, context_len=prompt + 1, dtype_bytes=dtype_bytes)),
        ("decode (last step)", decode_cost(model, hw, batch=batch, context_len=last_decode_context(prompt, gen),
                                           dtype_bytes=dtype_bytes)),
    ):
        rows.append({
            "phase": label, "time_ms": c.time_s * 1e3, "TFLOP": c.flops / 1e12, "GB moved": c.bytes / 1e9,
            "FLOP/byte": c.intensity, "bound": c.bound, "MFU": c.mfu, "MBU": c.mbu, "tokens/s": c.tokens_per_s,
            "fits": {True: "yes", False: "NO", None: "?"}[c.fits],
        })
    return pd.DataFrame(rows)
