"""asv's view of the serving benchmarks: a parameter a method does not apply to is skipped, not failed."""

import pytest

asv_discovery = pytest.importorskip("asv_runner.discovery")
serving = pytest.importorskip("asv_benchmarks.serving")


def _bench(name, param):
    b = asv_discovery._get_benchmark(name, serving, serving.PlanSweep, None)
    b.set_param_idx([p.strip("'") for p in b.params[0]].index(param))
    return b


def test_speedup_is_skipped_under_serial_before_setup_or_run(monkeypatch):
    def fail(*_):
        raise AssertionError("a skipped benchmark must not run")

    monkeypatch.setattr(serving.PlanSweep, "setup", fail)
    monkeypatch.setattr(serving.PlanSweep, "_run", fail)
    b = _bench("track_speedup", "serial")
    assert b.do_setup() is True  # asv_runner's "skipped" (its result is NaN), not an exception
    assert b.do_run() is None


def test_serial_timing_and_local_speedup_are_not_skipped(monkeypatch):
    monkeypatch.setattr(serving.PlanSweep, "setup", lambda self, scheduler: None)
    monkeypatch.setattr(serving.PlanSweep, "_run", lambda self, scheduler: None)
    assert _bench("time_plan", "serial").do_setup() is False
    b = _bench("track_speedup", "local")
    assert b.do_setup() is False
    assert isinstance(b.do_run(), float)  # serial over cluster seconds (of two no-ops here)
