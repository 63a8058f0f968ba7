"""Benchmarks of the inference-cost model: how long the roofline sweeps take.

The model is pure arithmetic (no Numba), so there is nothing to warm up beyond
importing it; ``setup`` still evaluates each call once so the first timed call
does not pay for module-level work.
"""

from __future__ import annotations

from scalelab.simulations import inference as inf


class RooflineTable:
    """One per-operation table (the ``scalelab inference --ops`` core)."""

    params = (["llama-3-8b", "mixtral-8x7b", "deepseek-v3"], ["prefill", "decode"])
    param_names = ["model", "phase"]

    def setup(self, model, phase):
        inf.roofline_table(model, "h100-sxm", phase, 16, 2048)

    def time_roofline_table(self, model, phase):
        inf.roofline_table(model, "h100-sxm", phase, 16, 2048)


class RequestSweep:
    """A request latency (prefill + every decode step) and the throughput-latency sweep over 11 batch sizes."""

    params = ([128, 2048],)
    param_names = ["gen_len"]

    def setup(self, gen_len):
        inf.request_latency("llama-3-8b", "h100-sxm", batch=16, prompt_len=1024, gen_len=gen_len)

    def time_request_latency(self, gen_len):
        inf.request_latency("llama-3-8b", "h100-sxm", batch=16, prompt_len=1024, gen_len=gen_len)

    def time_throughput_latency_sweep(self, gen_len):
        inf.throughput_latency_sweep("llama-3-8b", "h100-sxm", prompt_len=1024, gen_len=gen_len)

    def time_best_of_n_cost(self, gen_len):
        inf.best_of_n_cost("llama-3-8b", "h100-sxm", n=16, prompt_len=1024, gen_len=gen_len)


class CrossoverSearch:
    """Bisection for the smallest compute-bound decode batch."""

    def time_decode_compute_bound_batch(self):
        inf.decode_compute_bound_batch("llama-3-8b", "h100-sxm", 128)
