"""Shape rules and derived sizes every decoder-only transformer config shares, in one place.

Two configs describe the same architecture for different jobs:
:class:`scalelab.kernels.model.LlamaConfig` (the weights the CPU engine runs)
and :class:`scalelab.simulations.inference.ModelConfig` (the shapes the
roofline model costs). Each checks its own fields' types and ranges; the
relations between fields below are the ones both need, so both call
:func:`check_decoder_shape` after their own field checks. Both derive their
head widths, expert widths and the weights a token multiplies by from
:class:`DecoderShape`, so the engine's FLOP count and the cost model's
cannot drift apart. No NumPy or Numba here: the simulations import this
module without loading the kernels.
"""

from __future__ import annotations


def check_decoder_shape(cfg) -> None:
    """Raise ``ValueError`` unless ``cfg``'s heads, experts and layers fit together.

    ``cfg`` has ``n_layers``, ``d_model``, ``n_heads``, ``n_kv_heads``, ``head_dim``
    (``None``: ``d_model // n_heads``), ``n_experts``, ``experts_per_token`` and
    ``n_dense_layers``, already checked to be integers in range. The rules:
    query heads share key/value heads in equal groups; without an explicit
    ``head_dim`` the model width splits evenly over the heads; a token uses at
    most every routed expert; the leading dense layers are at most all layers.
    """
    if cfg.n_heads % cfg.n_kv_heads:
        raise ValueError(f"n_heads ({cfg.n_heads}) must be divisible by n_kv_heads ({cfg.n_kv_heads})")
    if cfg.experts_per_token > cfg.n_experts:
        raise ValueError(f"experts_per_token ({cfg.experts_per_token}) must be <= n_experts ({cfg.n_experts})")
    if cfg.head_dim is None and cfg.d_model % cfg.n_heads:
        raise ValueError(
            f"d_model ({cfg.d_model}) must be divisible by n_heads ({cfg.n_heads}) unless head_dim is given"
        )
    if cfg.n_dense_layers > cfg.n_layers:
        raise ValueError(f"n_dense_layers ({cfg.n_dense_layers}) must be <= n_layers ({cfg.n_layers})")


class DecoderShape:
    """Sizes derived from a decoder config's fields, shared by the engine's and the cost model's configs.

    A subclass is a dataclass with the fields :func:`check_decoder_shape` reads
    plus ``d_ff`` and ``vocab_size``. The class attributes below are the plain
    values of features only some configs have (separate value heads, shared
    experts, MoE every other layer, recurrent layers, latent attention,
    ungated MLPs); a config that has the feature declares it as a field, which
    takes precedence.
    """

    v_head_dim = None  # value width per head; None: the query/key width
    n_shared_experts = 0  # experts every token uses besides the routed ones
    moe_every = 1  # MoE MLP in every moe_every-th layer after the dense ones
    layer_pattern = ""  # per layer "A" attention, "M" Mamba, "R" RWKV; "" = all attention
    kv_latent_dim = 0  # multi-head latent attention: cached KV width (0 = standard attention)
    kv_rope_dim = 0  # multi-head latent attention: decoupled RoPE key width
    q_latent_dim = 0  # multi-head latent attention: low-rank query width (0 = direct projection)
    gated_mlp = True  # SwiGLU (gate, up, down) rather than up and down only

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
        """Hidden width of one expert."""
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
    def n_mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    def attention_params_per_layer(self) -> int:
        """Weights of one attention layer's projections (q, k, v, o; MLA's down/up projections and latent norms)."""
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

    def layer_matmul_params_per_token(self) -> int:
        """Weights one token multiplies by in the attention projections and MLPs of all layers.

        Dense MLP layers count whole; an MoE layer counts its router and the
        ``experts_per_token`` routed plus the shared experts a token uses.
        Recurrent mixers, embedding lookup, norms and LM head are not included.
        """
        moe_layer = ((self.experts_per_token + self.n_shared_experts) * self.expert_params()
                     + self.d_model * self.n_experts)  # router
        return (self.n_attention_layers * self.attention_params_per_layer()
                + (self.n_layers - self.n_moe_layers) * self.dense_mlp_params()
                + self.n_moe_layers * moe_layer)
