"""Per-layer sizes and operations of recurrent sequence mixers (Mamba, RWKV-6) for the inference cost model.

A model in :mod:`simulations.inference` may mix attention layers with
recurrent ones (``ModelConfig.layer_pattern``). This module holds what a
recurrent layer weighs, what state it keeps per sequence, and the operations
of one forward step, in the same ``(op, layers, flops, bytes)`` form as the
attention ops. It takes any object with the ``ModelConfig`` fields it reads
(``d_model``, ``ssm_*``, ``rwkv_head_size``), so it does not import the
inference module.

What a recurrent layer costs, and why it is not attention
---------------------------------------------------------
* Mamba (Gu & Dao 2023, Section 3 and Figure 3; the ``Mamba`` block of the
  reference implementation): ``in_proj`` ``d -> 2 d_inner`` (x and the gate
  z), a depthwise causal conv of width ``d_conv``, ``x_proj`` ``d_inner ->
  dt_rank + 2 N`` (delta, B, C), ``dt_proj`` ``dt_rank -> d_inner``, the
  selective scan, the gate ``y * silu(z)`` and ``out_proj`` ``d_inner -> d``.
  The state per sequence and layer is ``d_inner * N`` (the scan) plus
  ``d_inner * d_conv`` (the conv window, as the reference implementation
  allocates it).
* RWKV-6 time mixing (Peng et al. 2024, "Eagle and Finch", Section 4):
  data-dependent token shift (a rank-32 LoRA per each of five inputs), the
  r/k/v/g projections, the decay LoRA (rank 64), the WKV recurrence per head
  with a ``(head_size, head_size)`` state, a group norm and ``o``. Channel
  mixing is a non-gated MLP (``gated_mlp=False``, key ``d -> d_ff``, value
  ``d_ff -> d``) plus the receptance ``d -> d`` counted here. The state per
  sequence and layer is ``n_heads * head_size**2`` plus the two token-shift
  vectors (``2 d``).
* Decode reads the state once and writes it once per step, whatever the
  context length; prefill writes it once at the end (it starts from zeros)
  and streams the activations. FLOPs per token of the scans: Mamba
  ``SCAN_FLOPS_PER_STATE`` per state element (discretise ``delta A``, its
  ``exp`` counted as one, ``delta B x``, ``a h + b``, the ``C . h`` product),
  RWKV ``5`` per state element (``r S``: 2, ``w S + k v``: 3).
"""

from __future__ import annotations

import math

__all__ = [
    "SCAN_FLOPS_PER_STATE",
    "WKV_FLOPS_PER_STATE",
    "RWKV_MIX_LORA_RANK",
    "RWKV_DECAY_LORA_RANK",
    "d_inner",
    "dt_rank",
    "mamba_layer_params",
    "rwkv_layer_params",
    "mamba_state_elems",
    "rwkv_state_elems",
    "recurrent_flops_per_token",
    "recurrent_ops",
]

#: FLOPs per state element and token of the selective scan (see the module docstring).
SCAN_FLOPS_PER_STATE = 9
#: FLOPs per state element and token of the WKV recurrence.
WKV_FLOPS_PER_STATE = 5
#: Rank of RWKV-6's token-shift LoRA (``time_maa_w1``: d x 5*32; Peng et al. 2024, Section 4.2).
RWKV_MIX_LORA_RANK = 32
#: Rank of RWKV-6's decay LoRA (``time_decay_w1``: d x 64; Peng et al. 2024, Section 4.2).
RWKV_DECAY_LORA_RANK = 64
#: Inputs RWKV-6's token shift interpolates (w, k, v, r, g).
_RWKV_SHIFTED = 5


def d_inner(m) -> int:
    """Mamba's inner width ``expand * d_model``."""
    return m.ssm_expand * m.d_model


def dt_rank(m) -> int:
    """Mamba's delta projection rank; default ``ceil(d_model / 16)`` as in the reference implementation."""
    return m.ssm_dt_rank if m.ssm_dt_rank else math.ceil(m.d_model / 16)


def mamba_layer_params(m) -> int:
    """Parameters of one Mamba mixer (projections, conv with bias, ``A``, ``D``, ``dt_proj`` bias)."""
    d, di, n, r = m.d_model, d_inner(m), m.ssm_d_state, dt_rank(m)
    return (d * 2 * di + di * m.ssm_d_conv + di + di * (r + 2 * n) + r * di + di
            + di * n + di + di * d)


def rwkv_layer_params(m) -> int:
    """Parameters of one RWKV-6 time mixing block plus channel mixing's receptance (``d x d``).

    r, k, v, g, o (``5 d^2``), the token-shift LoRA (``d x 160`` and
    ``5 x 32 x d``), the decay LoRA (``d x 64``, ``64 x d``), the bonus ``u``,
    the decay base, six interpolation vectors and the group norm (``~10 d``),
    two interpolation vectors of channel mixing.
    """
    d = m.d_model
    lora = 2 * _RWKV_SHIFTED * RWKV_MIX_LORA_RANK * d + 2 * RWKV_DECAY_LORA_RANK * d
    return 5 * d * d + lora + 10 * d + d * d + 2 * d


def mamba_state_elems(m) -> int:
    """State numbers one sequence keeps per Mamba layer: ``d_inner * (d_state + d_conv)``."""
    return d_inner(m) * (m.ssm_d_state + m.ssm_d_conv)


def rwkv_state_elems(m) -> int:
    """State numbers one sequence keeps per RWKV-6 layer: ``d * head_size`` (all heads' WKV) + ``2 d`` (shifts)."""
    return m.d_model * m.rwkv_head_size + 2 * m.d_model


def recurrent_flops_per_token(m) -> float:
    """Scan FLOPs of one token over all recurrent layers (independent of the context)."""
    return float(m.n_mamba_layers * SCAN_FLOPS_PER_STATE * d_inner(m) * m.ssm_d_state
                 + m.n_rwkv_layers * WKV_FLOPS_PER_STATE * m.d_model * m.rwkv_head_size)


def recurrent_ops(m, phase: str, batch: int, t, dt: float, add, linear, norm) -> None:
    """Append the operations of the recurrent layers of ``m`` through the op-list callbacks.

    ``t`` is the number of tokens in the step (``batch * prompt_len`` or
    ``batch``); ``add(name, layers, flops, bytes)``, ``linear(name, layers,
    tokens, d_in, d_out)`` and ``norm(name, layers, tokens, width)`` are the
    per-layer helpers of :func:`simulations.roofline._ops`. The state is
    written once in prefill (from zeros) and read and written once per decode
    step.
    """
    d = m.d_model
    state_passes = 1.0 if phase == "prefill" else 2.0
    Lm, Lr = m.n_mamba_layers, m.n_rwkv_layers
    norm("mixer_norm", Lm + Lr, t, d)
    if Lm:
        di, n, r, kc = d_inner(m), m.ssm_d_state, dt_rank(m), m.ssm_d_conv
        linear("mamba_in_proj", Lm, t, d, 2 * di)
        add("mamba_conv1d", Lm, 2.0 * t * di * kc,
            dt * (2.0 * t * di + di * kc + state_passes * batch * di * kc))
        linear("mamba_x_proj", Lm, t, di, r + 2 * n)
        linear("mamba_dt_proj", Lm, t, r, di)
        # reads x, delta, B, C; writes y; the (d_inner, N) state per sequence in/out
        add("mamba_scan", Lm, float(SCAN_FLOPS_PER_STATE) * t * di * n,
            dt * (t * (3.0 * di + 2.0 * n) + state_passes * batch * di * n))
        add("mamba_gate", Lm, 5.0 * t * di, dt * 3.0 * t * di)  # y * silu(z)
        linear("mamba_out_proj", Lm, t, di, d)
    if Lr:
        k = m.rwkv_head_size
        lo = _RWKV_SHIFTED * RWKV_MIX_LORA_RANK
        linear("rwkv_shift_lora_down", Lr, t, d, lo)
        add("rwkv_shift_lora_up", Lr, 2.0 * t * lo * d,
            dt * (lo * d + t * lo + _RWKV_SHIFTED * t * d))
        linear("rwkv_rkvg_proj", Lr, t, d, 4 * d)
        linear("rwkv_decay_lora_down", Lr, t, d, RWKV_DECAY_LORA_RANK)
        linear("rwkv_decay_lora_up", Lr, t, RWKV_DECAY_LORA_RANK, d)
        # reads r, k, v, w; writes y; the (d / head_size) x head_size^2 state per sequence in/out
        add("rwkv_wkv", Lr, float(WKV_FLOPS_PER_STATE) * t * d * k,
            dt * (5.0 * t * d + state_passes * batch * d * k))
        add("rwkv_groupnorm_gate", Lr, 8.0 * t * d, dt * 3.0 * t * d)
        linear("rwkv_o_proj", Lr, t, d, d)
        linear("rwkv_ffn_receptance", Lr, t, d, d)
