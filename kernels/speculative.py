"""Speculative decoding: verify a draft model's tokens against the target's distributions.

=============================  ================================  ==========================================
kernel (Numba)                 reference (NumPy)                 what it computes
=============================  ================================  ==========================================
``speculative_verify``         ``speculative_verify_ref``        accepted prefix + one corrected/bonus token
``speculative_generate``       (plain generation, greedy)        a draft model drafts, the target verifies
``filtered_probs``             --                                filtered, renormalised rows (float64)
``perturbed_model``            --                                a draft: target weights plus noise
=============================  ================================  ==========================================

The rule (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding",
ICML, Algorithm 1; Chen et al. 2023, "Accelerating Large Language Model Decoding with
Speculative Sampling", Algorithm 2): draft token ``x_i`` (drawn from ``q_i``) is accepted with
probability ``min(1, p_i(x_i) / q_i(x_i))``; at the first rejection the token is redrawn from the
residual ``norm(max(0, p_i - q_i))`` and the row stops; if all ``k`` are accepted, a bonus token
is drawn from ``p_k``. Every emitted token is then distributed exactly as the target's.

Row ``b`` emits ``tokens[b, :n_accepted[b] + 1]``; the rest of the row is ``-1``.

Randomness: row ``b`` uses uniforms ``row_uniform(seed[b], counter)`` (:func:`~scalelab.kernels.sampling.row_uniform`)
with counter ``2 i`` for the acceptance test at position ``i`` and ``2 i + 1`` for a draw at
position ``i``, so a row's result depends only on its own inputs and seed, never on the batch
or the thread count. The comparison ``u * q < p`` (rather than ``u < p / q``) needs no division
and accepts a token the draft gave zero probability iff the target gives it some.

Dtype rule: probabilities may be float32 or float64 (one dtype for both); comparisons and the
residual are formed in float64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from scalelab.kernels._common import check_float_array, check_int_array
from scalelab.kernels.sampling import _row_seeds, filter_logits, row_uniform

__all__ = ["speculative_verify", "speculative_verify_ref", "speculative_generate", "SpeculativeOutput",
           "filtered_probs", "perturbed_model"]


def _check(draft_probs, target_probs, draft_tokens, seed):
    q = check_float_array("draft_probs", draft_probs, 3)
    p = check_float_array("target_probs", target_probs, 3)
    if q.dtype != p.dtype:
        raise TypeError(f"draft_probs and target_probs must share a dtype, got {q.dtype} and {p.dtype}")
    B, k, V = q.shape
    if p.shape != (B, k + 1, V):
        raise ValueError(f"target_probs must have shape (B, k + 1, V) = {(B, k + 1, V)}, got {p.shape}")
    if V < 1:
        raise ValueError("the vocabulary (last axis) must hold at least one token")
    if isinstance(draft_tokens, np.ndarray) and draft_tokens.dtype.kind == "b":
        raise TypeError("draft_tokens must have an integer dtype, got bool")
    x = check_int_array("draft_tokens", draft_tokens, 2)
    if x.shape != (B, k):
        raise ValueError(f"draft_tokens must have shape (B, k) = {(B, k)}, got {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= V):
        raise ValueError(f"draft_tokens must lie in [0, {V}), got [{x.min()}, {x.max()}]")
    for name, a in (("draft_probs", q), ("target_probs", p)):
        if a.size and not (np.isfinite(a).all() and a.min() >= 0):
            raise ValueError(f"{name} must be finite and >= 0")
        s = a.sum(axis=-1, dtype=np.float64)
        if s.size and np.abs(s - 1).max() > 1e-3:
            raise ValueError(f"{name} rows must sum to 1 (a probability distribution), got sums in "
                             f"[{s.min():.6g}, {s.max():.6g}]")
    seeds = _row_seeds(B, seed)
    u = np.stack([row_uniform(seeds, c) for c in range(2 * k + 2)], axis=1) if B else np.zeros((0, 2 * k + 2))
    return q, p, x, u  # u: (B, 2k + 2) float64


@njit(cache=True)
def _draw(w, u):
    """Index drawn from the non-negative weights ``w`` (float64) by the uniform ``u``; -1 if all are 0."""
    total = 0.0
    for j in range(w.shape[0]):
        total += w[j]
    if not total > 0.0:
        return -1
    target = u * total
    acc = 0.0
    last = -1
    for j in range(w.shape[0]):
        if w[j] > 0.0:
            acc += w[j]
            last = j
            if acc > target:
                return j
    return last  # u * total rounded to the very top of the cumulative sum


@njit(cache=True, parallel=True)
def _verify_kernel(q, p, x, u, n_acc, out):
    B, k, V = q.shape
    for b in prange(B):
        w = np.empty(V, dtype=np.float64)
        i = 0
        while i < k:
            t = x[b, i]
            if u[b, 2 * i] * np.float64(q[b, i, t]) < np.float64(p[b, i, t]):
                out[b, i] = t
                i += 1
                continue
            for j in range(V):
                w[j] = max(np.float64(p[b, i, j]) - np.float64(q[b, i, j]), 0.0)
            tok = _draw(w, u[b, 2 * i + 1])
            if tok < 0:  # p == q up to rounding: the residual is empty, the target itself is the answer
                for j in range(V):
                    w[j] = np.float64(p[b, i, j])
                tok = _draw(w, u[b, 2 * i + 1])
            out[b, i] = tok
            break
        n_acc[b] = i
        if i == k:
            for j in range(V):
                w[j] = np.float64(p[b, k, j])
            out[b, k] = _draw(w, u[b, 2 * k + 1])


def speculative_verify(draft_probs, target_probs, draft_tokens, seed):
    """Accept or correct ``k`` drafted tokens per row so the output follows the target exactly.

    Parameters
    ----------
    draft_probs : (B, k, V) float32 or float64
        The draft's distribution at each drafted position (``draft_tokens[b, i]`` was drawn from it).
    target_probs : (B, k + 1, V), same dtype
        The target's distribution at each drafted position and one past the last.
    draft_tokens : (B, k) integers in ``[0, V)``
    seed : int or (B,) integer array
        An int seeds every row alike (pass a per-row array for independent rows).

    Returns
    -------
    n_accepted : (B,) int64 in ``[0, k]``
    tokens : (B, k + 1) int64; row ``b`` emits ``tokens[b, :n_accepted[b] + 1]``, the rest is -1.
    """
    q, p, x, u = _check(draft_probs, target_probs, draft_tokens, seed)
    B, k, _ = q.shape
    n_acc = np.zeros(B, dtype=np.int64)
    out = np.full((B, k + 1), -1, dtype=np.int64)
    if B:
        _verify_kernel(np.ascontiguousarray(q), np.ascontiguousarray(p), np.ascontiguousarray(x), u, n_acc, out)
    return n_acc, out


def speculative_verify_ref(draft_probs, target_probs, draft_tokens, seed):
    """Plain NumPy version of :func:`speculative_verify` (same uniforms, same results)."""
    q, p, x, u = _check(draft_probs, target_probs, draft_tokens, seed)
    B, k, V = q.shape
    q, p = q.astype(np.float64), p.astype(np.float64)
    n_acc = np.zeros(B, dtype=np.int64)
    out = np.full((B, k + 1), -1, dtype=np.int64)

    def draw(w, uu):
        c = np.cumsum(w)
        if not c[-1] > 0:
            return -1
        j = int(np.searchsorted(c, uu * c[-1], side="right"))
        return int(np.flatnonzero(w > 0)[-1]) if j >= V else j

    for b in range(B):
        i = 0
        while i < k:
            t = x[b, i]
            if u[b, 2 * i] * q[b, i, t] < p[b, i, t]:
                out[b, i] = t
                i += 1
                continue
            tok = draw(np.maximum(p[b, i] - q[b, i], 0.0), u[b, 2 * i + 1])
            out[b, i] = tok if tok >= 0 else draw(p[b, i], u[b, 2 * i + 1])
            break
        n_acc[b] = i
        if i == k:
            out[b, k] = draw(p[b, k], u[b, 2 * k + 1])
    return n_acc, out


# --------------------------------------------------------------------------- speculative generation


class SpeculativeOutput(NamedTuple):
    tokens: np.ndarray  # (max_new_tokens,) int64
    accepted: np.ndarray  # (steps,) drafted tokens accepted at each target step


def filtered_probs(logits, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> np.ndarray:
    """Rows (B, V) float64 of the filtered, renormalised distribution ``sample`` draws from.

    The filters are :func:`~scalelab.kernels.sampling.filter_logits`' (scalars or one value per
    row); removed tokens get probability 0. The verify kernel takes full distributions, so
    draft and target logits both pass through here with the same parameters.
    """
    f = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p).astype(np.float64)
    e = np.exp(f - f.max(axis=-1, keepdims=True))  # (rows, V); -inf -> 0
    return e / e.sum(axis=-1, keepdims=True)


def speculative_generate(target, draft, prompt, *, k: int, max_new_tokens: int, temperature=1.0, top_k=0,
                         top_p=1.0, min_p=0.0, seed: int = 0) -> SpeculativeOutput:
    """Generate from ``target`` with ``draft`` proposing ``k`` tokens per target step (one sequence).

    Each step the draft samples ``k`` tokens one at a time; the target scores the pending token
    and the ``k`` drafts in one cached forward (a ``k + 1``-token chunk); :func:`speculative_verify`
    keeps the accepted prefix and one corrected or bonus token. Both models keep paged KV caches;
    entries past the accepted prefix are simply overwritten by the next step (attention never
    reads beyond a sequence's length). The tokens follow the target's (filtered) distribution;
    with temperature 0 they are exactly the target's greedy tokens.
    """
    from scalelab.kernels.model import LlamaModel, PagedKVCache, SeqChunk

    for name, m in (("target", target), ("draft", draft)):
        if not isinstance(m, LlamaModel):
            raise TypeError(f"{name} must be a LlamaModel, got {type(m).__name__}")
    if target.config.vocab_size != draft.config.vocab_size:
        raise ValueError(f"target and draft must share a vocabulary ({target.config.vocab_size} vs "
                         f"{draft.config.vocab_size})")
    for name, v in (("k", k), ("max_new_tokens", max_new_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    p = target.check_tokens("prompt", prompt)
    if p.size == 0:
        raise ValueError("prompt must hold at least one token")
    total = p.size + max_new_tokens + k + 1  # the last step may score k + 1 positions past the end
    for m in (target, draft):
        m.check_tokens("prompt", np.zeros(0, np.int64), start=total)
    caches = [PagedKVCache(m.config, -(-total // 16), 16) for m in (target, draft)]
    blocks = [c.allocate(c.n_blocks) for c in caches]
    filt = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if p.size > 1:
        for m, c, b in zip((target, draft), caches, blocks):
            m.forward_cached(c, [SeqChunk(p[:-1], 0, b)])
    n, pending = p.size - 1, int(p[-1])  # tokens cached in both models; the token to feed next
    out: list[int] = []
    accepted = []
    seeds = np.random.SeedSequence(int(seed)).generate_state(1, dtype=np.uint64)
    step = 0
    while len(out) < max_new_tokens:
        drafts, qs, tok = [], [], pending
        for i in range(k):
            logits = draft.forward_cached(caches[1], [SeqChunk(np.array([tok]), n + i, blocks[1])])  # (1, V)
            q = filtered_probs(logits, **filt)[0]
            c = np.cumsum(q)
            u = row_uniform(seeds, 2 * (k + 1) * step + 2 * k + 2 + i)[0]
            tok = int(min(np.searchsorted(c, u * c[-1], side="right"), q.size - 1))
            drafts.append(tok)
            qs.append(q)
        chunk = np.array([pending] + drafts)
        pt = filtered_probs(target.forward_cached(caches[0], [SeqChunk(chunk, n, blocks[0])], all_logits=True), **filt)
        verify_seed = int(np.random.SeedSequence([int(seed), step]).generate_state(1, dtype=np.uint64)[0])
        n_acc, toks = speculative_verify(np.array(qs)[None], pt[None], np.array(drafts)[None], verify_seed)
        a = int(n_acc[0])
        if a == k:  # the draft never fed its last token: cache it so both models hold the same prefix
            draft.forward_cached(caches[1], [SeqChunk(np.array([drafts[-1]]), n + k, blocks[1])])
        out.extend(int(t) for t in toks[0, :a + 1])
        accepted.append(a)
        n += a + 1
        pending = int(toks[0, a])
        step += 1
    return SpeculativeOutput(np.array(out[:max_new_tokens], dtype=np.int64), np.array(accepted, dtype=np.int64))


def perturbed_model(model, noise: float, *, seed: int = 0):
    """A draft for ``model``: its weights plus Gaussian noise of ``noise`` times each tensor's std.

    ``noise = 0`` gives the target itself; the acceptance rate falls as ``noise`` grows, so the
    rate a test or benchmark wants is set by this one number.
    """
    from scalelab.kernels.model import LlamaModel

    if not isinstance(model, LlamaModel):
        raise TypeError(f"model must be a LlamaModel, got {type(model).__name__}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise < np.inf:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    state = model.hf_state()
    return LlamaModel(model.config, {name: w + np.float32(noise * w.std()) * rng.standard_normal(w.shape, np.float32)
                                     for name, w in state.items()})
