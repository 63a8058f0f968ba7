"""Shape rules every decoder-only transformer config obeys, checked in one place.

Two configs describe the same architecture for different jobs:
:class:`scalelab.kernels.model.LlamaConfig` (the weights the CPU engine runs)
and :class:`scalelab.simulations.inference.ModelConfig` (the shapes the
roofline model costs). Each checks its own fields' types and ranges; the
relations between fields below are the ones both need, so both call
:func:`check_decoder_shape` after their own field checks. No NumPy or Numba
here: the simulations import this module without loading the kernels.
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
