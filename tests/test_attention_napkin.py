"""The napkin-math helpers beside the attention kernels: exact counts on any valid input,
named errors on the rest (negative lengths once gave a negative byte count and 0 FLOPs)."""

import itertools

import numpy as np
import pytest

from scalelab.kernels import attention as A


def _pairs_by_mask(Lq, Lk, causal, window):
    """Visible (query, key) pairs counted on the reference's own mask, one row at a time."""
    lo, hi = A._visible_range(np.arange(Lq, dtype=np.int64), Lq, Lk, causal, window)
    return int(np.maximum(hi - lo + 1, 0).sum())


@pytest.mark.parametrize("causal", [True, False])
def test_attention_flops_closed_form_equals_the_masked_count(causal):
    for Lq, Lk, window in itertools.product(range(0, 9), range(0, 9), [None, 1, 2, 3, 5, 20]):
        want = 2 * _pairs_by_mask(Lq, Lk, causal, window) * (16 + 8)
        assert A.attention_flops(Lq, Lk, 16, 8, causal, window) == want, (Lq, Lk, causal, window)


def test_napkin_math_is_exact_at_sizes_past_memory():
    L = 2**40
    assert A.attention_flops(L, L, 128) == 2 * (L * (L + 1) // 2) * 256  # no O(L) array behind it
    assert A.attention_flops(L, L, 128, window=4096) == 2 * (L * 4096 - 4095 * 4096 // 2) * 256
    # lengths whose sum passes int64 are summed exactly, not wrapped
    assert A.kv_bytes_read(np.full(4, 2**62), 1, 1, 1, 1) == 4 * 2**62 * 2
    assert A.kv_bytes_read(np.array([2**63 - 1], np.uint64), 2, 4, itemsize=2) == (2**63 - 1) * 2 * 8 * 2


@pytest.mark.parametrize("call, exc, match", [
    (lambda: A.kv_bytes_read([-5], 8, 128), ValueError, "lengths must be >= 0"),
    (lambda: A.kv_bytes_read([1.5], 8, 128), TypeError, "lengths"),
    (lambda: A.kv_bytes_read(np.array([True]), 8, 128), TypeError, "lengths"),
    (lambda: A.kv_bytes_read(np.array([2**64 - 1], np.uint64), 8, 128), ValueError, "18446744073709551615"),
    (lambda: A.kv_bytes_read([4], 0, 128), ValueError, "Hkv"),
    (lambda: A.kv_bytes_read([4], 8, -1), ValueError, "D must"),
    (lambda: A.kv_bytes_read([4], 8, 128, -2), ValueError, "Dv"),
    (lambda: A.kv_bytes_read([4], 8, 128, itemsize=2.5), TypeError, "itemsize"),
    (lambda: A.kv_bytes_read([4], 8, 128, window=0), ValueError, "window"),
    (lambda: A.attention_flops(-1, 4, 64), ValueError, "Lq must be >= 0"),
    (lambda: A.attention_flops(4, -1, 64), ValueError, "Lk"),
    (lambda: A.attention_flops(4, 4, -64), ValueError, "D must"),
    (lambda: A.attention_flops(4, 4, 64, 1.0), TypeError, "Dv"),
    (lambda: A.attention_flops(4.0, 4, 64), TypeError, "Lq"),
    (lambda: A.attention_flops(4, 4, 64, causal=1), TypeError, "causal"),
    (lambda: A.attention_flops(4, 4, 64, window=0), ValueError, "window"),
    (lambda: A.attention_flops(4, 4, 64, window=2**63), ValueError, "window"),
    (lambda: A.attention_flops(2**63, 4, 64), ValueError, "Lq"),
])
def test_napkin_math_rejects_bad_input_by_name(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
