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

:func:`iteration_ops` writes each operation as a function of these (the same
operations, in the same order, as ``simulations.inference._ops``); the
:class:`StepCostModel` turns them into two coefficient matrices once, so an
iteration costs one small matrix product: ``time = sum_ops max(F x, B x)``. A
lone prefill of ``L`` tokens is ``x = [1, L, 1, L (L + 1) / 2, L, U(L)]`` and
reproduces :func:`~simulations.inference.prefill_cost`; a decode batch
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

from simulations.inference import (
    ModelConfig, _check_positive, expected_experts_touched, get_model, kv_cache_bytes_per_token,
)
from simulations.hardware import Hardware, get_hardware

__all__ = [
    "Link", "LINKS", "get_link", "DRAFT_MODELS", "iteration_ops", "StepCostModel",
    "ring_allreduce_time", "expected_tokens_per_step", "N_AGGREGATES",
]

N_AGGREGATES = 6  # the length of the iteration vector x = [1, T, S, P, K, U]


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


def iteration_ops(m: ModelConfig, x, dt: float) -> list[tuple[str, object, object]]:
    """The operations of one iteration: ``(op, flops, bytes)`` summed over layers.

    ``x`` holds the aggregates ``[1, T, S, P, K, U]`` (see the module
    docstring); each entry may be an array (everything broadcasts). The
    operations and their costs are those of the per-operation roofline in
    :mod:`simulations.inference`, written in the aggregates instead of
    ``(batch, seq_len)``.
    """
    one, t, s, pairs, kv, touched = (x[i] for i in range(N_AGGREGATES))
    d, h, hkv = m.d_model, m.n_heads, m.n_kv_heads
    dq, dv = m.qk_dim, m.v_dim
    L = m.n_layers
    ops: list[tuple[str, object, object]] = []

    def add(name, layers, flops, nbytes):
        if layers > 0:
            ops.append((name, flops * layers, nbytes * layers))

    def linear(name, layers, tokens, d_in, d_out):
        # ``one`` carries the weight read, paid once per iteration whatever its batch
        add(name, layers, 2.0 * tokens * d_in * d_out, dt * (d_in * d_out * one + tokens * d_in + tokens * d_out))

    def norm(name, layers, tokens, width):
        add(name, layers, 4.0 * tokens * width, dt * (2.0 * tokens * width + width * one))

    add("embed", 1, 0.0 * t, dt * t * d)
    norm("attn_norm", L, t, d)
    if m.q_latent_dim:
        linear("q_down_proj", L, t, d, m.q_latent_dim)
        norm("q_latent_norm", L, t, m.q_latent_dim)
        linear("q_up_proj", L, t, m.q_latent_dim, h * dq)
    else:
        linear("q_proj", L, t, d, h * dq)
    if m.is_mla:
        latent = m.kv_latent_dim + m.kv_rope_dim
        linear("kv_down_proj", L, t, d, latent)
        norm("kv_latent_norm", L, t, m.kv_latent_dim)
        linear("kv_up_proj", L, t, m.kv_latent_dim, h * (dq - m.kv_rope_dim + dv))
        k_read, v_read = kv * latent, 0.0 * kv
    else:
        linear("k_proj", L, t, d, hkv * dq)
        linear("v_proj", L, t, d, hkv * dv)
        k_read, v_read = kv * hkv * dq, kv * hkv * dv
    add("attn_scores", L, 2.0 * h * dq * pairs, dt * (t * h * dq + k_read))
    add("attn_context", L, 2.0 * h * dv * pairs, dt * (v_read + t * h * dv))
    linear("o_proj", L, t, h * dv, d)
    add("residual_add", L, 2.0 * t * d, dt * 6.0 * t * d)
    norm("mlp_norm", L, t, d)
    n_dense = L - m.n_moe_layers
    act_flops = 4.0
    up_mats = m.n_mlp_matrices - 1
    if n_dense:
        linear("gate_up_proj", n_dense, t, d, up_mats * m.d_ff)
        add("mlp_act", n_dense, act_flops * t * m.d_ff, dt * (up_mats + 1) * t * m.d_ff)
        linear("down_proj", n_dense, t, m.d_ff, d)
    if m.n_moe_layers:
        e, k, fe = m.n_experts, m.experts_per_token, m.expert_width
        routed = t * k
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
    norm("final_norm", 1, s, d)
    linear("lm_head", 1, s, d, m.vocab_size)
    return ops


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
        eye = np.eye(N_AGGREGATES)  # (6, 6): the aggregates one at a time
        zero = np.zeros(N_AGGREGATES)
        base = iteration_ops(self.model, zero, dtype_bytes)
        flops = np.zeros((N_AGGREGATES, len(base)))  # (6, n_ops)
        nbytes = np.zeros((N_AGGREGATES, len(base)))  # (6, n_ops)
        for j in range(N_AGGREGATES):
            # every op is affine in x with no constant beyond ``one``, so f(e_j) is column j exactly
            for i, (_, f, b) in enumerate(iteration_ops(self.model, eye[j], dtype_bytes)):
                flops[j, i], nbytes[j, i] = f, b
        self.op_names = tuple(name for name, _, _ in base)
        self.flops_coef = flops  # (6, n_ops)
        self.bytes_coef = nbytes  # (6, n_ops)
        self._compute = flops / (self.hw.peak_flops * efficiency_compute * self.tp)  # (6, n_ops) seconds per unit
        self._memory = nbytes / (self.hw.bandwidth_bytes_per_s * efficiency_bandwidth * self.tp)  # (6, n_ops)
        self._both = np.concatenate([self._compute, self._memory], axis=1)  # (6, 2 n_ops): one product prices both
        self._n_ops = len(base)
        # two all-reduces per layer of the iteration's activations (T * d_model values each)
        ring = 2.0 * (self.tp - 1) / self.tp
        self._allreduce_per_token = 2 * self.model.n_layers * ring * self.model.d_model * dtype_bytes \
            / self.link.bandwidth_bytes_per_s
        self._allreduce_fixed = 2 * self.model.n_layers * 2.0 * (self.tp - 1) * self.link.latency_s
        self._moe = self.model.is_moe

    def aggregates(self, chunk_tokens, chunk_offsets, decode_kv, q: int = 1) -> np.ndarray:
        """The iteration vector for prefill chunks ``(c_i, o_i)`` and decode sequences with ``decode_kv`` cached tokens.

        Each decode sequence verifies ``q`` tokens (1 without speculative decoding).
        """
        c = np.asarray(chunk_tokens, dtype=np.float64)  # (n_chunks,)
        o = np.asarray(chunk_offsets, dtype=np.float64)  # (n_chunks,)
        kv = np.asarray(decode_kv, dtype=np.float64)  # (n_decode,)
        n_dec = kv.size
        t = c.sum() + q * n_dec
        x = np.array([1.0, t, c.size + q * n_dec,
                      float(np.sum(c * o + c * (c + 1) / 2)) + q * kv.sum() + n_dec * q * (q + 1) / 2,
                      float(np.sum(o + c)) + kv.sum() + n_dec * q, 0.0])  # (6,)
        if self._moe:
            x[5] = expected_experts_touched(self.model.n_experts, self.model.experts_per_token, t)
        return x

    def touched(self, tokens):
        """The MoE aggregate ``U`` for ``tokens`` new tokens (0 for a dense model)."""
        if not self._moe:
            return 0.0
        return expected_experts_touched(self.model.n_experts, self.model.experts_per_token, tokens)

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

