"""Model configurations for the cost models: the ``ModelConfig`` shape of a decoder
and the published presets (:data:`MODELS`), each with its source.

A ``ModelConfig`` holds counts (layers, widths, heads, experts), never bytes or
times; :mod:`simulations.memory_footprint` turns it into bytes and
:mod:`simulations.roofline` into FLOPs and seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from scalelab.kernels.decoder_shape import DecoderShape, check_decoder_shape
from scalelab.simulations import recurrent_cost as rc
from scalelab.simulations.checks import check_positive as _check_positive

__all__ = ["ModelConfig", "MODELS", "get_model"]


@dataclass(frozen=True)
class ModelConfig(DecoderShape):
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

    # -- derived sizes (head and expert widths, MoE and attention layer counts: DecoderShape)
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

    # -- parameter counts
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
        """Weights one token multiplies by: active parameters minus the embedding lookup and norms.

        The attention and MLP layers' share is :meth:`DecoderShape.layer_matmul_params_per_token`
        (the live engine counts its FLOPs with the same method); recurrent mixers and the LM
        head are added here.
        """
        recurrent = (self.n_mamba_layers * rc.mamba_layer_params(self)
                     + self.n_rwkv_layers * rc.rwkv_layer_params(self))
        return self.layer_matmul_params_per_token() + recurrent + self.vocab_size * self.d_model

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
