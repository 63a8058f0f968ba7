"""The measured roofline of the kernel report section reads its stream from DRAM in both modes."""

from __future__ import annotations

import pytest

from scalelab.report.sections import kernels as section
from scalelab.simulations import calibration as cal


@pytest.mark.parametrize("quick", [True, False])
def test_roofline_stream_is_sized_by_the_last_level_cache(monkeypatch, quick):
    """Quick or not, the read stream uses :func:`default_stream_bytes` (4x the LLC), never a fixed size."""
    seen = []

    def fake_bandwidth(n_bytes, repeats, threads):
        seen.append(n_bytes)
        return 1e10, 1e10

    monkeypatch.setattr(cal, "default_stream_bytes", lambda: 5 * 2**20)  # neither 64 nor 128 MiB
    monkeypatch.setattr(cal, "measure_stream_bandwidth", fake_bandwidth)
    monkeypatch.setattr(cal, "measure_matmul_flops", lambda n, repeats: 1e11)
    monkeypatch.setattr(cal, "measure_numba_loop_flops", lambda **kw: 1e11)
    monkeypatch.setattr(cal, "BLAS_SETTLE_S", 0.0)
    roof = section.measure_roofline(quick)
    assert seen == [5 * 2**20]
    assert "over 5 MiB arrays" in roof["source"]
