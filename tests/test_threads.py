"""Thread budgets: small work runs on one thread, results do not change, user settings are respected."""

import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from scalelab.kernels import _threads
from scalelab.kernels._threads import SINGLE_THREAD_BELOW_FLOPS, thread_budget, threads_for
from scalelab.kernels.model import LlamaConfig, LlamaModel, SeqChunk


def _blas_threads():
    """Threads of the BLAS libraries the budget controls: those loaded when scalelab first needed one
    (NumPy's among them). A BLAS that another package loads later (torch's own) is not ours to limit."""
    ours = {lib.filepath for lib in _threads._blas()[0].lib_controllers}
    assert ours, "no BLAS library under the budget's control"
    return max(i["num_threads"] for i in threadpool_info() if i["filepath"] in ours)


def test_budget_lowers_numba_and_blas_threads_and_restores_them():
    numba_before, blas_before = numba.get_num_threads(), _blas_threads()
    with thread_budget(1):
        assert numba.get_num_threads() == 1
        assert _blas_threads() == 1
    assert numba.get_num_threads() == numba_before and _blas_threads() == blas_before


def test_budget_never_raises_thread_counts():
    numba_before, blas_before = numba.get_num_threads(), _blas_threads()
    with thread_budget(10_000):
        assert numba.get_num_threads() == numba_before and _blas_threads() == blas_before
    with pytest.raises(RuntimeError):
        with thread_budget(1):
            raise RuntimeError("boom")
    assert numba.get_num_threads() == numba_before and _blas_threads() == blas_before


def test_threads_for_splits_at_the_threshold():
    assert threads_for(SINGLE_THREAD_BELOW_FLOPS / 2) == 1
    assert threads_for(SINGLE_THREAD_BELOW_FLOPS) == numba.config.NUMBA_NUM_THREADS
    assert threads_for(10.0, below=5.0) == numba.config.NUMBA_NUM_THREADS


def test_model_logits_on_one_thread_agree_to_blas_rounding():
    """Numba kernels give the same bits on one thread; OpenBLAS sgemm may move the last bit."""
    from scalelab.kernels.attention import attention

    cfg = LlamaConfig(n_layers=2, d_model=128, n_heads=4, n_kv_heads=2, d_ff=256, vocab_size=300, max_position=1024)
    m = LlamaModel.random(cfg, seed=3)
    chunks = [SeqChunk(np.arange(300) % 300, 0, np.zeros(0, np.int64))]
    assert m.step_flops(chunks, all_logits=True) > SINGLE_THREAD_BELOW_FLOPS  # runs on every thread
    full = m._forward(chunks, None, all_logits=True)
    q = np.random.default_rng(0).standard_normal((1, 4, 300, 32), dtype=np.float32)
    k = q[:, ::2]
    a_full = attention(q, k, k, causal=True)
    with thread_budget(1):
        one = m._forward(chunks, None, all_logits=True)
        a_one = attention(q, k, k, causal=True)
    np.testing.assert_array_equal(a_full, a_one)
    np.testing.assert_allclose(one, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


def test_step_flops_counts_matmuls_and_attention():
    cfg = LlamaConfig(n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=50, max_position=256)
    m = LlamaModel.random(cfg, seed=0)
    D = cfg.d_model // cfg.n_heads
    per_token = 3 * (64 * (4 + 2 * 2) * D + 4 * D * 64 + 3 * 64 * 96)
    one = m.step_flops([SeqChunk(np.arange(10), 5, np.zeros(1, np.int64))])
    pairs = 10 * 5 + 10 * 11 / 2
    assert one == 2 * (10 * per_token + 1 * 64 * 50) + 4 * 3 * 4 * D * pairs


@pytest.mark.parametrize("preset, expected", [(None, "passive"), ("active", "active")])
def test_openmp_workers_sleep_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", "import os, scalelab; print(os.environ['OMP_WAIT_POLICY'])"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected
