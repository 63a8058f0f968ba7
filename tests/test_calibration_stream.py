"""The read-stream ceiling of :mod:`scalelab.simulations.calibration`: what it reads, how big, from where.

Correctness only (speed lives in ``asv_benchmarks/roofline.py``): the read
patterns compute the sums they claim on every row split, the arrays are sized
past the last-level cache and filled before timing, and the cache size is
parsed from a sysfs-like tree.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from scalelab.kernels._common import numba_threads
from scalelab.simulations import calibration as cal


@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 7), (3, 8), (5, 33), (8, 64), (13, 24), (64, 4096)])
@pytest.mark.parametrize("threads, chunks", [(1, 1), (2, 2), (2, 5), (2, 32)])
def test_read_patterns_compute_the_sums_they_claim(rows, cols, threads, chunks):
    """Every row is read exactly once, whatever rows / chunks / quarters leave over."""
    rng = np.random.default_rng(rows * 100 + cols)
    x = rng.standard_normal((rows, cols), dtype=np.float32)  # (R, C)
    y = rng.standard_normal((rows, cols), dtype=np.float32)  # (R, C)
    ones = np.ones((1, cols), dtype=np.float32)  # (1, C)
    with numba_threads(threads), numba.parallel_chunksize(1):
        two = cal._read_rows(x, y, chunks, False)
        four = cal._read_rows(x, ones, chunks, True)
    exact_dot = float(np.dot(x.astype(np.float64).ravel(), y.astype(np.float64).ravel()))
    exact_sum = float(x.astype(np.float64).sum())
    tol = float(1e-5 * (np.abs(x).sum() + np.abs(x * y).sum())) + 1e-6
    assert two == pytest.approx(exact_dot, abs=tol)
    assert four == pytest.approx(exact_sum, abs=tol)


def test_stream_arrays_are_whole_rows_filled_before_timing():
    arrays = cal.stream_arrays(3 * cal.STREAM_ROW * 4 + 100)  # three rows and a bit: rounded down
    assert arrays.x.shape == arrays.y.shape == (3, cal.STREAM_ROW) and arrays.ones.shape == (1, cal.STREAM_ROW)
    assert (arrays.x == 1.0).all() and (arrays.y == 2.0).all() and (arrays.ones == 1.0).all()
    assert cal.stream_arrays_bytes(3 * cal.STREAM_ROW * 4 + 100) == arrays.x.nbytes
    tiny = cal.stream_arrays(12)  # smaller than a row: one short row
    assert tiny.x.shape == (1, 3) and cal.stream_arrays_bytes(12) == 12


def test_default_stream_size_is_past_the_last_level_cache(monkeypatch):
    llc = cal.last_level_cache_bytes() or 0
    assert cal.default_stream_bytes() >= max(cal.MIN_STREAM_BYTES, cal.DRAM_LLC_MULTIPLE * llc)
    monkeypatch.setattr(cal, "last_level_cache_bytes", lambda: 96 * 2**20)
    assert cal.default_stream_bytes() == cal.DRAM_LLC_MULTIPLE * 96 * 2**20
    monkeypatch.setattr(cal, "last_level_cache_bytes", lambda: None)
    assert cal.default_stream_bytes() == cal.MIN_STREAM_BYTES


def test_last_level_cache_is_the_highest_data_or_unified_level(tmp_path, monkeypatch):
    for name, level, kind, size in [("index0", 1, "Data", "32K"), ("index1", 1, "Instruction", "32K"),
                                    ("index2", 2, "Unified", "512K"), ("index3", 3, "Unified", "32768K"),
                                    ("index4", 4, "Instruction", "64M")]:
        d = tmp_path / name
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    (tmp_path / "index5").mkdir()  # unreadable entries are skipped
    monkeypatch.setattr(cal, "_SYSFS_CACHE", tmp_path)
    assert cal.last_level_cache_bytes() == 32 * 2**20
    monkeypatch.setattr(cal, "_SYSFS_CACHE", tmp_path / "absent")
    assert cal.last_level_cache_bytes() is None


def test_measure_stream_bandwidth_is_positive_and_validates():
    read, triad = cal.measure_stream_bandwidth(2 * 2**20, repeats=1, threads=1)
    assert math.isfinite(read) and read > 0 and math.isfinite(triad) and triad > 0
    with pytest.raises(ValueError, match="n_bytes"):
        cal.measure_stream_bandwidth(2, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        cal.measure_stream_bandwidth(2**20, repeats=0)


def test_best_read_rate_takes_the_better_pattern(monkeypatch):
    """The ceiling is the max over patterns of bytes / best time: the faster pattern wins."""
    arrays = cal.stream_arrays(4 * cal.STREAM_ROW * 4)
    times = iter([0.5, 0.1, 0.25, 0.2])  # repeat 1: two arrays, four streams; repeat 2: the same
    monkeypatch.setattr(cal, "best_time", lambda fn, repeats: next(times))
    rate = cal.best_read_rate(arrays, 2, 1)
    # two arrays: 2 x nbytes / 0.25 s; four streams: nbytes / 0.1 s (the better)
    assert rate == pytest.approx(max(2 * arrays.x.nbytes / 0.25, arrays.x.nbytes / 0.1))


def test_ceiling_probe_sizes_its_stream_like_the_read_probe(monkeypatch):
    """Without ``stream_bytes`` the probe beside each kernel reads arrays of :func:`default_stream_bytes`."""
    monkeypatch.setattr(cal, "default_stream_bytes", lambda: 3 * cal.STREAM_ROW * 4)  # small, so the test is quick
    probe = cal.CeilingProbe(matmul_n=32, tile=16, reps=1, threads=1)
    assert probe.stream.x.nbytes == probe.stream.y.nbytes == cal.stream_arrays_bytes(3 * cal.STREAM_ROW * 4)
    explicit = cal.CeilingProbe(matmul_n=32, stream_bytes=2 * cal.STREAM_ROW * 4, tile=16, reps=1, threads=1)
    assert explicit.stream.x.nbytes == 2 * cal.STREAM_ROW * 4
    assert all(math.isfinite(v) and v > 0 for v in probe.measure())
