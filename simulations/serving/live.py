"""A live engine: continuous batching of a :class:`~scalelab.kernels.model.LlamaModel` on the CPU.

The engine runs the same iteration-level loop the simulator models
(:mod:`simulations.serving.engine`), but every iteration is a real forward pass:

* the batch of each iteration is formed by the simulator's own scheduler objects
  (:class:`~simulations.serving.schedulers.ContinuousBatching`,
  :class:`~simulations.serving.schedulers.ChunkedPrefill`,
  :class:`~simulations.serving.schedulers.StaticBatching`) through the interface they
  already read (``waiting``, ``prefilling``, ``admit()``, ``free_blocks()``, ``req.target``,
  ``req.done``), so the two cannot drift;
* the KV cache is a :class:`~scalelab.kernels.model.PagedKVCache` shared by all sequences
  (blocks of 16 tokens, a free list, one block list per sequence);
* when the next decode step needs more blocks than are free, the most recently admitted
  request is preempted by recompute, as in the simulator (vLLM's policy): its blocks are
  freed and it re-enters the front of the queue; its next prefill covers its prompt and the
  tokens it had generated except the last, which is fed by the next decode step as if
  nothing had happened;
* token ``j`` of a request is drawn by :func:`~scalelab.kernels.sampling.sample` with a seed
  that is a pure function of the request's seed and ``j``, so a request's tokens do not
  depend on which other requests share its batches or on preemptions (up to float32
  rounding differences of the batched matmuls, which move a draw only when it falls within
  an ulp of a token's cumulative-probability boundary).

Speculative decoding (``Engine(model, draft=..., spec_k=k)``): each decode iteration the draft
proposes ``k_r = min(k, tokens still owed - 1)`` tokens per decoding sequence (``k_r`` batched
one-token draft steps), the target scores the pending token and the drafts as one ``k_r + 1``
token chunk that continues its cache (all chunks in one cached forward), and
:func:`~scalelab.kernels.speculative.speculative_verify` keeps the accepted prefix and the
corrected token. Design choices:

* the draft keeps its own :class:`~scalelab.kernels.model.PagedKVCache` with the target's
  number of blocks, and every allocation and free is made in both caches alike, so the two
  free lists stay identical and one block list per request indexes both; the scheduler
  counts the target's blocks. After verification both are cut back to the accepted length
  (blocks past it are freed). When all ``k_r`` drafts are accepted the draft has not cached
  its last draft; the next iteration's first draft step feeds it together with the pending
  token (a two-token chunk) instead of spending an extra draft step now.
* probabilities: the sampling filters (temperature, top-k, top-p, min-p) are applied to the
  draft's and the target's logits alike by :func:`~scalelab.kernels.sampling.filter_logits`
  and renormalised in float64; these are the rows the verify kernel compares. Drafts are
  drawn by :func:`~scalelab.kernels.sampling.sample` on the same logits and parameters (the
  same kept set; its probabilities agree with the float64 rows to float64 rounding).
* randomness: the draft for a request's token ``j`` and the bonus token ``j`` (all drafts
  accepted) are drawn by ``sample`` with the plain engine's seed for token ``j``; the
  acceptance tests and residual draws use a per-step seed that is a pure function of the
  request's seed and the number of tokens it had generated. A uniform of a draft that was
  discarded can be used again for a later draft of the same index; nothing emitted depended
  on it, so emitted tokens stay distributed exactly as the target's (filtered) distribution.
  Consequence: with ``draft`` the target itself, every draft is accepted (up to float32
  rounding: the draft's one-token steps and the target's chunk differ in the last bits) and
  the tokens equal the plain engine's for the same seed, again up to draws within rounding
  of a cumulative-probability boundary. The rule of :func:`~scalelab.kernels.speculative.speculative_generate`
  (one sequence, outside the engine) is the same but its seed stream is not: it has no
  prefill-sampled first token, so the two agree in distribution, not token for token.
* timing: the tokens one verification step accepts, and its corrected or bonus token, become
  available together at the end of the step (the engine emits nothing before verifying), so
  they share one timestamp in ``ServingResult.token_times`` (gaps of zero between them). That
  is the real behaviour of speculative decoding and is kept. The per-token metrics read
  accordingly: TPOT averages over tokens (a step that emits three tokens counts its duration
  once for the three); the inter-token latency (ITL) has one sample per decoding sequence
  per step, the time between bursts, not between tokens. In the iteration log
  (``Engine.batches``) such a step is one :class:`EngineIteration` of kind ``"speculative"``,
  whose seconds hold the draft steps and the verification together; the step-cost fit
  (:func:`~simulations.serving.fitted.engine_iterations`) refuses them, because it prices a
  target forward over one token per decoding sequence only.

It lives beside the simulator, not in ``kernels/``, because it composes both: kernels never
import simulations.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from scalelab.kernels._threads import thread_budget, threads_for
from scalelab.kernels.model import LlamaConfig, LlamaModel, PagedKVCache, SeqChunk
from scalelab.kernels.sampling import sample
from scalelab.kernels.speculative import filtered_probs, speculative_verify
from scalelab.simulations.inference import ModelConfig
from scalelab.simulations.serving.memory import BLOCK_TOKENS
from scalelab.simulations.serving.metrics import ServingResult
from scalelab.simulations.serving.schedulers import Disaggregated, make_scheduler
from scalelab.simulations.serving.workload import Workload

__all__ = ["Engine", "EngineIteration", "ENGINE_MODELS", "get_engine_model", "DEFAULT_KV_BLOCKS", "compare_latencies"]

#: KV blocks of a default engine (1 GiB of float32 cache for the Llama-3.2-1B shape: 1 MiB per block).
DEFAULT_KV_BLOCKS = 1024

#: Models the engine runs (float32 on the CPU); rope and norm constants are the released configs'.
ENGINE_MODELS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        name="tiny", n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=512,
        max_position=4096, source="a test model: GQA with 2 query heads per kv head",
    ),
    "llama-3.2-1b": ModelConfig(
        name="Llama 3.2 1B shape", n_layers=16, d_model=2048, n_heads=32, n_kv_heads=8, d_ff=8192,
        vocab_size=128256, head_dim=64, tie_embeddings=True, rope_theta=500000.0, norm_eps=1e-5,
        max_position=131072,
        source="meta-llama/Llama-3.2-1B config.json (hidden 2048, 16 layers, 32 heads, 8 KV heads, "
               "intermediate 8192, vocab 128256, tied embeddings, rope_theta 500000, rms_norm_eps 1e-5, "
               "131072 positions); Llama 3.1 rope scaling is not applied",
    ),
}


def get_engine_model(name: str | ModelConfig) -> ModelConfig:
    """The engine preset called ``name``; a ``ModelConfig`` passes through."""
    if isinstance(name, ModelConfig):
        return name
    if not isinstance(name, str) or name.lower() not in ENGINE_MODELS:
        raise ValueError(f"unknown engine model {name!r}; known: {', '.join(ENGINE_MODELS)}")
    return ENGINE_MODELS[name.lower()]


def _token_seed(request_seed: int, j: int) -> int:
    """Seed of a request's ``j``-th generated token: a pure function of both."""
    return int(np.random.SeedSequence([request_seed, j]).generate_state(1, dtype=np.uint64)[0])


def _verify_seed(request_seed: int, j: int) -> int:
    """Seed of the acceptance tests of a speculative step that starts at generated token ``j``."""
    return int(np.random.SeedSequence([request_seed, j, 1]).generate_state(1, dtype=np.uint64)[0])


class EngineIteration(NamedTuple):
    """What one iteration of :class:`Engine` did: one entry of its ``batches`` log.

    ``kind`` says what ``seconds`` paid for:

    * ``"plain"``: one forward of the target over the prefill chunks and one token per
      decoding sequence, and sampling; what :func:`~simulations.serving.fitted.engine_iterations`
      turns into an iteration vector for the step-cost fit;
    * ``"speculative"`` (an engine with a draft): also the draft's forward over the same prefill
      chunks, and for the decoding sequences the whole speculative step (``drafts[i]`` one-token
      draft steps, one target forward over ``drafts[i] + 1`` tokens each, verification). The
      fit does not model it and refuses such entries.
    """

    chunk_tokens: list[int]  # (chunks,) prompt tokens each prefill chunk fed
    chunk_offsets: list[int]  # (chunks,) cached tokens of each chunk's sequence before it
    decode_kv: list[int]  # (decoding sequences,) cached tokens of each before the step
    seconds: float  # wall time of the whole iteration (scheduling included)
    kind: str = "plain"
    drafts: tuple[int, ...] = ()  # (decoding sequences,) tokens the draft proposed for each; () when plain
    idle_before: float = 0.0  # seconds the engine sat idle before it (since its last iteration; inf: the first)


@dataclass
class _Params:
    temperature: float
    top_k: int
    top_p: float
    min_p: float


def _param_rows(ps: list[_Params]) -> dict[str, np.ndarray]:
    """Per-row sampling parameters, as ``sample`` and ``filter_logits`` take them."""
    return dict(temperature=np.array([p.temperature for p in ps]), top_k=np.array([p.top_k for p in ps]),
                top_p=np.array([p.top_p for p in ps]), min_p=np.array([p.min_p for p in ps]))


class _Requests:
    """Per-request state; ``target``, ``done`` and ``output`` are what the schedulers read."""

    def __init__(self) -> None:
        self.prompt: list[np.ndarray] = []
        self.output: list[int] = []  # tokens to generate
        self.target: list[int] = []  # tokens the next prefill must cover
        self.done: list[int] = []  # tokens of ``target`` cached so far
        self.seed: list[int] = []
        self.params: list[_Params] = []
        self.generated: list[list[int]] = []
        self.blocks: list[np.ndarray] = []
        self.arrival: list[float] = []
        self.start: list[float] = []
        self.first: list[float] = []
        self.finish: list[float] = []
        self.token_times: list[list[float]] = []
        self.preemptions: list[int] = []
        self.decode_steps: list[int] = []
        self.draft_done: list[int] = []  # tokens cached in the draft's cache (at most one behind ``done``)
        self.spec_drafted: list[int] = []  # tokens the draft proposed
        self.spec_examined: list[int] = []  # proposals the verifier looked at (up to the first rejection)
        self.spec_accepted: list[int] = []

    def add(self, prompt, output, seed, params, arrival) -> int:
        self.prompt.append(prompt)
        self.output.append(int(output))
        self.target.append(int(prompt.size))
        self.done.append(0)
        self.seed.append(int(seed))
        self.params.append(params)
        self.generated.append([])
        self.blocks.append(np.zeros(0, dtype=np.int64))
        for lst in (self.start, self.first, self.finish):
            lst.append(math.nan)
        self.arrival.append(float(arrival))
        self.token_times.append([])
        self.preemptions.append(0)
        for lst in (self.decode_steps, self.draft_done, self.spec_drafted, self.spec_examined, self.spec_accepted):
            lst.append(0)
        return len(self.prompt) - 1

    def tokens(self, rid: int) -> np.ndarray:
        """Prompt followed by every generated token."""
        return np.concatenate([self.prompt[rid], np.asarray(self.generated[rid], dtype=np.int64)])


class Engine:
    """Continuous batching of a :class:`LlamaModel` over a paged KV cache (float32, CPU).

    Parameters
    ----------
    model : LlamaModel
    scheduler : ``"chunked"`` (Sarathi-Serve), ``"continuous"`` (prefill priority), ``"static"``,
        or one of the simulator's scheduler objects.
    kv_blocks : blocks in the KV cache (default :data:`DEFAULT_KV_BLOCKS`).
    block_size : tokens per block; the simulator's schedulers count blocks of
        :data:`~simulations.serving.memory.BLOCK_TOKENS` (16), so that is the only size accepted.
    token_budget : tokens per iteration of chunked prefill.
    max_batch : sequences held at once (default 256, vLLM's).
    draft : LlamaModel or None
        Speculative decoding's draft model (same vocabulary as ``model``); needs ``spec_k >= 1``.
    spec_k : tokens the draft proposes per decoding sequence and iteration (0: plain decoding).
    """

    role = "colocated"
    tokens_per_decode = 1  # tokens each decoding sequence puts through the model per step
    tokens_per_step = 1  # tokens a decode step emits per sequence

    def __init__(self, model: LlamaModel, *, scheduler="chunked", kv_blocks: int | None = None,
                 block_size: int = 16, token_budget: int = 512, max_batch: int | None = None,
                 draft: LlamaModel | None = None, spec_k: int = 0) -> None:
        if not isinstance(model, LlamaModel):
            raise TypeError(f"model must be a LlamaModel, got {type(model).__name__}")
        if isinstance(spec_k, bool) or not isinstance(spec_k, (int, np.integer)) or spec_k < 0:
            raise ValueError(f"spec_k must be an int >= 0, got {spec_k!r}")
        if draft is not None:
            if not isinstance(draft, LlamaModel):
                raise TypeError(f"draft must be a LlamaModel or None, got {type(draft).__name__}")
            if draft.config.vocab_size != model.config.vocab_size:
                raise ValueError(f"draft must share the model's vocabulary ({model.config.vocab_size} tokens), "
                                 f"got a draft with {draft.config.vocab_size}")
            if spec_k == 0:
                raise ValueError("a draft model needs spec_k >= 1 (tokens it proposes per step), got spec_k=0")
        elif spec_k > 0:
            raise ValueError(f"spec_k={spec_k} needs a draft model (draft=None)")
        if block_size != BLOCK_TOKENS:
            raise ValueError(f"block_size must be {BLOCK_TOKENS} (the block the simulator's schedulers count), "
                             f"got {block_size!r}")
        kv_blocks = DEFAULT_KV_BLOCKS if kv_blocks is None else kv_blocks
        self.sched = make_scheduler(scheduler, max_batch=max_batch, token_budget=token_budget)
        if isinstance(self.sched, Disaggregated):
            raise ValueError("the engine runs one instance; scheduler 'disaggregated' needs several")
        self.model = model
        self.cache = PagedKVCache(model.config, kv_blocks, block_size)
        self.token_budget = token_budget
        self.draft, self.spec_k = draft, int(spec_k)
        # the draft's cache mirrors the target's block ids (see the module docstring)
        self.draft_cache = None if draft is None else PagedKVCache(draft.config, kv_blocks, block_size)
        self.tokens_per_decode = self.spec_k + 1  # the chunk each decoding sequence puts through the target
        self._last_end: float | None = None  # perf_counter() at the end of the last iteration, any call
        self._reset()

    # ------------------------------------------------------------------ what the schedulers read
    @property
    def n_running(self) -> int:
        return len(self.order)

    @property
    def n_decoding(self) -> int:
        return len(self.decoding)

    def _draft_len(self, rid: int) -> int:
        """Tokens the draft proposes for ``rid`` this step: never more than it still owes minus one."""
        if self.draft is None:
            return 0
        return min(self.spec_k, self.req.output[rid] - len(self.req.generated[rid]) - 1)

    def _decode_need(self) -> int:
        """Blocks the decoding sequences must add for their next step."""
        return sum(self.cache.blocks_for(self.req.done[r] + 1 + self._draft_len(r)) - self.req.blocks[r].size
                   for r in self.decoding)

    def free_blocks(self) -> int:
        """Blocks left after the decoding sequences take their next step."""
        return self.cache.n_free - self._decode_need()

    def admit(self) -> int:
        """Move the head of the queue into the running set, to be prefilled."""
        rid = self.waiting.popleft()
        self.order.append(rid)
        self.prefilling.append(rid)
        if math.isnan(self.req.start[rid]):
            self.req.start[rid] = self._now()
        return rid

    # ------------------------------------------------------------------ the loop
    def _reset(self) -> None:
        self.req = _Requests()
        self.waiting: deque[int] = deque()
        self.order: list[int] = []
        self.prefilling: list[int] = []
        self.decoding: list[int] = []
        self.rows: list[tuple] = []
        self.itl: list[tuple[float, int]] = []
        self.batches: list[EngineIteration] = []
        self._t0 = time.perf_counter()
        self._n_in_system = 0

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _caches(self) -> list[PagedKVCache]:
        return [self.cache] if self.draft_cache is None else [self.cache, self.draft_cache]

    def _release(self, rid: int, keep: int = 0) -> None:
        """Free ``rid``'s blocks past the first ``keep`` (in both caches)."""
        for c in self._caches():
            c.free(self.req.blocks[rid][keep:])
        self.req.blocks[rid] = self.req.blocks[rid][:keep]

    def _grow(self, rid: int, tokens: int) -> None:
        need = self.cache.blocks_for(tokens) - self.req.blocks[rid].size
        if need > 0:
            ids = [c.allocate(need) for c in self._caches()]
            if not all(np.array_equal(ids[0], i) for i in ids):  # same history of allocate/free, same ids
                raise RuntimeError("the draft's KV cache fell out of step with the target's")
            self.req.blocks[rid] = np.concatenate([self.req.blocks[rid], ids[0]])

    def _make_room(self) -> None:
        """Preempt (recompute) the latest admitted requests until the next decode step fits."""
        req = self.req
        while self.decoding and self.free_blocks() < 0:
            victim = self.order.pop()
            req.preemptions[victim] += 1
            if victim in self.prefilling:
                self.prefilling.remove(victim)
            else:
                self.decoding.remove(victim)
                # the last generated token is fed by a decode step after the recompute
                req.target[victim] = req.prompt[victim].size + len(req.generated[victim]) - 1
            req.done[victim] = req.draft_done[victim] = 0
            self._release(victim)
            self.waiting.appendleft(victim)

    def _step(self) -> None:
        req = self.req
        begin = self._now()
        idle = math.inf if self._last_end is None else max(0.0, time.perf_counter() - self._last_end)
        if self.decoding:
            self._make_room()
        chunks, decode = self.sched.form_batch(self)
        dec = list(self.decoding) if decode else []
        if not chunks and not dec:
            raise RuntimeError(f"{len(self.waiting)} waiting request(s) can never be admitted "
                               f"(KV cache of {self.cache.n_blocks} blocks)")
        spec = self.draft is not None
        dec_ctx = [req.done[r] for r in dec]  # cached tokens of each decoding sequence before the step
        drafts = tuple(self._draft_len(r) for r in dec) if spec else ()
        work, kinds = [], []
        for rid, c in chunks:
            lo = req.done[rid]
            self._grow(rid, lo + c)
            work.append(SeqChunk(req.tokens(rid)[lo:lo + c], lo, req.blocks[rid]))
            kinds.append((rid, "prefill", c))
        for rid in dec:
            self._grow(rid, req.done[rid] + 1 + self._draft_len(rid))
            if not spec:
                work.append(SeqChunk(np.array([req.generated[rid][-1]]), req.done[rid], req.blocks[rid]))
                kinds.append((rid, "decode", 1))
        start = self._now()
        emitted: dict[int, int] = {}  # request -> tokens it emitted this step
        # a small step (forward and sampling) runs on one thread: a busy core cannot stall it
        with thread_budget(threads_for(self.model.step_flops(work))):
            logits = self.model.forward_cached(self.cache, work)  # (len(work), V)
            if spec and chunks:  # the draft caches the same prompt chunks (its logits are not needed)
                self.draft.forward_cached(self.draft_cache, work)
            emit_rows, emit_rids = [], []
            joined = []
            for row, (rid, kind, c) in enumerate(kinds):
                req.done[rid] += c
                req.draft_done[rid] = req.done[rid]
                if kind == "decode":
                    req.decode_steps[rid] += 1
                    emit_rows.append(row)
                    emit_rids.append(rid)
                elif req.done[rid] == req.target[rid]:
                    self.prefilling.remove(rid)
                    if req.generated[rid]:  # a recompute: its next token comes from a decode step
                        joined.append(rid)
                    else:
                        emit_rows.append(row)
                        emit_rids.append(rid)
            if emit_rows:
                self._sample(logits[emit_rows], emit_rids)
            emitted.update((r, 1) for r in emit_rids)
            if spec and dec:
                emitted.update(self._speculate(dec))
        now = self._now()
        for rid, n in emitted.items():
            req.token_times[rid].extend([now] * n)
            if math.isnan(req.first[rid]):
                req.first[rid] = now
            if len(req.generated[rid]) >= req.output[rid]:
                self._finish(rid, now)
            elif rid not in self.decoding:
                joined.append(rid)
        self.decoding.extend(r for r in joined if r not in self.decoding)
        if dec:
            self.itl.append((now - start, len(dec)))
        # what the iteration did, for fitting a step-cost model (simulations.serving.fitted)
        self.batches.append(EngineIteration([c for _, c in chunks], [req.done[r] - c for r, c in chunks], dec_ctx,
                                            self._now() - begin, "speculative" if spec else "plain", drafts, idle))
        self._last_end = time.perf_counter()
        self.rows.append((start, now - start, 0, 1, int(sum(c for _, c in chunks)), len(dec), len(self.order),
                          len(self.waiting), self.cache.n_blocks - self.cache.n_free, self._n_in_system))

    def _speculate(self, dec: list[int]) -> dict[int, int]:
        """One speculative step for the decoding sequences ``dec``: draft, verify, cut caches back.

        Returns the number of tokens each request emitted (``accepted + 1``).
        """
        req = self.req
        ks = [self._draft_len(r) for r in dec]  # drafts per sequence
        n0 = [req.done[r] for r in dec]  # target-cached tokens; the pending token sits at position n0
        g0 = [len(req.generated[r]) for r in dec]  # index of the first token this step emits
        drafts: list[list[int]] = [[] for _ in dec]
        qs: list[list[np.ndarray]] = [[] for _ in dec]  # the draft's filtered distributions, (V,) float64
        for i in range(max(ks)):
            rows = [j for j, k in enumerate(ks) if k > i]
            work = []
            for j in rows:
                r = dec[j]
                if i == 0:  # catch the draft up (at most one token behind) and feed the pending token
                    lo = req.draft_done[r]
                    work.append(SeqChunk(req.tokens(r)[lo:n0[j] + 1], lo, req.blocks[r]))
                else:
                    work.append(SeqChunk(np.array([drafts[j][-1]]), n0[j] + i, req.blocks[r]))
            logits = self.draft.forward_cached(self.draft_cache, work)  # (rows, V)
            par = _param_rows([req.params[dec[j]] for j in rows])
            q = filtered_probs(logits, **par)  # (rows, V) float64
            seeds = np.array([_token_seed(req.seed[dec[j]], g0[j] + i) for j in rows], dtype=np.uint64)
            toks = sample(logits, **par, seed=seeds)
            for row, j in enumerate(rows):
                drafts[j].append(int(toks[row]))
                qs[j].append(q[row])
        # the target scores the pending token and the drafts of every sequence in one cached forward
        work = [SeqChunk(np.array([req.generated[r][-1]] + drafts[j], dtype=np.int64), n0[j], req.blocks[r])
                for j, r in enumerate(dec)]
        logits = self.model.forward_cached(self.cache, work, all_logits=True)  # (sum(k + 1), V)
        first = np.cumsum([0] + [k + 1 for k in ks])[:-1]  # row of each sequence's first position
        row_params = [req.params[r] for j, r in enumerate(dec) for _ in range(ks[j] + 1)]
        p = filtered_probs(logits, **_param_rows(row_params))  # (sum(k + 1), V) float64
        n_acc = np.zeros(len(dec), dtype=np.int64)
        last = np.full(len(dec), -1, dtype=np.int64)  # the corrected token, or -1 when a fresh draw is due
        for k in sorted(set(ks) - {0}):
            js = [j for j in range(len(dec)) if ks[j] == k]
            a, toks = speculative_verify(
                np.stack([np.stack(qs[j]) for j in js]),  # (G, k, V)
                np.stack([p[first[j]:first[j] + k + 1] for j in js]),  # (G, k + 1, V)
                np.array([drafts[j] for j in js], dtype=np.int64),  # (G, k)
                np.array([_verify_seed(req.seed[dec[j]], g0[j]) for j in js], dtype=np.uint64))
            for g, j in enumerate(js):
                n_acc[j] = a[g]
                if a[g] < k:
                    last[j] = toks[g, a[g]]
        # all drafts accepted (or none made): the next token is a plain draw from the target with the
        # seed the plain engine gives that token
        fresh = np.flatnonzero(last < 0)
        if fresh.size:
            par = _param_rows([req.params[dec[j]] for j in fresh])
            seeds = np.array([_token_seed(req.seed[dec[j]], g0[j] + n_acc[j]) for j in fresh], dtype=np.uint64)
            last[fresh] = sample(logits[first[fresh] + n_acc[fresh]], **par, seed=seeds)
        out = {}
        for j, r in enumerate(dec):
            a, k = int(n_acc[j]), ks[j]
            req.generated[r].extend(drafts[j][:a] + [int(last[j])])
            req.done[r] = n0[j] + a + 1  # the pending token and the accepted drafts
            if k:
                req.draft_done[r] = min(n0[j] + a + 1, n0[j] + k)  # the draft never fed its last draft
                req.spec_drafted[r] += k
                req.spec_examined[r] += min(a + 1, k)
                req.spec_accepted[r] += a
            req.decode_steps[r] += 1
            self._release(r, keep=self.cache.blocks_for(req.done[r]))  # roll both caches back
            out[r] = a + 1
        return out

    def _sample(self, logits: np.ndarray, rids: list[int]) -> None:
        req = self.req
        seeds = np.array([_token_seed(req.seed[r], len(req.generated[r])) for r in rids], dtype=np.uint64)
        toks = sample(logits, **_param_rows([req.params[r] for r in rids]), seed=seeds)
        for r, t in zip(rids, toks.tolist()):
            req.generated[r].append(int(t))

    def _finish(self, rid: int, now: float) -> None:
        self.req.finish[rid] = now
        self.order.remove(rid)
        if rid in self.decoding:
            self.decoding.remove(rid)
        self._release(rid)
        self._n_in_system -= 1

    def _has_work(self) -> bool:
        return bool(self.order) or bool(self.waiting)

    # ------------------------------------------------------------------ entry points
    def _add(self, prompt, output: int, seed: int, params: _Params, arrival: float) -> int:
        t = self.model.check_tokens("prompt", prompt)
        if t.size == 0:
            raise ValueError("a prompt must hold at least one token")
        longest = t.size + output - 1  # tokens cached at the last step (a draft never proposes past it)
        for name, m in (("model", self.model), ("draft", self.draft)):
            if m is not None and longest > m.config.max_position:
                raise ValueError(f"a request of {t.size} prompt + {output} new tokens needs {longest} positions, "
                                 f"beyond the {name}'s context (max_position {m.config.max_position})")
        if self.cache.blocks_for(longest) > self.cache.n_blocks:
            raise ValueError(f"a request of {t.size} prompt + {output} new tokens needs more than the KV cache's "
                             f"{self.cache.n_blocks} blocks of {self.cache.block_size} tokens")
        return self.req.add(t, output, seed, params, arrival)

    def generate(self, prompts, *, max_new_tokens, temperature=1.0, top_k=None, top_p=None, min_p=None,
                 seed=0, pause_s: float = 0.0) -> list[np.ndarray]:
        """Generate ``max_new_tokens`` tokens for every prompt (all arrive at once), in prompt order.

        ``seed``: an int (request ``i`` then draws from the stream ``(seed, i)``) or one int per
        prompt; a request's tokens depend on its prompt, parameters and seed only.
        ``pause_s``: seconds the engine sleeps before every iteration (0: back to back), to measure
        what an iteration costs after an idle gap (``simulations.serving.closed_loop.measure_wake``).
        """
        if isinstance(pause_s, bool) or not isinstance(pause_s, (int, float)) or not (0 <= pause_s <= 60):
            raise ValueError(f"pause_s must be a number of seconds in [0, 60], got {pause_s!r}")
        prompts = list(prompts)
        n = len(prompts)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) \
                or max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            if seed < 0:
                raise ValueError(f"seed must be >= 0, got {seed}")
            seeds = [int(np.random.SeedSequence([int(seed), i]).generate_state(1, dtype=np.uint64)[0])
                     for i in range(n)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != n or any(s < 0 for s in seeds):
                raise ValueError(f"seed must be an int >= 0 or {n} ints >= 0 (one per prompt)")
        params = _Params(float(temperature), 0 if top_k is None else int(top_k),
                         1.0 if top_p is None else float(top_p), 0.0 if min_p is None else float(min_p))
        # the sampling kernel validates these; check them once here so a bad value fails before any work
        sample(np.zeros((1, 2), dtype=np.float32), temperature=params.temperature, top_k=params.top_k,
               top_p=params.top_p, min_p=params.min_p, seed=0)
        self._reset()
        for i, p in enumerate(prompts):
            self._add(p, int(max_new_tokens), seeds[i], params, 0.0)
        for rid in range(n):
            self.waiting.append(rid)
            self._n_in_system += 1
        while self._has_work():
            if pause_s:
                time.sleep(pause_s)
            self._step()
        return [np.asarray(g, dtype=np.int64) for g in self.req.generated]

    def spec_accept(self, rid: int | None = None) -> float | None:
        """Measured acceptance rate of the last run's drafts (of request ``rid``, or of all); None without any.

        The rate is accepted / examined drafts, where a step examines its drafts up to the first
        rejection (the ones after it are never tested): the maximum-likelihood estimate of the
        per-token rate ``a`` of the i.i.d. model behind
        :func:`~scalelab.simulations.serving.cost.expected_tokens_per_step`.
        """
        req = self.req
        rids = range(len(req.prompt)) if rid is None else [rid]
        examined = sum(req.spec_examined[r] for r in rids)
        return sum(req.spec_accepted[r] for r in rids) / examined if examined else None

    def warm_up(self) -> None:
        """Run every code path once (prefill, paged decode, sampling) so JIT loading is not timed."""
        # with a draft, long enough for one full speculative step (drafts, verify kernel)
        self.generate([np.zeros(2, dtype=np.int64), np.ones(3, dtype=np.int64)], max_new_tokens=2 + self.spec_k)

    def serve(self, workload: Workload, *, seed: int = 0, temperature: float = 1.0, top_k=None, top_p=None,
              min_p=None) -> ServingResult:
        """Replay ``workload``'s arrivals in real time; measured latencies as a :class:`ServingResult`.

        Prompts are seeded random token ids of the workload's lengths; each request generates
        exactly its ``output_tokens`` (no end-of-sequence token). The engine is warmed up first
        (:meth:`warm_up`); the clock starts at the first arrival.

        The result also holds ``token_times``: per request, the instant each generated token
        became available (``output_tokens`` entries). With a draft, the tokens of one
        speculative step share the step's end (see the module docstring), so the ITL samples
        (one per decoding sequence and step) are times between such bursts.
        """
        if not isinstance(workload, Workload):
            raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
        self.warm_up()
        rng = np.random.default_rng(seed)
        V = self.model.config.vocab_size
        params = _Params(float(temperature), 0 if top_k is None else int(top_k),
                         1.0 if top_p is None else float(top_p), 0.0 if min_p is None else float(min_p))
        self._reset()
        arrival = workload.arrival - workload.arrival.min()
        for i, (p, o) in enumerate(zip(workload.prompt_tokens.tolist(), workload.output_tokens.tolist())):
            self._add(rng.integers(0, V, int(p)), int(o), int(rng.integers(0, 2**63)), params, arrival[i])
        order = np.argsort(arrival, kind="stable")
        nxt = 0
        self._t0 = time.perf_counter()
        while nxt < len(order) or self._has_work():
            now = self._now()
            while nxt < len(order) and arrival[order[nxt]] <= now:
                self.waiting.append(int(order[nxt]))
                self._n_in_system += 1
                nxt += 1
            if self._has_work():
                self._step()
            elif nxt < len(order):
                time.sleep(max(0.0, arrival[order[nxt]] - self._now()))
        req = self.req
        requests = pd.DataFrame({
            "arrival": arrival, "start": req.start, "first_token": req.first, "finish": req.finish,
            "prompt_tokens": [p.size for p in req.prompt], "output_tokens": req.output,
            "preemptions": req.preemptions, "instance": 0, "decode_steps": req.decode_steps,
            "spec_drafted": req.spec_drafted, "spec_examined": req.spec_examined, "spec_accepted": req.spec_accepted,
        })
        timeline = pd.DataFrame(self.rows, columns=["time", "duration", "instance", "steps", "prefill_tokens",
                                                    "decode_seqs", "running", "queue_len", "kv_blocks",
                                                    "in_system"])
        itl = np.array(self.itl, dtype=np.float64).reshape(-1, 2)  # (decode iterations, 2)
        c = LlamaConfig.from_config(self.model.config)
        config = dict(model=f"LlamaModel({c.n_layers} layers, d {c.d_model})", hw="this CPU",
                      scheduler=type(self.sched).__name__, tp=1, replicas=1, n_gpus=1,
                      max_batch=getattr(self.sched, "max_batch", None), token_budget=self.token_budget,
                      spec_k=self.spec_k, spec_accept=self.spec_accept(), kv_capacity_blocks=self.cache.n_blocks,
                      workload=workload.name)
        result = ServingResult(requests, timeline, config=config, n_gpus=1, slo_ttft=None, slo_tpot=None,
                               itl=(itl[:, 0], itl[:, 1]))
        result.token_times = [np.asarray(t) for t in req.token_times]
        return result


def compare_latencies(measured: ServingResult, predicted: ServingResult) -> pd.DataFrame:
    """TTFT and TPOT p50 / p99 of a measured run beside a prediction (milliseconds) and predicted / measured."""
    ms, ps = measured.summary(), predicted.summary()
    rows = []
    for name, key in (("TTFT", "ttft"), ("TPOT", "tpot")):
        for p in (50, 99):
            m, q = ms[f"{key}_p{p}"] * 1e3, ps[f"{key}_p{p}"] * 1e3
            rows.append({"metric": f"{name} p{p}", "measured_ms": m, "predicted_ms": q,
                         "predicted/measured": q / m if m > 0 else math.nan})
    return pd.DataFrame(rows)
