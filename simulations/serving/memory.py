"""How much KV cache an instance holds: paged blocks, as vLLM allocates them.

The cache is cut into blocks of :data:`BLOCK_TOKENS` tokens; a sequence of
``n`` cached tokens holds ``ceil(n / BLOCK_TOKENS)`` blocks. The number of
blocks an instance has is what is left of its memory after the weights and an
activation reserve::

    blocks = (memory * utilisation - weights / tp - activation reserve) / (KV bytes per token / tp * BLOCK_TOKENS)

Every device of a tensor-parallel group holds ``1 / tp`` of the weights and of
every cached token (its share of the KV heads).
"""

from __future__ import annotations

import math

from scalelab.simulations.inference import ModelConfig, get_model, kv_cache_bytes_per_token, weight_bytes
from scalelab.simulations.hardware import Hardware, get_hardware

__all__ = ["BLOCK_TOKENS", "GPU_MEMORY_UTILIZATION", "activation_reserve_bytes", "kv_capacity_blocks", "blocks_for"]

#: Tokens per KV block: vLLM's default block size (Kwon et al. 2023, "Efficient Memory Management for Large
#: Language Model Serving with PagedAttention", SOSP, Section 4.1; ``--block-size`` default 16 in vLLM's engine arguments).
BLOCK_TOKENS = 16

#: Fraction of device memory the engine may use: vLLM's ``--gpu-memory-utilization`` default (vLLM engine arguments).
GPU_MEMORY_UTILIZATION = 0.9


def blocks_for(tokens: int, block_tokens: int = BLOCK_TOKENS) -> int:
    """Blocks that ``tokens`` cached tokens occupy."""
    return -(-int(tokens) // block_tokens)


def activation_reserve_bytes(model: ModelConfig | str, *, max_tokens: int, max_seqs: int, tp: int = 1,
                             dtype_bytes: float = 2) -> float:
    """Memory kept free for one iteration's activations on each device (an estimate, stated).

    The largest live intermediates of an iteration of ``max_tokens`` tokens:
    the MLP's up-projection output (``(n_mlp_matrices - 1) * d_ff`` per token,
    split by ``tp``) plus its input and the residual stream (``2 * d_model``
    per token), and the fp32 logits of ``max_seqs`` positions. It plays the
    role of vLLM's profiling run; it is not a measurement.
    """
    m = get_model(model)
    per_token = ((m.n_mlp_matrices - 1) * max(m.d_ff, m.expert_width * m.experts_per_token) / tp + 2 * m.d_model)
    return float(max_tokens * per_token * dtype_bytes + max_seqs * m.vocab_size * 4 / tp)


def kv_capacity_blocks(model: ModelConfig | str, hw: Hardware | str, *, tp: int = 1,
                       utilization: float = GPU_MEMORY_UTILIZATION, reserve_bytes: float = 0.0,
                       block_tokens: int = BLOCK_TOKENS, dtype_bytes: float = 2) -> int:
    """KV blocks one instance of ``tp`` devices holds; ValueError when the weights leave no room.

    The message says by how much the memory falls short, so a caller can try a larger ``tp``.
    """
    m, h = get_model(model), get_hardware(hw)
    if h.memory_bytes is None:
        raise ValueError(f"hw: {h.name!r} has no known memory size (memory_bytes is None)")
    if not (isinstance(utilization, (int, float)) and 0 < utilization <= 1):
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}")
    if not (reserve_bytes >= 0 and math.isfinite(reserve_bytes)):
        raise ValueError(f"reserve_bytes must be finite and >= 0, got {reserve_bytes!r}")
    free = h.memory_bytes * utilization - weight_bytes(m, dtype_bytes=dtype_bytes) / tp - reserve_bytes
    per_block = kv_cache_bytes_per_token(m, dtype_bytes=dtype_bytes) / tp * block_tokens
    blocks = int(free // per_block) if free > 0 else 0
    if blocks < 1:
        raise ValueError(
            f"{m.name} does not fit on {tp} x {h.name}: weights {weight_bytes(m, dtype_bytes=dtype_bytes) / tp / 2**30:.1f} "
            f"GiB per device + reserve {reserve_bytes / 2**30:.1f} GiB exceed {utilization:g} of "
            f"{h.memory_bytes / 2**30:.0f} GiB; " + ("use a larger tp" if tp < 8 else f"it does not fit even at tp {tp}")
        )
    return blocks
