"""The serving simulator: iteration-level loops of engine instances fed by a router.

Each instance (one model on ``tp`` devices) repeats: its scheduler forms a
batch (prefill chunks + a decode step of its decoding sequences), the batch's
duration comes from :class:`~simulations.serving.cost.StepCostModel`, the
clock advances. Requests reach instances through a router (round-robin or
least outstanding tokens); with disaggregation, prefill instances hand each
request's KV cache to a decode instance after a transfer over the link.

Two things keep a long trace cheap (the Azure conversation trace is ~4
million generated tokens):

* a decoding sequence is not touched per step: the instance keeps a step
  counter ``D``, and a sequence that joined the decode set with ``kv`` cached
  tokens at counter ``D0`` holds ``kv + (D - D0) * E`` tokens at ``D`` (``E``
  tokens per step, 1 without speculative decoding) and finishes at a counter
  fixed when it joined;
* pure-decode stretches are advanced in one go: while nothing can arrive,
  finish or run out of memory, consecutive decode steps form the same batch,
  so the instance prices all of them as one ``(k, 6)`` matrix product and
  jumps to the first step that ends at or after the next event.

Semantics: a request's prefill emits its first token; decode step ``i``
attends to ``prompt + i`` tokens (as in
:func:`simulations.inference.request_latency`). When a decode step needs
more KV blocks than are free, the most recently admitted running request is
preempted by recompute (vLLM's policy): its blocks are freed, it goes back to
the front of its instance's queue, and its prefill is redone over its prompt
and the tokens it had generated.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

import numpy as np
import pandas as pd

from scalelab.simulations.inference import ModelConfig, get_model, kv_cache_bytes_per_token
from scalelab.simulations.hardware import get_hardware
from scalelab.simulations.serving.cost import StepCostModel, expected_tokens_per_step, get_draft_model, get_link
from scalelab.simulations.serving.memory import (
    BLOCK_TOKENS, GPU_MEMORY_UTILIZATION, activation_reserve_bytes, blocks_for, kv_capacity_blocks,
)
from scalelab.simulations.serving.metrics import ServingResult
from scalelab.simulations.serving.schedulers import (
    DEFAULT_MAX_PREFILL_TOKENS, ChunkedPrefill, Disaggregated, make_scheduler,
)
from scalelab.simulations.serving.workload import Workload

__all__ = ["simulate", "Instance", "ROUTERS"]

ROUTERS = ("round_robin", "least_tokens")
MAX_STRETCH_STEPS = 2048  # longest pure-decode stretch priced at once (bounds the (k, 6) matrix)


class _Requests:
    """Per-request state shared by all instances (plain lists: scalar access is the hot path)."""

    def __init__(self, w: Workload, steps_per_request: np.ndarray) -> None:
        self.n = len(w)
        self.arrival = w.arrival.tolist()
        self.prompt = w.prompt_tokens.tolist()
        self.output = w.output_tokens.tolist()
        self.target = list(self.prompt)  # tokens the next prefill must cover (prompt, + generated after a preemption)
        self.done = [0] * self.n  # tokens of ``target`` prefilled so far
        self.steps_left = steps_per_request.tolist()  # decode steps still owed
        nan = math.nan
        self.start = [nan] * self.n
        self.first = [nan] * self.n
        self.finish = [nan] * self.n
        self.preemptions = [0] * self.n
        self.instance = [-1] * self.n
        self.decode_steps = [0] * self.n  # decode steps taken (over every stint between preemptions)
        self.joined_at = [0] * self.n  # the instance's step counter when the request last joined its decode set


class Instance:
    """One engine instance: its queue, its running sequences, its KV blocks and its clock."""

    def __init__(self, index: int, role: str, sched, cost: StepCostModel, draft: StepCostModel | None,
                 spec_k: int, tokens_per_step: float, capacity_blocks: int, req: _Requests, sim) -> None:
        self.index, self.role, self.sched, self.cost, self.draft = index, role, sched, cost, draft
        self.spec_k = spec_k
        self.tokens_per_decode = spec_k + 1  # tokens each decoding sequence puts through the target per step
        self.tokens_per_step = tokens_per_step  # tokens a decode step emits per sequence on average
        self.capacity = capacity_blocks
        self.req, self.sim = req, sim
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.order: list[int] = []  # running requests in admission order (preemption victim: the last)
        self.prefilling: list[int] = []  # running requests whose prefill is not complete
        self.pf_blocks = 0  # blocks held by ``prefilling``
        self.D = 0  # decode steps taken by this instance
        self.d_rid = np.zeros(0, dtype=np.int64)  # (S,) decoding requests
        self.d_base = np.zeros(0)  # (S,) cached tokens at D = 0 (extrapolated): kv = base + D * E
        self.d_end = np.zeros(0, dtype=np.int64)  # (S,) value of D at which each finishes
        self.outstanding = 0  # prompt + output tokens routed here and not finished (router)
        self._base_sum = 0.0  # sum of d_base, kept with the set so a step needs no pass over it
        self._next_end = math.inf  # min(d_end)
        self._blocks_at: tuple[float, int] = (-1.0, 0)  # (D + steps ahead, blocks): the last block count
        self._idle_gap = math.inf  # idle seconds before the next iteration (idle since the start)

    # ------------------------------------------------------------------ state the schedulers read
    @property
    def n_running(self) -> int:
        return len(self.order)

    @property
    def n_decoding(self) -> int:
        return self.d_rid.size

    def has_work(self) -> bool:
        return bool(self.order) or bool(self.waiting)

    def _decode_blocks(self, steps_ahead: float) -> int:
        at = self.D + steps_ahead
        if self._blocks_at[0] != at:  # a step, a join or a leave changes it; schedulers ask several times
            kv = self.d_base + at * self.tokens_per_step  # (S,)
            self._blocks_at = (at, int(np.ceil(kv / BLOCK_TOKENS).sum()))
        return self._blocks_at[1]

    def used_blocks(self) -> int:
        """Blocks held now."""
        return self.pf_blocks + (self._decode_blocks(0) if self.d_rid.size else 0)

    def free_blocks(self) -> int:
        """Blocks left after the decoding sequences take their next step."""
        return self.capacity - self.pf_blocks - (self._decode_blocks(1) if self.d_rid.size else 0)

    # ------------------------------------------------------------------ admission
    def enqueue(self, rid: int, t: float, front: bool = False) -> None:
        if not self.has_work():
            if self._idle_gap != math.inf:  # idle since its last iteration ended at ``clock``
                self._idle_gap = max(0.0, t - self.clock)
            self.clock = max(self.clock, t)
        (self.waiting.appendleft if front else self.waiting.append)(rid)

    def admit(self) -> int:
        """Move the head of the queue into the running set, to be prefilled."""
        rid = self.waiting.popleft()
        self.order.append(rid)
        self.prefilling.append(rid)
        if math.isnan(self.req.start[rid]):
            self.req.start[rid] = self.clock
        return rid

    def admit_prefilled(self) -> int:
        """Move the head of the queue straight into the decode set (its KV cache arrived by transfer)."""
        rid = self.waiting.popleft()
        self.order.append(rid)
        self._join_decode([rid], [self.req.target[rid]])
        return rid

    def _join_decode(self, rids, kvs) -> None:
        steps = [self.req.steps_left[r] for r in rids]
        for r in rids:
            self.req.joined_at[r] = self.D
        self.d_rid = np.concatenate([self.d_rid, np.asarray(rids, dtype=np.int64)])
        self.d_base = np.concatenate([self.d_base, np.asarray(kvs, dtype=np.float64) - self.D * self.tokens_per_step])
        self.d_end = np.concatenate([self.d_end, self.D + np.asarray(steps, dtype=np.int64)])
        self._changed()

    def _leave_decode(self, keep: np.ndarray) -> None:
        self.d_rid, self.d_base, self.d_end = self.d_rid[keep], self.d_base[keep], self.d_end[keep]
        self._changed()

    def _changed(self) -> None:
        self._base_sum = float(self.d_base.sum())
        self._next_end = int(self.d_end.min()) if self.d_end.size else math.inf
        self._blocks_at = (-1.0, 0)

    # ------------------------------------------------------------------ memory
    def _make_room(self) -> None:
        """Preempt (recompute) the latest admitted requests until the next decode step fits."""
        req = self.req
        while self.d_rid.size and self.free_blocks() < 0:
            victim = self.order.pop()
            req.preemptions[victim] += 1
            if victim in self.prefilling:
                self.prefilling.remove(victim)
                self.pf_blocks -= blocks_for(req.done[victim])
            else:
                i = int(np.flatnonzero(self.d_rid == victim)[0])
                left = int(self.d_end[i] - self.D)
                req.steps_left[victim] = left
                req.decode_steps[victim] += self.D - req.joined_at[victim]
                owed = req.output[victim] - 1
                generated = 1 + min(owed, int(round((owed / self.tokens_per_step - left) * self.tokens_per_step)))
                req.target[victim] = req.prompt[victim] + max(generated, 1)
                self._leave_decode(self.d_rid != victim)
            req.done[victim] = 0
            if self.role == "decode":
                # a decode-only instance cannot recompute: the request goes back through a prefill instance
                self.outstanding -= req.prompt[victim] + req.output[victim]
                self.sim.requeue_for_prefill(victim, self.clock)
            else:
                self.enqueue(victim, self.clock, front=True)

    # ------------------------------------------------------------------ one iteration (or a stretch)
    def step(self, horizon: float) -> None:
        if self.d_rid.size:
            self._make_room()
        chunks, decode = self.sched.form_batch(self)
        n_dec = self.d_rid.size if decode else 0
        if not chunks and not n_dec:
            raise RuntimeError(
                f"instance {self.index} has {len(self.waiting)} waiting request(s) it can never admit "
                f"(KV capacity {self.capacity} blocks)")
        wake = self._take_wake()
        if not chunks:
            # a pure-decode batch repeats until something arrives (if it could be admitted), finishes or overflows
            arrivals_matter = not self.waiting and self.sched.admits_while_running
            self._stretch(horizon if arrivals_matter else self.sim.other_busy_clock(self), wake)
            return
        self._iterate(chunks, n_dec, wake)

    def _take_wake(self) -> float:
        """Extra seconds of this iteration for the idle gap before it (a cost model's ``wake``, if it has one)."""
        gap, self._idle_gap = self._idle_gap, 0.0
        wake = getattr(self.cost, "wake", None)
        return 0.0 if wake is None or gap <= 0 else float(wake(gap))

    def _decode_aggregates(self, n: int, kv_sum: float):
        """``(T, S, P, K)`` contributions of a decode step over ``n`` sequences holding ``kv_sum`` cached tokens."""
        q = self.tokens_per_decode
        return q * n, q * n, q * kv_sum + n * q * (q + 1) / 2, kv_sum + n * q

    def _iterate(self, chunks, n_dec: int, wake: float = 0.0) -> None:
        req = self.req
        t = s = pairs = kvr = 0.0
        for rid, c in chunks:
            o = req.done[rid]
            t += c
            s += 1
            pairs += c * o + c * (c + 1) / 2
            kvr += o + c
        draft_s = 0.0
        if n_dec:
            kv_sum = self._base_sum + n_dec * self.D * self.tokens_per_step
            dt, ds, dp, dk = self._decode_aggregates(n_dec, kv_sum)
            t, s, pairs, kvr = t + dt, s + ds, pairs + dp, kvr + dk
            if self.draft is not None:
                x_draft = (1.0, n_dec, n_dec, kv_sum + n_dec, kv_sum + n_dec, self.draft.touched(n_dec))
                draft_s = self.spec_k * self.draft.time(x_draft)
        dur = self.cost.time((1.0, t, s, pairs, kvr, self.cost.touched(t))) + draft_s + wake
        start = self.clock
        self.clock = start + dur
        ptoks = int(sum(c for _, c in chunks))
        # prefill progress
        finished_prefill = []
        for rid, c in chunks:
            before = req.done[rid]
            req.done[rid] = before + c
            self.pf_blocks += blocks_for(before + c) - blocks_for(before)
            if req.done[rid] == req.target[rid]:
                finished_prefill.append(rid)
        if n_dec:
            self.D += 1
            self.sim.itl_one.append((dur, n_dec))
        self.sim.record(self, start, dur, 1, ptoks, n_dec)
        if n_dec:
            self._finish_decodes()
        if finished_prefill:
            self._prefill_done(finished_prefill)

    def _prefill_done(self, rids) -> None:
        req = self.req
        join, kvs = [], []
        for rid in rids:
            self.prefilling.remove(rid)
            self.pf_blocks -= blocks_for(req.target[rid])
            if math.isnan(req.first[rid]):
                req.first[rid] = self.clock
            if req.steps_left[rid] == 0:
                self._finish(rid)
            elif self.role == "prefill":
                self.order.remove(rid)
                self.sim.handoff(self, rid)
            else:
                join.append(rid)
                kvs.append(req.target[rid])
        if join:
            self._join_decode(join, kvs)

    def _finish(self, rid: int) -> None:
        self.req.finish[rid] = self.clock
        self.req.steps_left[rid] = 0
        self.order.remove(rid)
        self.outstanding -= self.req.prompt[rid] + self.req.output[rid]
        self.sim.n_in_system -= 1

    def _finish_decodes(self) -> None:
        if self.D >= self._next_end:
            done = self.d_end <= self.D
            for rid in self.d_rid[done].tolist():
                self.req.decode_steps[rid] += self.D - self.req.joined_at[rid]
                self._finish(rid)
            self._leave_decode(~done)

    def _stretch(self, horizon: float, wake: float = 0.0) -> None:
        """Advance ``k >= 1`` identical pure-decode steps: up to the first finish, memory limit or ``horizon``.

        ``wake``: extra seconds of the first step (it follows an idle gap).
        """
        e = self.tokens_per_step
        kv0 = self.d_base + self.D * e  # (S,)
        n = kv0.size
        k = int(min(self._next_end - self.D, MAX_STRETCH_STEPS))
        # memory: blocks after step j are sum(ceil((kv0 + (j + 1) e) / B)); keep them within what is free
        room = self.capacity - self.pf_blocks
        if (kv0.sum() + k * e * n) / BLOCK_TOKENS + n > room:
            lo, hi = 1, k  # step 1 fits (room was made); find the last j <= k that fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if int(np.ceil((kv0 + mid * e) / BLOCK_TOKENS).sum()) <= room:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        kv_sum = float(kv0.sum())
        # price a short window first: the next arrival usually comes within a few dozen steps
        window = min(k, 64)
        while True:
            times = self._stretch_times(n, kv_sum, window)  # (window,)
            times[0] += wake
            cum = np.cumsum(times)  # (window,)
            reach = horizon - self.clock
            if window == k or cum[-1] >= reach:
                break
            window = min(k, 4 * window)
        k = window
        if horizon < math.inf:
            k = min(k, int(np.searchsorted(cum, reach, side="left")) + 1)
        start = self.clock
        self.clock = start + float(cum[k - 1])
        self.D += k
        self.sim.record_itl(times[:k], n)
        self.sim.record(self, start, self.clock - start, k, 0, n)
        self._finish_decodes()

    def _stretch_times(self, n: int, kv_sum: float, k: int) -> np.ndarray:
        """Durations of the next ``k`` pure-decode steps of ``n`` sequences holding ``kv_sum`` tokens now."""
        e = self.tokens_per_step
        j = np.arange(k, dtype=np.float64)  # (k,)
        dt, ds, dp, dk = self._decode_aggregates(n, kv_sum)
        x = np.empty((k, 6))  # (k, 6)
        x[:, 0], x[:, 1], x[:, 2] = 1.0, dt, ds
        x[:, 3] = dp + self.tokens_per_decode * n * e * j  # every sequence's context grows by e per step
        x[:, 4] = dk + n * e * j
        x[:, 5] = self.cost.touched(dt)
        times = self.cost.time(x)  # (k,)
        if self.draft is not None:
            xd = np.empty((k, 6))  # (k, 6)
            xd[:, 0], xd[:, 1], xd[:, 2] = 1.0, n, n
            xd[:, 3] = xd[:, 4] = kv_sum + n + n * e * j
            xd[:, 5] = self.draft.touched(n)
            times = times + self.spec_k * self.draft.time(xd)
        return times


class _Simulation:
    """The global loop: arrivals, routing, hand-offs, and which instance steps next."""

    def __init__(self, req: _Requests, router: str, horizon_s: float) -> None:
        self.req = req
        self.router = router
        self.horizon_s = horizon_s
        self.instances: list[Instance] = []
        self.entry: list[Instance] = []  # where arrivals go
        self.decoders: list[Instance] = []  # where hand-offs go (disaggregation)
        self.handoffs: list[tuple[float, int]] = []  # heap of (ready time, request)
        self.link_free: dict[int, float] = {}
        self.transfer_s_per_token = 0.0
        self.n_in_system = 0
        self.rr = 0
        self.rows: list[tuple] = []
        self.itl: list[tuple] = []  # (step durations, sequences) of stretches
        self.itl_one: list[tuple] = []  # (duration, sequences) of single iterations

    # ------------------------------------------------------------------ records
    def record(self, inst: Instance, start, dur, steps, ptoks, n_dec) -> None:
        self.rows.append((start, dur, inst.index, steps, ptoks, n_dec, len(inst.order), len(inst.waiting),
                          inst.used_blocks(), self.n_in_system))

    def record_itl(self, times: np.ndarray, n: int) -> None:
        self.itl.append((times, n))

    # ------------------------------------------------------------------ routing and hand-offs
    def _pick(self, pool: list[Instance]) -> Instance:
        if len(pool) == 1:
            return pool[0]
        if self.router == "round_robin":
            self.rr += 1
            return pool[(self.rr - 1) % len(pool)]
        return min(pool, key=lambda i: (i.outstanding, i.index))

    def arrive(self, rid: int, t: float) -> None:
        inst = self._pick(self.entry)
        inst.outstanding += self.req.prompt[rid] + self.req.output[rid]
        self.req.instance[rid] = inst.index
        self.n_in_system += 1
        inst.enqueue(rid, t)

    def handoff(self, inst: Instance, rid: int) -> None:
        start = max(inst.clock, self.link_free.get(inst.index, 0.0))
        ready = start + self.req.target[rid] * self.transfer_s_per_token
        self.link_free[inst.index] = ready
        inst.outstanding -= self.req.prompt[rid] + self.req.output[rid]
        heapq.heappush(self.handoffs, (ready, rid))

    def requeue_for_prefill(self, rid: int, t: float) -> None:
        inst = self._pick(self.entry)
        self.req.done[rid] = 0
        inst.outstanding += self.req.prompt[rid] + self.req.output[rid]
        inst.enqueue(rid, t, front=True)

    def other_busy_clock(self, me: Instance) -> float:
        return min((i.clock for i in self.instances if i is not me and i.has_work()), default=math.inf)

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        arrival, n = self.req.arrival, self.req.n
        nxt = 0
        while True:
            busy = None
            for inst in self.instances:
                if inst.has_work() and (busy is None or inst.clock < busy.clock):
                    busy = inst
            t_busy = busy.clock if busy is not None else math.inf
            t_arr = arrival[nxt] if nxt < n else math.inf
            t_hand = self.handoffs[0][0] if self.handoffs else math.inf
            if min(t_busy, t_arr, t_hand) == math.inf or min(t_busy, t_arr, t_hand) > self.horizon_s:
                break
            if t_arr <= t_busy and t_arr <= t_hand:
                self.arrive(nxt, t_arr)
                nxt += 1
                continue
            if t_hand <= t_busy:
                ready, rid = heapq.heappop(self.handoffs)
                dec = min(self.decoders, key=lambda i: (i.outstanding, i.index))
                dec.outstanding += self.req.prompt[rid] + self.req.output[rid]
                self.req.instance[rid] = dec.index
                dec.enqueue(rid, ready)
                continue
            # the earliest busy instance steps; it must not run past the next event that could change its batch
            # (a decode instance also stops at the next arrival: a prefill it triggers may hand a request over)
            horizon = min(t_arr, t_hand) if busy.role == "decode" else t_arr
            if len(self.instances) > 1:
                horizon = min(horizon, self.other_busy_clock(busy))
            busy.step(horizon)


def simulate(model, hw, workload: Workload, *, scheduler="chunked", tp: int = 1, replicas: int = 1,
             max_batch: int | None = None, token_budget: int = 512, slo_ttft: float | None = None,
             slo_tpot: float | None = None, spec_k: int = 0, spec_accept: float | None = None,
             **options) -> ServingResult:
    """Serve ``workload`` with ``replicas`` instances of ``model`` on ``tp`` x ``hw`` each.

    Parameters
    ----------
    scheduler : ``"static"``, ``"continuous"``, ``"chunked"``, ``"disaggregated"`` or a scheduler object.
    tp : tensor-parallel degree of every instance.
    replicas : data-parallel instances behind the router (colocated schedulers).
    max_batch : sequences an instance holds at once (default 256, vLLM's ``max_num_seqs``).
    token_budget : tokens per iteration of chunked prefill (Sarathi-Serve's budget).
    slo_ttft, slo_tpot : seconds; with both, the summary reports goodput.
    spec_k, spec_accept : speculative decoding: ``k`` drafted tokens per step, acceptance rate ``a``.

    Options
    -------
    n_prefill, n_decode : instances of each kind for ``"disaggregated"`` (default 1 and 1).
    link : link preset between the devices of an instance (default ``"nvlink4"``).
    transfer_link : link the KV cache crosses under disaggregation (default: ``link``).
    router : ``"round_robin"`` or ``"least_tokens"`` (default).
    max_prefill_tokens : prompt tokens per prefill-priority iteration (default 8192).
    draft_model : draft model for speculative decoding (default ``"llama-3.2-1b"``).
    efficiency_compute, efficiency_bandwidth : achieved / peak (default 1.0).
    utilization : fraction of device memory the engine uses (default 0.9, vLLM's).
    reserve_bytes : activation reserve per device (default: :func:`~simulations.serving.memory.activation_reserve_bytes`).
    dtype_bytes : bytes per value (default 2).
    horizon_s : stop the clock here; requests not finished are reported with ``finished = False``.
    cost_model : an object with ``time(x)`` and ``touched(tokens)`` that prices iterations instead of
        the roofline, e.g. a :class:`~simulations.serving.fitted.FittedStepCost` fitted to a real
        engine (not with ``spec_k``).
    kv_blocks : KV blocks of 16 tokens per instance, instead of sizing the cache from ``hw``'s memory
        (to replay a real engine whose cache size is known).
    """
    known = {"n_prefill", "n_decode", "link", "transfer_link", "router", "max_prefill_tokens", "draft_model",
             "efficiency_compute", "efficiency_bandwidth", "utilization", "reserve_bytes", "dtype_bytes",
             "horizon_s", "cost_model", "kv_blocks"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"simulate() got unknown option(s) {unknown}; known: {sorted(known)}")
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload (see poisson_workload, load_trace), got {type(workload).__name__}")
    m: ModelConfig = get_model(model)
    h = get_hardware(hw)
    for name, v in (("tp", tp), ("replicas", replicas)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be an int >= 1 or None, got {max_batch!r}")
    for name, v in (("slo_ttft", slo_ttft), ("slo_tpot", slo_tpot)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v))):
            raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
    router = options.get("router", "least_tokens")
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    horizon_s = options.get("horizon_s", math.inf)
    if not (isinstance(horizon_s, (int, float)) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a positive number of seconds, got {horizon_s!r}")
    e_tokens = expected_tokens_per_step(spec_k, spec_accept)
    sched = make_scheduler(scheduler, max_batch=max_batch, token_budget=token_budget,
                           max_prefill_tokens=options.get("max_prefill_tokens", DEFAULT_MAX_PREFILL_TOKENS),
                           n_prefill=options.get("n_prefill", 1), n_decode=options.get("n_decode", 1),
                           link=options.get("transfer_link", options.get("link", "nvlink4")))
    dtype_bytes = options.get("dtype_bytes", 2)
    cost = StepCostModel(m, h, tp=int(tp), link=options.get("link", "nvlink4"),
                         efficiency_compute=options.get("efficiency_compute", 1.0),
                         efficiency_bandwidth=options.get("efficiency_bandwidth", 1.0), dtype_bytes=dtype_bytes)
    custom = options.get("cost_model")
    if custom is not None:
        if not (callable(getattr(custom, "time", None)) and callable(getattr(custom, "touched", None))):
            raise TypeError(f"cost_model must have time(x) and touched(tokens) methods, got {type(custom).__name__}")
        if spec_k:
            raise ValueError("cost_model prices the target model only; it cannot be combined with spec_k")
        cost = custom
    draft = None
    if spec_k:
        draft = StepCostModel(get_draft_model(options.get("draft_model", "llama-3.2-1b")), h, tp=int(tp),
                              link=options.get("link", "nvlink4"),
                              efficiency_compute=options.get("efficiency_compute", 1.0),
                              efficiency_bandwidth=options.get("efficiency_bandwidth", 1.0), dtype_bytes=dtype_bytes)
    mb = getattr(sched, "max_batch", 256)
    per_iter_tokens = (sched.token_budget if isinstance(sched, ChunkedPrefill)
                       else max(getattr(sched, "max_prefill_tokens", 0), int(workload.prompt_tokens.max())))
    reserve = options.get("reserve_bytes")
    if reserve is None:
        reserve = activation_reserve_bytes(m, max_tokens=per_iter_tokens, max_seqs=mb * (spec_k + 1), tp=int(tp),
                                           dtype_bytes=dtype_bytes)
    cap = kv_capacity_blocks(m, h, tp=int(tp), utilization=options.get("utilization", GPU_MEMORY_UTILIZATION),
                             reserve_bytes=reserve, dtype_bytes=dtype_bytes)
    if options.get("kv_blocks") is not None:
        cap = options["kv_blocks"]
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
            raise ValueError(f"kv_blocks must be an int >= 1, got {cap!r}")
        cap = int(cap)
    elif draft is not None:  # the draft's weights and cache share the memory: shrink the target's blocks to match
        d_per_tok = kv_cache_bytes_per_token(draft.model, dtype_bytes=dtype_bytes)
        t_per_tok = kv_cache_bytes_per_token(m, dtype_bytes=dtype_bytes)
        cap = int((cap - draft.model.params_total * dtype_bytes / tp / (t_per_tok / tp * BLOCK_TOKENS))
                  * t_per_tok / (t_per_tok + d_per_tok))
    longest = int((workload.prompt_tokens + workload.output_tokens).max())
    if blocks_for(longest + math.ceil(e_tokens)) > cap:
        raise ValueError(f"the longest request ({longest} tokens) needs more KV cache than one instance of "
                         f"{m.name} on {tp} x {h.name} holds ({cap * BLOCK_TOKENS} tokens); use a larger tp")
    owed = workload.output_tokens - 1  # (n,) tokens after the first
    steps = np.ceil(owed / e_tokens).astype(np.int64)  # (n,)
    req = _Requests(workload, steps)
    sim = _Simulation(req, router, float(horizon_s))
    if isinstance(sched, Disaggregated):
        link = get_link(sched.link)
        sim.transfer_s_per_token = kv_cache_bytes_per_token(m, dtype_bytes=dtype_bytes) / (tp * link.bandwidth_bytes_per_s)
        roles = ["prefill"] * sched.n_prefill + ["decode"] * sched.n_decode
        n_gpus = tp * (sched.n_prefill + sched.n_decode)
    else:
        roles = ["colocated"] * replicas
        n_gpus = tp * replicas
    for i, role in enumerate(roles):
        own = sched
        if isinstance(sched, Disaggregated):
            own = sched.prefill_scheduler() if role == "prefill" else sched.decode_scheduler()
        inst = Instance(i, role, own, cost, draft, int(spec_k), e_tokens, cap, req, sim)
        sim.instances.append(inst)
        (sim.decoders if role == "decode" else sim.entry).append(inst)
    sim.run()
    requests = pd.DataFrame({
        "arrival": req.arrival, "start": req.start, "first_token": req.first, "finish": req.finish,
        "prompt_tokens": req.prompt, "output_tokens": req.output, "preemptions": req.preemptions,
        "instance": req.instance, "decode_steps": req.decode_steps,
    })
    timeline = pd.DataFrame(sim.rows, columns=["time", "duration", "instance", "steps", "prefill_tokens",
                                               "decode_seqs", "running", "queue_len", "kv_blocks", "in_system"])
    one = np.array(sim.itl_one, dtype=np.float64).reshape(-1, 2)  # (iterations, 2)
    itl_times = np.concatenate([one[:, 0]] + [t for t, _ in sim.itl])
    itl_weights = np.concatenate([one[:, 1]] + [np.full(t.size, float(n)) for t, n in sim.itl])
    config = dict(model=m.name, hw=h.name, scheduler=type(sched).__name__, tp=int(tp), replicas=len(roles),
                  n_gpus=n_gpus, max_batch=mb, token_budget=token_budget, spec_k=int(spec_k),
                  spec_accept=spec_accept, kv_capacity_blocks=cap, workload=workload.name)
    return ServingResult(requests, timeline, config=config, n_gpus=n_gpus, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                         itl=(itl_times, itl_weights))
