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

Run:  python tools/bench_plan_dask.py [--repeats 1] [--arms serial,dask,per-config]
(one repeat of the two default arms takes about 2 minutes on two idle cores)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time


def _workload():
    from scalelab.simulations.serving import poisson_workload
    from scalelab.simulations.serving.workload import LogNormal

    return poisson_workload(8.0, 100, prompt_len=LogNormal(1024, 0.5, 4000),
                            output_len=LogNormal(128, 0.5, 1024), seed=0)


def _run(arm: str, workload, n_configs: int, cpu: list[float] | None = None):
    from scalelab.simulations.serving import planning
    from scalelab.simulations.serving.planning import plan

    kw = dict(slo_ttft=0.5, slo_tpot=0.01)
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
    return plan("llama-3-8b", "h100-sxm", workload, scheduler_address="local", **kw, **extra)


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


def main(argv=None) -> None:
    from scalelab.simulations.serving.planning import default_space, expand_space

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", "--rounds", type=int, default=1, help="rounds of all arms, interleaved")
    ap.add_argument("--arms", default="serial,dask", help="comma-separated: serial, dask, per-config")
    ap.add_argument("--save-cpu", help="write the per-configuration CPU seconds of the serial run here")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    unknown = set(arms) - {"serial", "dask", "per-config"}
    if unknown or args.repeats < 1:
        ap.error(f"unknown arm(s) {sorted(unknown)}" if unknown else "--repeats must be >= 1")
    w = _workload()
    n = len(expand_space(default_space()))
    print(f"{n} configurations; load average before: {os.getloadavg()}")
    times: dict[str, list[float]] = {a: [] for a in arms}
    cpu: list[float] = []
    reference = None
    noise: dict[str, dict[str, int]] = {}
    for r in range(args.repeats):
        for arm in arms:
            cpu_round: list[float] = []
            log = os.path.join(tempfile.gettempdir(), f"bench_plan_dask_{os.getpid()}_{arm}.log")
            t0 = time.perf_counter()
            with stderr_to(log) if arm != "serial" else contextlib.nullcontext():
                df = _run(arm, w, n, cpu_round)
            if arm == "serial" and (not cpu or sum(cpu_round) < sum(cpu)):
                cpu = cpu_round  # the least disturbed serial round
                print(f"serial CPU time {sum(cpu):.1f} s", flush=True)
            times[arm].append(time.perf_counter() - t0)
            if reference is None:
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
