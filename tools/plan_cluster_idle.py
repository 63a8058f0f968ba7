"""CPU an idle ``planning.local_cluster`` burns per second, with Dask's defaults and with ``CLUSTER_CONFIG``.

CPU clocks, not wall time, so the figures hold on a shared machine: for each variant, in
turn (defaults, ours, defaults, ours, ...), start a 2-worker cluster, import the simulator in
the workers, wait 3 s, then count over ``--seconds`` the CPU time of the worker processes
and of this process (where the scheduler, the nannies and the client run).

Run:  python tools/plan_cluster_idle.py [--rounds 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import importlib
import os
import time


def idle_burn(settings: dict, seconds: float) -> tuple[float, float]:
    """(CPU ms per second of each worker, of this process) of an idle cluster started under ``settings``."""
    import psutil
    from dask.distributed import Client

    from scalelab.simulations.serving import planning

    me = psutil.Process()
    saved = planning.CLUSTER_CONFIG
    planning.CLUSTER_CONFIG = settings
    try:
        cluster = planning.local_cluster(2)
    finally:
        planning.CLUSTER_CONFIG = saved
    with cluster, Client(cluster) as client:
        client.run(importlib.import_module, "scalelab.simulations.serving.planning")
        time.sleep(3)
        workers = [k for k in me.children(recursive=True) if "spawn_main" in " ".join(k.cmdline())]
        w0, p0, t0 = [k.cpu_times() for k in workers], me.cpu_times(), time.perf_counter()
        time.sleep(seconds)
        w1, p1, dt = [k.cpu_times() for k in workers], me.cpu_times(), time.perf_counter() - t0
    w = sum(b.user + b.system - a.user - a.system for a, b in zip(w0, w1)) / len(workers)
    return 1e3 * w / dt, 1e3 * (p1.user + p1.system - p0.user - p0.system) / dt


def main(argv=None) -> None:
    from scalelab.simulations.serving.planning import CLUSTER_CONFIG

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    for r in range(args.rounds):
        for name, settings in (("Dask defaults", {}), ("CLUSTER_CONFIG", CLUSTER_CONFIG)):
            w, p = idle_burn(settings, args.seconds)
            print(f"round {r} {name:>14}: each worker {w:5.1f} ms CPU/s, this process {p:5.1f} ms CPU/s; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":  # LocalCluster starts worker processes that re-import this module
    main()
