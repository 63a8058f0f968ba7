"""What one serving iteration costs: the per-operation roofline of a mixed batch.

A serving engine's iteration mixes prefill chunks (``c`` new tokens of a
prompt whose first ``o`` tokens are already cached) with decode steps
(one new token, or ``k + 1`` with speculative decoding, per sequence). The
per-operation model of :mod:`simulations.inference` prices one prefill or one
decode step; here the same operations are priced for any such mix. Every
operation's FLOPs and bytes are affine in five aggregates of the batch, so an
iteration is the vector ``x = [1, T, S, P, K, U]``:

=====  =====================================================================
``T``  new tokens in the iteration (prefill chunk tokens + decode tokens)
``S``  positions that produce logits (one per prefill chunk, one per decoded token)
``P``  unmasked (query, key) pairs of attention: ``c * o + c (c + 1) / 2`` per
       chunk, ``context`` per decode token
``K``  tokens of K and V read by the fused attention kernel (``o + c`` per
       chunk, ``context`` per decode sequence)
``U``  expected distinct experts touched (MoE only; a non-linear function of ``T``)
=====  =====================================================================

:func:`op_coefficients` reads each operation's coefficients off the phase
model itself (``simulations.roofline._ops`` at a few (batch, length)
points), and :class:`StepCostModel` keeps them as two matrices, so an
iteration costs one small matrix product: ``time = sum_ops max(F x, B x)``. A
lone prefill of ``L`` tokens is ``x = [1, L, 1, L (L + 1) / 2, L, U(L)]`` and
reproduces :func:`~simulations.inference.decode_cost` (the tests check both).

Tensor parallelism of degree ``t`` divides every operation's FLOPs and bytes
by ``t`` (Megatron-style sharding of heads and MLP columns; the LM head and
norms are split too, an idealisation) and adds two all-reduces of the
iteration's activations per layer (after attention and after the MLP), each a
ring all-reduce: ``2 (t - 1) / t * bytes / link_bandwidth + 2 (t - 1) * latency``.

Efficiency factors (achieved / peak, for compute and for bandwidth) divide the
peaks; the default is 1.0 (the pure roofline) because no single published
value holds across kernels and batch sizes: calibrate them against a real
engine before trusting absolute latencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scalelab.simulations.inference import (
    ModelConfig, _check_positive, _ops, expected_experts_touched, get_model, kv_cache_bytes_per_token,
)
from scalelab.simulations.checks import as_count_array, check_int
from scalelab.simulations.hardware import Hardware, get_hardware

__all__ = [
    "Link", "LINKS", "get_link", "DRAFT_MODELS", "op_coefficients", "StepCostModel",
    "ring_allreduce_time", "expected_tokens_per_step", "N_AGGREGATES", "iteration_aggregates", "experts_touched",
]

N_AGGREGATES = 6  # the length of the iteration vector x = [1, T, S, P, K, U]


def experts_touched(model: ModelConfig, tokens):
    """The MoE aggregate ``U`` of ``model`` for ``tokens`` new tokens (0 for a dense model)."""
    if not model.is_moe:
        return 0.0
    return expected_experts_touched(model.n_experts, model.experts_per_token, tokens)


def iteration_aggregates(model: ModelConfig, chunk_tokens, chunk_offsets, decode_kv, q: int = 1) -> np.ndarray:
    """The iteration vector ``x = [1, T, S, P, K, U]`` ``(6,)`` of one iteration of ``model``.

    Parameters
    ----------
    chunk_tokens, chunk_offsets : sequences of int
        Prefill chunks: ``c_i`` new tokens after ``o_i`` cached ones.
    decode_kv : sequence of int
        Cached tokens of each decode sequence before this step.
    q : int
        Tokens each decode sequence verifies (1 without speculative decoding).

    Raises
    ------
    TypeError
        ``model`` not a ``ModelConfig`` or preset name; counts that are not numbers; ``q`` not an int.
    ValueError
        Counts that are not 1-D sequences of whole numbers (``chunk_tokens`` >= 1, the others
        >= 0), ``chunk_offsets`` not one per chunk, ``q`` < 1, or an iteration with neither
        a prefill chunk nor a decode sequence.
    """
    model = get_model(model)
    c = as_count_array("chunk_tokens", chunk_tokens, minimum=1)  # (n_chunks,)
    o = as_count_array("chunk_offsets", chunk_offsets)  # (n_chunks,)
    kv = as_count_array("decode_kv", decode_kv)  # (n_decode,)
    q = check_int("q", q, 1)
    if o.shape != c.shape:
        raise ValueError(f"chunk_offsets must hold one offset per chunk ({c.size}), got {o.size}")
    if c.size + kv.size == 0:
        raise ValueError("an iteration needs at least one prefill chunk (chunk_tokens) or decode sequence "
                         "(decode_kv); both are empty")
    n_dec = kv.size
    t = c.sum() + q * n_dec
    return np.array([1.0, t, c.size + q * n_dec,
                     float(np.sum(c * o + c * (c + 1) / 2)) + q * kv.sum() + n_dec * q * (q + 1) / 2,
                     float(np.sum(o + c)) + kv.sum() + n_dec * q, experts_touched(model, t)])  # (6,)


@dataclass(frozen=True)
class Link:
    """A point-to-point link between GPUs: bandwidth in one direction, and per-message latency."""

    name: str
    bandwidth_bytes_per_s: float  # one direction
    latency_s: float
    source: str = ""

    def __post_init__(self) -> None:
        _check_positive(bandwidth_bytes_per_s=self.bandwidth_bytes_per_s)
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise ValueError(f"latency_s must be finite and >= 0, got {self.latency_s}")


#: Link presets. Bandwidths are datasheet peaks per direction; latency is left at 0 (no sourced figure).
LINKS: dict[str, Link] = {
    "nvlink4": Link(
        "NVLink 4 (H100 SXM)", 450e9, 0.0,
        source="NVIDIA H100 Tensor Core GPU datasheet: NVLink 900 GB/s per GPU (18 links, both directions "
               "together), i.e. 450 GB/s each way",
    ),
    "nvlink3": Link(
        "NVLink 3 (A100 SXM)", 300e9, 0.0,
        source="NVIDIA A100 Tensor Core GPU datasheet: NVLink 600 GB/s per GPU (both directions), 300 GB/s each way",
    ),
    "infiniband-ndr": Link(
        "InfiniBand NDR (ConnectX-7)", 50e9, 0.0,
        source="NVIDIA ConnectX-7 adapter user manual: single-port NDR 400 Gb/s = 50 GB/s per direction",
    ),
}


def get_link(link: str | Link) -> Link:
    """The preset called ``link`` (``nvlink4``, ``nvlink3``, ``infiniband-ndr``); a ``Link`` passes through."""
    if isinstance(link, Link):
        return link
    if not isinstance(link, str):
        raise TypeError(f"link must be a preset name or a Link, got {type(link).__name__}")
    if link.lower() not in LINKS:
        raise ValueError(f"unknown link {link!r}; known: {', '.join(sorted(LINKS))}")
    return LINKS[link.lower()]


#: Draft models for speculative decoding (small models sharing the target's tokenizer).
DRAFT_MODELS: dict[str, ModelConfig] = {
    "llama-3.2-1b": ModelConfig(
        name="Llama 3.2 1B", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_ff=8192, vocab_size=128256,
        tie_embeddings=True,
        source="Meta Llama 3.2 1B released config.json (hidden 2048, 16 layers, 32 heads, 8 KV heads, "
               "intermediate 8192, vocab 128256, tied embeddings)",
    ),
}


def get_draft_model(name: str | ModelConfig) -> ModelConfig:
    """A draft preset (:data:`DRAFT_MODELS`) or any model preset; a ``ModelConfig`` passes through."""
    if isinstance(name, str) and name.lower() in DRAFT_MODELS:
        return DRAFT_MODELS[name.lower()]
    return get_model(name)


def expected_tokens_per_step(k: int, accept: float) -> float:
    """Tokens a speculative step emits on average: ``(1 - a^(k+1)) / (1 - a)``.

    Leviathan, Kalman, Matias 2023, "Fast Inference from Transformers via
    Speculative Decoding", Equation 1 (i.i.d. acceptance rate ``a`` per
    drafted token, ``k`` drafted tokens). ``k = 0`` is plain decoding (1).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"spec_k must be an int >= 0, got {k!r}")
    if k == 0:
        return 1.0
    if isinstance(accept, bool) or not isinstance(accept, (int, float)) or not 0 <= accept <= 1:
        raise ValueError(f"spec_accept must be a number in [0, 1], got {accept!r}")
    if accept == 1:
        return float(k + 1)
    return (1.0 - accept ** (k + 1)) / (1.0 - accept)


def ring_allreduce_time(nbytes, t: int, link: Link):
    """Seconds for a ring all-reduce of ``nbytes`` over ``t`` devices (0 for ``t = 1``); broadcasts over arrays."""
    if t == 1:
        return 0.0 * np.asarray(nbytes, dtype=np.float64)
    return 2.0 * (t - 1) / t * np.asarray(nbytes, dtype=np.float64) / link.bandwidth_bytes_per_s \
        + 2.0 * (t - 1) * link.latency_s


#: ``(phase, batch, seq_len)`` calls of the phase model that pin down every operation's affine coefficients.
_PROBES = (("decode", 1, 1), ("decode", 1, 2), ("decode", 2, 1), ("decode", 3, 5),
           ("prefill", 1, 2), ("prefill", 1, 3), ("prefill", 1, 4), ("prefill", 2, 3))


def op_coefficients(m: ModelConfig, dt: float) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Every operation's FLOPs and bytes as linear functions of ``x = [1, T, S, P, K, U]``.

    Read off the per-operation model of :mod:`simulations.inference` itself:
    a prefill of ``b`` prompts of ``L`` tokens is the point
    ``[1, bL, b, bL(L+1)/2, bL, U(bL)]`` and a decode step of ``b`` sequences
    attending to ``c`` tokens is ``[1, b, b, bc, bc, U(b)]``; a handful of such
    calls determine the coefficients (least squares over more calls than
    unknowns, then checked to reproduce every call), so the serving cost can
    never drift from the phase model. Returns ``(op names, flops (6, n_ops),
    bytes (6, n_ops))``; a ValueError if some operation is not affine in ``x``.
    """
    rows, flops, nbytes, names = [], [], [], None
    for phase, b, length in _PROBES:
        ops = _ops(m, phase, b, length, dt)
        names = names or tuple(o[0] for o in ops)
        if tuple(o[0] for o in ops) != names:
            raise ValueError("the phase model lists different operations for prefill and decode")
        flops.append([float(o[2]) for o in ops])
        nbytes.append([float(o[3]) for o in ops])
        t = b * length if phase == "prefill" else b
        pairs = b * length * (length + 1) / 2 if phase == "prefill" else b * length
        u = expected_experts_touched(m.n_experts, m.experts_per_token, t) if m.is_moe else 0.0
        rows.append([1.0, t, b, pairs, b * length, u])
    x = np.array(rows)  # (n_probes, 6)
    cols = list(range(N_AGGREGATES)) if m.is_moe else list(range(N_AGGREGATES - 1))  # U is absent when dense
    out = []
    for y in (np.array(flops), np.array(nbytes)):  # (n_probes, n_ops)
        coef = np.zeros((N_AGGREGATES, y.shape[1]))  # (6, n_ops)
        coef[cols] = np.linalg.lstsq(x[:, cols], y, rcond=None)[0]
        if not np.allclose(x @ coef, y, rtol=1e-12, atol=0):
            raise ValueError("an operation of the phase model is not affine in the iteration aggregates")
        out.append(coef)
    return names, out[0], out[1]


class StepCostModel:
    """Seconds for an iteration of one model on ``tp`` devices of one kind.

    Parameters
    ----------
    model, hw : preset names or configs.
    tp : tensor-parallel degree (devices per instance).
    link : link between the ``tp`` devices (for the all-reduces).
    efficiency_compute, efficiency_bandwidth : achieved / peak, in (0, 1]; 1.0 = pure roofline.
    dtype_bytes : bytes per weight, activation and KV value.

    ``time(x)`` takes one iteration vector ``(6,)`` or a stack ``(k, 6)``.
    """

    def __init__(self, model, hw, *, tp: int = 1, link: str | Link = "nvlink4", efficiency_compute: float = 1.0,
                 efficiency_bandwidth: float = 1.0, dtype_bytes: float = 2) -> None:
        self.model: ModelConfig = get_model(model)
        self.hw: Hardware = get_hardware(hw)
        if isinstance(tp, bool) or not isinstance(tp, (int, np.integer)) or tp < 1:
            raise ValueError(f"tp must be an int >= 1, got {tp!r}")
        for name, eff in (("efficiency_compute", efficiency_compute), ("efficiency_bandwidth", efficiency_bandwidth)):
            if isinstance(eff, bool) or not isinstance(eff, (int, float)) or not 0 < eff <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {eff!r}")
        _check_positive(dtype_bytes=dtype_bytes)
        self.tp = int(tp)
        self.link = get_link(link)
        self.dtype_bytes = dtype_bytes
        names, flops, nbytes = op_coefficients(self.model, dtype_bytes)  # (6, n_ops) each
        self.op_names = names
        self.flops_coef = flops  # (6, n_ops)
        self.bytes_coef = nbytes  # (6, n_ops)
        self._compute = flops / (self.hw.peak_flops * efficiency_compute * self.tp)  # (6, n_ops) seconds per unit
        self._memory = nbytes / (self.hw.bandwidth_bytes_per_s * efficiency_bandwidth * self.tp)  # (6, n_ops)
        self._both = np.concatenate([self._compute, self._memory], axis=1)  # (6, 2 n_ops): one product prices both
        self._n_ops = len(names)
        # two all-reduces per layer of the iteration's activations (T * d_model values each)
        ring = 2.0 * (self.tp - 1) / self.tp
        self._allreduce_per_token = 2 * self.model.n_layers * ring * self.model.d_model * dtype_bytes \
            / self.link.bandwidth_bytes_per_s
        self._allreduce_fixed = 2 * self.model.n_layers * 2.0 * (self.tp - 1) * self.link.latency_s

    def aggregates(self, chunk_tokens, chunk_offsets, decode_kv, q: int = 1) -> np.ndarray:
        """The iteration vector for prefill chunks ``(c_i, o_i)`` and decode sequences with ``decode_kv`` cached tokens.

        Each decode sequence verifies ``q`` tokens (1 without speculative decoding).
        """
        return iteration_aggregates(self.model, chunk_tokens, chunk_offsets, decode_kv, q)

    def touched(self, tokens):
        """The MoE aggregate ``U`` for ``tokens`` new tokens (0 for a dense model)."""
        return experts_touched(self.model, tokens)

    def time(self, x: np.ndarray):
        """Seconds for iteration vector(s) ``x``: ``(6,)`` -> float, ``(k, 6)`` -> ``(k,)``."""
        x = np.asarray(x, dtype=np.float64)
        both = x @ self._both  # (2 n_ops,) or (k, 2 n_ops)
        n = self._n_ops
        total = np.maximum(both[..., :n], both[..., n:]).sum(axis=-1)  # (,) or (k,)
        if self.tp > 1:
            total = total + self._allreduce_per_token * x[..., 1] + self._allreduce_fixed
        return float(total) if total.ndim == 0 else total

    def kv_bytes_per_token(self) -> float:
        """KV cache bytes one token adds on each of the ``tp`` devices."""
        return kv_cache_bytes_per_token(self.model, dtype_bytes=self.dtype_bytes) / self.tp

