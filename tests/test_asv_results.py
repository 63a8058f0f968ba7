"""The one asv-results reader (scalelab.bench.asv_results) against asv's own ``Results`` API."""

from __future__ import annotations

import datetime
import itertools
import json
import math

import pytest

from scalelab.bench import asv_results

asv_results_api = pytest.importorskip("asv.results")
asv_runner = pytest.importorskip("asv.runner")

SHA = "d" * 40
T0 = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
T1 = datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc)


def _write_results(tmp_path):
    """A result file written by asv itself: parameterized, plain, failed, rerun and unsampled entries."""
    Results, BenchmarkResult = asv_results_api.Results, asv_runner.BenchmarkResult
    res = Results({"machine": "m"}, {}, SHA, 1_700_000_000_000, "3.11", "env-x", {})
    grid = {"name": "sampling.TopK.time_top_k", "params": [["1", "32"], ["'numba'", "'numpy'"]], "version": "a"}
    res.add_result(grid, BenchmarkResult([1e-3, 2e-3, 3e-3, math.nan],
                                         [[1e-3] * 3, [2e-3, 2.1e-3, 1.9e-3], [3e-3] * 3, None],
                                         [1, 1, 1, None], 0, "", None),
                   started_at=T0, record_samples=True)
    # a rerun of one combination: asv keeps the others' values under the new start time
    res.add_result(grid, BenchmarkResult([math.nan, 5e-3, math.nan, math.nan], [None, [5e-3] * 3, None, None],
                                         [None, 1, None, None], 0, "", None),
                   selected_idx=[1], started_at=T1, record_samples=True)
    plain = {"name": "scaling.Fit.time_fit", "params": [], "version": "b"}
    res.add_result(plain, BenchmarkResult([0.25], [[0.25, 0.26]], [1], 0, "", None), started_at=T0,
                   record_samples=False)
    failed = {"name": "moe.Route.time_route", "params": [["8", "64"]], "version": "c"}
    res.add_result(failed, BenchmarkResult([None, None], [None, None], [None, None], 1, "boom", None),
                   started_at=T0)
    res.save(str(tmp_path))
    return next(asv_results.result_files(tmp_path, "m", SHA))


def test_reader_agrees_with_asv_results_api(tmp_path):
    path = _write_results(tmp_path)
    ours = asv_results.read_result_file(path)
    theirs = asv_results_api.Results.load(str(path), "m")
    assert (ours.commit, ours.machine, ours.env_name) == (SHA, "m", "env-x")
    got = {(e.benchmark, e.params): e for e in ours.entries}
    expected_keys = set()
    for key in theirs.get_all_result_keys():
        params = theirs.get_result_params(key)
        values = theirs.get_result_value(key, params)
        stats = theirs.get_result_stats(key, params)
        samples = theirs.get_result_samples(key, params)
        combos = list(itertools.product(*params)) if params else [()]
        for i, combo in enumerate(combos):
            e = got[(key, tuple(combo))]
            expected_keys.add((key, tuple(combo)))
            assert (e.value is None) == (values[i] is None)
            if values[i] is not None:
                assert e.value == values[i] or (math.isnan(e.value) and math.isnan(values[i]))
            assert e.stats == stats[i]
            assert e.samples == samples[i]
            assert e.started_at == theirs.started_at[key]
    assert set(got) == expected_keys
    # the rerun kept the first run's value of the other combination, under the rerun's start time
    kept = got[("sampling.TopK.time_top_k", ("1", "'numba'"))]
    assert kept.value == pytest.approx(1e-3) and kept.started_at == T1.timestamp() * 1000
    assert got[("sampling.TopK.time_top_k", ("1", "'numpy'"))].value == pytest.approx(5e-3)


def test_report_frame_is_built_from_the_same_entries(tmp_path):
    path = _write_results(tmp_path)
    (tmp_path / "benchmarks.json").write_text(json.dumps({
        "sampling.TopK.time_top_k": {"param_names": ["batch", "impl"], "unit": "seconds", "type": "time"},
        "version": 2}))
    frame = asv_results.load_results(tmp_path)
    assert len(frame) == len(asv_results.read_result_file(path).entries)
    grid = frame[frame["benchmark"] == "sampling.TopK.time_top_k"].set_index(["shape", "impl"])["value"]
    assert grid[("batch=32", "numba")] == pytest.approx(3e-3)
    assert grid[("batch=1", "numpy")] == pytest.approx(5e-3)
    assert math.isnan(grid[("batch=32", "numpy")])
    failed = frame[frame["benchmark"] == "moe.Route.time_route"]
    assert len(failed) == 2 and failed["value"].isna().all()


@pytest.mark.parametrize("content, word", [
    ("not json", "not an asv result file"),
    (json.dumps({"version": 1, "results": {}, "result_columns": [], "commit_hash": SHA}), "version"),
    (json.dumps({"version": 2, "results": {}}), "result_columns"),
    (json.dumps([1, 2]), "not an asv result file"),
])
def test_not_a_result_file_is_a_value_error(tmp_path, content, word):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=word):
        asv_results.read_result_file(path)


def test_conf_allows_comment_lines_and_names_itself_when_broken(tmp_path):
    (tmp_path / "asv.conf.json").write_text('{\n  // a comment\n  "results_dir": "r"\n}\n')
    assert asv_results.read_conf(tmp_path) == {"results_dir": "r"}
    (tmp_path / "asv.conf.json").write_text("{")
    with pytest.raises(ValueError, match="asv.conf.json"):
        asv_results.read_conf(tmp_path)
