"""Capacity planning: which deployment serves a load within its SLOs on the fewest GPUs.

:func:`plan` simulates the same workload under every configuration of a
search space (scheduler, tensor-parallel degree, replicas, chunk budget,
max batch, prefill/decode split, speculative ``k``) and ranks them by goodput
per GPU. The configurations are independent, so the search is a map: on a
Dask ``LocalCluster`` by default (2 worker processes, one thread each), on an
existing cluster given its scheduler address, or serially with ``None``. Each
simulation is deterministic, so every way returns the same table.

Where a 2-worker sweep's time goes (tools/bench_plan_dask.py records every task's CPU
time in its worker): on a quiet machine (load average 1.0-1.8, AMD EPYC Zen 3, 2 cores) each
configuration cost the workers the same thread CPU as the serial run of the same round (ratio
0.998-1.001 over the 252 default configurations), so workers neither oversubscribe their cores
(one OpenMP/BLAS thread each, no Numba pool) nor pay a first-call cost of note. The serial
sweep took 68.1-71.3 s, Dask 38.1-41.0 s (1.74-1.79x): its tasks' CPU split over two workers
is 33.9-35.5 s, start-up 2.5-3.8 s, gather and close under 1 s. Two plain worker processes
running the same batches took 35.4 s (1.92-2.01x), so Dask's own cost is about 4 s a sweep.
Before :data:`CLUSTER_CONFIG` an idle 2-worker cluster burned about 6% of the two cores (now
about 1%), and in two sweeps at load 9-15 its workers spent 16-21 s of CPU outside tasks and
the scheduler's process 17-21 s (plain worker processes: 2-3 s and 0.1 s). A configuration's
CPU time varies from run to run with the machine's state (the serial sweep took 54-57 s at
the previous quiet measurement and 72-77 s at load 9-10), so compare arms within one run.

On Dask the configurations cost 0.03 to 1.1 s of CPU each (a 30-fold range
over the default space), so the order of the work decides when the last
worker finishes. :func:`estimated_cost` predicts each one's cost from the
workload and the configuration alone; :func:`cost_batches` hands them out
longest first, in batches that shrink to single configurations at the end so
both workers finish together. The workload is scattered to every worker once;
tasks carry only configurations.

:func:`gpus_for_rate` turns the table into the capacity question: replicating
a deployment ``r`` times serves ``r`` times its goodput, so the GPUs a target
rate needs are ``n_gpus * ceil(target / goodput)``, minimised over configurations.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys

import numpy as np
import pandas as pd

from scalelab.simulations.checks import check_count
from scalelab.simulations.serving.cost import expected_tokens_per_step
from scalelab.simulations.serving.engine import simulate
from scalelab.simulations.serving.workload import Workload

__all__ = ["plan", "default_space", "expand_space", "evaluate_config", "gpus_for_rate", "SPACE_KEYS",
           "estimated_cost", "cost_batches"]

SPACE_KEYS = ("scheduler", "tp", "replicas", "token_budget", "max_batch", "n_prefill", "n_decode", "spec_k")
#: Acceptance rate assumed when a configuration drafts tokens (a stated assumption: Leviathan et al. 2023,
#: Table 3, report alpha between about 0.5 and 0.9 depending on the draft and the task).
DEFAULT_SPEC_ACCEPT = 0.7
#: Grain of the Dask batches: each batch holds about ``1 / (n_workers * BATCHES_PER_WORKER)`` of the
#: estimated cost not yet batched, so batches shrink from the big configurations to single cheap ones at
#: the end. Replaying per-configuration CPU times measured by tools/bench_plan_dask.py (252
#: configurations, 0.03 to 1.1 s each) on two workers, see that tool's quiet-machine estimate.
BATCHES_PER_WORKER = 4
#: Decode steps' worth of simulator work per request for its events (arrival, prefill, hand-off, finish)
#: in :func:`estimated_cost`. Measured: over the default space on a 100-request Poisson workload, CPU
#: seconds per estimated unit stay within 4.7 to 6.0e-5 across decoder counts and ``spec_k`` with 10
#: (tools/bench_plan_dask.py prints the correlation of the estimate with the measured costs).
EVENT_STEPS_PER_REQUEST = 10


def default_space() -> dict[str, list]:
    """The default search: 252 configurations over the three dynamic schedulers."""
    return {
        "scheduler": ["continuous", "chunked", "disaggregated"],
        "tp": [1, 2, 4],
        "replicas": [1, 2],
        "token_budget": [256, 512, 1024, 2048],
        "max_batch": [64, 256],
        "n_prefill": [1, 2],
        "n_decode": [1, 2],
        "spec_k": [0, 2, 4],
    }


def expand_space(space: dict[str, list]) -> list[dict]:
    """Every distinct configuration of ``space`` (keys a scheduler ignores are dropped, then duplicates)."""
    if not isinstance(space, dict):
        raise TypeError(f"space must be a dict of lists, got {type(space).__name__}")
    unknown = sorted(set(space) - set(SPACE_KEYS))
    if unknown:
        raise ValueError(f"space has unknown key(s) {unknown}; known: {list(SPACE_KEYS)}")
    full = {**{k: v for k, v in _single_defaults().items()}, **space}
    for k, v in full.items():
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError(f"space[{k!r}] must be a non-empty list, got {v!r}")
    configs, seen = [], set()
    for values in itertools.product(*(full[k] for k in SPACE_KEYS)):
        c = dict(zip(SPACE_KEYS, values))
        if c["scheduler"] == "disaggregated":
            c["replicas"] = 1
        else:
            c["n_prefill"] = c["n_decode"] = 0
        if c["scheduler"] != "chunked":
            c["token_budget"] = 0
        key = tuple(c.values())
        if key not in seen:
            seen.add(key)
            configs.append(c)
    return configs


def _single_defaults() -> dict[str, list]:
    return {"scheduler": ["chunked"], "tp": [1], "replicas": [1], "token_budget": [512], "max_batch": [256],
            "n_prefill": [1], "n_decode": [1], "spec_k": [0]}


def evaluate_config(config: dict, model, hw, workload: Workload, slo_ttft: float, slo_tpot: float,
                    spec_accept: float = DEFAULT_SPEC_ACCEPT) -> dict:
    """Simulate one configuration; a row of the plan (``feasible = False`` with the reason when it does not fit)."""
    kw = dict(scheduler=config["scheduler"], tp=config["tp"], replicas=config["replicas"],
              max_batch=config["max_batch"], slo_ttft=slo_ttft, slo_tpot=slo_tpot, spec_k=config["spec_k"],
              spec_accept=spec_accept if config["spec_k"] else None)
    if config["scheduler"] == "chunked":
        kw["token_budget"] = config["token_budget"]
    if config["scheduler"] == "disaggregated":
        kw.update(n_prefill=config["n_prefill"], n_decode=config["n_decode"])
    row = dict(config)
    try:
        s = simulate(model, hw, workload, **kw).summary()
    except ValueError as exc:
        return {**row, "feasible": False, "error": str(exc), "n_gpus": _gpus(config), "goodput_rps": 0.0,
                "goodput_per_gpu": 0.0}
    keep = ("n_gpus", "goodput_rps", "goodput_per_gpu", "slo_attainment", "throughput_rps", "ttft_p50",
            "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p99", "preemptions")
    return {**row, "feasible": True, "error": "", **{k: s[k].item() if hasattr(s[k], "item") else s[k] for k in keep}}


def _gpus(c: dict) -> int:
    return c["tp"] * (c["n_prefill"] + c["n_decode"] if c["scheduler"] == "disaggregated" else c["replicas"])


def plan(model, hw, workload: Workload, *, slo_ttft: float, slo_tpot: float, space: dict | None = None,
         scheduler_address: str | None = "local", target_rate: float | None = None, progress: bool = False,
         n_workers: int = 2, tasks_per_worker: int = BATCHES_PER_WORKER) -> pd.DataFrame:
    """Rank deployment configurations by goodput per GPU for ``workload`` under the two SLOs.

    Parameters
    ----------
    space : dict of lists over :data:`SPACE_KEYS` (default :func:`default_space`).
    scheduler_address : ``"local"`` (default) starts a ``LocalCluster`` of ``n_workers`` processes with one
        thread each and closes it afterwards; an address (``"tcp://host:8786"``) uses that cluster;
        ``None`` or ``"none"`` runs serially in this process.
    target_rate : requests/s to provision for; adds ``gpus_for_target`` (see :func:`gpus_for_rate`).
    progress : print a progress bar to stderr.
        A script that plans on a ``LocalCluster`` needs an ``if __name__ == "__main__":`` guard:
        the worker processes are spawned and import the script's main module again.
    tasks_per_worker : on Dask, the configurations go out longest first (:func:`estimated_cost`) in
        batches that each hold ``1 / (n_workers * tasks_per_worker)`` of the estimated cost still to
        hand out (:func:`cost_batches`): large batches first, single configurations at the end.

    Returns one row per configuration, sorted by ``goodput_per_gpu`` (ties: fewer GPUs, then search
    order): the configuration, ``feasible``, ``n_gpus``, goodput, SLO attainment and latency percentiles.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload, got {type(workload).__name__}")
    for name, v in (("slo_ttft", slo_ttft), ("slo_tpot", slo_tpot)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
    if target_rate is not None and not (isinstance(target_rate, (int, float)) and target_rate > 0):
        raise ValueError(f"target_rate must be a positive number of requests/s, got {target_rate!r}")
    configs = expand_space(default_space() if space is None else space)
    args = (model, hw, workload, float(slo_ttft), float(slo_tpot))
    if scheduler_address is None or (isinstance(scheduler_address, str) and scheduler_address.lower() == "none"):
        rows = []
        for i, c in enumerate(configs):
            rows.append(evaluate_config(c, *args))
            if progress:
                _bar(i + 1, len(configs))
    elif isinstance(scheduler_address, str):
        check_count(n_workers=n_workers, tasks_per_worker=tasks_per_worker)
        rows = _run_dask(configs, args, scheduler_address, n_workers, progress, tasks_per_worker)
    else:
        raise TypeError(f"scheduler_address must be 'local', an address, 'none' or None, got {scheduler_address!r}")
    df = pd.DataFrame(rows)
    df.insert(0, "config", np.arange(len(df)))
    if target_rate is not None:
        df["gpus_for_target"] = [gpus_for_rate(g, n, target_rate) for g, n in zip(df["goodput_rps"], df["n_gpus"])]
    return df.sort_values(["goodput_per_gpu", "n_gpus", "config"], ascending=[False, True, True],
                          kind="stable").reset_index(drop=True)


def gpus_for_rate(goodput_rps: float, n_gpus: int, target_rate: float) -> float:
    """GPUs to serve ``target_rate`` by replicating a deployment of ``n_gpus`` with ``goodput_rps`` (inf if 0)."""
    if not goodput_rps > 0:
        return math.inf
    return float(n_gpus * math.ceil(target_rate / goodput_rps - 1e-9))


def evaluate_batch(configs: list[dict], model, hw, workload: Workload, slo_ttft: float, slo_tpot: float) -> list[dict]:
    """:func:`evaluate_config` over a list of configurations (one Dask task)."""
    return [evaluate_config(c, model, hw, workload, slo_ttft, slo_tpot) for c in configs]


def estimated_cost(config: dict, workload: Workload, spec_accept: float = DEFAULT_SPEC_ACCEPT) -> float:
    """Relative CPU cost of simulating ``config`` on ``workload`` (for ordering work; not seconds).

    The simulator's work is its events plus the decode steps it prices one at a time. A lone
    decode instance prices a run of identical decode steps in one go, so its cost follows the
    request count (:data:`EVENT_STEPS_PER_REQUEST` each). Two or more decode instances (replicas,
    or disaggregation's decode side) advance in lock step, each stopping at the other's clock, so
    every decode step counts: output tokens over the expected tokens per step.
    """
    cost = EVENT_STEPS_PER_REQUEST * len(workload)
    decoders = config["n_decode"] if config["scheduler"] == "disaggregated" else config["replicas"]
    if decoders > 1:
        k = int(config["spec_k"])
        cost += float(workload.output_tokens.sum()) / expected_tokens_per_step(k, spec_accept if k else 0.0)
    return float(cost)


def cost_batches(costs, grain: int) -> list[list[int]]:
    """Indices of ``costs`` longest first, cut into batches that shrink towards the end.

    Each batch takes items in falling cost until it holds ``1 / grain`` of the cost not yet
    batched (at least one item). Handed to whichever worker is free, the big items go first
    (longest-processing-time order) and the last batches are single cheap items, so the
    workers finish together; the early batches bundle many items, saving per-task overhead.
    ``grain = n_workers * tasks_per_worker``. A grain of at least ``len(costs)`` gives one item
    per batch: in falling order, what is left costs at most (items left) x (this item's cost).
    """
    costs = [float(c) for c in costs]
    if any(not (c >= 0 and math.isfinite(c)) for c in costs):
        raise ValueError(f"costs must be finite and >= 0, got {costs!r}")
    check_count(grain=grain)
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    remaining = sum(costs)
    batches: list[list[int]] = []
    batch: list[int] = []
    held = 0.0
    for i in order:
        batch.append(i)
        held += costs[i]
        if held >= remaining / grain:
            batches.append(batch)
            remaining -= held
            batch, held = [], 0.0
    if batch:
        batches.append(batch)
    return batches


#: Dask settings of the cluster :func:`local_cluster` starts (scheduler and nannies in this process,
#: workers in theirs); they only thin out bookkeeping that serves a dashboard this cluster does not
#: have. Each server's event-loop "tick" (a responsiveness probe) runs every 1 s, not every 20 ms;
#: memory monitors (nanny and worker) every 1 s, not 100 ms (spill and pause thresholds still hold,
#: checked ten times less often); the system monitor every 2 s, not 0.5 s; and workers run no
#: statistical profiler (a thread that samples the task thread's stack every 10 ms, holding the GIL).
#: Measured with tools/plan_cluster_idle.py (CPU clocks, so valid on a busy machine; load average
#: 9-15): an idle 2-worker cluster burned 25-38 ms of CPU per second in each worker and 49-61 ms/s in
#: this process with the defaults (about 6% of two cores), 5-6 and 12-14 ms/s with these settings.
#: During a sweep (tools/bench_plan_dask.py's task records, 63 configurations) the profiler alone
#: took a further 1.7 s of worker CPU per 70 s of tasks. Over the full default sweep (load 5-15), the
#: workers' CPU outside tasks plus the scheduler process's CPU fell from 33-42 s (273-430 s runs,
#: profiler already off) to 8-11 s (118-237 s runs), imports (about 2 s) included.
CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.profile.enabled": False,
}


def local_cluster(n_workers: int):
    """The ``LocalCluster`` :func:`plan` starts: ``n_workers`` processes of one thread, no dashboard.

    The scheduler still serves its health and metrics routes over HTTP; they go to a free
    port on the loopback interface instead of port 8787, which another cluster on the same
    machine may hold (distributed then warns and falls back to a random port on all interfaces).
    Scheduler, nannies and workers run with :data:`CLUSTER_CONFIG` (set while they start; each
    nanny hands its settings to its worker process). Nannies already cap OpenMP, OpenBLAS and
    MKL at one thread per worker, and the simulator starts no Numba thread pool, so two workers
    keep to two cores.
    """
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set(CLUSTER_CONFIG):
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def _run_dask(configs, args, address: str, n_workers: int, progress: bool,
              batches_per_worker: int = BATCHES_PER_WORKER) -> list[dict]:
    from dask.distributed import Client, as_completed

    # Closed in reverse order of opening (client, then cluster), also when opening either fails
    # or a task raises: a scheduler that goes away under a live client leaves it retrying.
    # The cluster then closes its workers before its scheduler. On a heavily loaded machine a
    # worker process may still be finalising the interpreter 4 s after its worker closed, and
    # the nanny kills it with a warning; the results were gathered before, so it changes nothing.
    with contextlib.ExitStack() as stack:
        if address.lower() == "local":
            cluster = stack.enter_context(local_cluster(n_workers))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(address))
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        model, hw, workload, slo_ttft, slo_tpot = args
        # the workload goes to every worker once; tasks then carry only a few small configurations
        wl = client.scatter(workload, broadcast=True)
        batches = cost_batches([estimated_cost(c, workload) for c in configs], n_workers * batches_per_worker)
        # falling priorities keep the batches in this order (the scheduler's own order for independent
        # tasks need not follow submission); each goes to whichever worker frees up first
        futures = [client.submit(evaluate_batch, [configs[i] for i in b], model=model, hw=hw, workload=wl,
                                 slo_ttft=slo_ttft, slo_tpot=slo_tpot, pure=False, priority=len(batches) - j)
                   for j, b in enumerate(batches)]
        if progress:
            size = {f.key: len(b) for f, b in zip(futures, batches)}
            done = 0
            for f in as_completed(futures):
                done += size[f.key]
                _bar(done, len(configs))
        results = client.gather(futures)
    rows: list[dict] = [{}] * len(configs)
    for b, batch_rows in zip(batches, results):
        for i, row in zip(b, batch_rows):
            rows[i] = row
    return rows


def _bar(done: int, total: int, width: int = 30) -> None:
    filled = int(width * done / total)
    end = "\n" if done == total else ""
    sys.stderr.write(f"\rplan [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
    sys.stderr.flush()
