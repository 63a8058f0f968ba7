"""A Llama-architecture decoder on our kernels, with a paged KV cache and a float64 reference.

=================================  =========================================================================
name                               what it is
=================================  =========================================================================
:class:`LlamaConfig`               the shape of the model (a :class:`~scalelab.simulations.inference.ModelConfig`
                                   converts with :meth:`LlamaConfig.from_config`)
:class:`LlamaModel`                float32 weights; ``forward`` (one sequence, no cache) and
                                   ``forward_cached`` (a batch of prompt chunks and decode tokens)
:class:`PagedKVCache`              K and V pages of ``block_size`` tokens, a free list of blocks
:func:`llama_forward_ref`          NumPy reference: whole sequence, float64, no cache
=================================  =========================================================================

One layer: ``h += o_proj(attn(rope(q), rope(k), v))`` over ``rms_norm(h)``, then
``h += mlp(rms_norm(h))``; the MLP is SwiGLU (``(silu(x @ w1) * (x @ w3)) @ w2``) or, with
``n_experts > 1`` past the first ``n_dense_layers`` layers, a top-k mixture of SwiGLU experts
(the steps of :func:`~scalelab.kernels.moe.moe_layer`: Mixtral's routing, softmax over the chosen
experts, then dispatch, permute, each expert on its rows, unpermute). Every matrix product with a
weight (q/k/v, o, the MLP or experts, the router, the LM head) is
:func:`~scalelab.kernels.linear.linear` on weights packed once at load.
Attention: a prompt chunk goes through :func:`~scalelab.kernels.attention.attention` (bottom-right
causal mask, so a chunk that continues a cache sees all earlier tokens); single tokens of all
sequences go together through :func:`~scalelab.kernels.attention.paged_decode_attention`.

Conventions (Hugging Face ``LlamaForCausalLM``): weights are named and shaped as in its
safetensors files (``(out, in)`` for linear layers; Mixtral's names for experts); rotary
embeddings use the "rotate half" pairing (dimension ``i`` with ``i + D/2``) with frequencies
``rope_theta ** (-2i / D)``; RMSNorm is ``x / sqrt(mean(x^2) + eps) * w``.

Dtype rule: weights, activations and the cache are float32 and every matmul accumulates in
float32 (fused multiply-adds); rotary tables are computed in float64 and rounded once. The
reference runs the same arithmetic in float64 from the same (float32) weights.

Determinism: a sequence's logits are a function of its own tokens, bitwise, whatever other
sequences share a step, however its prompt is cut into chunks, and whatever the thread count.
``linear`` fixes every product's summation order per row (a BLAS ``sgemm`` changes it with the
number of rows and threads); RMSNorm, rotary embeddings, routing, permutation and the SwiGLU gate
work row by row; prefill attention tiles the keys and sums each row's softmax at absolute key
positions, so a row's result does not depend on the query block it shares; decode attention
splits the keys at fixed positions. Sampling (:func:`~scalelab.kernels.sampling.sample`) is a pure
function of logits and seed, so a request's tokens do not depend on its batch mates either, under
every scheduler (``tests/test_model.py`` checks the logits bit for bit). One exception: a
sequence preempted and recomputed gets its next logits from a prefill row instead of a decode
step, two different summations (within float32 rounding of each other), and preemption depends on
how much memory the other requests hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from scalelab.kernels._common import check_int_array
from scalelab.kernels._threads import thread_budget, threads_for
from scalelab.kernels.attention import attention, paged_decode_attention
from scalelab.kernels.decoder_shape import DecoderShape, check_decoder_shape
from scalelab.kernels.linear import PackedWeight, linear, pack_weight
from scalelab.kernels.moe import dispatch, permute, route, silu_mul, unpermute

__all__ = ["LlamaConfig", "LlamaModel", "PagedKVCache", "SeqChunk", "WeightError", "llama_forward_ref",
           "hf_tensor_shapes"]


class WeightError(ValueError):
    """A weights file lacks a tensor the config needs, or holds one of the wrong shape."""


@dataclass(frozen=True)
class LlamaConfig(DecoderShape):
    """Shape of a Llama-architecture decoder (defaults: Hugging Face ``LlamaConfig``'s).

    Derived sizes (``qk_dim``, ``expert_width``, the weights a token multiplies by) come
    from :class:`~scalelab.kernels.decoder_shape.DecoderShape`, shared with ``ModelConfig``.
    """

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_ff: int  # dense MLP hidden width
    vocab_size: int
    head_dim: int | None = None  # default d_model // n_heads
    rope_theta: float = 10000.0  # rotary base
    norm_eps: float = 1e-6  # RMSNorm epsilon
    tie_embeddings: bool = False  # LM head is the embedding matrix
    max_position: int = 2048  # longest sequence (positions 0 .. max_position - 1)
    n_experts: int = 1  # routed experts per MoE layer (1 = dense)
    experts_per_token: int = 1
    d_ff_expert: int | None = None  # default d_ff
    n_dense_layers: int = 0  # leading layers with a dense MLP in an MoE model

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("rope_theta", "norm_eps"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                    raise ValueError(f"{f.name} must be a positive finite number, got {v!r}")
            elif f.name == "tie_embeddings":
                if not isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"tie_embeddings must be a bool, got {type(v).__name__}")
            elif v is not None:
                if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                    raise TypeError(f"{f.name} must be an int, got {type(v).__name__}")
                if v < (0 if f.name == "n_dense_layers" else 1):
                    raise ValueError(f"{f.name} must be positive, got {v}")
        check_decoder_shape(self)
        if self.qk_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.qk_dim}")

    def is_moe_layer(self, i: int) -> bool:
        return self.n_experts > 1 and i >= self.n_dense_layers

    @classmethod
    def from_config(cls, config) -> "LlamaConfig":
        """A ``LlamaConfig``, or one read off any config object with the same field names.

        ``ModelConfig`` (:mod:`scalelab.simulations.inference`) converts this way without the
        kernels importing it; features a Llama forward does not have are rejected by name.
        """
        if isinstance(config, cls):
            return config
        unsupported = {"kv_latent_dim": 0, "q_latent_dim": 0, "n_shared_experts": 0, "gated_mlp": True}
        for name, plain in unsupported.items():
            if getattr(config, name, plain) != plain:
                raise ValueError(f"config.{name} = {getattr(config, name)!r} is not supported by LlamaModel "
                                 f"(only {plain!r})")
        head = getattr(config, "head_dim", None)
        v_head = getattr(config, "v_head_dim", None)
        if v_head is not None and v_head != (head if head is not None else config.d_model // config.n_heads):
            raise ValueError(f"config.v_head_dim ({v_head}) must equal the query/key head width")
        kw = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**kw)


# --------------------------------------------------------------------------- Hugging Face tensor names


def hf_tensor_shapes(config) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Hugging Face Llama (Mixtral for MoE layers) checkpoint: name -> shape."""
    c = LlamaConfig.from_config(config)
    d, D, F = c.d_model, c.qk_dim, c.d_ff
    out = {"model.embed_tokens.weight": (c.vocab_size, d)}
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = (c.n_heads * D, d)
        out[p + "self_attn.k_proj.weight"] = (c.n_kv_heads * D, d)
        out[p + "self_attn.v_proj.weight"] = (c.n_kv_heads * D, d)
        out[p + "self_attn.o_proj.weight"] = (d, c.n_heads * D)
        if c.is_moe_layer(i):
            out[p + "block_sparse_moe.gate.weight"] = (c.n_experts, d)
            for e in range(c.n_experts):
                q = p + f"block_sparse_moe.experts.{e}."
                out[q + "w1.weight"] = (c.expert_width, d)
                out[q + "w2.weight"] = (d, c.expert_width)
                out[q + "w3.weight"] = (c.expert_width, d)
        else:
            out[p + "mlp.gate_proj.weight"] = (F, d)
            out[p + "mlp.up_proj.weight"] = (F, d)
            out[p + "mlp.down_proj.weight"] = (d, F)
        out[p + "input_layernorm.weight"] = (d,)
        out[p + "post_attention_layernorm.weight"] = (d,)
    out["model.norm.weight"] = (d,)
    if not c.tie_embeddings:
        out["lm_head.weight"] = (c.vocab_size, d)
    return out


# --------------------------------------------------------------------------- paged KV cache


class PagedKVCache:
    """K and V of every layer in pages of ``block_size`` tokens, and the free list of blocks.

    ``k[layer]`` and ``v[layer]`` have the layout of
    :func:`~scalelab.kernels.attention.paged_decode_attention`: ``(n_blocks, block_size, Hkv, D)``.
    Blocks are handed out lowest id first and returned with :meth:`free`.
    """

    def __init__(self, config, n_blocks: int, block_size: int = 16) -> None:
        c = LlamaConfig.from_config(config)
        for name, v in (("n_blocks", n_blocks), ("block_size", block_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.n_blocks, self.block_size = int(n_blocks), int(block_size)
        shape = (c.n_layers, self.n_blocks, self.block_size, c.n_kv_heads, c.qk_dim)
        self.k = np.zeros(shape, dtype=np.float32)  # (layers, blocks, block_size, Hkv, D)
        self.v = np.zeros(shape, dtype=np.float32)  # (layers, blocks, block_size, Hkv, D)
        self._free = list(range(self.n_blocks - 1, -1, -1))  # a stack: pop() gives the lowest id
        self._owned = np.zeros(self.n_blocks, dtype=bool)

    @property
    def n_free(self) -> int:
        return len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-int(tokens) // self.block_size)

    def allocate(self, n: int) -> np.ndarray:
        """``n`` free block ids (raises ``MemoryError`` when fewer are free)."""
        if n > len(self._free):
            raise MemoryError(f"the KV cache has {len(self._free)} free blocks, {n} requested")
        ids = np.array([self._free.pop() for _ in range(n)], dtype=np.int64)
        self._owned[ids] = True
        return ids

    def free(self, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_blocks or not self._owned[ids].all()):
            raise ValueError("free() got block ids that are not allocated")
        self._owned[ids] = False
        self._free.extend(ids[::-1].tolist())


class SeqChunk(NamedTuple):
    """Work for one sequence in a cached forward: ``tokens`` at positions ``start ..``, cached in ``blocks``."""

    tokens: np.ndarray  # (n,) token ids
    start: int  # tokens already cached for this sequence
    blocks: np.ndarray  # block ids covering positions 0 .. start + n - 1 (in order)


# --------------------------------------------------------------------------- numerics shared with the reference


def rope_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, (T, head_dim) float64, in the "rotate half" layout (frequencies repeated twice)."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]  # (T, D/2)
    ang = np.concatenate([ang, ang], axis=1)  # (T, D)
    return np.cos(ang), np.sin(ang)


def _rope(x, cos, sin):
    """x (T, H, D) rotated by position: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # (T, H, D)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def _rms_norm(x, w, eps):
    ms = np.mean(np.square(x), axis=-1, keepdims=True)  # (T, 1)
    return x * (1.0 / np.sqrt(ms + x.dtype.type(eps))) * w


# --------------------------------------------------------------------------- the model


class LlamaModel:
    """Llama-architecture decoder, float32 weights.

    Linear weights are held as :class:`~scalelab.kernels.linear.PackedWeight` of ``(in, out)`` (q,
    k and v fused into one matrix; each expert packed alone); :meth:`hf_state` gives them back in
    Hugging Face names and layouts.
    """

    def __init__(self, config, tensors: dict[str, np.ndarray]) -> None:
        self.config = c = LlamaConfig.from_config(config)
        shapes = hf_tensor_shapes(c)
        for name, shape in shapes.items():
            if name not in tensors:
                raise WeightError(f"missing tensor {name!r} (shape {shape})")
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise WeightError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
            if t.dtype.kind != "f":
                raise WeightError(f"tensor {name!r} has dtype {t.dtype}, expected a float dtype")

        def get(name):
            return np.asarray(tensors[name], dtype=np.float32)

        def lin(name):  # (out, in) -> (in, out), packed
            return pack_weight(get(name).T)

        self.embed = np.ascontiguousarray(get("model.embed_tokens.weight"))  # (V, d)
        self.layers = []
        for i in range(c.n_layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            L = {
                "wqkv": pack_weight(np.concatenate(
                    [get(a + "q_proj.weight"), get(a + "k_proj.weight"), get(a + "v_proj.weight")], axis=0).T),
                "wo": lin(a + "o_proj.weight"),  # (Hq*D, d)
                "ln1": get(p + "input_layernorm.weight"),
                "ln2": get(p + "post_attention_layernorm.weight"),
            }
            if c.is_moe_layer(i):
                m = p + "block_sparse_moe."
                E = range(c.n_experts)
                L["router"] = lin(m + "gate.weight")  # (d, E)
                L["w1"] = [lin(m + f"experts.{e}.w1.weight") for e in E]  # E x (d, F)
                L["w3"] = [lin(m + f"experts.{e}.w3.weight") for e in E]  # E x (d, F)
                L["w2"] = [lin(m + f"experts.{e}.w2.weight") for e in E]  # E x (F, d)
            else:
                L["w1"] = lin(p + "mlp.gate_proj.weight")  # (d, F)
                L["w3"] = lin(p + "mlp.up_proj.weight")  # (d, F)
                L["w2"] = lin(p + "mlp.down_proj.weight")  # (F, d)
            self.layers.append(L)
        self.norm = get("model.norm.weight")
        # (d, V); packed from the embedding when tied (a second copy of its V x d values)
        self.lm_head = pack_weight(self.embed.T) if c.tie_embeddings else lin("lm_head.weight")

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def random(cls, config, *, seed: int) -> "LlamaModel":
        """Seeded random weights, scaled so activations stay O(1) through every layer.

        Linear weights are N(0, 1/fan_in); the output and down projections are further scaled
        by ``1/sqrt(2 n_layers)`` so the residual stream grows by O(1) over the whole depth;
        embeddings are N(0, 1); norm weights 1 + N(0, 0.1^2).
        """
        c = LlamaConfig.from_config(config)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        rng = np.random.default_rng(int(seed))
        resid = 1.0 / math.sqrt(2 * c.n_layers)
        out = {}
        for name, shape in hf_tensor_shapes(c).items():
            if len(shape) == 1:
                out[name] = (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
                continue
            w = rng.standard_normal(shape, dtype=np.float32)
            if name != "model.embed_tokens.weight":
                s = 1.0 / math.sqrt(shape[1])
                if name.endswith(("o_proj.weight", "down_proj.weight", "w2.weight")):
                    s *= resid
                w *= np.float32(s)
            out[name] = w
        return cls(c, out)

    def hf_state(self) -> dict[str, np.ndarray]:
        """The weights under Hugging Face names, ``(out, in)`` layouts, float32."""
        c = self.config
        D, Hq, Hkv = c.qk_dim, c.n_heads, c.n_kv_heads
        out = {"model.embed_tokens.weight": self.embed}
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            wqkv = L["wqkv"].unpack().T  # (out, d)
            out[a + "q_proj.weight"] = wqkv[:Hq * D]
            out[a + "k_proj.weight"] = wqkv[Hq * D:(Hq + Hkv) * D]
            out[a + "v_proj.weight"] = wqkv[(Hq + Hkv) * D:]
            out[a + "o_proj.weight"] = L["wo"].unpack().T
            if c.is_moe_layer(i):
                m = p + "block_sparse_moe."
                out[m + "gate.weight"] = L["router"].unpack().T
                for e in range(c.n_experts):
                    for w in ("w1", "w2", "w3"):
                        out[m + f"experts.{e}.{w}.weight"] = L[w][e].unpack().T
            else:
                out[p + "mlp.gate_proj.weight"] = L["w1"].unpack().T
                out[p + "mlp.up_proj.weight"] = L["w3"].unpack().T
                out[p + "mlp.down_proj.weight"] = L["w2"].unpack().T
            out[p + "input_layernorm.weight"] = L["ln1"]
            out[p + "post_attention_layernorm.weight"] = L["ln2"]
        out["model.norm.weight"] = self.norm
        if not c.tie_embeddings:
            out["lm_head.weight"] = self.lm_head.unpack().T
        return {k: np.ascontiguousarray(v) for k, v in out.items()}

    def to_safetensors(self, path) -> None:
        """Write the weights as a safetensors file with Hugging Face names (written whole, then renamed)."""
        from safetensors.numpy import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        save_file(self.hf_state(), str(tmp), metadata={"format": "pt"})
        tmp.replace(path)

    def hf_config(self) -> dict:
        """The Hugging Face ``config.json`` of this model (``LlamaForCausalLM``; dense models only)."""
        c = self.config
        if c.n_experts > 1:
            raise ValueError("hf_config covers dense Llama models only (no MoE layers)")
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.d_model,
            "intermediate_size": c.d_ff, "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads, "head_dim": c.qk_dim, "vocab_size": c.vocab_size,
            "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta, "max_position_embeddings": c.max_position,
            "tie_word_embeddings": bool(c.tie_embeddings), "hidden_act": "silu", "attention_bias": False,
            "mlp_bias": False, "torch_dtype": "float32",
        }

    def to_hf_directory(self, path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` so ``LlamaForCausalLM.from_pretrained(path)`` loads it."""
        import json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cfg = self.hf_config()
        self.to_safetensors(path / "model.safetensors")
        (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return path

    @classmethod
    def from_safetensors(cls, path, config) -> "LlamaModel":
        """Load Hugging Face Llama weights; :class:`WeightError` names a missing or mis-shaped tensor."""
        from safetensors import safe_open

        c = LlamaConfig.from_config(config)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no safetensors file at {path}")
        shapes = hf_tensor_shapes(c)
        tensors = {}
        with safe_open(str(path), framework="numpy") as f:
            present = set(f.keys())
            for name, shape in shapes.items():
                if name not in present:
                    raise WeightError(f"{path.name}: missing tensor {name!r} (shape {shape})")
                got = tuple(f.get_slice(name).get_shape())
                if got != shape:
                    raise WeightError(f"{path.name}: tensor {name!r} has shape {got}, expected {shape}")
                tensors[name] = f.get_tensor(name)
        return cls(c, tensors)

    # ------------------------------------------------------------------ validation
    def check_tokens(self, name: str, token_ids, start: int = 0) -> np.ndarray:
        """Token ids as int64 (1-D), each in ``[0, vocab)``, ending at a position below ``max_position``."""
        if isinstance(token_ids, np.ndarray) and token_ids.dtype.kind == "b":
            raise TypeError(f"{name} must hold integer token ids, got bool")
        t = check_int_array(name, token_ids, 1)
        V, P = self.config.vocab_size, self.config.max_position
        if t.size and (t.min() < 0 or t.max() >= V):
            bad = int(t[(t < 0) | (t >= V)][0])
            raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {V})")
        if start + t.size > P:
            raise ValueError(f"{name} reaches position {start + t.size - 1}, beyond the model's context "
                             f"(max_position {P})")
        return t

    # ------------------------------------------------------------------ forward passes
    def forward(self, token_ids) -> np.ndarray:
        """Logits (L, vocab) float32 of one sequence from scratch (no cache)."""
        t = self.check_tokens("token_ids", token_ids)
        if t.size == 0:
            raise ValueError("token_ids must hold at least one token")
        return self._run([SeqChunk(t, 0, np.zeros(0, np.int64))], None, all_logits=True)

    def forward_cached(self, cache: PagedKVCache, chunks: list[SeqChunk], *, all_logits: bool = False) -> np.ndarray:
        """Run a batch of chunks through the model, caching their K and V; last-token logits (n_chunks, vocab).

        With ``all_logits`` the logits of every token are returned, chunk after chunk (T, vocab).

        A chunk of one token is a decode step (all of them share one paged attention call); a
        longer chunk is a prompt piece that attends to its sequence's cached tokens and itself.
        Each chunk's ``blocks`` must be allocated in ``cache`` and cover ``start + len(tokens)``
        tokens; a sequence may appear only once per call.
        """
        if not isinstance(cache, PagedKVCache):
            raise TypeError(f"cache must be a PagedKVCache, got {type(cache).__name__}")
        c = self.config
        if cache.k.shape[0] != c.n_layers or cache.k.shape[3:] != (c.n_kv_heads, c.qk_dim):
            raise ValueError("cache was made for a different model shape")
        checked = []
        for i, ch in enumerate(chunks):
            start = int(ch.start)
            if start < 0:
                raise ValueError(f"chunks[{i}].start must be >= 0, got {start}")
            t = self.check_tokens(f"chunks[{i}].tokens", ch.tokens, start)
            if t.size == 0:
                raise ValueError(f"chunks[{i}].tokens is empty")
            b = check_int_array(f"chunks[{i}].blocks", ch.blocks, 1)
            if b.size < cache.blocks_for(start + t.size):
                raise ValueError(f"chunks[{i}].blocks covers {b.size * cache.block_size} tokens, "
                                 f"{start + t.size} needed")
            if b.size and (b.min() < 0 or b.max() >= cache.n_blocks or not cache._owned[b].all()):
                raise ValueError(f"chunks[{i}].blocks holds ids that are not allocated in the cache")
            checked.append(SeqChunk(t, start, b))
        if not checked:
            return np.zeros((0, c.vocab_size), dtype=np.float32)
        return self._run(checked, cache, all_logits=bool(all_logits))

    def step_flops(self, chunks: list[SeqChunk], *, all_logits: bool = False) -> float:
        """Floating-point operations of one forward over ``chunks``: matmuls plus attention's two products."""
        c = self.config
        D, d = c.qk_dim, c.d_model
        per_token = c.layer_matmul_params_per_token()  # weights, LM head excluded
        n = np.array([ch.tokens.size for ch in chunks], dtype=np.float64)  # (n_chunks,)
        start = np.array([ch.start for ch in chunks], dtype=np.float64)  # (n_chunks,)
        pairs = float(np.sum(n * start + n * (n + 1) / 2))  # (query, key) pairs attended
        logit_rows = n.sum() if all_logits else n.size
        return 2.0 * (n.sum() * per_token + logit_rows * d * c.vocab_size) + 4.0 * c.n_layers * c.n_heads * D * pairs

    def _run(self, chunks: list[SeqChunk], cache: PagedKVCache | None, *, all_logits: bool) -> np.ndarray:
        # small steps run on one thread (see kernels._threads): the logits are the same bits either way
        with thread_budget(threads_for(self.step_flops(chunks, all_logits=all_logits))):
            return self._forward(chunks, cache, all_logits=all_logits)

    def _forward(self, chunks: list[SeqChunk], cache: PagedKVCache | None, *, all_logits: bool) -> np.ndarray:
        c = self.config
        Hq, Hkv, D = c.n_heads, c.n_kv_heads, c.qk_dim
        sizes = np.array([ch.tokens.size for ch in chunks])  # (n,)
        ends = np.cumsum(sizes)  # (n,)
        starts_row = ends - sizes
        tokens = np.concatenate([ch.tokens for ch in chunks])  # (T,)
        positions = np.concatenate([np.arange(ch.start, ch.start + ch.tokens.size) for ch in chunks])  # (T,)
        cos, sin = (a.astype(np.float32) for a in rope_tables(positions, D, c.rope_theta))  # (T, D)
        dec = [i for i, ch in enumerate(chunks) if ch.tokens.size == 1 and cache is not None]
        pre = [i for i in range(len(chunks)) if i not in set(dec)]
        if cache is not None:
            bs = cache.block_size
            slots = np.concatenate([ch.blocks[np.arange(ch.start, ch.start + ch.tokens.size) // bs] * bs
                                    + np.arange(ch.start, ch.start + ch.tokens.size) % bs for ch in chunks])  # (T,)
            if dec:
                dec_rows = starts_row[dec]  # (B,)
                width = max(chunks[i].blocks.size for i in dec)
                table = np.zeros((len(dec), width), dtype=np.int64)  # (B, max_blocks)
                for r, i in enumerate(dec):
                    table[r, :chunks[i].blocks.size] = chunks[i].blocks
                lengths = np.array([chunks[i].start + 1 for i in dec], dtype=np.int64)  # (B,)
        h = self.embed[tokens]  # (T, d)
        for li, L in enumerate(self.layers):
            x = _rms_norm(h, L["ln1"], c.norm_eps)  # (T, d)
            qkv = linear(x, L["wqkv"])  # (T, (Hq + 2 Hkv) D)
            q = _rope(qkv[:, :Hq * D].reshape(-1, Hq, D), cos, sin)  # (T, Hq, D)
            k = _rope(qkv[:, Hq * D:(Hq + Hkv) * D].reshape(-1, Hkv, D), cos, sin)  # (T, Hkv, D)
            v = qkv[:, (Hq + Hkv) * D:].reshape(-1, Hkv, D)  # (T, Hkv, D)
            att = np.empty((tokens.size, Hq, D), dtype=np.float32)  # (T, Hq, D)
            if cache is not None:
                kp = cache.k[li].reshape(-1, Hkv, D)  # (blocks * bs, Hkv, D) view
                vp = cache.v[li].reshape(-1, Hkv, D)
                kp[slots] = k
                vp[slots] = v
                if dec:
                    att[dec_rows] = paged_decode_attention(q[dec_rows], cache.k[li], cache.v[li], table, lengths)
            for i in pre:
                ch, lo, hi = chunks[i], starts_row[i], ends[i]
                if cache is not None and ch.start > 0:
                    past = slots_of(ch, cache.block_size)  # (start + n,)
                    kk, vv = kp[past], vp[past]  # (Lk, Hkv, D)
                else:
                    kk, vv = k[lo:hi], v[lo:hi]
                o = attention(q[lo:hi].transpose(1, 0, 2)[None], kk.transpose(1, 0, 2)[None],
                              vv.transpose(1, 0, 2)[None], causal=True)  # (1, Hq, n, D)
                att[lo:hi] = o[0].transpose(1, 0, 2)
            h = h + linear(att.reshape(-1, Hq * D), L["wo"])
            x = _rms_norm(h, L["ln2"], c.norm_eps)
            if "router" in L:
                h = h + _moe_ffn(x, L, c.experts_per_token)
            else:
                h = h + _swiglu(x, L["w1"], L["w3"], L["w2"])
        last = h if all_logits else h[ends - 1]  # (rows, d)
        return linear(_rms_norm(last, self.norm, c.norm_eps), self.lm_head)  # (rows, V)


def _swiglu(x: np.ndarray, w1: PackedWeight, w3: PackedWeight, w2: PackedWeight) -> np.ndarray:
    """``(silu(x @ w1) * (x @ w3)) @ w2`` for x (T, d), row by row."""
    h = linear(x, w1)  # (T, F), C-contiguous
    g = linear(x, w3)  # (T, F)
    silu_mul(h, g)
    return linear(h, w2)  # (T, d)


def _moe_ffn(x: np.ndarray, L: dict, top_k: int) -> np.ndarray:
    """A top-k mixture of SwiGLU experts on x (T, d): :func:`~scalelab.kernels.moe.moe_layer`'s steps
    with the router and the experts through ``linear`` (a token's result does not depend on which
    other tokens an expert sees)."""
    x = np.ascontiguousarray(x)
    weights, experts = route(linear(x, L["router"]), top_k)  # (T, k) each
    D = dispatch(experts, len(L["w1"]))
    xs = permute(x, D)  # (n_kept, d)
    ys = np.empty_like(xs)  # (n_kept, d)
    for e in range(len(L["w1"])):
        lo, hi = int(D.offsets[e]), int(D.offsets[e + 1])
        if hi > lo:
            ys[lo:hi] = _swiglu(xs[lo:hi], L["w1"][e], L["w3"][e], L["w2"][e])
    return unpermute(ys, D, weights)


def slots_of(chunk: SeqChunk, block_size: int) -> np.ndarray:
    """Flat cache slots (block * block_size + offset) of positions ``0 .. start + n - 1`` of a chunk."""
    pos = np.arange(chunk.start + chunk.tokens.size)
    return chunk.blocks[pos // block_size] * block_size + pos % block_size


# --------------------------------------------------------------------------- the reference


def llama_forward_ref(model: LlamaModel, token_ids) -> np.ndarray:
    """Logits (L, vocab) in float64 for one whole sequence: the same model, plainly, no cache.

    Attention materialises the causal score matrix; MoE layers run every expert on every token
    and keep the top-k by router probability (softmax over the chosen experts' logits).
    """
    c = model.config
    t = model.check_tokens("token_ids", token_ids)
    w = {k: v.astype(np.float64) for k, v in model.hf_state().items()}
    Hq, Hkv, D = c.n_heads, c.n_kv_heads, c.qk_dim
    L = t.size
    cos, sin = rope_tables(np.arange(L), D, c.rope_theta)
    mask = np.tril(np.ones((L, L), dtype=bool))  # (L, L)

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + c.norm_eps) * g

    def silu(x):
        return x / (1.0 + np.exp(-x))

    h = w["model.embed_tokens.weight"][t]  # (L, d)
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        x = norm(h, w[p + "input_layernorm.weight"])
        q = _rope((x @ w[p + "self_attn.q_proj.weight"].T).reshape(L, Hq, D), cos, sin)  # (L, Hq, D)
        k = _rope((x @ w[p + "self_attn.k_proj.weight"].T).reshape(L, Hkv, D), cos, sin)  # (L, Hkv, D)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(L, Hkv, D)  # (L, Hkv, D)
        g = Hq // Hkv
        att = np.empty((L, Hq, D))
        for hq in range(Hq):
            s = q[:, hq] @ k[:, hq // g].T / math.sqrt(D)  # (L, L)
            s = np.where(mask, s, -np.inf)
            pr = np.exp(s - s.max(axis=1, keepdims=True))
            att[:, hq] = (pr / pr.sum(axis=1, keepdims=True)) @ v[:, hq // g]
        h = h + att.reshape(L, Hq * D) @ w[p + "self_attn.o_proj.weight"].T
        x = norm(h, w[p + "post_attention_layernorm.weight"])
        if c.is_moe_layer(i):
            m = p + "block_sparse_moe."
            logits = x @ w[m + "gate.weight"].T  # (L, E)
            top = np.argsort(-logits, axis=1, kind="stable")[:, :c.experts_per_token]  # (L, k)
            chosen = np.take_along_axis(logits, top, axis=1)
            gate = np.exp(chosen - chosen.max(axis=1, keepdims=True))
            gate /= gate.sum(axis=1, keepdims=True)  # (L, k)
            y = np.zeros_like(x)
            for e in range(c.n_experts):
                q_ = m + f"experts.{e}."
                ye = (silu(x @ w[q_ + "w1.weight"].T) * (x @ w[q_ + "w3.weight"].T)) @ w[q_ + "w2.weight"].T
                y += ((top == e) * gate).sum(axis=1, keepdims=True) * ye
            h = h + y
        else:
            ff = silu(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)
            h = h + ff @ w[p + "mlp.down_proj.weight"].T
    head = w["model.embed_tokens.weight"] if c.tie_embeddings else w["lm_head.weight"]
    return norm(h, w["model.norm.weight"]) @ head.T
