"""What one inference step costs: a per-operation roofline of prefill and decode.

Prefill runs the whole prompt through the model at once: its matmuls reuse
every weight across ``batch * prompt_len`` tokens, so it is compute-bound.
Decode emits one token per sequence per step: every weight (and the whole KV
cache) is read to do ``2 * batch`` FLOPs per weight, so it is memory-bound
until the batch is about as large as the hardware's ridge point.

The model, in the manner of LLM-Viewer (Yuan et al. 2024, "LLM Inference
Unveiled: Survey and Roofline Model Insights"): every operation of a layer
(norms, q/k/v/o projections, attention scores and context, MLP or experts,
residual adds, the LM head) gets its FLOPs and the bytes it must move to and
from main memory, and takes ``max(FLOPs / peak, bytes / bandwidth)``. A phase
takes the sum over its operations. Assumptions, each an idealisation:

* every operation reads its inputs from and writes its outputs to main memory
  (no fusion across operations), except attention, which is fused the way
  FlashAttention fuses it: the score matrix never leaves the chip, and K and V
  are read once per call;
* causal prefill counts only the unmasked query-key pairs, ``L (L + 1) / 2``
  per sequence and head;
* the LM head runs only on the last position of each sequence (logits for the
  next token), in both phases;
* attention counts only its two matmuls (``QK^T`` and ``PV``); softmax and
  RoPE are not counted, norms and the SwiGLU gate as a few FLOPs per element:
  none is the bottleneck on an accelerator, but the exponentials are not free
  on a CPU (see the calibration);
* no overlap of communication, no kernel-launch overhead, no tensor
  parallelism: one device holds the whole model;
* MoE routing is uniform: the expected number of distinct experts a step
  touches, ``E * (1 - (1 - k/E) ** tokens)``, sets the expert weight bytes read.

DeepSeek-V3's multi-head latent attention is approximated (see
:data:`MODELS`): the KV cache holds the compressed latent (512) and the
decoupled RoPE key (64) per token and layer; attention FLOPs are counted per
head with a query/key width of 192 and a value width of 128, as if K and V were
up-projected, while the bytes read are those of the latent cache. The FLOPs of
up-projecting the cached latents (or of absorbing the up-projections into the
query and output) are not counted.

Dtype rule: ``dtype_bytes`` applies to weights, activations and KV cache alike
(2 for fp16/bf16); fractional values (0.5 for 4-bit weights) are accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scalelab.simulations import recurrent_cost as rc
from scalelab.simulations.checks import check_count as _check_count
from scalelab.simulations.checks import check_positive as _check_positive
from scalelab.simulations.hardware import Hardware, get_hardware
from scalelab.simulations.memory_footprint import fits_with_reserve, kv_cache_bytes, weight_bytes
from scalelab.simulations.model_config import ModelConfig, get_model

__all__ = [
    "expected_experts_touched", "ridge_point", "roofline_table", "PhaseCost", "prefill_cost", "decode_cost",
    "decode_steps_sum", "decode_compute_bound_batch", "attention_kernel_roofline",
]


def expected_experts_touched(n_experts: int, experts_per_token: int, tokens) -> float:
    """Expected number of distinct experts ``tokens`` tokens touch under uniform top-k routing.

    Each token picks ``k`` of ``E`` experts uniformly without replacement, so a
    given expert is missed by one token with probability ``1 - k/E`` and by all
    of them with probability ``(1 - k/E) ** tokens``.
    """
    _check_count(n_experts=n_experts, experts_per_token=experts_per_token)
    if experts_per_token > n_experts:
        raise ValueError(f"experts_per_token ({experts_per_token}) must be <= n_experts ({n_experts})")
    tokens = np.asarray(tokens, dtype=np.float64)
    if np.any(tokens < 0):
        raise ValueError("tokens must be non-negative")
    out = n_experts * (1.0 - (1.0 - experts_per_token / n_experts) ** tokens)
    return float(out) if out.ndim == 0 else out


def ridge_point(hw: Hardware | str) -> float:
    """Arithmetic intensity (FLOPs per byte) above which the hardware is compute-bound."""
    h = get_hardware(hw)
    return h.peak_flops / h.bandwidth_bytes_per_s


# --------------------------------------------------------------------------- operations


def _ops(m: ModelConfig, phase: str, batch: int, seq_len, dt: float) -> list[tuple[str, int, object, object]]:
    """The operations of one forward step: ``(op, layers, flops, bytes)`` over all layers.

    ``seq_len`` is the prompt length (prefill) or the number of keys each new
    token attends to (decode); it may be a NumPy array (the result broadcasts).
    """
    d, h, hkv = m.d_model, m.n_heads, m.n_kv_heads
    dq, dv = m.qk_dim, m.v_dim
    if phase == "prefill":
        q_len = seq_len
        pairs = batch * seq_len * (seq_len + 1) / 2  # unmasked causal (query, key) pairs
        kv_tokens_read = batch * seq_len  # K and V of the prompt, read once by the fused kernel
    else:
        q_len = 1
        pairs = batch * seq_len
        kv_tokens_read = batch * seq_len  # the whole cache, every step
    t = batch * q_len  # tokens in this step
    ops: list[tuple[str, int, object, object]] = []

    def add(name, layers, flops, nbytes):
        if layers > 0:
            ops.append((name, layers, flops * layers, nbytes * layers))

    def linear(name, layers, tokens, d_in, d_out):
        # the weight is read once per step however many tokens use it: why decode is memory-bound
        add(name, layers, 2.0 * tokens * d_in * d_out, dt * (d_in * d_out + tokens * d_in + tokens * d_out))

    def norm(name, layers, tokens, width):
        # square, mean, rsqrt, scale, weight: a few FLOPs per element; read + write + weight
        add(name, layers, 4.0 * tokens * width, dt * (2.0 * tokens * width + width))

    L = m.n_attention_layers
    add("embed", 1, 0.0 * t, dt * t * d)
    rc.recurrent_ops(m, phase, batch, t, dt, add, linear, norm)
    norm("attn_norm", L, t, d)
    if m.q_latent_dim:
        linear("q_down_proj", L, t, d, m.q_latent_dim)
        norm("q_latent_norm", L, t, m.q_latent_dim)
        linear("q_up_proj", L, t, m.q_latent_dim, h * dq)
    else:
        linear("q_proj", L, t, d, h * dq)
    if m.is_mla:
        latent = m.kv_latent_dim + m.kv_rope_dim
        linear("kv_down_proj", L, t, d, latent)  # its output is the cache entry
        norm("kv_latent_norm", L, t, m.kv_latent_dim)
        # up-projection of the new tokens' latents only (the cached ones are not re-expanded: approximation)
        linear("kv_up_proj", L, t, m.kv_latent_dim, h * (dq - m.kv_rope_dim + dv))
        k_read = kv_tokens_read * latent  # the latent cache, read once; serves K and V
        v_read = 0.0 * kv_tokens_read
    else:
        linear("k_proj", L, t, d, hkv * dq)
        linear("v_proj", L, t, d, hkv * dv)
        k_read = kv_tokens_read * hkv * dq
        v_read = kv_tokens_read * hkv * dv
    # fused attention: Q and K in, scores stay on chip; softmax FLOPs are not counted
    add("attn_scores", L, 2.0 * h * dq * pairs, dt * (t * h * dq + k_read))
    add("attn_context", L, 2.0 * h * dv * pairs, dt * (v_read + t * h * dv))
    linear("o_proj", L, t, h * dv, d)
    adds = 2 if m.has_mlp else 1  # one add after the mixer, one after the MLP; read 2, write 1 each
    add("residual_add", m.n_layers, adds * t * d, dt * adds * 3.0 * t * d)
    norm("mlp_norm", m.n_layers if m.has_mlp else 0, t, d)
    n_dense = m.n_layers - m.n_moe_layers if m.d_ff else 0
    ff = m.d_ff
    act_flops = 4.0  # SiLU and the gate product, per hidden element
    if n_dense:
        up_mats = m.n_mlp_matrices - 1
        linear("gate_up_proj", n_dense, t, d, up_mats * ff)
        add("mlp_act", n_dense, act_flops * t * ff, dt * (up_mats + 1) * t * ff)
        linear("down_proj", n_dense, t, ff, d)
    if m.n_moe_layers:
        e, k, fe = m.n_experts, m.experts_per_token, m.expert_width
        up_mats = m.n_mlp_matrices - 1
        touched = expected_experts_touched(e, k, t)
        routed = t * k  # token-expert assignments
        linear("router", m.n_moe_layers, t, d, e)
        add("experts_gate_up", m.n_moe_layers, 2.0 * routed * d * up_mats * fe,
            dt * (touched * d * up_mats * fe + routed * d + routed * up_mats * fe))
        add("experts_act", m.n_moe_layers, act_flops * routed * fe, dt * (up_mats + 1) * routed * fe)
        add("experts_down", m.n_moe_layers, 2.0 * routed * fe * d,
            dt * (touched * fe * d + routed * fe + routed * d))
        if m.n_shared_experts:
            fs = fe * m.n_shared_experts
            linear("shared_gate_up", m.n_moe_layers, t, d, up_mats * fs)
            add("shared_act", m.n_moe_layers, act_flops * t * fs, dt * (up_mats + 1) * t * fs)
            linear("shared_down", m.n_moe_layers, t, fs, d)
        add("expert_combine", m.n_moe_layers, 2.0 * routed * d, dt * (routed * d + t * d))
    # logits only for the last position of each sequence (the next token)
    norm("final_norm", 1, batch, d)
    linear("lm_head", 1, batch, d, m.vocab_size)
    return ops


def _phase_args(model, hw, phase, batch, seq_len, dtype_bytes, seq_name="seq_len"):
    m = get_model(model)
    h = get_hardware(hw)
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    _check_count(batch=batch, **{seq_name: seq_len})
    _check_positive(dtype_bytes=dtype_bytes)
    return m, h


def roofline_table(
    model: ModelConfig | str, hw: Hardware | str, phase: str, batch: int, seq_len: int, *, dtype_bytes: float = 2
) -> pd.DataFrame:
    """Per-operation roofline of one prefill (``seq_len`` = prompt) or one decode step (``seq_len`` = context).

    Columns: ``op, layers, flops, bytes, intensity`` (FLOPs/byte), ``bound``
    (``"compute"`` or ``"memory"``), ``compute_time_s``, ``memory_time_s``,
    ``time_s = max(compute, memory)`` and ``time_share``; totals over all layers.
    """
    m, h = _phase_args(model, hw, phase, batch, seq_len, dtype_bytes)
    rows = []
    for op, layers, flops, nbytes in _ops(m, phase, batch, seq_len, dtype_bytes):
        flops, nbytes = float(flops), float(nbytes)
        tc, tm = flops / h.peak_flops, nbytes / h.bandwidth_bytes_per_s
        rows.append({
            "op": op, "layers": layers, "flops": flops, "bytes": nbytes,
            "intensity": flops / nbytes if nbytes > 0 else math.inf,
            "bound": "compute" if tc >= tm else "memory",
            "compute_time_s": tc, "memory_time_s": tm, "time_s": max(tc, tm),
        })
    df = pd.DataFrame(rows)
    df["time_share"] = df["time_s"] / df["time_s"].sum()
    return df


@dataclass(frozen=True)
class PhaseCost:
    """Cost of one prefill (``time_s`` = time to first token) or one decode step (``time_s`` = time per output token)."""

    phase: str
    batch: int
    seq_len: int  # prompt length (prefill) or context length (decode)
    time_s: float
    flops: float
    bytes: float
    compute_time_s: float  # sum over ops of FLOPs / peak
    memory_time_s: float  # sum over ops of bytes / bandwidth
    bound: str  # "compute" if compute-bound ops take at least half of time_s
    mfu: float  # achieved FLOP/s over peak
    mbu: float  # achieved bytes/s over bandwidth
    tokens_per_s: float  # prompt tokens/s (prefill) or generated tokens/s (decode)
    kv_cache_bytes: float  # cache held at the end of the step
    weight_bytes: float
    # weights + KV cache within the device memory less ACTIVATION_RESERVE_FRACTION (None: memory unknown);
    # a configuration that does not fit still gets a latency, which no real run would reach
    fits: bool | None = None

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes


def _phase_cost(m, h, phase, batch, seq_len, dtype_bytes) -> PhaseCost:
    ops = _ops(m, phase, batch, seq_len, dtype_bytes)
    flops = np.array([float(o[2]) for o in ops])
    nbytes = np.array([float(o[3]) for o in ops])
    tc, tm = flops / h.peak_flops, nbytes / h.bandwidth_bytes_per_s
    t = np.maximum(tc, tm)
    time_s = float(t.sum())
    compute_share = float(t[tc >= tm].sum()) / time_s
    new_tokens = batch * seq_len if phase == "prefill" else batch
    return PhaseCost(
        phase=phase, batch=batch, seq_len=seq_len, time_s=time_s,
        flops=float(flops.sum()), bytes=float(nbytes.sum()),
        compute_time_s=float(tc.sum()), memory_time_s=float(tm.sum()),
        bound="compute" if compute_share >= 0.5 else "memory",
        mfu=float(flops.sum()) / time_s / h.peak_flops,
        mbu=float(nbytes.sum()) / time_s / h.bandwidth_bytes_per_s,
        tokens_per_s=new_tokens / time_s,
        kv_cache_bytes=kv_cache_bytes(m, batch=batch, seq_len=seq_len, dtype_bytes=dtype_bytes),
        weight_bytes=weight_bytes(m, dtype_bytes=dtype_bytes),
        fits=fits_with_reserve(h, weight_bytes(m, dtype_bytes=dtype_bytes)
                               + kv_cache_bytes(m, batch=batch, seq_len=seq_len, dtype_bytes=dtype_bytes)),
    )


def prefill_cost(
    model: ModelConfig | str, hw: Hardware | str, *, batch: int, prompt_len: int, dtype_bytes: float = 2
) -> PhaseCost:
    """Time to first token: one forward pass over ``batch`` prompts of ``prompt_len`` tokens."""
    m, h = _phase_args(model, hw, "prefill", batch, prompt_len, dtype_bytes, "prompt_len")
    return _phase_cost(m, h, "prefill", batch, prompt_len, dtype_bytes)


def decode_cost(
    model: ModelConfig | str, hw: Hardware | str, *, batch: int, context_len: int, dtype_bytes: float = 2
) -> PhaseCost:
    """Time per output token: one decode step for ``batch`` sequences attending to ``context_len`` tokens."""
    m, h = _phase_args(model, hw, "decode", batch, context_len, dtype_bytes, "context_len")
    return _phase_cost(m, h, "decode", batch, context_len, dtype_bytes)


def _decode_times(m, h, batch, contexts: np.ndarray, dtype_bytes) -> np.ndarray:
    """Decode step times for many context lengths at once (the ops broadcast over ``contexts``)."""
    total = np.zeros(contexts.shape, dtype=np.float64)
    for _, _, flops, nbytes in _ops(m, "decode", batch, contexts, dtype_bytes):
        total += np.maximum(np.asarray(flops, float) / h.peak_flops, np.asarray(nbytes, float) / h.bandwidth_bytes_per_s)
    return total


def decode_steps_sum(m: ModelConfig, h: Hardware, batch: int, first: int, last: int,
                     dtype_bytes: float) -> tuple[float, float]:
    """Seconds and FLOPs of the decode steps with contexts ``first .. last`` (inclusive), in O(1) of their number.

    Every decode operation's FLOPs and bytes are affine in the context length
    (attention reads the whole cache; the rest does not depend on it), so each
    operation's time ``max(compute, memory)`` is the larger of two lines: summed
    in closed form on either side of the context where the lines cross. Equal
    to summing :func:`_decode_times` step by step, to rounding.
    """
    n = last - first + 1
    if n <= 0:
        return 0.0, 0.0
    ends = np.array([first, last], dtype=np.float64)  # (2,) the two end contexts; ops are lines between them
    time_s = flops_sum = 0.0
    for _, _, flops, nbytes in _ops(m, "decode", batch, ends, dtype_bytes):
        f = np.broadcast_to(np.asarray(flops, dtype=np.float64), (2,))  # (2,) at first, last
        tc = f / h.peak_flops
        tm = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), (2,)) / h.bandwidth_bytes_per_s
        flops_sum += n * (f[0] + f[1]) / 2
        d0, d1 = tc[0] - tm[0], tc[1] - tm[1]  # compute minus memory time at the two ends
        if (d0 >= 0) == (d1 >= 0):  # one side bound over the whole range
            line = tc if d0 >= 0 else tm
            time_s += n * (line[0] + line[1]) / 2
            continue
        # the lines cross between first and last: steps up to `split` on one side, the rest on the other
        split = first + math.floor(d0 / (d0 - d1) * (last - first))  # last step with the sign of d0
        split = min(max(split, first), last - 1)
        head, tail = (tc, tm) if d0 >= 0 else (tm, tc)
        time_s += _line_sum(head, first, last, first, split) + _line_sum(tail, first, last, split + 1, last)
    return float(time_s), float(flops_sum)


def _line_sum(ends, first: int, last: int, p: int, q: int) -> float:
    """Sum over integers ``p .. q`` of the line through ``(first, ends[0])`` and ``(last, ends[1])``."""
    slope = (ends[1] - ends[0]) / (last - first)
    return float((q - p + 1) * (ends[0] + slope * ((p + q) / 2 - first)))


def decode_compute_bound_batch(
    model: ModelConfig | str, hw: Hardware | str, context_len: int, *, dtype_bytes: float = 2,
    batch_limit: int = 2**24,
) -> int | None:
    """Smallest decode batch whose step is compute-bound (see :attr:`PhaseCost.bound`), or None below ``batch_limit``.

    Weight matmuls gain intensity with batch; attention over the KV cache does
    not (its intensity is about ``2 * n_heads / n_kv_heads / dtype_bytes``), so
    at long contexts decode may never become compute-bound.
    """
    m = get_model(model)
    h = get_hardware(hw)
    _check_count(context_len=context_len, batch_limit=batch_limit)

    def compute_bound(b):
        return _phase_cost(m, h, "decode", b, context_len, dtype_bytes).bound == "compute"

    if compute_bound(1):
        return 1
    hi = 2
    while not compute_bound(hi):
        if hi >= batch_limit:
            return None
        hi = min(2 * hi, batch_limit)
    lo = hi // 2  # memory-bound
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if compute_bound(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- attention kernels


def attention_kernel_roofline(
    hw: Hardware | str, *, batch: int, n_q_heads: int, n_kv_heads: int, q_len: int, kv_len: int, head_dim: int,
    causal: bool, dtype_bytes: float = 4,
) -> dict:
    """Roofline prediction for one call of a fused attention kernel.

    FLOPs are those of ``QK^T`` and ``PV`` over the unmasked (query, key)
    pairs only (queries are the last ``q_len`` positions when causal); bytes
    are Q, K and V read once and the output written once.
    """
    h = get_hardware(hw)
    _check_count(batch=batch, n_q_heads=n_q_heads, n_kv_heads=n_kv_heads, q_len=q_len, kv_len=kv_len,
                 head_dim=head_dim)
    _check_positive(dtype_bytes=dtype_bytes)
    if n_q_heads % n_kv_heads:
        raise ValueError(f"n_q_heads ({n_q_heads}) must be divisible by n_kv_heads ({n_kv_heads})")
    if causal:
        if q_len > kv_len:
            raise ValueError(f"causal attention needs q_len <= kv_len, got {q_len} > {kv_len}")
        # query i (0-based, of q_len) sees kv_len - q_len + i + 1 keys
        pairs = q_len * (kv_len - q_len) + q_len * (q_len + 1) / 2
    else:
        pairs = q_len * kv_len
    flops = 4.0 * batch * n_q_heads * head_dim * pairs
    nbytes = dtype_bytes * (2.0 * batch * n_q_heads * q_len * head_dim + 2.0 * batch * n_kv_heads * kv_len * head_dim)
    tc, tm = flops / h.peak_flops, nbytes / h.bandwidth_bytes_per_s
    return {"flops": flops, "bytes": nbytes, "intensity": flops / nbytes,
            "bound": "compute" if tc >= tm else "memory", "predicted_s": max(tc, tm)}
