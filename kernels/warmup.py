"""Compile the kernels' common signatures ahead of time, into the Numba cache.

With an empty cache, the first call of a kernel in a process compiles it: about
20 s for ``sample`` and 8.5 s for ``attention`` per dtype on the reference
machine (see README "First-call latency"). Every kernel is ``cache=True``, so
running :func:`warm_up` once (``scalelab warmup``) writes the machine code to
``NUMBA_CACHE_DIR`` (default: ``__pycache__`` beside the sources) and later
processes load it in well under a second. Each kernel is called on tiny inputs
of every dtype, C-contiguous, on both its parallel driver and its one-thread
twin, which are the signatures the public functions dispatch to.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import numba
import numpy as np

from scalelab.kernels import attention, linear, moe, sampling

__all__ = ["DTYPES", "warm_up"]

DTYPES = ("float32", "float64")

#: The size thresholds that switch the MoE kernels between parallel driver and twin.
_MOE_THRESHOLDS = ("_LOGITS_PARALLEL_MIN", "_DISPATCH_PARALLEL_MIN", "_COPY_PARALLEL_MIN_BYTES",
                   "_SILU_PARALLEL_MIN")


@contextlib.contextmanager
def _moe_thresholds(value: int | None) -> Iterator[None]:
    """Temporarily force every MoE size threshold to ``value`` (None: leave them)."""
    old = {name: getattr(moe, name) for name in _MOE_THRESHOLDS}
    try:
        if value is not None:
            for name in _MOE_THRESHOLDS:
                setattr(moe, name, value)
        yield
    finally:
        for name, v in old.items():
            setattr(moe, name, v)


def _attention_calls(dt: np.dtype, rng) -> None:
    r = lambda *shape: rng.standard_normal(shape).astype(dt)  # noqa: E731
    q, k = r(1, 2, 5, 8), r(1, 1, 5, 8)
    attention.attention(q, k, k, causal=True)
    attention.attention(q, k, k, causal=False, window=3)
    qd, kc = r(1, 2, 8), r(1, 1, 5, 8)
    attention.decode_attention(qd, kc, kc, np.array([5]))
    kp = r(2, 4, 1, 8)
    attention.paged_decode_attention(qd, kp, kp, np.array([[1, 0]]), np.array([6]))


def _sampling_calls(dt: np.dtype, rng) -> None:
    for B in (1, max(2, numba.get_num_threads())):  # row-parallel and rows drivers
        logits = rng.standard_normal((B, 64)).astype(dt)
        sampling.sample(logits, temperature=0.8, top_k=10, top_p=0.9, min_p=0.01, seed=0)
        sampling.filter_logits(logits, temperature=0.8, top_p=0.9)
        sampling.top_k(logits, 3)


def _moe_calls(dt: np.dtype, rng) -> None:
    x, rw = rng.standard_normal((6, 8)).astype(dt), rng.standard_normal((8, 4)).astype(dt)
    w1, w3, w2 = (rng.standard_normal(s).astype(dt) for s in ((4, 8, 6), (4, 8, 6), (4, 6, 8)))
    for threshold in (None, 0):  # the one-thread twins, then the parallel drivers
        with _moe_thresholds(threshold):
            logits = rng.standard_normal((6, 4)).astype(dt)
            w, e = moe.route(logits, 2)
            moe.route(logits, 2, scoring="sigmoid", bias=np.zeros(4, np.float32), n_groups=2, topk_groups=1)
            D = moe.dispatch(e, 4, capacity=3)
            moe.unpermute(moe.permute(x, D), D, w)
            moe.expert_choice(logits, 2)
            moe.load_balancing_loss(logits, e)
            moe.router_z_loss(logits)
            moe.moe_layer(x, rw, w1, w3, w2, 2)


def _linear_calls(dt: np.dtype, rng) -> None:
    w = linear.pack_weight(rng.standard_normal((linear.K_BLOCK + 3, 5)).astype(dt))  # two K blocks
    linear.linear(rng.standard_normal((2, linear.K_BLOCK + 3)).astype(dt), w)
    moe.silu_mul(np.ones((2, 3), dt), np.ones((2, 3), dt))


GROUPS: dict[str, Callable] = {"attention": _attention_calls, "sampling": _sampling_calls, "moe": _moe_calls,
                               "linear": _linear_calls}


def warm_up(dtypes=DTYPES, groups=tuple(GROUPS), progress: Callable[[str, str, float], None] | None = None):
    """Compile (or load from the cache) every kernel group for every dtype.

    Parameters
    ----------
    dtypes : iterable of "float32" / "float64"
    groups : iterable of names in :data:`GROUPS`
    progress : callable(group, dtype, seconds), optional
        Called after each group x dtype.

    Returns
    -------
    list of (group, dtype, seconds)
    """
    dts = [np.dtype(d) for d in dtypes]
    for d in dts:
        if d not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtypes must be float32 or float64, got {d}")
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"groups must be among {sorted(GROUPS)}, got {g!r}")
    rng = np.random.default_rng(0)
    done = []
    for g in groups:
        for d in dts:
            t0 = time.perf_counter()
            GROUPS[g](d, rng)
            done.append((g, d.name, time.perf_counter() - t0))
            if progress is not None:
                progress(*done[-1])
    return done
