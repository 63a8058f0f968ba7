import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compile time makes the first example of a property test slow; the
# deadline would flag that as flaky, so it is off. Example counts stay modest
# so the whole suite fits CI's budget on 2 cores.
settings.register_profile(
    "scalelab",
    deadline=None,
    max_examples=int(os.environ.get("SCALELAB_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("scalelab")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ------------------------------------------------------------ test phases
#
# `make test` runs the suite in two phases: every test except those marked
# `exclusive` on all cores (pytest-xdist), then the `exclusive` ones alone in
# one process. An exclusive test measures real run times (the regression
# gate's proof runs real asv benchmarks), so other tests must not share the
# machine with it. `--exclusive` picks the phase; it narrows whatever `-m`,
# `-k` or paths already selected, so PYTEST_ARGS keeps working in both.


def pytest_addoption(parser):
    parser.addoption(
        "--exclusive", choices=("run", "skip", "only"), default="run",
        help="tests marked 'exclusive': run them with the rest (default), skip them, or run only them",
    )


def pytest_collection_modifyitems(config, items):
    mode = config.getoption("exclusive")
    if mode == "run":
        return
    keep, drop = [], []
    for item in items:
        wanted = (item.get_closest_marker("exclusive") is not None) == (mode == "only")
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


#: Test files that reuse another file's build (under pytest's base temp folder)
#: when they run after it in the same process: they are scheduled together.
_SAME_WORKER_AS = {"tests/test_report_browser.py": "tests/test_report.py"}


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook; ignored without it
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadfile`` keep files in _SAME_WORKER_AS together.

    A test file runs on one worker, so its module fixtures (a model, a report
    build) are built once, not once per worker; the files above also share one.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class _LoadFileSharing(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = super()._split_scope(nodeid)
            return _SAME_WORKER_AS.get(path, path)

    return _LoadFileSharing(config, log)
