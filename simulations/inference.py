"""What inference costs: a per-operation roofline of prefill and decode.

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
from dataclasses import dataclass, fields
from typing import Iterable

import numpy as np
import pandas as pd

from scalelab.kernels.decoder_shape import check_decoder_shape
from scalelab.simulations import recurrent_cost as rc
from scalelab.simulations.hardware import HARDWARE, Hardware, get_hardware

__all__ = [
    "Hardware",
    "HARDWARE",
    "get_hardware",
    "ModelConfig",
    "MODELS",
    "get_model",
    "PhaseCost",
    "RequestLatency",
    "BestOfNCost",
    "expected_experts_touched",
    "kv_cache_bytes",
    "kv_cache_bytes_per_token",
    "state_bytes_per_sequence",
    "weight_bytes",
    "ridge_point",
    "roofline_table",
    "prefill_cost",
    "decode_cost",
    "decode_compute_bound_batch",
    "max_batch",
    "request_latency",
    "throughput_latency_sweep",
    "best_of_n_cost",
    "attention_kernel_roofline",
    "phase_table",
]


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only transformer as the cost model sees it (SwiGLU MLP, RMSNorm).

    Sizes are counts, not bytes. ``n_experts == 1`` is a dense model. For an MoE
    model the first ``n_dense_layers`` layers use a dense MLP of width ``d_ff``
    and the rest route each token to ``experts_per_token`` of ``n_experts``
    experts of width ``d_ff_expert`` (default ``d_ff``), plus
    ``n_shared_experts`` experts every token uses.

    ``kv_latent_dim > 0`` selects multi-head latent attention (MLA): the cache
    holds ``kv_latent_dim + kv_rope_dim`` numbers per token and layer instead
    of ``2 * n_kv_heads * head_dim``; ``q_latent_dim > 0`` adds MLA's low-rank
    query projection.

    ``layer_pattern`` gives each layer's sequence mixer, one letter per
    layer: ``A`` attention, ``M`` Mamba, ``R`` RWKV-6 time mixing (``""``:
    all attention). Recurrent layers keep a state of fixed size per sequence
    instead of a KV cache (see :mod:`simulations.recurrent_cost`).
    ``d_ff == 0`` means no MLP (Mamba's blocks); ``moe_every = 2`` puts the
    MoE MLP in every other layer after the dense ones (Jamba).
    """

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int  # dense MLP hidden width
    vocab_size: int
    n_experts: int = 1  # routed experts per MoE layer (1 = dense)
    experts_per_token: int = 1  # routed experts each token uses (top-k)
    head_dim: int | None = None  # query/key width per head; default d_model // n_heads
    v_head_dim: int | None = None  # value width per head; default head_dim
    d_ff_expert: int | None = None  # hidden width of one expert; default d_ff
    n_shared_experts: int = 0  # experts every token uses, on top of the routed ones
    n_dense_layers: int = 0  # leading layers with a dense MLP in an MoE model
    kv_latent_dim: int = 0  # MLA: compressed KV width cached per token and layer (0 = standard)
    kv_rope_dim: int = 0  # MLA: decoupled RoPE key width, cached and shared by all heads
    q_latent_dim: int = 0  # MLA: low-rank query width (0 = direct q projection)
    gated_mlp: bool = True  # SwiGLU: gate, up and down matrices (False: up and down)
    tie_embeddings: bool = False  # LM head shares the embedding matrix
    layer_pattern: str = ""  # per layer: "A" attention, "M" Mamba, "R" RWKV-6; "" = all attention
    moe_every: int = 1  # MoE MLP in every moe_every-th layer after the dense ones
    ssm_d_state: int = 16  # Mamba: state size N per channel
    ssm_expand: int = 2  # Mamba: d_inner = ssm_expand * d_model
    ssm_d_conv: int = 4  # Mamba: causal conv width
    ssm_dt_rank: int = 0  # Mamba: delta projection rank (0 = ceil(d_model / 16))
    rwkv_head_size: int = 64  # RWKV-6: head size (state per head: head_size^2)
    rope_theta: float = 10000.0  # rotary embedding base (Hugging Face LlamaConfig default)
    norm_eps: float = 1e-6  # RMSNorm epsilon (Hugging Face LlamaConfig default)
    max_position: int = 2048  # longest sequence a forward accepts (Hugging Face LlamaConfig default)
    source: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "source", "gated_mlp", "tie_embeddings", "layer_pattern"):
                continue
            if f.name in ("rope_theta", "norm_eps"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                        value > 0 and math.isfinite(value)):
                    raise ValueError(f"{f.name} must be a positive finite number, got {value!r}")
                continue
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{f.name} must be an int, got {type(value).__name__}")
            must_be_positive = f.name in (
                "n_layers", "d_model", "n_heads", "n_kv_heads", "vocab_size",
                "n_experts", "experts_per_token", "head_dim", "v_head_dim", "d_ff_expert",
                "moe_every", "ssm_d_state", "ssm_expand", "ssm_d_conv", "rwkv_head_size", "max_position",
            )
            if must_be_positive and value <= 0:
                raise ValueError(f"{f.name} must be positive, got {value}")
            if not must_be_positive and value < 0:
                raise ValueError(f"{f.name} must be non-negative, got {value}")
        check_decoder_shape(self)
        if self.kv_rope_dim and not self.kv_latent_dim:
            raise ValueError("kv_rope_dim needs kv_latent_dim > 0 (it is part of multi-head latent attention)")
        if self.kv_latent_dim and self.kv_rope_dim >= self.qk_dim:
            raise ValueError(f"kv_rope_dim ({self.kv_rope_dim}) must be < head_dim ({self.qk_dim})")
        if not isinstance(self.layer_pattern, str):
            raise TypeError(f"layer_pattern must be a str, got {type(self.layer_pattern).__name__}")
        if self.layer_pattern and (len(self.layer_pattern) != self.n_layers or set(self.layer_pattern) - set("AMR")):
            raise ValueError(f"layer_pattern must be {self.n_layers} letters from 'A', 'M', 'R' "
                             f"(one per layer) or empty, got {self.layer_pattern!r}")
        if self.n_rwkv_layers and self.d_model % self.rwkv_head_size:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by rwkv_head_size ({self.rwkv_head_size})")

    # -- derived sizes
    @property
    def qk_dim(self) -> int:
        """Query/key width per head."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def v_dim(self) -> int:
        """Value width per head."""
        return self.v_head_dim if self.v_head_dim is not None else self.qk_dim

    @property
    def expert_width(self) -> int:
        return self.d_ff_expert if self.d_ff_expert is not None else self.d_ff

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def is_mla(self) -> bool:
        return self.kv_latent_dim > 0

    @property
    def n_moe_layers(self) -> int:
        return (self.n_layers - self.n_dense_layers) // self.moe_every if self.is_moe else 0

    @property
    def n_attention_layers(self) -> int:
        return self.layer_pattern.count("A") if self.layer_pattern else self.n_layers

    @property
    def n_mamba_layers(self) -> int:
        return self.layer_pattern.count("M")

    @property
    def n_rwkv_layers(self) -> int:
        return self.layer_pattern.count("R")

    @property
    def has_mlp(self) -> bool:
        return self.d_ff > 0 or self.is_moe

    @property
    def state_elems_per_sequence(self) -> int:
        """Numbers of recurrent state one sequence keeps over all layers (independent of its length)."""
        return self.n_mamba_layers * rc.mamba_state_elems(self) + self.n_rwkv_layers * rc.rwkv_state_elems(self)

    @property
    def n_mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    # -- parameter counts
    def attention_params_per_layer(self) -> int:
        d, h = self.d_model, self.n_heads
        if self.q_latent_dim:
            q = d * self.q_latent_dim + self.q_latent_dim + self.q_latent_dim * h * self.qk_dim
        else:
            q = d * h * self.qk_dim
        if self.is_mla:
            nope = self.qk_dim - self.kv_rope_dim
            kv = (d * (self.kv_latent_dim + self.kv_rope_dim) + self.kv_latent_dim
                  + self.kv_latent_dim * h * (nope + self.v_dim))
        else:
            kv = d * self.n_kv_heads * (self.qk_dim + self.v_dim)
        return q + kv + h * self.v_dim * d

    def expert_params(self) -> int:
        """Parameters of one routed (or shared) expert."""
        return self.n_mlp_matrices * self.d_model * self.expert_width

    def dense_mlp_params(self) -> int:
        return self.n_mlp_matrices * self.d_model * self.d_ff

    def _embedding_params(self) -> int:
        return self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2) + self.d_model

    @property
    def params_total(self) -> int:
        """Every parameter, embeddings and LM head included (untied unless ``tie_embeddings``)."""
        n_dense = self.n_layers - self.n_moe_layers
        moe_layer = ((self.n_experts + self.n_shared_experts) * self.expert_params()
                     + self.d_model * self.n_experts)  # router
        mixers = (self.n_attention_layers * self.attention_params_per_layer()
                  + self.n_mamba_layers * rc.mamba_layer_params(self)
                  + self.n_rwkv_layers * rc.rwkv_layer_params(self))
        norms = self.n_layers * self.d_model * (2 if self.has_mlp else 1)
        return (mixers + norms + n_dense * self.dense_mlp_params()
                + self.n_moe_layers * moe_layer + self._embedding_params())

    @property
    def params_active(self) -> int:
        """Parameters one token uses: all but the routed experts it is not sent to.

        The embedding matrix counts in full (as Mixtral's 12.9B does), although a
        token reads only one of its rows.
        """
        idle = self.n_moe_layers * (self.n_experts - self.experts_per_token) * self.expert_params()
        return self.params_total - idle

    def matmul_params_active(self) -> int:
        """Weights one token multiplies by: active parameters minus the embedding lookup and norms."""
        norms = (2 if self.has_mlp else 1) * self.d_model * self.n_layers + self.d_model
        lookup = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        return self.params_active - norms - lookup

    def flops_per_token(self, context_len: int) -> float:
        """Forward FLOPs to process one token that attends to ``context_len`` tokens.

        ``2 * matmul_params_active`` for the weight matmuls (LM head included)
        plus ``2 * n_heads * (qk_dim + v_dim) * context_len`` per attention
        layer for the attention scores and context, plus the recurrent scans
        (independent of ``context_len``).
        """
        _check_positive(context_len=context_len)
        attn = 2.0 * self.n_heads * (self.qk_dim + self.v_dim) * context_len * self.n_attention_layers
        return 2.0 * self.matmul_params_active() + attn + rc.recurrent_flops_per_token(self)


#: Model presets. Sizes are those of the released configurations.
MODELS: dict[str, ModelConfig] = {
    "llama-2-7b": ModelConfig(
        name="Llama 2 7B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=32, d_ff=11008, vocab_size=32000,
        source="Touvron et al. 2023, 'Llama 2', Table 1 and the released config.json (hidden 4096, 32 layers, "
               "32 heads, intermediate 11008, vocab 32000)",
    ),
    "llama-3-8b": ModelConfig(
        name="Llama 3 8B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=128256,
        source="Meta Llama 3 model card and released config.json (hidden 4096, 32 layers, 32 heads, 8 KV heads, "
               "intermediate 14336, vocab 128256)",
    ),
    "llama-3-70b": ModelConfig(
        name="Llama 3 70B", n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672, vocab_size=128256,
        source="Meta Llama 3 model card and released config.json (hidden 8192, 80 layers, 64 heads, 8 KV heads, "
               "intermediate 28672, vocab 128256)",
    ),
    "mixtral-8x7b": ModelConfig(
        name="Mixtral 8x7B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=32000,
        n_experts=8, experts_per_token=2,
        source="Jiang et al. 2024, 'Mixtral of Experts', Table 1 (dim 4096, 32 layers, 32 heads, 8 KV heads, "
               "hidden 14336, vocab 32000, 8 experts, top-2); 47B total / 13B active (Section 2)",
    ),
    "deepseek-v3": ModelConfig(
        name="DeepSeek-V3", n_layers=61, d_model=7168, n_heads=128, n_kv_heads=128, d_ff=18432, vocab_size=129280,
        n_experts=256, experts_per_token=8, n_shared_experts=1, d_ff_expert=2048, n_dense_layers=3,
        head_dim=192, v_head_dim=128, kv_latent_dim=512, kv_rope_dim=64, q_latent_dim=1536,
        source="DeepSeek-AI 2024, 'DeepSeek-V3 Technical Report', Section 4.2 and the released config.json "
               "(61 layers, hidden 7168, 128 heads, MLA with kv_lora_rank 512, q_lora_rank 1536, qk head 128+64 rope, "
               "v head 128; first 3 layers dense (intermediate 18432), then 256 routed + 1 shared experts of width "
               "2048, 8 routed per token; vocab 129280); 671B total / 37B activated. The multi-token-prediction "
               "module is left out. MLA approximated: see the module docstring",
    ),
    "mistral-7b": ModelConfig(
        name="Mistral 7B", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=32000,
        source="Jiang et al. 2023, 'Mistral 7B', Table 1 (dim 4096, 32 layers, head_dim 128, hidden 14336, 32 heads, "
               "8 KV heads, vocab 32000); the 4096-token sliding window is not modelled (cache of the whole context, "
               "as in Lieber et al. 2024, Table 1)",
    ),
    # Recurrent and hybrid models. Attention head counts of pure recurrent models are placeholders: they have no
    # attention layer, so those fields are never used.
    "mamba-2.8b": ModelConfig(
        name="Mamba 2.8B", n_layers=64, d_model=2560, n_heads=1, n_kv_heads=1, d_ff=0, vocab_size=50280,
        tie_embeddings=True, layer_pattern="M" * 64, ssm_d_state=16, ssm_expand=2, ssm_d_conv=4, ssm_dt_rank=160,
        source="Gu & Dao 2023, 'Mamba', Table 12 (2.8B: 64 layers, d_model 2560) and the released "
               "state-spaces/mamba-2.8b config (d_state 16, expand 2, d_conv 4, dt_rank 160, vocab 50277 padded to "
               "50280, tied embeddings); Mamba blocks have no MLP",
    ),
    "rwkv-6-7b": ModelConfig(
        name="RWKV-6 Finch 7B", n_layers=32, d_model=4096, n_heads=64, n_kv_heads=64, d_ff=14336, vocab_size=65536,
        gated_mlp=False, layer_pattern="R" * 32, rwkv_head_size=64,
        source="Peng et al. 2024, 'Eagle and Finch', Section 4 and the released RWKV-6 World 7B config (hidden 4096, "
               "32 layers, head size 64 so 64 heads, vocab 65536); channel mixing key/value 3.5 x 4096 = 14336 "
               "(squared ReLU, not gated) plus a 4096 x 4096 receptance",
    ),
    "jamba-v0.1": ModelConfig(
        name="Jamba v0.1", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_ff=14336, vocab_size=65536,
        n_experts=16, experts_per_token=2, moe_every=2, layer_pattern="MMMMAMMM" * 4,
        ssm_d_state=16, ssm_expand=2, ssm_d_conv=4, ssm_dt_rank=256,
        source="Lieber et al. 2024, 'Jamba', Section 3.1 (4 blocks of 8 layers, attention:Mamba 1:7, MoE every other "
               "layer, 16 experts, top-2) and the released ai21labs/Jamba-v0.1 config.json (hidden 4096, 32 heads, "
               "8 KV heads, intermediate 14336, attn_layer_offset 4 / period 8, expert_layer_period 2, mamba d_state "
               "16, d_conv 4, expand 2, dt_rank 256, vocab 65536); 52B total / 12B active (Table 1)",
    ),
}


def get_model(name: str | ModelConfig) -> ModelConfig:
    """Return the preset called ``name``; a ``ModelConfig`` passes through."""
    if isinstance(name, ModelConfig):
        return name
    if not isinstance(name, str):
        raise TypeError(f"model must be a preset name or a ModelConfig, got {type(name).__name__}")
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[key]


# --------------------------------------------------------------------------- helpers


def _check_positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def _check_count(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


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


def kv_cache_bytes_per_token(model: ModelConfig | str, *, dtype_bytes: float = 2) -> float:
    """Bytes of KV cache one token adds, over all layers."""
    m = get_model(model)
    _check_positive(dtype_bytes=dtype_bytes)
    if m.is_mla:
        per_layer = m.kv_latent_dim + m.kv_rope_dim
    else:
        per_layer = m.n_kv_heads * (m.qk_dim + m.v_dim)
    return float(m.n_attention_layers * per_layer * dtype_bytes)


def state_bytes_per_sequence(model: ModelConfig | str, *, dtype_bytes: float = 2) -> float:
    """Bytes of recurrent state (Mamba, RWKV layers) one sequence keeps, whatever its length."""
    m = get_model(model)
    _check_positive(dtype_bytes=dtype_bytes)
    return float(m.state_elems_per_sequence * dtype_bytes)


def kv_cache_bytes(model: ModelConfig | str, *, batch: int, seq_len: int, dtype_bytes: float = 2) -> float:
    """Bytes of KV cache for ``batch`` sequences of ``seq_len`` tokens."""
    _check_count(batch=batch, seq_len=seq_len)
    return kv_cache_bytes_per_token(model, dtype_bytes=dtype_bytes) * batch * seq_len


def weight_bytes(model: ModelConfig | str, *, dtype_bytes: float = 2) -> float:
    """Bytes of all the weights held in memory."""
    _check_positive(dtype_bytes=dtype_bytes)
    return float(get_model(model).params_total * dtype_bytes)


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


#: Share of device memory held back for activations, workspaces and fragmentation when judging
#: whether a phase fits: vLLM's default ``gpu_memory_utilization=0.9`` leaves the same 10%.
ACTIVATION_RESERVE_FRACTION = 0.10


def fits_with_reserve(h: Hardware, need_bytes: float) -> bool | None:
    """Whether ``need_bytes`` of weights and cache fit beside the activation reserve (None: memory unknown)."""
    if h.memory_bytes is None:
        return None
    return bool(need_bytes <= (1.0 - ACTIVATION_RESERVE_FRACTION) * h.memory_bytes)


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


def _fits_memory(h: Hardware, need_bytes: float) -> bool | None:
    """Whether ``need_bytes`` fit in the device's memory (None when its size is unknown)."""
    return None if h.memory_bytes is None else bool(need_bytes <= h.memory_bytes)


def max_batch(model: ModelConfig | str, hw: Hardware | str, seq_len: int, *, dtype_bytes: float = 2) -> int:
    """Most sequences of ``seq_len`` tokens whose KV cache and recurrent state fit in memory beside the weights.

    0 if the weights do not fit. Activations and allocator fragmentation are
    ignored, so this is an upper bound.
    """
    h = get_hardware(hw)
    _check_count(seq_len=seq_len)
    if h.memory_bytes is None:
        raise ValueError(f"hw: {h.name!r} has no known memory size (memory_bytes is None)")
    free = h.memory_bytes - weight_bytes(model, dtype_bytes=dtype_bytes)
    if free <= 0:
        return 0
    per_seq = (kv_cache_bytes_per_token(model, dtype_bytes=dtype_bytes) * seq_len
               + state_bytes_per_sequence(model, dtype_bytes=dtype_bytes))
    return int(free // per_seq)


# --------------------------------------------------------------------------- requests


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
#: any published context window (Gemini 1.5 reports 10M in research tests), so the decode sum stays seconds.
MAX_TOKENS = 2**24
#: Decode contexts evaluated at once by ``request_latency`` (a few MB of float64 per operation).
DECODE_CHUNK = 1 << 16


def request_latency(
    model: ModelConfig | str, hw: Hardware | str, *, batch: int, prompt_len: int, gen_len: int, dtype_bytes: float = 2
) -> RequestLatency:
    """Latency of ``batch`` requests with ``prompt_len``-token prompts generating ``gen_len`` tokens each.

    The prefill yields the first token; decode step ``i`` (``1 <= i < gen_len``)
    attends to ``prompt_len + i`` tokens.
    """
    m, h = _phase_args(model, hw, "prefill", batch, prompt_len, dtype_bytes, "prompt_len")
    _check_count(gen_len=gen_len)
    if prompt_len + gen_len > MAX_TOKENS:
        raise ValueError(f"prompt_len + gen_len must be at most {MAX_TOKENS} tokens, got {prompt_len + gen_len}")
    pre = _phase_cost(m, h, "prefill", batch, prompt_len, dtype_bytes)
    # Decode steps are summed in fixed-size chunks, so memory stays bounded however long the generation.
    decode_s = 0.0
    for start in range(1, gen_len, DECODE_CHUNK):
        contexts = prompt_len + np.arange(start, min(start + DECODE_CHUNK, gen_len), dtype=np.float64)  # (<= chunk,)
        decode_s += float(_decode_times(m, h, batch, contexts, dtype_bytes).sum())
    total = pre.time_s + decode_s
    end_len = prompt_len + gen_len
    need = weight_bytes(m, dtype_bytes=dtype_bytes) + kv_cache_bytes(m, batch=batch, seq_len=end_len, dtype_bytes=dtype_bytes)
    return RequestLatency(
        batch=batch, prompt_len=prompt_len, gen_len=gen_len, ttft_s=pre.time_s,
        tpot_s=decode_s / (gen_len - 1) if gen_len > 1 else 0.0, total_s=total,
        throughput_tokens_per_s=batch * gen_len / total, fits_memory=_fits_memory(h, need),
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
    contexts = prompt_len + np.arange(1, gen_len, dtype=np.float64)  # (gen_len - 1,)
    decode_s = float(_decode_times(m, h, n, contexts, dtype_bytes).sum()) if gen_len > 1 else 0.0
    flops = pre.flops
    if gen_len > 1:
        flops += sum(float(np.sum(f)) for _, _, f, _ in _ops(m, "decode", n, contexts, dtype_bytes))
    per_tok = kv_cache_bytes_per_token(m, dtype_bytes=dtype_bytes)
    kv = per_tok * (prompt_len + n * gen_len)
    single = request_latency(m, h, batch=1, prompt_len=prompt_len, gen_len=gen_len, dtype_bytes=dtype_bytes)
    unshared = request_latency(m, h, batch=n, prompt_len=prompt_len, gen_len=gen_len, dtype_bytes=dtype_bytes)
    return BestOfNCost(
        n=n, prompt_len=prompt_len, gen_len=gen_len, prefill_s=pre.time_s, decode_s=decode_s,
        total_s=pre.time_s + decode_s, independent_total_s=unshared.total_s,
        sequential_total_s=n * single.total_s, flops=flops,
        kv_cache_bytes=kv, fits_memory=_fits_memory(h, weight_bytes(m, dtype_bytes=dtype_bytes) + kv),
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
