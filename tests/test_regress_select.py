"""What a pull request's gate runs (scalelab/bench/select.py) and the nightly history band (regress.history_band).

Selection is checked on a small synthetic tree (so each rule is seen in
isolation) and on this repository's own tree (so the real import graph and
the headline names stay valid: every headline entry must select at least one
benchmark with asv's own selection code).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalelab.bench import asv_results, regress
from scalelab.bench import history
from scalelab.bench import select as sel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def index():
    return sel.scan_tree(REPO)


@pytest.fixture(scope="module")
def suite():
    found = regress.discover_benchmarks(REPO, asv_results.read_conf(REPO))
    assert found is not None
    return found


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


@pytest.fixture
def toy(tmp_path):
    root = _tree(tmp_path, {
        "kernels/__init__.py": "",
        "kernels/_common.py": "X = 1\n",
        "kernels/sampling.py": "from ._common import X\n",
        "kernels/attention.py": "from scalelab.kernels._common import X\n",
        "kernels/model.py": "from . import attention, sampling\n",
        "kernels/peers.py": "import numpy\n",
        "kernels/unused.py": "import numpy\n",
        "simulations/__init__.py": "",
        "simulations/data/runs.csv": "a,b\n",
        "simulations/scaling.py": "import numpy\n",
        "asv_benchmarks/__init__.py": "",
        "asv_benchmarks/_util.py": "import importlib\n"
                                   "def peers():\n    return importlib.import_module('scalelab.kernels.peers')\n",
        "asv_benchmarks/sampling.py": "from scalelab.kernels import sampling as S\n",
        "asv_benchmarks/attention.py": "from asv_benchmarks._util import peers\n"
                                      "def setup():\n    from scalelab.kernels import attention\n",
        "asv_benchmarks/engine.py": "def setup():\n    from scalelab.kernels.model import M\n",
        "asv_benchmarks/layers.py": "from scalelab.kernels.model import M\n",
        "asv_benchmarks/scaling.py": "from scalelab.simulations import scaling\n",
        "asv_benchmarks/gate_probe.py": "def setup():\n    from scalelab.kernels.sampling import top_k\n",
    })
    return sel.scan_tree(root)


def test_a_kernel_change_selects_every_module_that_imports_it_directly_or_not(toy):
    s = sel.select_benchmarks(["kernels/sampling.py"], toy)
    assert not s.everything
    # layers imports model, which imports sampling; gate_probe imports it inside setup()
    assert s.modules == ("gate_probe", "layers", "sampling")
    assert "kernels/sampling.py: imported by gate_probe, layers, sampling" in s.reasons
    # the headline entries of the toy tree's other benchmark modules ride along
    assert set(s.headline) == {h for h in sel.HEADLINE if h.split(".")[0] in ("attention", "scaling")}


def test_end_to_end_modules_follow_direct_imports_only(toy):
    assert "engine" not in sel.select_benchmarks(["kernels/sampling.py"], toy).modules
    assert sel.select_benchmarks(["kernels/model.py"], toy).modules == ("engine", "layers")
    assert sel.select_benchmarks(["asv_benchmarks/engine.py"], toy).modules == ("engine",)


def test_an_import_by_module_name_string_counts(toy):
    # _util.py loads the peers with importlib.import_module("scalelab.kernels.peers")
    s = sel.select_benchmarks(["kernels/peers.py"], toy)
    assert s.modules == ("attention",)


def test_shared_helpers_and_packaging_select_every_module_not_the_whole_suite(toy):
    for path in ("kernels/_common.py", "asv_benchmarks/_util.py", "asv.conf.json", "pyproject.toml"):
        s = sel.select_benchmarks(["docs/x.md", path], toy)
        # every benchmark module, filtered like any selected module (pull_request_names): the
        # literal whole suite, peers and 2 threads included, is --select all only
        assert not s.everything and s.modules == tuple(sorted(toy.benchmarks)), path
        assert s.headline == () and path in s.reasons[0] and "every module" in s.reasons[0]
        rx = sel.bench_regex(s)
        assert all(re.match(rx, f"{m}.Bench.time_a") for m in s.modules) and not re.match(rx, "other.B.time_a")
    s = sel.select_benchmarks(["kernels/_common.py", "kernels/peers.py"], toy)
    assert s.peers_changed


def test_docs_tests_and_tools_select_nothing(toy):
    s = sel.select_benchmarks(["README.md", "docs/regression-gate.md", "tests/test_x.py",
                               "tools/aa_experiment.py", ".github/workflows/ci.yml"], toy)
    assert s.empty and not s.everything
    assert len(s.reasons) == 5 and all("cannot change a benchmark" in r for r in s.reasons)
    assert s.describe().startswith("selected: nothing")
    with pytest.raises(ValueError, match="empty"):
        sel.bench_regex(s)


def test_a_benchmark_module_selects_itself_and_data_selects_its_package_users(toy):
    assert sel.select_benchmarks(["asv_benchmarks/scaling.py"], toy).modules == ("scaling",)
    s = sel.select_benchmarks(["simulations/data/runs.csv"], toy)
    assert s.modules == ("scaling",) and "data under simulations/" in s.reasons[0]


def test_code_no_benchmark_imports_gets_the_headline_set(tmp_path):
    root = _tree(tmp_path, {"kernels/unused.py": "", "kernels/attention.py": "",
                            "asv_benchmarks/attention.py": "from scalelab.kernels import attention\n",
                            "asv_benchmarks/gate_probe.py": ""})
    s = sel.select_benchmarks(["kernels/unused.py"], sel.scan_tree(root))
    assert s.modules == () and not s.empty
    assert set(s.headline) == {h for h in sel.HEADLINE if h.split(".")[0] in ("attention", "gate_probe")}
    assert "no benchmark imports it; headline set" in s.reasons[0]
    # a selected module makes its own headline entries redundant
    s2 = sel.select_benchmarks(["kernels/attention.py"], sel.scan_tree(root))
    assert s2.modules == ("attention",) and s2.headline == ("gate_probe.",)


def test_everything_on_request(toy):
    s = sel.select_benchmarks(["README.md"], toy, everything=True, why_everything="label benchmarks:all")
    assert s.everything and s.reasons == ("label benchmarks:all",)


def test_regex_selects_whole_modules_by_prefix_and_headline_entries_exactly():
    s = sel.Selection(False, ("sampling",), ("attention.DecodeAttention.time_decode('numba', 8, 1)", "roofline."),
                      ())
    rx = sel.bench_regex(s)
    suite = [
        {"name": "sampling.TopK.time_top_k", "params": [["1", "32"], ["32000"]]},
        {"name": "samplingx.T.time_a", "params": []},
        {"name": "attention.DecodeAttention.time_decode", "params": [["'numba'", "'torch'"], ["8", "32"], ["1"]]},
        {"name": "attention.DecodeAttention.track_kv_gbps", "params": [["'numba'"], ["8"], ["1"]]},
        {"name": "roofline.Stream.track_read_gbps", "params": []},
    ]
    assert regress.selected_names(suite, rx) == [
        "sampling.TopK.time_top_k(1, 32000)", "sampling.TopK.time_top_k(32, 32000)",
        "attention.DecodeAttention.time_decode('numba', 8, 1)", "roofline.Stream.track_read_gbps"]


def test_this_repository_maps_kernels_to_their_benchmarks(index):
    s = sel.select_benchmarks(["kernels/sampling.py"], index)
    assert s.modules == ("gate_probe", "sampling")  # engine reaches sampling only through the model
    assert "nightly only: busy" in s.reasons[0]  # busy imports sampling but never gates a pull request
    assert {"attention", "gate_probe", "normalized", "recurrent"} <= set(
        sel.select_benchmarks(["kernels/attention.py"], index).modules)
    assert "moe" in sel.select_benchmarks(["kernels/moe.py"], index).modules
    every = sel.select_benchmarks(["kernels/_tiles.py"], index)
    assert not every.everything and "busy" not in every.modules
    assert set(every.modules) == set(index.benchmarks) - {"busy"} and "nightly only: busy" in every.reasons[0]


def test_every_headline_entry_selects_a_benchmark_of_this_suite(suite, index):
    for entry in sel._headline_present(index):
        one = sel.Selection(False, (), (entry,), ())
        assert regress.selected_names(suite, sel.bench_regex(one)), entry


def test_a_pull_request_times_our_kernels_at_one_thread_and_the_headline_as_named(suite, index):
    s = sel.select_benchmarks(["kernels/sampling.py"], index)
    names = sel.pull_request_names(s, suite)
    assert "sampling.TopK.time_top_k(1, 256000, 1)" in names and "gate_probe.TopKProbe.time_top_k(4)" in names
    assert not [n for n in names if n.startswith("sampling.") and (n.endswith(", 2)") or "numpy" in n
                                                                   or "torch" in n.lower())]
    assert set(h for h in s.headline if not h.endswith(".")) <= set(names)
    # one-number track_ rates never gate (n/a): skipped; the sampled normalized ratios stay
    assert not [n for n in names if "track_top_k_bandwidth" in n]
    assert "normalized.DecodeAttention.track_decode_vs_reference" in names
    assert not [n for n in names if ".timeraw_" in n]  # cold compiles x 20 samples x 8 rounds: nightly only
    assert regress.selected_names(suite, sel.names_regex(names)) == names
    with_peers = sel.pull_request_names(sel.select_benchmarks(["kernels/sampling.py", "kernels/peers.py"], index),
                                        suite)
    assert "sampling.TopK.time_top_k_numpy_f32(1, 256000, 1)" in with_peers
    # a shared helper: every module at the same filtering, a fraction of the whole suite
    every = sel.pull_request_names(sel.select_benchmarks(["kernels/_vecmath.py"], index), suite)
    assert set(names) < set(every) and not [n for n in every if n.startswith("busy.") or ".timeraw_" in n]
    assert "sampling.TopK.time_top_k(1, 256000, 1)" in every and "sampling.TopK.time_top_k(1, 256000, 2)" not in every


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_changed_paths_reads_the_diff_from_the_merge_base(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "t@t.invalid")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.py").write_text("1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "a")
    _git(tmp_path, "checkout", "-qb", "pr")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("b\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "b")
    _git(tmp_path, "checkout", "-q", "main")
    (tmp_path / "c.py").write_text("c\n")  # on main after the branch point: not the PR's change
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "c")
    assert sel.changed_paths(tmp_path, "main", "pr") == ["docs/b.md"]
    with pytest.raises(ValueError, match="cannot list the changed files"):
        sel.changed_paths(tmp_path, "nope", "pr")


def test_docs_only_change_exits_0_in_seconds_saying_why(tmp_path):
    clone = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    _git(clone, "config", "user.email", "t@t.invalid")
    _git(clone, "config", "user.name", "t")
    with open(clone / "README.md", "a") as fh:
        fh.write("\n<!-- docs-only change -->\n")
    _git(clone, "commit", "-qam", "docs only")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "scalelab.cli.cli", "regress", "HEAD~1", "HEAD", "--repo",
                           str(clone), "--select", "auto"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "selected: nothing" in proc.stderr and "README.md: cannot change a benchmark" in proc.stderr
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------- nightly band


def test_band_flags_only_what_leaves_the_band_of_the_last_nights():
    past = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03, 0.97] * 2  # 14 quiet nights around 1.0
    assert history.band_check(past, 1.05).verdict == "inside"
    assert history.band_check(past, 1.40).verdict == "slower"  # a time above the band
    assert history.band_check(past, 0.60).verdict == "faster"
    rate = history.band_check(past, 0.60, unit="GB/s")  # a rate below the band is worse
    assert rate.verdict == "slower" and rate.low == pytest.approx(0.75) and rate.high == pytest.approx(1.25)


def test_band_uses_only_the_last_nights_and_ignores_failed_ones():
    old = [5.0] * 30  # a slow era before a speed-up: outside the window of 14
    recent = [1.0, None, float("nan"), 1.1, 0.9, 1.0, 1.05, 0.95]
    check = history.band_check(old + recent, 1.1, nights=6)
    assert check.nights == 6 and check.verdict == "inside"
    assert history.band_check(old + recent, 5.0, nights=6).verdict == "slower"


def test_one_wild_night_does_not_widen_the_band_and_a_noisy_history_does():
    calm = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 9.0]  # one outlier night
    assert history.band_check(calm, 1.5).verdict == "slower"  # the median and MAD ignore the 9.0
    noisy = [0.5, 1.5, 0.6, 1.4, 0.7, 1.3, 1.0]
    assert history.band_check(noisy, 1.5).verdict == "inside"


def test_too_few_nights_give_no_verdict_and_bad_input_is_refused():
    assert history.band_check([1.0] * 4, 9.0).verdict == "too few nights"
    with pytest.raises(ValueError, match="nights"):
        history.band_check([1.0] * 9, 1.0, nights=0)
    with pytest.raises(ValueError, match="tonight"):
        history.band_check([1.0] * 9, float("nan"))


def _result_file(path: Path, commit: str, started_ms: float, value: float):
    path.write_text(json.dumps({
        "commit_hash": commit, "env_name": "e", "date": started_ms, "params": {"machine": "m"},
        "python": "3.11", "requirements": {}, "env_vars": {},
        "result_columns": ["result", "params", "version", "started_at", "duration"],
        "results": {"mod.T.time_k": [[value], [], "v", started_ms, 1.0]},
        "durations": {}, "version": 2,
    }))


def test_check_history_judges_the_newest_run_against_the_earlier_ones(tmp_path):
    machine = tmp_path / "m"
    machine.mkdir()
    (tmp_path / "benchmarks.json").write_text(json.dumps(
        {"mod.T.time_k": {"name": "mod.T.time_k", "unit": "seconds", "param_names": [], "params": []},
         "version": 2}))
    for night in range(8):
        _result_file(machine / f"{night:08x}-e.json", f"{night:08x}" * 5, 1e12 + night * 864e5, 1.0 + 0.01 * night)
    _result_file(machine / "ffffffff-e.json", "f" * 40, 1e12 + 9 * 864e5, 2.0)
    (check,) = history.check_history(tmp_path, "m")
    assert check.benchmark == "mod.T.time_k" and check.nights == 8 and check.verdict == "slower"
    text = history.format_history([check])
    assert "1 slower" in text and "`mod.T.time_k`" in text


def test_the_module_prints_a_selection_and_the_headline_pattern(capsys, suite):
    assert sel.main(["--root", str(REPO), "docs/x.md"]) == 0
    assert capsys.readouterr().out.startswith("selected: nothing")
    assert sel.main(["--root", str(REPO), "--headline"]) == 0
    pattern = capsys.readouterr().out.strip()
    assert "gate_probe.DecodeProbe.time_decode_attention" in regress.selected_names(suite, pattern)


@pytest.mark.parametrize("argv", [["scalelab.bench.select", "kernels/sampling.py"],
                                  ["scalelab.bench.select", "--headline"]])
def test_the_selection_tool_exits_quietly_on_a_closed_pipe(argv):
    proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write, as after `| head -1` printed its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 141, (proc.returncode, err)
