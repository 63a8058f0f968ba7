"""Results do not depend on the Numba cache: the process that compiles a kernel
(and writes the cache) and a later process that loads it get the same bits.

Each kernel runs in a fresh interpreter with an empty ``NUMBA_CACHE_DIR``, then
again in a second interpreter with that cache now warm; the outputs are hashed
and compared. Shapes are small (the cost is compilation, not the run) but large
enough to cover several key tiles, GQA groups, dropped MoE assignments and a
bootstrap of the scaling fit.
"""

import os
import subprocess
import sys

import pytest

_SCRIPT = r"""
import hashlib, sys
import numpy as np
from scalelab.kernels import attention as A, moe, sampling as S
from scalelab.simulations import scaling_fit as F

which = sys.argv[1]
rng = np.random.default_rng(7)
f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
if which == "attention":
    q, k, v = f32(1, 4, 300, 64), f32(1, 2, 300, 64), f32(1, 2, 300, 64)
    outs = [A.attention(q, k, v, causal=True), A.attention(q, k, v, causal=False, window=77)]
    qd, kc, vc = f32(2, 4, 64), f32(2, 2, 300, 64), f32(2, 2, 300, 64)
    lengths = np.array([300, 177])
    outs.append(A.decode_attention(qd, kc, vc, lengths))
    kp, vp = f32(20, 16, 2, 64), f32(20, 16, 2, 64)
    table = rng.permutation(20)[:20].reshape(2, 10)
    outs.append(A.paged_decode_attention(qd, kp, vp, table, np.array([160, 93])))
elif which == "sampling":
    logits = (f32(3, 5000) * 3)
    tok, lp = S.sample(logits, temperature=0.8, top_p=0.9, seed=11, return_logprobs=True)
    outs = [tok, lp, S.filter_logits(logits, temperature=0.7, top_k=50, min_p=0.01)]
elif which == "moe":
    x, rw = f32(40, 16), f32(16, 8)
    w1, w3, w2 = f32(8, 16, 24), f32(8, 16, 24), f32(8, 24, 16)
    outs = [moe.moe_layer(x, rw, w1, w3, w2, 2, capacity=9)]
    outs.append(moe.route(f32(40, 8), 2, scoring="sigmoid", bias=np.linspace(-0.1, 0.1, 8).astype(np.float32))[0])
elif which == "fit":
    n = 40
    log_n = np.log(rng.uniform(1e7, 1e10, n))
    log_d = np.log(rng.uniform(1e9, 1e12, n))
    log_loss = np.log(1.7 + 400 / np.exp(log_n) ** 0.34 + 410 / np.exp(log_d) ** 0.28) + rng.normal(0, 0.02, n)
    grid = F.besiroglu_grid()[::90]
    th, obj, _ = F.grid_search_lbfgs(log_n, log_d, log_loss, grid)
    best = th[np.argmin(obj)]
    outs = [th, obj, F.bootstrap_lbfgs(log_n, log_d, log_loss, best, F.bootstrap_counts(n, 16, 0))[0]]
print(hashlib.sha256(b"".join(np.ascontiguousarray(o).tobytes() for o in outs)).hexdigest())
"""


def _run(which, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    r = subprocess.run([sys.executable, "-c", _SCRIPT, which], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip()


# Cold compiles take minutes on a shared 2-core machine, hence slow.
@pytest.mark.slow
@pytest.mark.parametrize("which", ["attention", "sampling", "moe", "fit"])
def test_fresh_compile_and_cache_load_give_the_same_bits(which, tmp_path):
    cache = tmp_path / "numba-cache"
    fresh = _run(which, cache)
    written = [f for _, _, files in os.walk(cache) for f in files if f.endswith(".nbi")]
    assert written, "the first run wrote no Numba cache: the second would not load from it"
    warm = _run(which, cache)
    assert fresh == warm, f"{which}: fresh compile and cache load differ"
