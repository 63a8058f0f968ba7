"""``scalelab warmup`` and kernels/warmup.py: every group x dtype runs, bad choices are usage errors."""

import subprocess
import sys

import pytest

from scalelab.kernels import moe
from scalelab.kernels.warmup import warm_up


def test_warm_up_runs_each_group_and_dtype_and_restores_thresholds():
    before = moe._COPY_PARALLEL_MIN_BYTES
    seen = []
    done = warm_up(["float32"], ["moe"], progress=lambda g, d, s: seen.append((g, d)))
    assert [(g, d) for g, d, _ in done] == seen == [("moe", "float32")]
    assert moe._COPY_PARALLEL_MIN_BYTES == before


@pytest.mark.parametrize("kw, name", [(dict(dtypes=["float16"]), "dtypes"), (dict(groups=["gemm"]), "groups")])
def test_warm_up_rejects_unknown_choices(kw, name):
    with pytest.raises(ValueError, match=name):
        warm_up(**kw)


def test_cli_bad_dtype_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "scalelab.cli.cli", "warmup", "--dtype", "int8"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "dtype" in r.stderr
