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


def test_request_latency_chunks_agree_with_the_direct_sum():
    m, h = inf.get_model("llama-3-8b"), inf.get_hardware("h100-sxm")
    gen = inf.DECODE_CHUNK * 2 + 7
    lat = inf.request_latency(m, h, batch=4, prompt_len=100, gen_len=gen)
    direct = inf._decode_times(m, h, 4, 100 + np.arange(1, gen, dtype=np.float64), 2).sum()
    assert lat.tpot_s * (gen - 1) == pytest.approx(direct, rel=1e-12)


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
