"""Benchmarks of the serving simulator (simulations.serving) and its capacity-planning sweep.

Bars (ratios measured in one run):

* the whole Azure conversation trace (19,366 requests), Llama-3-8B on one
  H100, chunked prefill, under 10 s on one core: ``ConvTraceReplay`` tracks
  requests simulated per second and the replay's seconds; the peer in the same
  run is ``cost_floor``, pricing the same number of iterations with the cost
  model alone (one ``(6,)`` product each), the least any iteration-level
  simulator built on this cost model spends;
* the capacity search over >= 200 configurations on a 2-worker Dask
  ``LocalCluster`` at >= 1.7x the serial run: ``PlanSweep`` times both and
  ``track_speedup`` interleaves them in one process.

What a default run costs: each replay of the whole trace takes seconds and
each benchmark x parameter combination runs in its own process, so the two
rates are tracked on the whole trace only (``ConvTraceRates``; at 2,000
requests they add nothing ``time_simulate`` does not show), and the plan over
the whole space and on a ``LocalCluster`` (a minute of CPU per call here, plus
the cluster's worker processes) runs only with ``SCALELAB_BENCH_FULL=1`` (the
nightly job). The default run times the serial plan over ``SAMPLE_SPACE``, 12
configurations that still cover the three schedulers, so a change to the
planner's per-configuration cost shows up in every run.
"""

from __future__ import annotations

import time

import numpy as np

from asv_benchmarks._util import full_only
from scalelab.simulations.serving import LogNormal, load_trace, plan, poisson_workload, simulate
from scalelab.simulations.serving.cost import StepCostModel
from scalelab.simulations.serving.planning import default_space, expand_space

#: The default run's plan: every scheduler at two tensor-parallel degrees and two speculation depths,
#: one value of each other knob (12 configurations; the full space has 252).
SAMPLE_SPACE = {
    "scheduler": ["continuous", "chunked", "disaggregated"],
    "tp": [1, 4],
    "replicas": [1],
    "token_budget": [512],
    "max_batch": [256],
    "n_prefill": [1],
    "n_decode": [1],
    "spec_k": [0, 2],
}
SPACES = {"sample": SAMPLE_SPACE, "default": default_space()}


class ConvTraceReplay:
    """Replay the Azure conversation trace (``limit`` requests) under each dynamic scheduler."""

    params = ([2000, 19366], ["chunked", "continuous"])
    param_names = ["requests", "scheduler"]
    timeout = 300
    # A whole-trace replay takes seconds: three samples per process are plenty.
    number = 1
    repeat = (1, 3, 20.0)

    def setup(self, requests, scheduler):
        self.w = load_trace("conv", limit=requests)
        simulate("llama-3-8b", "h100-sxm", self.w.head(50), scheduler=scheduler)  # warm imports

    def time_simulate(self, requests, scheduler):
        simulate("llama-3-8b", "h100-sxm", self.w, scheduler=scheduler)


class ConvTraceRates(ConvTraceReplay):
    """Requests simulated per second and the ratio to the cost model's floor, on the whole trace."""

    params = ([19366], ["chunked", "continuous"])
    time_simulate = None  # timed by ConvTraceReplay

    def track_requests_per_second(self, requests, scheduler):
        t0 = time.process_time()
        simulate("llama-3-8b", "h100-sxm", self.w, scheduler=scheduler)
        return requests / (time.process_time() - t0)

    track_requests_per_second.unit = "requests/s"

    def track_ratio_to_cost_floor(self, requests, scheduler):
        """Simulator CPU time over the time to price its iterations one by one with the cost model alone."""
        t0 = time.process_time()
        r = simulate("llama-3-8b", "h100-sxm", self.w, scheduler=scheduler)
        sim = time.process_time() - t0
        cost = StepCostModel("llama-3-8b", "h100-sxm")
        x = np.array([1.0, 256.0, 4.0, 4e5, 3e4, 0.0])  # (6,) a typical mixed iteration
        t0 = time.process_time()
        for _ in range(len(r.timeline)):
            cost.time(x)
        return sim / (time.process_time() - t0)

    track_ratio_to_cost_floor.unit = "x"


class PlanSweep:
    """``plan`` serially and on a 2-worker LocalCluster, over ``SAMPLE_SPACE`` or the default space (252).

    Only the serial plan over ``SAMPLE_SPACE`` runs by default; the cluster and
    the whole space need ``SCALELAB_BENCH_FULL=1`` (see the module docstring).
    The cluster over the sample space is not run: its start-up would dominate.
    """

    params = (["serial", *full_only("local")], ["sample", *full_only("default")])
    param_names = ["scheduler", "space"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, scheduler, space="default"):
        if scheduler == "local" and space == "sample":
            raise NotImplementedError("a LocalCluster over 12 configurations times its own start-up")
        self.w = poisson_workload(8.0, 100, prompt_len=LogNormal(1024, 0.5, 4000),
                                  output_len=LogNormal(128, 0.5, 1024), seed=0)
        self.space = SPACES[space]
        assert space != "default" or len(expand_space(self.space)) >= 200

    def _run(self, scheduler):
        return plan("llama-3-8b", "h100-sxm", self.w, slo_ttft=0.5, slo_tpot=0.01, space=self.space,
                    scheduler_address=None if scheduler == "serial" else "local")

    def time_plan(self, scheduler, space="default"):
        self._run(scheduler)

    def track_speedup(self, scheduler, space="default"):
        """Serial wall time over cluster wall time (cluster start-up included), measured back to back.

        Reported once, under ``("local", "default")``: asv skips the other parameters before
        setup (``skip_params``, asv_runner's per-method skip), so they show as skipped, not failed.
        """
        t0 = time.perf_counter()
        self._run("serial")
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run("local")
        return serial / (time.perf_counter() - t0)

    track_speedup.unit = "x"
    track_speedup.skip_params = [("serial", "sample"), ("serial", "default"), ("local", "sample")]
