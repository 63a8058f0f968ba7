"""What inference costs, in one import: prefill and decode on a roofline, memory, requests.

The model lives in four modules, one idea each; this module re-exports their
public names (and the helpers other modules and the tests use), so
``scalelab.simulations.inference.X`` means what it always meant.

=================================  ==========================================================
module                             what it holds
=================================  ==========================================================
:mod:`simulations.model_config`    ``ModelConfig`` (the shape of a decoder) and the ``MODELS``
                                   presets with their sources
:mod:`simulations.memory_footprint` weights, KV cache and recurrent state in bytes; whether
                                   they fit (``max_batch``, ``fits_with_reserve``)
:mod:`simulations.roofline`        the per-operation roofline of one prefill or decode step
                                   (``roofline_table``, ``prefill_cost``, ``decode_cost``), its
                                   assumptions, and the closed-form sum over decode steps
:mod:`simulations.latency`         request-level latency (``request_latency``), throughput
                                   against latency, best-of-n sampling, the CLI's phase table
=================================  ==========================================================
"""

from __future__ import annotations

from scalelab.simulations.checks import check_count as _check_count
from scalelab.simulations.checks import check_positive as _check_positive
from scalelab.simulations.hardware import HARDWARE, Hardware, get_hardware
from scalelab.simulations.latency import (
    MAX_TOKENS,
    BestOfNCost,
    RequestLatency,
    best_of_n_cost,
    last_decode_context,
    phase_table,
    request_latency,
    throughput_latency_sweep,
)
from scalelab.simulations.memory_footprint import (
    ACTIVATION_RESERVE_FRACTION,
    fits_memory,
    fits_with_reserve,
    kv_cache_bytes,
    kv_cache_bytes_per_token,
    max_batch,
    state_bytes_per_sequence,
    weight_bytes,
)
from scalelab.simulations.model_config import MODELS, ModelConfig, get_model
from scalelab.simulations.roofline import (
    PhaseCost,
    _decode_times,
    _ops,
    _phase_args,
    _phase_cost,
    attention_kernel_roofline,
    decode_compute_bound_batch,
    decode_cost,
    decode_steps_sum,
    expected_experts_touched,
    prefill_cost,
    ridge_point,
    roofline_table,
)

_fits_memory = fits_memory  # the name this module used before the split

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

# Re-exported beside __all__ (used by the CLI, the serving simulator, the report and tests).
_REEXPORTED = (
    _check_count, _check_positive, _decode_times, _ops, _phase_args, _phase_cost, ACTIVATION_RESERVE_FRACTION,
    MAX_TOKENS, decode_steps_sum, fits_memory, fits_with_reserve, last_decode_context,
)
