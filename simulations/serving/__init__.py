"""Serving under load: a request-level simulator of LLM serving and capacity planning.

=========================  ====================================================================
module                      holds
=========================  ====================================================================
:mod:`.workload`            requests (arrival, prompt, output): Poisson, bursty, traces (Azure 2023)
:mod:`.cost`                the per-operation roofline of a mixed iteration; TP all-reduces; links
:mod:`.memory`              paged KV blocks: how many an instance holds
:mod:`.schedulers`          static, continuous (prefill priority), chunked prefill, disaggregated
:mod:`.engine`              the iteration-level loop, router, preemption: :func:`simulate`
:mod:`.metrics`             :class:`ServingResult`: TTFT, TPOT, ITL, goodput, time series
:mod:`.planning`            :func:`plan`: the deployment search, serial or on Dask
:mod:`.live`                the live CPU engine: continuous batching of a real model on our kernels
:mod:`.fitted`              a step cost fitted to the live engine's iterations
:mod:`.closed_loop`         the simulator's predictions against the live engine's measurements
=========================  ====================================================================

Every step duration comes from a ``ModelConfig`` x ``Hardware`` through the
roofline of :mod:`simulations.inference`, or from a cost fitted to the live
engine (:mod:`.fitted`); none is typed by hand.
"""

from scalelab.simulations.serving.cost import LINKS, Link, StepCostModel, expected_tokens_per_step, op_coefficients
from scalelab.simulations.serving.engine import simulate
from scalelab.simulations.serving.memory import BLOCK_TOKENS, kv_capacity_blocks
from scalelab.simulations.serving.metrics import ServingResult
from scalelab.simulations.serving.planning import default_space, plan
from scalelab.simulations.serving.schedulers import (
    SCHEDULERS, ChunkedPrefill, ContinuousBatching, Disaggregated, StaticBatching,
)
from scalelab.simulations.serving.workload import (
    Empirical, LogNormal, Uniform, Workload, bursty_workload, load_trace, poisson_workload,
)

__all__ = [
    "Workload", "Uniform", "LogNormal", "Empirical", "poisson_workload", "bursty_workload", "load_trace",
    "simulate", "ServingResult", "plan", "default_space",
    "StaticBatching", "ContinuousBatching", "ChunkedPrefill", "Disaggregated", "SCHEDULERS",
    "StepCostModel", "op_coefficients", "expected_tokens_per_step", "Link", "LINKS",
    "kv_capacity_blocks", "BLOCK_TOKENS",
]
