"""Fair float32 NumPy peers: what a competent NumPy user would write for each kernel.

The ``*_ref`` functions beside each kernel are oracles: float64, one row or
sequence at a time, full sorts, written to be obviously right. Timing a kernel
against them says how much faster it is than the oracle, not than a program
anyone would run. These peers are the comparison a user without PyTorch can
actually make: float32 throughout, vectorised over the batch, BLAS for every
matmul, partial selection where only the top entries matter.

==========================  =============================================  ===============================
peer                        how it is written                              computes the same as
==========================  =============================================  ===============================
:func:`prefill_attention`   scores by batched ``matmul``, causal mask,     ``attention_ref(causal=True)``
                            float32 softmax, ``matmul`` with V (GQA by a
                            reshape, no copies of K/V)
:func:`decode_attention`    one batched ``matmul`` against the whole       ``decode_attention_ref``
                            cache, masked past each sequence's length
:func:`top_k`               ``np.argpartition``, then a sort of k entries  ``top_k_ref``
:func:`filter_logits`       ``np.partition`` for top-k; a float32          ``filter_logits_ref`` (top-k,
                            descending sort, softmax and cumsum for top-p  top-p, temperature)
:func:`sample`              :func:`filter_logits`, float32 softmax, one    ``sample_ref`` (same
                            uniform per row through the cumulative sum     distribution)
:func:`route`               float32 softmax, ``np.argpartition`` top-k,    ``route_ref`` (softmax
                            renormalised weights                           scoring, renormalised)
:func:`dispatch`            stable ``np.argsort`` of the flat assignments  ``dispatch_ref`` without
                            and ``np.bincount``                            capacity: ``order``, counts
:func:`permute`,            fancy indexing; unpermute scatters rows back   ``permute_ref``,
:func:`unpermute`           to their slots and sums the k weighted slots   ``unpermute_ref``
==========================  =============================================  ===============================

Inputs are trusted (benchmark data): no validation beyond what NumPy does.
Where the selection of the k-th entry has ties, ``np.argpartition`` may keep a
different one of the tied indices than the references (which keep the lowest
id); the tests use data without ties at the boundary.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "prefill_attention", "decode_attention", "top_k", "filter_logits", "sample", "route",
    "dispatch", "permute", "unpermute",
]


def _softmax_inplace(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of a scores array this module owns, overwriting it.

    In place, as one would write it for speed: the scores are the largest
    temporary of attention. Rows that are all -inf give zeros.
    """
    m = s.max(axis=-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    s -= m
    np.exp(s, out=s)
    tot = s.sum(axis=-1, keepdims=True)
    tot[tot == 0] = 1  # an all -inf row is all zeros after exp
    s /= tot
    return s


def _softmax_f32(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in the input's dtype; rows that are all -inf give zeros."""
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(s.dtype)
    e = np.exp(s - m)
    tot = e.sum(axis=-1, keepdims=True)
    return np.divide(e, tot, out=np.zeros_like(e), where=tot > 0)


# ----------------------------------------------------------------------------- attention


def prefill_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, scale: float | None = None) -> np.ndarray:
    """Causal scaled-dot-product attention with grouped-query heads, in q's dtype.

    Query row ``i`` sees keys ``j <= i + Lk - Lq`` (the last query is aligned
    with the last key). ``q`` (B, Hq, Lq, D), ``k`` (B, Hkv, Lk, D), ``v``
    (B, Hkv, Lk, Dv); returns (B, Hq, Lq, Dv).
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    dt = q.dtype.type
    s = dt(1.0 / np.sqrt(D) if scale is None else scale)
    qg = q.reshape(B, Hkv, g * Lq, D)  # (B, Hkv, g*Lq, D): the group's queries share K/V
    scores = np.matmul(qg * s, k.swapaxes(-1, -2)).reshape(B, Hkv, g, Lq, Lk)  # (B, Hkv, g, Lq, Lk)
    hidden = np.arange(Lk)[None, :] > np.arange(Lq)[:, None] + (Lk - Lq)  # (Lq, Lk)
    scores += np.where(hidden, -np.inf, 0).astype(q.dtype)  # additive causal mask, broadcast
    p = _softmax_inplace(scores).reshape(B, Hkv, g * Lq, Lk)
    return np.matmul(p, v).reshape(B, Hq, Lq, v.shape[3])  # (B, Hq, Lq, Dv)


def decode_attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, lengths,
                     *, scale: float | None = None) -> np.ndarray:
    """One query per sequence against its first ``lengths[b]`` cached keys, in q's dtype.

    ``q`` (B, Hq, D), ``k_cache`` (B, Hkv, Lmax, D), ``v_cache`` (B, Hkv, Lmax, Dv),
    ``lengths`` (B,); returns (B, Hq, Dv), zeros for a sequence of length 0.
    """
    B, Hq, D = q.shape
    Hkv, Lmax = k_cache.shape[1], k_cache.shape[2]
    g = Hq // Hkv
    dt = q.dtype.type
    s = dt(1.0 / np.sqrt(D) if scale is None else scale)
    qg = q.reshape(B, Hkv, g, D)  # (B, Hkv, g, D)
    scores = np.matmul(qg * s, k_cache.swapaxes(-1, -2))  # (B, Hkv, g, Lmax)
    past = np.arange(Lmax)[None, :] >= np.asarray(lengths).reshape(B, 1)  # (B, Lmax)
    scores += np.where(past, -np.inf, 0).astype(q.dtype)[:, None, None, :]  # additive length mask
    p = _softmax_inplace(scores)  # (B, Hkv, g, Lmax)
    return np.matmul(p, v_cache).reshape(B, Hq, v_cache.shape[3])  # (B, Hq, Dv)


# ----------------------------------------------------------------------------- sampling


def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits of each row, descending, and their ids (``np.argpartition``)."""
    x = np.atleast_2d(logits)  # (B, V)
    V = x.shape[1]
    part = np.argpartition(x, V - k, axis=1)[:, V - k:]  # (B, k) unordered
    vals = np.take_along_axis(x, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")  # (B, k)
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    return (vals[0], idx[0]) if logits.ndim == 1 else (vals, idx)


def filter_logits(logits: np.ndarray, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> np.ndarray:
    """Temperature-scaled logits with tokens outside top-k and top-p set to -inf, in float32 math.

    Top-k keeps every logit at least the k-th largest (``np.partition``); top-p
    then keeps, in descending order, the smallest prefix whose softmax mass
    reaches ``top_p`` (sorted cumulative sum, the transformers recipe).
    """
    x = np.atleast_2d(logits)
    dt = x.dtype.type
    x = x / dt(temperature)  # (B, V)
    V = x.shape[1]
    if 0 < top_k < V:
        kth = np.partition(x, V - top_k, axis=1)[:, V - top_k, None]  # (B, 1)
        x = np.where(x >= kth, x, dt(-np.inf))
    if top_p < 1.0:
        order = np.argsort(-x, axis=1, kind="stable")  # (B, V) descending
        xs = np.take_along_axis(x, order, axis=1)
        ps = _softmax_f32(xs)
        cum_before = np.cumsum(ps, axis=1) - ps  # (B, V) mass strictly before each token
        drop_sorted = cum_before >= dt(top_p)
        drop_sorted[:, 0] = False  # the most probable token always stays
        drop = np.empty_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=1)
        x = np.where(drop, dt(-np.inf), x)
    return x[0] if logits.ndim == 1 else x


def sample(logits: np.ndarray, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           seed: int | None = None) -> np.ndarray:
    """One token per row from the :func:`filter_logits` distribution (float32 softmax, inverse CDF)."""
    f = np.atleast_2d(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p))
    cdf = np.cumsum(_softmax_f32(f), axis=1)  # (B, V)
    u = np.random.default_rng(seed).random(f.shape[0], dtype=np.float32)[:, None] * cdf[:, -1:]
    tokens = (cdf <= u).sum(axis=1)  # first id whose cumulative mass exceeds u
    # float32 rounding can leave u at the total; the last kept token is the answer then
    last_kept = f.shape[1] - 1 - np.argmax(np.isfinite(f[:, ::-1]), axis=1)
    tokens = np.minimum(tokens, last_kept)
    return tokens[0] if logits.ndim == 1 else tokens


# ----------------------------------------------------------------------------- mixture of experts


def route(router_logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax top-k routing: renormalised weights (T, k) and expert ids (T, k), best first."""
    w, e = top_k(_softmax_f32(router_logits), k)
    return w / w.sum(axis=1, keepdims=True), e


def dispatch(experts: np.ndarray, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots (``token * k + s``) grouped by expert, stable within an expert, and tokens per expert."""
    flat = experts.ravel()  # (T*k,)
    order = np.argsort(flat, kind="stable")
    return order, np.bincount(flat, minlength=n_experts)


def permute(x: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """Token rows in dispatch order: (n_slots, d)."""
    return x[order // k]


def unpermute(ys: np.ndarray, order: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum of each token's k expert outputs: scatter to slots, then one reduction, (T, d)."""
    T, k = weights.shape
    slots = np.zeros((T * k, ys.shape[1]), dtype=ys.dtype)  # (T*k, d)
    slots[order] = ys
    return np.einsum("tkd,tk->td", slots.reshape(T, k, -1), weights.astype(ys.dtype, copy=False))
