"""The latency model at its bounds: long generations in bounded memory, one definition of the last step."""

import tracemalloc

import numpy as np
import pytest

from scalelab.simulations import inference as inf


def test_request_latency_memory_does_not_grow_with_gen_len():
    tracemalloc.start()
    inf.request_latency("llama-3-8b", "h100-sxm", batch=1, prompt_len=16, gen_len=2_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20  # one float64 array of the whole generation would be 16 MB, several are made per op


def test_request_latency_work_does_not_grow_with_gen_len(monkeypatch):
    # the decode steps are summed in closed form: the roofline's operations are built
    # the same number of times, on arrays of the same size, for 2 tokens or 16M
    from scalelab.simulations import roofline

    seen = []
    real_ops = roofline._ops

    def spy(m, phase, batch, seq_len, dt):
        seen.append(np.size(seq_len))
        return real_ops(m, phase, batch, seq_len, dt)

    monkeypatch.setattr(roofline, "_ops", spy)
    calls = []
    for gen in (2, 1000, inf.MAX_TOKENS - 16):
        seen.clear()
        inf.request_latency("llama-3-8b", "h100-sxm", batch=1, prompt_len=16, gen_len=gen)
        calls.append(list(seen))
    assert calls[0] == calls[1] == calls[2] and max(calls[0]) <= 2
    tracemalloc.start()
    inf.request_latency("llama-3-8b", "h100-sxm", batch=1, prompt_len=16, gen_len=inf.MAX_TOKENS - 16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 256 * 2**10  # the chunked sum held 512 KB per array, several per operation


SLOW_RIDGE = inf.Hardware("ridge 2 FLOP/B", peak_flops=2e12, bandwidth_bytes_per_s=1e12, memory_bytes=None,
                          tdp_w=None)  # attention turns compute-bound a few tokens in: the lines cross


@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b", "deepseek-v3", "jamba-v0.1", "mamba-2.8b"])
@pytest.mark.parametrize("hw", ["h100-sxm", SLOW_RIDGE], ids=["h100", "ridge2"])
def test_closed_form_decode_sum_equals_the_step_by_step_sum(model, hw):
    m, h = inf.get_model(model), inf.get_hardware(hw)
    for batch, prompt, gen in [(1, 1, 2), (1, 1, 3), (64, 1, 40), (4, 300, 257), (1, 3, 9)]:
        contexts = prompt + np.arange(1, gen, dtype=np.float64)  # (gen - 1,)
        step_by_step = inf._decode_times(m, h, batch, contexts, 2).sum()
        lat = inf.request_latency(m, h, batch=batch, prompt_len=prompt, gen_len=gen)
        assert lat.tpot_s * (gen - 1) == pytest.approx(step_by_step, rel=1e-12)
        bon = inf.best_of_n_cost(m, h, n=batch, prompt_len=prompt, gen_len=gen)
        assert bon.decode_s == pytest.approx(inf._decode_times(m, h, batch, contexts, 2).sum(), rel=1e-12)
        # every step counts every operation (the old array sum counted context-independent ones once)
        flops = sum(float(np.sum(np.broadcast_to(f, contexts.shape)))
                    for _, _, f, _ in inf._ops(m, "decode", batch, contexts, 2))
        pre = inf.prefill_cost(m, h, batch=1, prompt_len=prompt).flops
        assert bon.flops == pytest.approx(pre + flops, rel=1e-12)


def test_request_latency_rejects_sequences_past_the_bound():
    with pytest.raises(ValueError, match="gen_len"):
        inf.request_latency("llama-3-8b", "h100-sxm", batch=1, prompt_len=16, gen_len=inf.MAX_TOKENS)


@pytest.mark.parametrize("gen", [1, 2, 256])
def test_phase_table_last_step_is_request_latency_last_step(gen):
    m, h = inf.get_model("llama-3-8b"), inf.get_hardware("h100-sxm")
    table = inf.phase_table(m, h, batch=2, prompt=512, gen=gen)
    last = table.set_index("phase").loc["decode (last step)", "time_ms"]
    context = 512 + gen - 1 if gen > 1 else 513
    expected = inf._decode_times(m, h, 2, np.array([float(context)]), 2)[0] * 1e3
    assert last == pytest.approx(expected, rel=1e-12)
    if gen > 1:  # request_latency's steps are exactly these contexts
        steps = inf._decode_times(m, h, 2, 512 + np.arange(1, gen, dtype=np.float64), 2)
        assert steps[-1] * 1e3 == pytest.approx(last, rel=1e-12)


def test_hardware_memory_is_the_datasheet_number_in_gib():
    from scalelab.simulations.hardware import HARDWARE

    datasheet_gb = {"v100": 32, "a100-40gb": 40, "a100-80gb": 80, "h100-sxm": 80, "h200": 141}
    for name, gb in datasheet_gb.items():
        assert HARDWARE[name].memory_bytes == gb * 2**30, name  # GiB: the datasheets' "GB" read as binary


@pytest.mark.parametrize("model, hw, batch, context, fits", [
    ("llama-3-70b", "h100-sxm", 1, 128, False),  # 141 GB of bf16 weights on an 80 GB part
    ("llama-2-7b", "h100-sxm", 64, 4096, False),  # 13.5 GB weights + 137 GB of KV cache
    ("llama-3-8b", "h100-sxm", 16, 2048, True),
])
def test_phase_cost_says_whether_it_fits(model, hw, batch, context, fits):
    pre = inf.prefill_cost(model, hw, batch=batch, prompt_len=context)
    dec = inf.decode_cost(model, hw, batch=batch, context_len=context)
    assert pre.fits is fits and dec.fits is fits
    h = inf.get_hardware(hw)
    need = dec.weight_bytes + dec.kv_cache_bytes
    assert (need <= (1 - inf.ACTIVATION_RESERVE_FRACTION) * h.memory_bytes) is fits


def test_cli_flags_configurations_that_do_not_fit(capsys):
    from scalelab.cli.cli import main

    assert main(["inference", "--model", "llama-3-70b", "--hw", "h100", "--batch", "1", "--prompt", "128",
                 "--gen", "8"]) == 0
    out = capsys.readouterr().out
    assert "NO" in out and "cannot happen on one device" in out


def test_ttft_tpot_figure_marks_configurations_that_do_not_fit():
    from scalelab.report.figures.inference import ttft_tpot_data, ttft_tpot_figure

    data = ttft_tpot_data("llama-2-7b", "h100-sxm", batches=[1, 64], prompt_lens=[4096], contexts=[4096])
    fits = data.set_index(["metric", "batch"])["fits"]
    assert fits[("tpot", 64)] == False and fits[("tpot", 1)] == True  # noqa: E712
    fig = ttft_tpot_figure(data)
    crosses = [c for ax in fig.axes for c in ax.collections
               if c.get_sizes().size and c.get_sizes()[0] == 55 and len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in crosses] == [1, 1]  # one per panel, at batch 64
