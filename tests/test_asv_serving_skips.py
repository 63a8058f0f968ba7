"""asv's view of the serving benchmarks: a parameter a method does not apply to is skipped, not failed."""

import importlib.util
import itertools

import pytest

asv_discovery = pytest.importorskip("asv_runner.discovery")
pytest.importorskip("asv_benchmarks.serving")


def _full_serving():
    """A fresh copy of asv_benchmarks/serving.py imported with ``SCALELAB_BENCH_FULL=1`` (its full grid)."""
    import asv_benchmarks.serving as default

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCALELAB_BENCH_FULL", "1")
        spec = importlib.util.spec_from_file_location("serving_full_grid", default.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


serving = _full_serving()


def _bench(name, *param):
    """The asv benchmark ``name`` of PlanSweep at the parameter tuple ``param``."""
    b = asv_discovery._get_benchmark(name, serving, serving.PlanSweep, None)
    combos = [tuple(v.strip("'") for v in c) for c in itertools.product(*b.params)]
    b.set_param_idx(combos.index(param))
    return b


def test_speedup_is_skipped_under_serial_before_setup_or_run(monkeypatch):
    def fail(*_):
        raise AssertionError("a skipped benchmark must not run")

    monkeypatch.setattr(serving.PlanSweep, "setup", fail)
    monkeypatch.setattr(serving.PlanSweep, "_run", fail)
    for combo in [("serial", "sample"), ("serial", "default"), ("local", "sample")]:
        b = _bench("track_speedup", *combo)
        assert b.do_setup() is True  # asv_runner's "skipped" (its result is NaN), not an exception
        assert b.do_run() is None


def test_serial_timing_and_local_speedup_are_not_skipped(monkeypatch):
    monkeypatch.setattr(serving.PlanSweep, "setup", lambda self, scheduler, space: None)
    monkeypatch.setattr(serving.PlanSweep, "_run", lambda self, scheduler: None)
    assert _bench("time_plan", "serial", "sample").do_setup() is False
    b = _bench("track_speedup", "local", "default")
    assert b.do_setup() is False
    assert isinstance(b.do_run(), float)  # serial over cluster seconds (of two no-ops here)
