"""What a model holds in device memory: weights, KV cache per token, recurrent
state per sequence, and whether they fit (beside an activation reserve).
"""

from __future__ import annotations

from scalelab.simulations.checks import check_count as _check_count
from scalelab.simulations.checks import check_positive as _check_positive
from scalelab.simulations.hardware import Hardware, get_hardware
from scalelab.simulations.model_config import ModelConfig, get_model

__all__ = [
    "kv_cache_bytes_per_token", "state_bytes_per_sequence", "kv_cache_bytes", "weight_bytes",
    "ACTIVATION_RESERVE_FRACTION", "fits_with_reserve", "fits_memory", "max_batch",
]


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


#: Share of device memory held back for activations, workspaces and fragmentation when judging
#: whether a phase fits: vLLM's default ``gpu_memory_utilization=0.9`` leaves the same 10%.
ACTIVATION_RESERVE_FRACTION = 0.10


def fits_with_reserve(h: Hardware, need_bytes: float) -> bool | None:
    """Whether ``need_bytes`` of weights and cache fit beside the activation reserve (None: memory unknown)."""
    if h.memory_bytes is None:
        return None
    return bool(need_bytes <= (1.0 - ACTIVATION_RESERVE_FRACTION) * h.memory_bytes)


def fits_memory(h: Hardware, need_bytes: float) -> bool | None:
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
