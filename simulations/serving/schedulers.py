"""Batch schedulers: each forms an instance's next iteration.

A scheduler has one method, ``form_batch(inst)``, called before every
iteration of an instance (:class:`simulations.serving.engine.Instance`). It may
admit waiting requests (``inst.admit()``, first in first out) and returns
``(chunks, decode)``: the prefill chunks ``[(request, tokens), ...]`` to run
and whether the instance's decoding sequences take a step. The engine has
already made room in the KV cache for that decode step (preempting if it had
to), so ``inst.free_blocks()`` is what new chunks may use.

=========================  =================================================================
:class:`StaticBatching`     a batch runs to completion before the next one is admitted
                            (blocks for prompt + output reserved up front, so it never preempts)
:class:`ContinuousBatching` prefill priority, vLLM's default: waiting prompts are prefilled
                            whole as soon as they fit, while the decodes wait
:class:`ChunkedPrefill`     Sarathi-Serve: decodes first, then the rest of a per-iteration
                            token budget goes to prompt chunks
:class:`Disaggregated`      DistServe / Splitwise: prefill instances and decode instances,
                            the KV cache sent between them over a link
=========================  =================================================================

``max_batch`` bounds the sequences an instance holds (prefilling or decoding);
its default 256 is vLLM's ``--max-num-seqs`` default (vLLM engine arguments).
"""

from __future__ import annotations

from dataclasses import dataclass

from scalelab.simulations.serving.cost import Link, get_link
from scalelab.simulations.serving.memory import blocks_for

__all__ = ["StaticBatching", "ContinuousBatching", "ChunkedPrefill", "Disaggregated", "PrefillOnly", "DecodeOnly",
           "DEFAULT_MAX_BATCH", "DEFAULT_MAX_PREFILL_TOKENS", "SCHEDULERS", "make_scheduler"]

#: vLLM's ``--max-num-seqs`` default (vLLM engine arguments).
DEFAULT_MAX_BATCH = 256
#: Prompt tokens one prefill-priority iteration may take: vLLM's ``max_num_batched_tokens`` default without
#: chunked prefill, ``max(max_model_len, 2048)``, for Llama 3's 8,192-token context (vLLM SchedulerConfig).
DEFAULT_MAX_PREFILL_TOKENS = 8192


def _check_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class StaticBatching:
    """Admit a batch (FCFS, up to ``max_batch`` whose prompt + output blocks fit), run it to completion."""

    max_batch: int = DEFAULT_MAX_BATCH
    admits_while_running = False  # arrivals cannot join a running batch

    def __post_init__(self) -> None:
        _check_int("max_batch", self.max_batch)

    def form_batch(self, inst):
        if inst.n_running:
            return [], True
        chunks, free = [], inst.free_blocks()
        while inst.waiting and len(chunks) < self.max_batch:
            rid = inst.waiting[0]
            need = blocks_for(inst.req.target[rid] + inst.req.output[rid])
            if need > free:
                break
            free -= need
            inst.admit()
            chunks.append((rid, inst.req.target[rid]))
        return chunks, False


@dataclass(frozen=True)
class ContinuousBatching:
    """Prefill priority: admit waiting prompts whole (up to ``max_prefill_tokens`` per iteration), else decode."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    admits_while_running = True

    def __post_init__(self) -> None:
        _check_int("max_batch", self.max_batch)
        _check_int("max_prefill_tokens", self.max_prefill_tokens)

    def form_batch(self, inst):
        chunks, tokens, free = [], 0, inst.free_blocks()
        while inst.waiting and inst.n_running < self.max_batch:
            rid = inst.waiting[0]
            p = inst.req.target[rid]
            if chunks and tokens + p > self.max_prefill_tokens:
                break
            need = blocks_for(p)
            if need > free:
                break
            free -= need
            tokens += p
            inst.admit()
            chunks.append((rid, p))
        if chunks:
            return chunks, False
        return [], inst.n_decoding > 0


@dataclass(frozen=True)
class ChunkedPrefill:
    """Sarathi-Serve: every decoding sequence steps; the rest of ``token_budget`` goes to prompt chunks.

    Partly prefilled prompts continue first (oldest first), then waiting
    requests are admitted while budget, ``max_batch`` and free blocks allow.
    """

    max_batch: int = DEFAULT_MAX_BATCH
    token_budget: int = 512
    admits_while_running = True

    def __post_init__(self) -> None:
        _check_int("max_batch", self.max_batch)
        _check_int("token_budget", self.token_budget)

    def form_batch(self, inst):
        req = inst.req
        budget = self.token_budget - inst.n_decoding * inst.tokens_per_decode
        free = inst.free_blocks()
        chunks = []
        for rid in inst.prefilling:
            if budget <= 0:
                break
            done = req.done[rid]
            c = min(req.target[rid] - done, budget)
            need = blocks_for(done + c) - blocks_for(done)
            if need > free:
                break
            chunks.append((rid, c))
            budget -= c
            free -= need
        while budget > 0 and inst.waiting and inst.n_running < self.max_batch:
            rid = inst.waiting[0]
            c = min(req.target[rid], budget)
            need = blocks_for(c)
            if need > free:
                break
            inst.admit()
            chunks.append((rid, c))
            budget -= c
            free -= need
        return chunks, inst.n_decoding > 0


@dataclass(frozen=True)
class PrefillOnly:
    """The prefill side of disaggregation: whole prompts, batched up to ``max_prefill_tokens``; never decodes."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    admits_while_running = True

    def form_batch(self, inst):
        return ContinuousBatching.form_batch(self, inst)  # no decoding sequences ever live here


@dataclass(frozen=True)
class DecodeOnly:
    """The decode side of disaggregation: admit requests whose KV cache has arrived, step every sequence."""

    max_batch: int = DEFAULT_MAX_BATCH
    admits_while_running = True

    def form_batch(self, inst):
        free = inst.free_blocks()
        while inst.waiting and inst.n_running < self.max_batch:
            rid = inst.waiting[0]
            need = blocks_for(inst.req.target[rid] + inst.tokens_per_step)
            if need > free:
                break
            free -= need
            inst.admit_prefilled()
        return [], inst.n_decoding > 0


@dataclass(frozen=True)
class Disaggregated:
    """Separate prefill and decode instances (each of ``tp`` devices); KV moved over ``link``.

    The transfer of a request's KV cache (all layers, ``prompt`` tokens) takes
    ``bytes / (tp * link bandwidth)``: the ``tp`` devices of a prefill instance
    each send their share over their own link. A prefill instance's transfers
    queue behind one another (one link per device); the decode instance with
    the fewest outstanding tokens receives the request.
    """

    n_prefill: int = 1
    n_decode: int = 1
    link: str | Link = "nvlink4"
    max_batch: int = DEFAULT_MAX_BATCH
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS

    def __post_init__(self) -> None:
        _check_int("n_prefill", self.n_prefill)
        _check_int("n_decode", self.n_decode)
        _check_int("max_batch", self.max_batch)
        _check_int("max_prefill_tokens", self.max_prefill_tokens)
        get_link(self.link)

    def prefill_scheduler(self) -> PrefillOnly:
        return PrefillOnly(self.max_batch, self.max_prefill_tokens)

    def decode_scheduler(self) -> DecodeOnly:
        return DecodeOnly(self.max_batch)

    def form_batch(self, inst):
        """Dispatch on the instance's role (``"prefill"`` or ``"decode"``)."""
        sched = self.prefill_scheduler() if inst.role == "prefill" else self.decode_scheduler()
        return sched.form_batch(inst)


SCHEDULERS = ("static", "continuous", "chunked", "disaggregated")


def make_scheduler(name, *, max_batch: int | None = None, token_budget: int = 512,
                   max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS, n_prefill: int = 1, n_decode: int = 1,
                   link: str | Link = "nvlink4"):
    """The scheduler called ``name`` (one of :data:`SCHEDULERS`); a scheduler object passes through."""
    if not isinstance(name, str):
        if hasattr(name, "form_batch"):
            return name
        raise TypeError(f"scheduler must be one of {SCHEDULERS} or a scheduler object, got {type(name).__name__}")
    mb = DEFAULT_MAX_BATCH if max_batch is None else max_batch
    key = name.lower()
    if key == "static":
        return StaticBatching(mb)
    if key == "continuous":
        return ContinuousBatching(mb, max_prefill_tokens)
    if key == "chunked":
        return ChunkedPrefill(mb, token_budget)
    if key == "disaggregated":
        return Disaggregated(n_prefill, n_decode, link, mb, max_prefill_tokens)
    raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
