"""Cached kernels are recompiled when a kernel module compiled into them changes, not only their own file.

Each case runs in fresh processes on a copy of the package (so the helper module can be edited)
with its own ``NUMBA_CACHE_DIR``.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scalelab
import scalelab.kernels
from scalelab.kernels import _cache_stamp

PROBE = '''
from numba import njit

from scalelab.kernels._vecmath import probe_value


@njit(cache=True)
def value():
    return probe_value() + 0
'''

HELPER = '''

@njit(inline="always")
def probe_value():
    return {}
'''

REPORT = ("import scalelab.kernels.probe as p; v = p.value(); s = p.value.stats; "
          "print(v, sum(s.cache_hits.values()), sum(s.cache_misses.values()))")


@pytest.fixture()
def tree(tmp_path):
    """A copy of scalelab's package root and kernels with a probe kernel that inlines a _vecmath helper."""
    pkg = tmp_path / "pkg" / "scalelab"
    shutil.copytree(Path(scalelab.kernels.__file__).parent, pkg / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(scalelab.__file__, pkg / "__init__.py")
    vecmath = pkg / "kernels" / "_vecmath.py"
    text = vecmath.read_text()
    if "from numba import njit" not in text:
        text += "\nfrom numba import njit\n"
    vecmath.write_text(text + HELPER.format(1))
    (pkg / "kernels" / "probe.py").write_text(PROBE)
    return tmp_path, vecmath, text


def _run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg"), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen([sys.executable, "-c", REPORT], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return tuple(int(x) for x in out.split())  # (value, cache hits, cache misses)


def test_editing_an_inlined_helper_recompiles_its_callers(tree):
    tmp_path, vecmath, text = tree
    assert _result(_run(tmp_path)) == (1, 0, 1)  # compiled, cache written under NUMBA_CACHE_DIR
    assert list((tmp_path / "cache").rglob("probe.value-*.nbi"))
    vecmath.write_text(text + HELPER.format(2))  # same size; the probe's own file is untouched
    # two processes at once: Numba alone would load the stale 1 in both; neither may fail
    both = [_run(tmp_path), _run(tmp_path)]
    assert [_result(p)[0] for p in both] == [2, 2]
    assert _result(_run(tmp_path)) == (2, 1, 0)  # and the new code is cached: loaded, not compiled


def test_dependencies_are_followed_through_imports():
    kernels = Path(scalelab.kernels.__file__).parent
    names = [Path(p).name for p in _cache_stamp.dependency_files(kernels / "attention.py")]
    assert {"_tiles.py", "_vecmath.py"} <= set(names) and "attention.py" not in names
    assert "_vecmath.py" in [Path(p).name for p in _cache_stamp.dependency_files(kernels / "_tiles.py")]
    assert _cache_stamp.dependency_files(kernels / "_vecmath.py") == []
