"""Capacity planning on Dask against the serial run, measured interleaved in one process.

The bar (>= 1.7x on a 2-worker ``LocalCluster``, cluster start-up included) is a ratio of
two wall times, so both are measured here back to back, round after round, in the same
process: serial, the cluster as ``plan`` runs it (cost-ordered batches), and optionally a
cluster with one task per configuration (``--arms serial,dask,per-config``), the ratios taken
per round (median over rounds). The machine's load average is printed before and after,
since a shared machine moves both numerators and denominators. Same workload and space as
``asv_benchmarks/serving.py:PlanSweep``. Every arm must return the serial table exactly.

Each cluster arm's stderr (the worker processes' too: they inherit it) goes to a temporary
file; the script counts its lines mentioning ``heartbeat`` and its ERROR and WARNING lines,
then prints them, so shutdown noise is measured, not eyeballed.

On a loaded machine the wall-time ratio says little about two idle cores, so the
serial arm also records each configuration's CPU time, and the script replays those
times on two idle workers (each takes the next task when free, as the Dask scheduler
hands them out) for several batch grains, adding the measured cost of starting and
closing an empty cluster: an estimate of the quiet ratio, labelled as such. It also
prints how well ``planning.estimated_cost`` (which orders the work) predicts those times.

Where a parallel arm's wall time goes, from CPU clocks (so a shared machine does not hide
it): every task of the ``dask`` and ``pool`` arms records, in its worker, each
configuration's thread CPU time, the task's wall time and the worker process's CPU time
so far (all threads: event loop, profiler, heartbeats). The script prints per arm: the
seconds before the first task starts (cluster start, worker imports) and after the last
ends (gather, close); the workers' task CPU against the serial arm's CPU for the same
configurations in the same round (above 1: each configuration costs more CPU when both
workers run at once, whatever Dask does); the workers' CPU outside tasks; this process's
CPU (Dask's scheduler, nannies and client live in it); and a replay of the workers' own
task CPU times. The ``pool`` arm runs the same batches on two plain worker processes
(``concurrent.futures``, start-up included): the ceiling two processes reach on this
machine without Dask, the peer the Dask arm is judged against.

Run:  python tools/bench_plan_dask.py [--repeats 1] [--arms serial,dask,pool,per-config]
(one repeat of the two default arms takes about 2 minutes on two idle cores)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time

KW = dict(slo_ttft=0.5, slo_tpot=0.01)
MODEL, HW = "llama-3-8b", "h100-sxm"


def _workload():
    from scalelab.simulations.serving import poisson_workload
    from scalelab.simulations.serving.workload import LogNormal

    return poisson_workload(8.0, 100, prompt_len=LogNormal(1024, 0.5, 4000),
                            output_len=LogNormal(128, 0.5, 1024), seed=0)


def timed_batch(log: str, configs, model, hw, workload, slo_ttft, slo_tpot):
    """``planning.evaluate_batch``, recording each configuration's thread CPU time to ``log`` (one JSON line)."""
    from scalelab.simulations.serving import planning

    start, w0 = time.time(), time.perf_counter()
    rows, cpu = [], []
    for c in configs:
        t0 = time.thread_time()
        rows.append(planning.evaluate_config(c, model, hw, workload, slo_ttft, slo_tpot))
        cpu.append(time.thread_time() - t0)
    rec = {"pid": os.getpid(), "keys": [config_key(c) for c in configs], "cpu": cpu, "start": start,
           "end": time.time(), "wall": time.perf_counter() - w0, "process_cpu": time.process_time()}
    with open(log, "a") as f:  # one short append per task: lines from two processes do not interleave
        f.write(json.dumps(rec) + "\n")
    return rows


def config_key(c: dict) -> str:
    return ",".join(str(c[k]) for k in sorted(c))


def _pool_warm() -> None:
    import scalelab.simulations.serving.planning  # noqa: F401  the import a Dask worker pays at its first task


def _run_pool(workload, log: str):
    """The same cost-ordered batches on two plain worker processes (start-up and imports included)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from scalelab.simulations.serving.planning import (BATCHES_PER_WORKER, cost_batches, default_space,
                                                       estimated_cost, expand_space)

    configs = expand_space(default_space())
    batches = cost_batches([estimated_cost(c, workload) for c in configs], 2 * BATCHES_PER_WORKER)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_warm) as ex:
        futures = [ex.submit(timed_batch, log, [configs[i] for i in b], MODEL, HW, workload, KW["slo_ttft"],
                             KW["slo_tpot"]) for b in batches]
        return [f.result() for f in futures]


def _run(arm: str, workload, n_configs: int, cpu: list[float] | None = None, log: str | None = None):
    from scalelab.simulations.serving import planning
    from scalelab.simulations.serving.planning import plan

    kw = KW
    if arm == "pool":
        return _run_pool(workload, log)
    if arm == "serial":
        real = planning.evaluate_config

        def timed(*a, **k):  # plan() looks evaluate_config up in its module at each call
            t0 = time.process_time()
            try:
                return real(*a, **k)
            finally:
                if cpu is not None:
                    cpu.append(time.process_time() - t0)

        planning.evaluate_config = timed
        try:
            return plan("llama-3-8b", "h100-sxm", workload, scheduler_address=None, **kw)
        finally:
            planning.evaluate_config = real
    extra = {"tasks_per_worker": n_configs} if arm == "per-config" else {}  # a grain this fine: one task each
    real = planning.evaluate_batch
    planning.evaluate_batch = functools.partial(timed_batch, log)  # plan() looks it up at each submit
    try:
        return plan(MODEL, HW, workload, scheduler_address="local", **kw, **extra)
    finally:
        planning.evaluate_batch = real


@contextlib.contextmanager
def stderr_to(path: str):
    """Point file descriptor 2 at ``path`` (child processes started inside inherit it), then restore it."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(fd)
        os.close(saved)


def log_counts(path: str) -> dict[str, int]:
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    return {"heartbeat": sum("heartbeat" in x.lower() for x in lines),
            "ERROR": sum(" ERROR " in x for x in lines), "WARNING": sum(" WARNING " in x for x in lines)}


def makespan(task_seconds: list[float], n_workers: int = 2) -> float:
    """Finish time of ``task_seconds`` handed in order to whichever of ``n_workers`` is free first."""
    free = [0.0] * n_workers
    for t in task_seconds:
        i = free.index(min(free))
        free[i] += t
    return max(free)


def empty_cluster_seconds(n_workers: int = 2) -> float:
    """Wall time to start a LocalCluster like plan()'s, import the simulator in its workers, and close it."""
    import importlib

    from dask.distributed import Client

    from scalelab.simulations.serving.planning import local_cluster

    t0 = time.perf_counter()
    with local_cluster(n_workers) as c:
        with Client(c) as client:
            client.run(importlib.import_module, "scalelab.simulations.serving.planning")
    return time.perf_counter() - t0


def estimate_quality(cpu: list[float], workload) -> None:
    """How well the planner's cost estimate (and a naive one) predicts the measured CPU times."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    from scalelab.simulations.serving.planning import default_space, estimated_cost, expand_space

    configs = expand_space(default_space())
    estimates = {"estimated_cost": [estimated_cost(c, workload) for c in configs],
                 "requests x max_batch": [len(workload) * c["max_batch"] for c in configs]}
    for name, est in estimates.items():
        ratio = np.asarray(cpu) / np.asarray(est)
        print(f"  {name:>22} vs CPU time: Pearson {pearsonr(est, cpu)[0]:.3f}, Spearman {spearmanr(est, cpu)[0]:.3f}, "
              f"CPU s per unit {ratio.min():.2e} to {ratio.max():.2e}")


def quiet_estimate(cpu: list[float], overhead_s: float, workload) -> None:
    from scalelab.simulations.serving.planning import cost_batches, default_space, estimated_cost, expand_space

    est = [estimated_cost(c, workload) for c in expand_space(default_space())]
    total = sum(cpu)
    print(f"quiet-machine estimate (not measured): serial CPU {total:.1f} s over {len(cpu)} configurations; "
          f"cluster start, worker imports and close {overhead_s:.1f} s (measured under the load above)")
    for per_worker in (1, 2, 4, 8, 16, len(cpu)):
        batches = cost_batches(est, 2 * per_worker)
        span = makespan([sum(cpu[i] for i in b) for b in batches])
        print(f"  grain {per_worker:>4} per worker ({len(batches):>3} tasks): 2-worker makespan {span:6.1f} s "
              f"(ideal {total / 2:.1f}), ratio {total / (span + overhead_s):.2f}x with start-up, "
              f"{total / span:.2f}x without")


def where_time_went(recs: list[dict], t0: float, t1: float, wall: float, parent_cpu: float,
                    serial_cpu: dict[str, float] | None) -> str:
    """One arm's wall time taken apart from its workers' task records (see the module docstring)."""
    first, last = min(r["start"] for r in recs), max(r["end"] for r in recs)
    task_cpu = {k: c for r in recs for k, c in zip(r["keys"], r["cpu"])}
    total = sum(task_cpu.values())
    pids = sorted({r["pid"] for r in recs})
    # the last record of a worker holds its process CPU up to then: tasks plus everything else it ran
    other = sum(max(r["process_cpu"] for r in recs if r["pid"] == p) for p in pids) - total
    task_wall = sum(r["wall"] for r in recs)
    # a worker's idle time from the first task's start to the last task's end: waits between its
    # tasks (scheduler round trips) and, at the end, for the other worker to finish (imbalance)
    idle = sum((last - first) - sum(r["end"] - r["start"] for r in recs if r["pid"] == p) for p in pids)
    replay = makespan([sum(r["cpu"]) for r in sorted(recs, key=lambda r: r["start"])], len(pids))
    out = (f"    start-up {first - t0:.1f} s, tasks {last - first:.1f} s, gather+close {t1 - last:.1f} s; "
           f"{len(pids)} workers, {len(recs)} tasks; workers idle in between {idle:.1f} s (gaps and tail)\n"
           f"    workers: task CPU {total:.1f} s in {task_wall:.1f} s of task wall time; CPU outside tasks "
           f"{other:.1f} s (imports, other threads: on Dask its event loop and monitors); this process {parent_cpu:.1f} s CPU "
           f"(scheduler, nannies, client)\n"
           f"    replay of the workers' own task CPU on {len(pids)} idle workers: {replay:.1f} s "
           f"(+ start-up and close {first - t0 + t1 - last:.1f} s = {replay + first - t0 + t1 - last:.1f} s; "
           f"measured {wall:.1f} s)")
    if serial_cpu:
        same = [k for k in task_cpu if k in serial_cpu]
        ratio = sum(task_cpu[k] for k in same) / sum(serial_cpu[k] for k in same)
        out += (f"\n    task CPU / serial CPU of the same {len(same)} configurations this round: {ratio:.3f} "
                "(> 1: a configuration costs more CPU while both workers run)")
    return out


def _same_rows(batches_rows: list[list[dict]], reference) -> bool:
    """Whether the pool arm's rows equal the plan table's rows (same configurations, same values)."""
    import pandas as pd

    from scalelab.simulations.serving.planning import SPACE_KEYS

    pool = pd.DataFrame([row for b in batches_rows for row in b])
    ref = reference.drop(columns="config")
    if sorted(pool.columns) != sorted(ref.columns):
        return False

    def by_config(d):
        return d[list(ref.columns)].sort_values(list(SPACE_KEYS), kind="stable").reset_index(drop=True)

    return by_config(pool).equals(by_config(ref))


def main(argv=None) -> None:
    from scalelab.simulations.serving.planning import default_space, expand_space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", "--rounds", type=int, default=1, help="rounds of all arms, interleaved")
    ap.add_argument("--arms", default="serial,dask", help="comma-separated: serial, dask, pool, per-config")
    ap.add_argument("--save-cpu", help="write the per-configuration CPU seconds of the serial run here")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    unknown = set(arms) - {"serial", "dask", "pool", "per-config"}
    if unknown or args.repeats < 1:
        ap.error(f"unknown arm(s) {sorted(unknown)}" if unknown else "--repeats must be >= 1")
    w = _workload()
    configs = expand_space(default_space())
    n = len(configs)
    print(f"{n} configurations; load average before: {os.getloadavg()}")
    times: dict[str, list[float]] = {a: [] for a in arms}
    cpu: list[float] = []
    reference = None
    noise: dict[str, dict[str, int]] = {}
    for r in range(args.repeats):
        serial_round: dict[str, float] | None = None
        for arm in arms:
            cpu_round: list[float] = []
            log = os.path.join(tempfile.gettempdir(), f"bench_plan_dask_{os.getpid()}_{arm}.log")
            tasks = log + ".tasks"
            with contextlib.suppress(FileNotFoundError):
                os.remove(tasks)
            t0, p0, e0 = time.perf_counter(), time.process_time(), time.time()
            with stderr_to(log) if arm != "serial" else contextlib.nullcontext():
                df = _run(arm, w, n, cpu_round, tasks)
            times[arm].append(time.perf_counter() - t0)
            parent_cpu, e1 = time.process_time() - p0, time.time()
            if arm == "serial":
                serial_round = {config_key(c): x for c, x in zip(configs, cpu_round)}
                if not cpu or sum(cpu_round) < sum(cpu):
                    cpu = cpu_round  # the least disturbed serial round
                print(f"serial CPU time {sum(cpu_round):.1f} s", flush=True)
            if arm == "pool":
                assert reference is None or _same_rows(df, reference), "pool differs from the plan table"
            elif reference is None:
                reference = df
            else:  # every way must return the same table
                assert df.equals(reference), f"{arm} differs from the first run"
            extra = ""
            if arm != "serial":
                counts = log_counts(log)
                for k, v in counts.items():
                    noise.setdefault(arm, {}).setdefault(k, 0)
                    noise[arm][k] += v
                extra = f"  stderr lines: {counts}"
                with open(log, errors="replace") as f:
                    sys.stderr.write(f.read())
                os.remove(log)
            print(f"round {r} {arm:>10}: {times[arm][-1]:6.1f} s  load {os.getloadavg()[0]:.2f}{extra}", flush=True)
            if arm != "serial":
                with open(tasks) as f:
                    recs = [json.loads(line) for line in f]
                os.remove(tasks)
                print(where_time_went(recs, e0, e1, times[arm][-1], parent_cpu, serial_round), flush=True)
    print(f"load average after: {os.getloadavg()}")
    for arm in arms:
        print(f"{arm:>10}: median {statistics.median(times[arm]):6.1f} s  best {min(times[arm]):6.1f} s")
    if "serial" in times:
        for arm in arms:
            if arm != "serial":
                ratios = [s / c for s, c in zip(times["serial"], times[arm])]
                print(f"serial / {arm}: per round {[round(x, 2) for x in ratios]}, "
                      f"median {statistics.median(ratios):.2f}x")
    for arm, counts in noise.items():
        print(f"{arm:>10}: stderr over {args.repeats} run(s): {counts}")
    if cpu:
        estimate_quality(cpu, w)
        quiet_estimate(cpu, empty_cluster_seconds(), w)
        if args.save_cpu:
            with open(args.save_cpu, "w") as f:
                f.write("\n".join(f"{x:.6f}" for x in cpu) + "\n")


if __name__ == "__main__":  # LocalCluster starts worker processes that re-import this module
    main()
