"""Write a :class:`~scalelab.kernels.model.LlamaModel` as an F32 GGUF file that llama.cpp loads.

=================================  =========================================================================
name                               what it is
=================================  =========================================================================
:func:`write_gguf`                 the whole file: llama.cpp's ``llama`` architecture metadata, a
                                   placeholder vocabulary, every tensor in float32 (GGUF file type 0)
:func:`gguf_tensors`               GGUF name -> float32 array, produced one tensor at a time
:func:`rope_rows_to_interleaved`   reorders q/k projection rows from Hugging Face's rotary pairing
                                   to llama.cpp's
:func:`open_in_llamacpp`           loads such a file with ``llama-cpp-python``, KV cache in float32
=================================  =========================================================================

Rotary pairing. Our model (like Hugging Face's ``LlamaForCausalLM``) rotates dimension ``j`` of a
head together with dimension ``j + D/2`` ("rotate half"). llama.cpp runs its ``llama``
architecture with ``LLAMA_ROPE_TYPE_NORM``, which rotates adjacent pairs ``(2j, 2j + 1)``
(``llama_model_rope_type`` in ggml-org/llama.cpp ``src/llama-model.cpp``: "a normal RoPE, operating
on pairs of consecutive head values"); both use the angle ``pos * theta ** (-2j / D)`` for pair
``j``. Its converter (``convert_hf_to_gguf.py``, ``LlamaModel.permute``, applied to ``q_proj`` with
the query head count and to ``k_proj`` with the kv head count) therefore reorders the output rows
of each head so that Hugging Face row ``j`` lands at ``2j`` and row ``j + D/2`` at ``2j + 1``.
Permuting the rows of q and k the same way leaves every dot product ``q . k`` unchanged, and v,
the output projection and the attention result are untouched, so the logits are the same.

Vocabulary. llama.cpp will not load a model without one; we write a SentencePiece-type ("llama")
list of ``vocab_size`` placeholder pieces (``<unk>``, ``<s>``, ``</s>``, then ``<t3>``, ``<t4>``, ...)
and always feed token ids, never text.

Not written: Llama 3.1 rope scaling (our model does not apply it either) and MoE layers (this
exporter covers dense models; ``ValueError`` otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from scalelab.kernels.model import LlamaModel

__all__ = ["write_gguf", "gguf_tensors", "rope_rows_to_interleaved", "open_in_llamacpp"]

#: GGUF ``general.file_type`` of an all-float32 file (``LlamaFileType.ALL_F32`` in gguf-py's constants).
GGUF_FILE_TYPE_ALL_F32 = 0
#: Token types of gguf-py's ``TokenType``: normal piece, unknown, control.
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3


def rope_rows_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rows of a q or k projection ``(n_heads * D, d_in)`` reordered from half-split to adjacent pairs.

    Within each head, row ``j`` (``j < D/2``) moves to ``2j`` and row ``j + D/2`` to ``2j + 1``.
    Returns a new C-contiguous array of the same shape and dtype.
    """
    w = np.asarray(w)
    if w.ndim != 2 or n_heads < 1 or w.shape[0] % (2 * n_heads):
        raise ValueError(f"w must be 2-D with rows divisible by 2 * n_heads ({2 * n_heads}), got shape {w.shape}")
    H, half = n_heads, w.shape[0] // n_heads // 2
    # (H, 2, D/2, d_in) -> (H, D/2, 2, d_in): pair member s of pair j goes to row 2j + s
    return np.ascontiguousarray(w.reshape(H, 2, half, w.shape[1]).swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(model: LlamaModel) -> Iterator[tuple[str, np.ndarray]]:
    """``(GGUF tensor name, float32 array in GGUF's row order)`` for every tensor, lazily.

    Arrays carry Hugging Face's ``(out, in)`` shape; the writer reverses it into ggml's ``ne``
    order. One tensor is built at a time, so exporting a 5 GB model needs one layer's worth of
    extra memory, not a second copy of the model.
    """
    c = model.config
    if c.n_experts > 1:
        raise ValueError("gguf export covers dense Llama models only (no MoE layers)")
    D, Hq, Hkv = c.qk_dim, c.n_heads, c.n_kv_heads

    def rows(a):  # our (in, out) -> GGUF's (out, in), contiguous
        return np.ascontiguousarray(a.T, dtype=np.float32)

    yield "token_embd.weight", model.embed  # (V, d)
    for i, L in enumerate(model.layers):
        p = f"blk.{i}."
        wqkv = L["wqkv"].unpack()  # (d, (Hq + 2 Hkv) D)
        yield p + "attn_norm.weight", L["ln1"]
        yield p + "attn_q.weight", rope_rows_to_interleaved(wqkv[:, :Hq * D].T, Hq)  # (Hq D, d)
        yield p + "attn_k.weight", rope_rows_to_interleaved(wqkv[:, Hq * D:(Hq + Hkv) * D].T, Hkv)  # (Hkv D, d)
        yield p + "attn_v.weight", rows(wqkv[:, (Hq + Hkv) * D:])  # (Hkv D, d)
        yield p + "attn_output.weight", rows(L["wo"].unpack())  # (d, Hq D)
        yield p + "ffn_norm.weight", L["ln2"]
        yield p + "ffn_gate.weight", rows(L["w1"].unpack())  # (F, d)
        yield p + "ffn_up.weight", rows(L["w3"].unpack())  # (F, d)
        yield p + "ffn_down.weight", rows(L["w2"].unpack())  # (d, F)
    yield "output_norm.weight", model.norm
    if not c.tie_embeddings:  # llama.cpp falls back to token_embd when output is absent
        yield "output.weight", rows(model.lm_head.unpack())  # (V, d)


def _tensor_shapes(model: LlamaModel) -> dict[str, tuple[int, ...]]:
    """GGUF name -> shape of every tensor :func:`gguf_tensors` yields, without building any."""
    c = model.config
    d, D, F, V = c.d_model, c.qk_dim, c.d_ff, c.vocab_size
    out = {"token_embd.weight": (V, d)}
    for i in range(c.n_layers):
        p = f"blk.{i}."
        out.update({p + "attn_norm.weight": (d,), p + "attn_q.weight": (c.n_heads * D, d),
                    p + "attn_k.weight": (c.n_kv_heads * D, d), p + "attn_v.weight": (c.n_kv_heads * D, d),
                    p + "attn_output.weight": (d, c.n_heads * D), p + "ffn_norm.weight": (d,),
                    p + "ffn_gate.weight": (F, d), p + "ffn_up.weight": (F, d), p + "ffn_down.weight": (d, F)})
    out["output_norm.weight"] = (d,)
    if not c.tie_embeddings:
        out["output.weight"] = (V, d)
    return out


def _placeholder_vocab(V: int) -> tuple[list[str], list[int]]:
    pieces = ["<unk>", "<s>", "</s>"] + [f"<t{i}>" for i in range(3, V)]
    types = [_UNKNOWN, _CONTROL, _CONTROL] + [_NORMAL] * (V - 3)
    return pieces, types


def write_gguf(model: LlamaModel, path: str | os.PathLike, *, name: str = "scalelab-random") -> Path:
    """Write ``model`` as an F32 GGUF file for llama.cpp's ``llama`` architecture; returns the path.

    The file is written to ``path + ".partial"`` and renamed when complete. Needs the ``gguf``
    package (``make bench-llamacpp``).

    Raises
    ------
    TypeError
        ``model`` is not a :class:`LlamaModel`.
    ValueError
        The model has MoE layers, or a vocabulary under 3 tokens (llama.cpp's SentencePiece-type
        vocabulary reserves ids 0, 1, 2 for unknown, begin and end of sequence).
    """
    if not isinstance(model, LlamaModel):
        raise TypeError(f"model must be a LlamaModel, got {type(model).__name__}")
    c = model.config
    if c.n_experts > 1:
        raise ValueError("gguf export covers dense Llama models only (no MoE layers)")
    if c.vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 for a llama.cpp vocabulary, got {c.vocab_size}")
    import gguf

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(name)
    w.add_file_type(GGUF_FILE_TYPE_ALL_F32)
    w.add_context_length(c.max_position)
    w.add_embedding_length(c.d_model)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.d_ff)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_key_length(c.qk_dim)
    w.add_value_length(c.qk_dim)
    w.add_rope_dimension_count(c.qk_dim)
    w.add_rope_freq_base(float(c.rope_theta))
    w.add_layer_norm_rms_eps(float(c.norm_eps))
    w.add_vocab_size(c.vocab_size)
    pieces, types = _placeholder_vocab(c.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores([0.0] * c.vocab_size)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    shapes = _tensor_shapes(model)
    for tname, shape in shapes.items():
        w.add_tensor_info(tname, shape, np.dtype(np.float32), 4 * int(np.prod(shape)))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for tname, t in gguf_tensors(model):
            if t.shape != shapes[tname] or t.dtype != np.float32:  # guards the two lists against drift
                raise AssertionError(f"{tname}: built {t.shape} {t.dtype}, declared {shapes[tname]} float32")
            w.write_tensor_data(np.ascontiguousarray(t))
    finally:
        w.close()
    tmp.replace(path)
    return path


def open_in_llamacpp(path, *, n_ctx: int, n_threads: int, n_batch: int = 512, logits_all: bool = False,
                     flash_attn: bool = False):
    """A ``llama_cpp.Llama`` on a GGUF file from :func:`write_gguf`, all in float32, CPU only.

    The K and V caches are float32 (llama.cpp's default is float16), so the comparison with our
    float32 cache is like for like; ``n_threads`` serves both prompt batches and decode steps,
    and one micro-batch holds ``n_batch`` tokens. ``logits_all`` keeps every token's logits in
    ``.scores`` (for checks; a benchmark leaves it off, as llama.cpp then computes the last
    token's logits only, as our engine does).
    """
    import llama_cpp

    return llama_cpp.Llama(
        model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads,
        n_threads_batch=n_threads, n_gpu_layers=0, logits_all=logits_all, flash_attn=flash_attn,
        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False,
    )
