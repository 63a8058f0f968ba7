"""Tests of the serving simulator (simulations.serving).

Results checked (source, value, tolerance):
* Queueing theory, exact where it applies: with one sequence at a time and a
  fixed service time D, Poisson arrivals at rate lambda give the M/D/1 mean
  wait of the Pollaczek-Khinchine formula, rho / (2 mu (1 - rho)) with
  rho = lambda D, mu = 1 / D (Kleinrock 1975, "Queueing Systems" vol. 1,
  Eq. 5.73 with a deterministic service time), at rho = 0.3 and the realised
  arrival rate; within 5% over 20,000 requests.
* Little's law, L = lambda W (Little 1961): the time average of requests in
  the system read off the simulator's timeline against arrival rate x mean
  time in system; within 3% (the timeline counts a request that arrives
  during an iteration from the end of that iteration).
* Zero load: a lone request's TTFT is ``prefill_cost`` of its prompt and its
  TPOT the mean of its ``decode_cost`` steps, to rounding (rel 1e-12).
* Conservation: every request finishes, decode steps taken = output tokens - 1
  per request and in the timeline's sum; KV blocks never exceed capacity, also
  with preemptions, and preempted requests finish.
* Behaviour the papers report, as inequalities on one workload:
  Agrawal et al. 2024, "Taming Throughput-Latency Tradeoff in LLM Inference
  with Sarathi-Serve", OSDI, Section 5: chunked prefill lowers TPOT p99 against
  prefill-priority continuous batching (vLLM) at moderate load;
  Zhong et al. 2024, "DistServe", OSDI, Section 6.2: disaggregation gives more
  goodput per GPU than colocation (vLLM) under a tight TPOT SLO;
  static batching (a batch runs to completion) has the worst TTFT under load.
* The Azure 2023 traces (Patel et al. 2024, "Splitwise", ISCA) load with the
  summary statistics of the README shipped beside them (counts exact; span and
  rate to the README's rounding; token statistics exact).
* The Dask search returns exactly the serial search.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.simulations.hardware import Hardware
from scalelab.simulations.inference import decode_cost, kv_cache_bytes_per_token, prefill_cost
from scalelab.simulations.serving import (
    SCHEDULERS, LogNormal, Uniform, Workload, bursty_workload, load_trace, plan, poisson_workload, simulate,
)
from scalelab.simulations.serving.cost import LINKS, StepCostModel, expected_tokens_per_step
from scalelab.simulations.serving.workload import TRACE_DIR

MODEL, HW = "llama-3-8b", "h100-sxm"


# --------------------------------------------------------------------------- queueing theory


def test_md1_mean_wait_matches_pollaczek_khinchine():
    probe = simulate(MODEL, HW, poisson_workload(1.0, 1, prompt_len=128, output_len=2), scheduler="continuous")
    service = float(probe.requests["e2e"].iloc[0])  # D: a 128-token prefill + one decode step, fixed
    w = poisson_workload(0.3 / service, 20_000, prompt_len=128, output_len=2, seed=0)
    r = simulate(MODEL, HW, w, scheduler="continuous", max_batch=1)
    # every request is served in exactly D (one at a time)
    np.testing.assert_allclose(r.requests["finish"] - r.requests["start"], service, rtol=1e-9)
    # the formula at the realised arrival rate; seeds 0-5 gave -1.5% .. +4.0% from it
    rho = w.rate * service
    expected = rho / (2 * (1 / service) * (1 - rho))
    assert r.requests["queueing"].mean() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("scheduler", ["continuous", "chunked"])
def test_littles_law_on_timeline(scheduler):
    w = poisson_workload(6.0, 1000, prompt_len=LogNormal(800, 0.5, 4000), output_len=LogNormal(150, 0.5, 1000),
                         seed=3)
    r = simulate(MODEL, HW, w, scheduler=scheduler)
    tl = r.timeline
    span = r.makespan_s
    area = float((tl["in_system"] * tl["duration"]).sum())  # idle periods hold nobody
    mean_in_system = area / span
    lam = len(w) / span
    assert mean_in_system == pytest.approx(lam * r.requests["e2e"].mean(), rel=0.03)


# --------------------------------------------------------------------------- zero load


@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b", "deepseek-v3"])
@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked"])
def test_lone_request_matches_prefill_and_decode_cost(model, scheduler):
    hw = Hardware("big", peak_flops=989e12, bandwidth_bytes_per_s=3.35e12, memory_bytes=4e12, tdp_w=None)
    for prompt, out in ((1, 2), (37, 5), (1000, 40)):
        w = poisson_workload(1.0, 1, prompt_len=prompt, output_len=out)
        r = simulate(model, hw, w, scheduler=scheduler, token_budget=2048).requests.iloc[0]
        assert r["ttft"] == pytest.approx(prefill_cost(model, hw, batch=1, prompt_len=prompt).time_s, rel=1e-12)
        steps = [decode_cost(model, hw, batch=1, context_len=prompt + i).time_s for i in range(1, out)]
        assert r["tpot"] == pytest.approx(np.mean(steps), rel=1e-12)


def test_cost_model_reproduces_phase_costs_for_batches():
    c = StepCostModel(MODEL, HW)
    for batch, length in ((1, 1), (4, 300), (64, 2049)):
        x = c.aggregates([length] * batch, [0] * batch, [])
        assert c.time(x) == pytest.approx(prefill_cost(MODEL, HW, batch=batch, prompt_len=length).time_s, rel=1e-12)
        x = c.aggregates([], [], [length - 1] * batch)
        assert c.time(x) == pytest.approx(decode_cost(MODEL, HW, batch=batch, context_len=length).time_s, rel=1e-12)


def test_chunked_prefill_of_a_long_prompt_costs_more_than_one_pass():
    # chunks re-read the weights and the cached prefix: TTFT above prefill_cost, not below
    w = poisson_workload(1.0, 1, prompt_len=4000, output_len=2)
    ttft = simulate(MODEL, HW, w, scheduler="chunked", token_budget=512).requests["ttft"].iloc[0]
    assert ttft > prefill_cost(MODEL, HW, batch=1, prompt_len=4000).time_s


def test_disaggregated_lone_request_adds_the_kv_transfer():
    prompt, out = 1000, 20
    w = poisson_workload(1.0, 1, prompt_len=prompt, output_len=out)
    r = simulate(MODEL, HW, w, scheduler="disaggregated", link="infiniband-ndr").requests.iloc[0]
    assert r["ttft"] == pytest.approx(prefill_cost(MODEL, HW, batch=1, prompt_len=prompt).time_s, rel=1e-12)
    transfer = kv_cache_bytes_per_token(MODEL) * prompt / LINKS["infiniband-ndr"].bandwidth_bytes_per_s
    decode = sum(decode_cost(MODEL, HW, batch=1, context_len=prompt + i).time_s for i in range(1, out))
    assert r["finish"] - r["first_token"] == pytest.approx(transfer + decode, rel=1e-12)


def test_tensor_parallel_splits_work_and_adds_allreduce():
    one, two = StepCostModel(MODEL, HW), StepCostModel(MODEL, HW, tp=2)
    x = one.aggregates([512], [0], [])
    allreduce = 2 * 32 * (2 * 1 / 2) * 512 * 4096 * 2 / LINKS["nvlink4"].bandwidth_bytes_per_s
    assert two.time(x) == pytest.approx(one.time(x) / 2 + allreduce, rel=1e-12)


def test_speculative_tokens_per_step_leviathan():
    # Leviathan et al. 2023, Eq. 1: (1 - a^(k+1)) / (1 - a)
    assert expected_tokens_per_step(4, 0.8) == pytest.approx((1 - 0.8**5) / 0.2)
    assert expected_tokens_per_step(0, None) == 1.0
    assert expected_tokens_per_step(3, 1.0) == 4.0
    w = poisson_workload(1.0, 1, prompt_len=500, output_len=201)
    plain = simulate(MODEL, HW, w).requests.iloc[0]
    spec = simulate(MODEL, HW, w, spec_k=4, spec_accept=0.8).requests.iloc[0]
    steps = int(np.ceil(200 / expected_tokens_per_step(4, 0.8)))
    assert spec["decode_steps"] == steps and plain["decode_steps"] == 200
    assert spec["e2e"] < plain["e2e"]  # memory-bound decode: verifying 5 tokens costs about one step


# --------------------------------------------------------------------------- conservation and memory


def _small_gpu() -> Hardware:
    # an H100 with 20 GiB: Llama-3-8B's 15 GiB of weights leave room for ~24k tokens of KV cache
    return Hardware("H100 with 20 GiB", peak_flops=989e12, bandwidth_bytes_per_s=3.35e12, memory_bytes=20 * 2**30,
                    tdp_w=None)


@pytest.mark.parametrize("scheduler", ["static", "continuous", "chunked", "disaggregated"])
def test_conservation_and_kv_capacity_under_preemption(scheduler):
    w = poisson_workload(20.0, 300, prompt_len=Uniform(500, 3000), output_len=Uniform(100, 800), seed=5)
    r = simulate(MODEL, _small_gpu(), w, scheduler=scheduler)
    req, tl = r.requests, r.timeline
    assert req["finished"].all()
    np.testing.assert_array_equal(req["decode_steps"], req["output_tokens"] - 1)
    assert int((tl["decode_seqs"] * tl["steps"]).sum()) == int((req["output_tokens"] - 1).sum())
    assert tl["kv_blocks"].max() <= r.config["kv_capacity_blocks"]
    assert (req["first_token"] >= req["start"]).all() and (req["start"] >= req["arrival"]).all()
    if scheduler in ("continuous", "chunked"):
        assert req["preemptions"].sum() > 0  # the point of the small GPU: preempted requests still finished
    if scheduler == "static":
        assert req["preemptions"].sum() == 0  # static reserves prompt + output blocks up front


def test_horizon_reports_unfinished():
    w = poisson_workload(50.0, 400, prompt_len=2000, output_len=100, seed=1)
    r = simulate(MODEL, HW, w, horizon_s=3.0)
    assert 0 < r.requests["finished"].sum() < len(w)
    assert r.requests.loc[~r.requests["finished"], "finish"].isna().all()


def test_replicas_split_the_load_and_are_deterministic():
    w = poisson_workload(20.0, 200, prompt_len=LogNormal(1000, 0.5, 4000), output_len=LogNormal(100, 0.5, 800),
                         seed=2)
    one = simulate(MODEL, HW, w, replicas=1).summary()
    a = simulate(MODEL, HW, w, replicas=2, router="round_robin")
    b = simulate(MODEL, HW, w, replicas=2, router="round_robin")
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert set(a.requests["instance"]) == {0, 1}
    assert a.summary()["e2e_p50"] < one["e2e_p50"]


# --------------------------------------------------------------------------- what the papers report


def _moderate_load() -> Workload:
    return poisson_workload(6.0, 800, prompt_len=LogNormal(1024, 0.6, 8000), output_len=LogNormal(128, 0.6, 1024),
                            seed=1)


def test_sarathi_chunked_prefill_lowers_tpot_p99():
    w = _moderate_load()
    cont = simulate(MODEL, HW, w, scheduler="continuous").summary()
    chunk = simulate(MODEL, HW, w, scheduler="chunked", token_budget=512).summary()
    assert chunk["tpot_p99"] < cont["tpot_p99"]


def test_static_batching_has_the_worst_ttft_under_load():
    w = _moderate_load()
    s = {name: simulate(MODEL, HW, w, scheduler=name).summary() for name in ("static", "continuous", "chunked")}
    for pct in ("ttft_p50", "ttft_p99"):
        assert s["static"][pct] > max(s["continuous"][pct], s["chunked"][pct])


def test_distserve_disaggregation_wins_goodput_per_gpu_under_tight_tpot():
    # prefill-heavy traffic, a TPOT SLO just above an unloaded decode step (~5 ms here)
    w = poisson_workload(16.0, 800, prompt_len=LogNormal(2048, 0.5, 8000), output_len=LogNormal(64, 0.5, 1024),
                         seed=2)
    slo = dict(slo_ttft=0.2, slo_tpot=0.006)
    colocated = simulate(MODEL, HW, w, scheduler="continuous", replicas=2, **slo).summary()
    disagg = simulate(MODEL, HW, w, scheduler="disaggregated", n_prefill=1, n_decode=1, **slo).summary()
    assert colocated["n_gpus"] == disagg["n_gpus"] == 2
    assert disagg["goodput_per_gpu"] > colocated["goodput_per_gpu"]


# --------------------------------------------------------------------------- workloads and traces


def _readme_summary() -> dict[str, list[float]]:
    text = (TRACE_DIR / "README.md").read_text()
    rows = {}
    for name in ("code", "conv"):
        line = re.search(rf"^\| {name} \|(.*)\|$", text, re.M).group(1)
        rows[name] = [float(v.replace(",", "")) for v in re.findall(r"[\d,.]+", line)]
    return rows


@pytest.mark.parametrize("name", ["code", "conv"])
def test_azure_traces_match_their_readme(name):
    n, span, rate, p_med, p_99, p_mean, o_med, o_mean = _readme_summary()[name]
    w = load_trace(name)
    assert len(w) == n
    assert w.duration_s == pytest.approx(span, abs=0.5)
    assert w.rate == pytest.approx(rate, abs=0.005)
    p, o = w.prompt_tokens, w.output_tokens
    assert np.median(p) == p_med and round(np.percentile(p, 99)) == p_99 and round(p.mean()) == p_mean
    assert np.median(o) == o_med and round(o.mean()) == o_mean
    assert np.all(np.diff(w.arrival) >= 0) and w.arrival[0] == 0.0


def test_trace_scaling_and_limit():
    w = load_trace("code", rate_scale=2.0, limit=1000)
    base = load_trace("code", limit=1000)
    assert len(w) == 1000
    np.testing.assert_allclose(w.arrival, base.arrival / 2.0)
    thin = base.sample(0.5, seed=0)
    assert 400 < len(thin) < 600


def test_bursty_workload_has_the_requested_cv():
    w = bursty_workload(10.0, 20_000, cv=3.0, prompt_len=100, output_len=10, seed=0)
    gaps = np.diff(w.arrival)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)


# --------------------------------------------------------------------------- capacity planning


def test_plan_on_dask_equals_serial():
    w = poisson_workload(8.0, 100, prompt_len=LogNormal(1024, 0.5, 4000), output_len=LogNormal(64, 0.5, 512), seed=3)
    space = {"scheduler": ["continuous", "chunked", "disaggregated"], "tp": [1, 2]}
    serial = plan(MODEL, HW, w, slo_ttft=0.3, slo_tpot=0.01, space=space, scheduler_address=None, target_rate=40.0)
    # a coarse grain: batches of several configurations in cost order, reassembled in search order
    cluster = plan(MODEL, HW, w, slo_ttft=0.3, slo_tpot=0.01, space=space, scheduler_address="local",
                   target_rate=40.0, tasks_per_worker=1)
    pd.testing.assert_frame_equal(serial, cluster)
    assert len(serial) == 6 and serial["feasible"].all()
    assert serial["goodput_per_gpu"].is_monotonic_decreasing


def test_local_cluster_runs_with_its_settings_and_one_thread_per_worker():
    """plan()'s cluster: CLUSTER_CONFIG in scheduler and workers, one task thread, OpenMP/BLAS at one thread."""
    import dask
    from dask.distributed import Client

    from scalelab.simulations.serving.planning import CLUSTER_CONFIG, local_cluster

    def settings(dask_worker):
        return ({k: dask.config.get(k) for k in CLUSTER_CONFIG}, "profile" in dask_worker.periodic_callbacks,
                dask_worker._tick_interval, dask_worker.state.nthreads, os.environ.get("OMP_NUM_THREADS"),
                os.environ.get("OPENBLAS_NUM_THREADS"))

    before = {k: dask.config.get(k) for k in CLUSTER_CONFIG}
    with local_cluster(1) as cluster, Client(cluster) as client:
        assert list(client.run(settings).values()) == [(CLUSTER_CONFIG, False, 1.0, 1, "1", "1")]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler._tick_interval) == 1.0
    assert {k: dask.config.get(k) for k in CLUSTER_CONFIG} == before != CLUSTER_CONFIG  # this process untouched


@pytest.mark.parametrize("costs, grain", [
    ([0.05] * 9 + [0.6] * 9 + [1.1, 0.03], 8), ([3.0, 1.0, 2.0], 2), ([1.0] * 7, 3), ([5.0], 4), ([], 4),
    ([0.0, 0.0, 2.0], 2), ([0.2, 0.9, 0.1, 0.5, 0.4], 100)])
def test_cost_batches_go_longest_first_and_shrink_to_the_remaining_cost(costs, grain):
    from scalelab.simulations.serving.planning import cost_batches

    batches = cost_batches(costs, grain)
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(len(costs)), key=lambda i: (-costs[i], i))  # every item once, longest first
    assert all(batches)
    remaining = sum(costs)
    for b in batches[:-1]:  # each batch stops at the first item that brings it to 1/grain of what is left
        held = sum(costs[i] for i in b)
        assert held >= remaining / grain - 1e-12
        assert len(b) == 1 or held - costs[b[-1]] < remaining / grain
        remaining -= held
    if grain >= len(costs):
        assert all(len(b) == 1 for b in batches)


def test_cost_batches_reject_bad_costs_and_grain():
    from scalelab.simulations.serving.planning import cost_batches

    for costs in ([1.0, -1.0], [float("nan")], [float("inf")]):
        with pytest.raises(ValueError, match="costs"):
            cost_batches(costs, 2)
    with pytest.raises(ValueError, match="grain"):
        cost_batches([1.0], 0)


def test_estimated_cost_counts_lock_step_decode_steps():
    from scalelab.simulations.serving.cost import expected_tokens_per_step
    from scalelab.simulations.serving.planning import EVENT_STEPS_PER_REQUEST, estimated_cost, expand_space

    w = poisson_workload(4.0, 30, prompt_len=200, output_len=50, seed=0)
    events = EVENT_STEPS_PER_REQUEST * 30
    configs = expand_space({"scheduler": ["chunked", "disaggregated"], "replicas": [1, 2], "n_decode": [1, 2],
                            "spec_k": [0, 3]})
    for c in configs:
        decoders = c["n_decode"] if c["scheduler"] == "disaggregated" else c["replicas"]
        steps = 30 * 50 / expected_tokens_per_step(c["spec_k"], 0.7) if decoders > 1 else 0.0
        assert estimated_cost(c, w) == pytest.approx(events + steps)
    # one decode instance: the request count alone; drafting cuts the steps of lock-stepped instances
    lone = [estimated_cost(c, w) for c in configs if c["replicas"] == 1 and c["n_decode"] == 1]
    assert set(lone) == {events}
    two = {c["spec_k"]: estimated_cost(c, w) for c in configs if c["replicas"] == 2}
    assert two[0] > two[3] > events


def test_plan_rejects_bad_worker_counts():
    w = poisson_workload(1.0, 3)
    for kw in (dict(n_workers=0), dict(tasks_per_worker=0), dict(tasks_per_worker=1.5)):
        with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
            plan(MODEL, HW, w, slo_ttft=1.0, slo_tpot=0.1, scheduler_address="local", **kw)


def test_plan_marks_configs_that_do_not_fit():
    w = poisson_workload(1.0, 20, prompt_len=500, output_len=20)
    df = plan("llama-3-70b", "a100-80gb", w, slo_ttft=1.0, slo_tpot=0.1,
              space={"scheduler": ["continuous"], "tp": [1, 4]}, scheduler_address=None)
    by_tp = df.set_index("tp")
    assert not by_tp.loc[1, "feasible"] and "tp" in by_tp.loc[1, "error"]
    assert by_tp.loc[4, "feasible"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(scheduler="fifo"), "unknown scheduler"),
    (dict(slo_ttft=0), "slo_ttft"),
    (dict(slo_tpot=-1.0), "slo_tpot"),
    (dict(tp=0), "tp"),
    (dict(replicas=1.5), "replicas"),
    (dict(spec_k=2, spec_accept=1.5), "spec_accept"),
    (dict(router="random"), "router"),
    (dict(token_budget=0), "token_budget"),
])
def test_simulate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate(MODEL, HW, poisson_workload(1.0, 3), **kwargs)


def test_simulate_rejects_unknown_option_and_non_workload():
    with pytest.raises(TypeError, match="unknown option"):
        simulate(MODEL, HW, poisson_workload(1.0, 3), chunk=5)
    with pytest.raises(TypeError, match="workload"):
        simulate(MODEL, HW, pd.DataFrame({"arrival": [0.0]}))


def test_model_that_does_not_fit_says_so():
    with pytest.raises(ValueError, match="does not fit.*tp"):
        simulate("llama-3-70b", "a100-40gb", poisson_workload(1.0, 3))
    with pytest.raises(ValueError, match="longest request"):
        simulate(MODEL, _small_gpu(), poisson_workload(1.0, 2, prompt_len=200_000, output_len=10))


@pytest.mark.parametrize("kwargs, match", [
    (dict(rate=-1.0, n=5), "rate"),
    (dict(rate=1.0, n=0), "n"),
    (dict(rate=1.0, n=5, prompt_len=0), "prompt_len"),
    (dict(rate=1.0, n=5, output_len="long"), "output_len"),
])
def test_workload_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        poisson_workload(**kwargs)


def test_trace_files_with_missing_columns_or_unsorted_times(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival,prompt_tokens\n0,10\n")
    with pytest.raises(ValueError, match="columns"):
        load_trace(bad)
    unsorted = tmp_path / "unsorted.csv"
    unsorted.write_text("arrival,prompt_tokens,output_tokens\n0,10,5\n2,10,5\n1,10,5\n")
    with pytest.raises(ValueError, match="not sorted"):
        load_trace(unsorted)
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="output_tokens"):
        Workload(pd.DataFrame({"arrival": [0.0], "prompt_tokens": [3], "output_tokens": [0]}))


def test_plan_rejects_bad_space_and_slo():
    w = poisson_workload(1.0, 3)
    with pytest.raises(ValueError, match="slo_tpot"):
        plan(MODEL, HW, w, slo_ttft=1.0, slo_tpot=0.0, scheduler_address=None)
    with pytest.raises(ValueError, match="unknown key"):
        plan(MODEL, HW, w, slo_ttft=1.0, slo_tpot=0.1, space={"gpus": [1]}, scheduler_address=None)


def test_scheduler_names():
    assert SCHEDULERS == ("static", "continuous", "chunked", "disaggregated")


# --------------------------------------------------------------------------- command line


def test_cli_serve_simulate_prints_latency_table(capsys):
    from scalelab.cli.cli import main

    code = main(["serve", "simulate", "--qps", "4", "--requests", "100", "--slo-ttft", "0.5", "--slo-tpot", "0.05"])
    out = capsys.readouterr().out
    assert code == 0
    assert "TTFT" in out and "TPOT" in out and "goodput" in out


@pytest.mark.parametrize("argv, message", [
    (["serve", "simulate", "--scheduler", "fifo", "--requests", "5"], "unknown scheduler"),
    (["serve", "simulate", "--qps", "-2"], "--qps"),
    (["serve", "simulate", "--slo-tpot", "0"], "--slo-tpot"),
    (["serve", "simulate", "--model", "deepseek-v3", "--hw", "h100-sxm", "--tp", "8", "--requests", "5"],
     "does not fit even at tp 8"),
    (["serve", "plan", "--slo-ttft", "0.5"], "--slo-tpot is required"),
])
def test_cli_serve_bad_input_is_one_line_exit_2(capsys, argv, message):
    from scalelab.cli.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_serve_trace_with_missing_columns(capsys, tmp_path):
    from scalelab.cli.cli import main

    bad = tmp_path / "t.csv"
    bad.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,5\n")
    assert main(["serve", "simulate", "--trace", str(bad)]) == 2
    assert "needs columns" in capsys.readouterr().err


# --------------------------------------------------------------------------- property: conservation for any deployment


@settings(max_examples=25)
@given(
    scheduler=st.sampled_from(SCHEDULERS),
    tp=st.sampled_from([1, 2]),
    replicas=st.integers(1, 3),
    max_batch=st.sampled_from([1, 4, 64]),
    token_budget=st.sampled_from([16, 300, 2048]),
    spec_k=st.sampled_from([0, 3]),
    rate=st.floats(1.0, 200.0),
    seed=st.integers(0, 2**16),
)
def test_any_deployment_conserves_tokens_and_respects_capacity(scheduler, tp, replicas, max_batch, token_budget,
                                                               spec_k, rate, seed):
    w = poisson_workload(rate, 40, prompt_len=Uniform(1, 3000), output_len=Uniform(1, 600), seed=seed)
    # 22 GiB: room for ~39k tokens (~16k beside a draft model), so fast arrivals preempt
    gpu = Hardware("H100 with 22 GiB", peak_flops=989e12, bandwidth_bytes_per_s=3.35e12, memory_bytes=22 * 2**30,
                   tdp_w=None)
    r = simulate(MODEL, gpu, w, scheduler=scheduler, tp=tp, replicas=replicas, max_batch=max_batch,
                 token_budget=token_budget, spec_k=spec_k, spec_accept=0.6 if spec_k else None,
                 n_prefill=replicas, n_decode=2)
    req, tl = r.requests, r.timeline
    assert req["finished"].all()
    owed = np.ceil((req["output_tokens"] - 1) / expected_tokens_per_step(spec_k, 0.6 if spec_k else None))
    np.testing.assert_array_equal(req["decode_steps"], owed)
    assert int((tl["decode_seqs"] * tl["steps"]).sum()) == int(owed.sum())
    assert tl["kv_blocks"].max() <= r.config["kv_capacity_blocks"]
    assert (req["arrival"] <= req["start"]).all() and (req["start"] <= req["first_token"]).all()
    assert (req["first_token"] <= req["finish"]).all()
    assert (tl["duration"] > 0).all()
