"""Bad, extreme and hostile command lines: one line on stderr and exit 2, never a traceback.

Each case here once produced a traceback, a MemoryError, a misleading message
or a wrong file name. Most run through ``main()`` in-process; the closed-pipe
case needs a real pipe, so it runs the console script in a subprocess.
"""

import subprocess
import sys

import numpy as np
import pytest

from scalelab.cli.cli import EXIT_BROKEN_PIPE, main
from scalelab.simulations import scaling as sc


@pytest.fixture(scope="module")
def runs_csv(tmp_path_factory):
    """A small, well-posed set of runs (4 isoFLOP curves x 6 sizes) for fast fits."""
    truth = sc.LAWS["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 4), points=6)
    path = tmp_path_factory.mktemp("runs") / "runs.csv"
    sc.simulate_runs(truth, n, d, noise=0.01, seed=0)[["N", "D", "loss"]].to_csv(path, index=False)
    return path


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "plain_file"
    path.write_text("not a directory\n")
    return path


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err and "Error:" not in err.split(":", 1)[0]
    assert "PosixPath" not in err and "np.float64" not in err  # paths and numbers as the user typed them
    return err


@pytest.mark.parametrize("argv, words", [
    (["inference", "--gen", "9999999999"], ["--gen", "9999999999"]),
    (["inference", "--gen", "1e20"], ["--gen", "1e20"]),
    (["inference", "--prompt", "-5"], ["--prompt", "[1,"]),
    (["data", "exhaustion", "--samples", "1000000000000"], ["--samples", "10000000"]),
    (["energy", "frontier", "--samples", "1000000000000"], ["--samples", "10000000"]),
    (["energy", "frontier", "--to", "99999999"], ["--to", "2100"]),
    (["energy", "frontier", "--to", "3000"], ["--to", "2100"]),
    (["scaling", "optimal", "--compute", "-1e24"], ["--compute", "> 0", "-1e24"]),
    (["scaling", "optimal", "--compute", "-inf"], ["--compute", "> 0"]),
    (["data", "exhaustion", "--seed=-1"], ["--seed", ">= 0"]),
    (["data", "exhaustion", "--growth", "0"], ["--growth", "> 0"]),
    (["energy", "train", "--flops", "1e24", "--mfu", "1e-300", "--mfu", "2"], ["--mfu", "(0, 1]"]),
    (["energy", "train", "--flops", "nan", "--mfu", "0.4"], ["--flops", "nan"]),
    (["report", "--seed", "-1"], ["--seed", ">= 0"]),
])
def test_bad_sizes_and_ranges_name_the_option(argv, words, capsys):
    assert main(argv) == 2
    err = _one_line_error(capsys)
    for word in words:
        assert word in err, (word, err)
    assert "Maximum allowed size" not in err and "expected one argument" not in err


@pytest.mark.parametrize("argv", [
    # data
    ["data", "exhaustion", "--overtrain", "-1"],
    ["data", "exhaustion", "--samples", "0"],
    ["data", "exhaustion", "--overtrain", "lots"],
    ["data", "effective", "--tokens", "1e9", "--unique", "2e9"],
    ["data", "effective", "--tokens", "1e9"],
    # energy
    ["energy", "train", "--params", "70e9", "--tokens", "1.4e12", "--gpu", "h100", "--mfu", "1.4"],
    ["energy", "train", "--params", "70e9", "--tokens", "1.4e12", "--gpu", "nope", "--mfu", "0.4"],
    ["energy", "train", "--params", "70e9", "--tokens", "-1", "--mfu", "0.4"],
    ["energy", "train", "--params", "70e9", "--tokens", "1.4e12"],
    ["energy", "train", "--params", "70e9", "--tokens", "many", "--mfu", "0.4"],
    ["energy", "train", "--gpu-hours", "1e6", "--flops", "1e24"],
    ["energy", "frontier", "--from", "2030", "--to", "2025"],
    # hparams
    ["hparams", "optimal", "--compute", "-1"],
    ["hparams", "optimal", "--compute", "1e23", "--law", "steplaw2025"],
    ["hparams", "optimal", "--compute", "1e23", "--law", "porian2024"],
    ["hparams", "fit", "/no/such/file.csv"],
])
def test_bad_input_is_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_report_out_under_a_file_names_the_path(a_file, capsys):
    target = a_file / "sub"
    assert main(["report", "--out", str(target), "--only", "energy", "--quick"]) == 2
    assert str(target) in _one_line_error(capsys)


def test_regress_repo_that_is_a_file(a_file, capsys):
    assert main(["regress", "--repo", str(a_file), "--quiet"]) == 2
    assert str(a_file) in _one_line_error(capsys)


def test_fit_plot_under_a_file_names_the_path(runs_csv, a_file, capsys):
    target = a_file / "x.png"
    assert main(["scaling", "fit", str(runs_csv), "--bootstrap", "0", "--plot", str(target)]) == 2
    assert str(target) in _one_line_error(capsys)


def test_fit_without_bootstrap_still_plots(runs_csv, tmp_path, capsys):
    png = tmp_path / "f.png"
    assert main(["scaling", "fit", str(runs_csv), "--bootstrap", "0", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert capsys.readouterr().err == ""


def test_plot_without_suffix_names_the_file_written(runs_csv, tmp_path, capsys):
    stem = tmp_path / "figure"
    assert main(["scaling", "fit", str(runs_csv), "--bootstrap", "0", "--plot", str(stem)]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "figure.png"
    assert written.is_file() and not stem.exists()
    assert f"figure written to {written}\n" in out


def test_closed_pipe_exits_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalelab.cli.cli", "data", "exhaustion", "--samples", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first write, as after `| head -1` printed its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "", err
    assert proc.returncode == EXIT_BROKEN_PIPE


@pytest.mark.parametrize("argv, words", [
    (["energy", "train", "--flops", "1e24", "--mfu", "1e-300"], ["overflows float64", "mfu 1e-300"]),  # once "never"
    (["energy", "train", "--gpu-hours", "1e308", "--pue", "2"], ["overflows float64", "gpu_hours 1e+308 at"]),
])
def test_results_past_the_float64_range_are_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = _one_line_error(capsys)
    for word in words:
        assert word in err, (word, err)


def test_missing_runs_file_is_named_as_typed(tmp_path, capsys):
    missing = tmp_path / "no_such_runs.csv"
    assert main(["scaling", "fit", str(missing)]) == 2
    assert str(missing) in _one_line_error(capsys)


def test_prompt_plus_gen_over_the_bound_is_one_line(capsys):
    assert main(["inference", "--prompt", str(2**24), "--gen", "5"]) == 2
    assert "--prompt + --gen" in _one_line_error(capsys)
