"""Fits on data that cannot determine the law fail with a named error instead of returning their start."""

import numpy as np
import pandas as pd
import pytest

from scalelab.cli.cli import main
from scalelab.simulations import scaling as sc


def _runs(n, d, loss):
    return pd.DataFrame({"N": np.asarray(n, float), "D": np.asarray(d, float), "loss": np.asarray(loss, float)})


@pytest.mark.parametrize("runs, words", [
    (_runs([1e8] * 5, [1e9] * 5, [3.0] * 5), "1 distinct N"),  # five identical runs
    (_runs([1e8, 2e8, 4e8, 8e8, 1.6e9], [1e10] * 5, [3.0, 2.9, 2.8, 2.75, 2.7]), "1 distinct D"),
    (_runs([1e8, 2e8, 4e8, 8e8, 1.6e9], [2e9, 4e9, 8e9, 1.6e10, 3.2e10], [3.0, 2.9, 2.8, 2.75, 2.7]), "collinear"),
])
def test_non_identifiable_runs_are_named(runs, words):
    with pytest.raises(sc.NotIdentifiableError, match=words):
        sc.fit_scaling_law(runs, n_bootstrap=0)


def test_a_point_that_is_not_a_minimum_is_not_converged():
    truth = sc.LAWS["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 4), points=6)
    runs = sc.simulate_runs(truth, n, d, noise=0.01, seed=0)
    log_n, log_d, log_loss = (np.log(runs[c].to_numpy()) for c in ("N", "D", "loss"))
    start = np.array([5.0, 5.0, 1.0, 0.5, 0.5])
    with pytest.raises(sc.NotConvergedError, match="gradient"):
        sc.check_converged(start, 1.0, log_n, log_d, log_loss)
    with pytest.raises(sc.NotConvergedError, match="diverged"):
        sc.check_converged(np.array([np.inf, 5, 1, 0.5, 0.5]), 1.0, log_n, log_d, log_loss)
    fit = sc.fit_scaling_law(runs, n_bootstrap=0)  # a well-posed fit passes the same check
    sc.check_converged(fit.theta, fit.objective, log_n, log_d, log_loss)


def test_cli_fit_of_identical_runs_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "same.csv"
    _runs([1e8] * 5, [1e9] * 5, [3.0] * 5).to_csv(path, index=False)
    assert main(["scaling", "fit", str(path), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "distinct N" in err


def test_runs_whose_compute_overflows_are_named_without_warnings(tmp_path, capsys):
    import warnings

    path = tmp_path / "extreme.csv"
    _runs([1e3, 1e200, 1e300, 1e5, 1e7], [1e300, 1e200, 1e3, 1e9, 1e4], [3.0, 2.9, 2.8, 2.7, 2.6]).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="float64 range"):
            sc.read_runs(path)
    assert main(["scaling", "fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeWarning" not in err


def test_losses_whose_fitted_coefficients_overflow_are_named_without_warnings(tmp_path, capsys):
    import warnings

    # losses near 1e300: the best log-coefficient passes 709, so exp() of it is inf (once a
    # RuntimeWarning on stderr and an 'inf' law)
    n = np.geomspace(1e6, 1e10, 12)
    d = np.geomspace(1e8, 1e13, 12)[np.random.default_rng(0).permutation(12)]
    runs = _runs(n, d, np.geomspace(1e300, 1e250, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sc.NotConvergedError, match="float64 range"):
            sc.fit_scaling_law(runs, n_bootstrap=0)
    path = tmp_path / "huge_loss.csv"
    runs.to_csv(path, index=False)
    assert main(["scaling", "fit", str(path), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err


@pytest.mark.parametrize("bad, shown", [(np.nan, "row 1 is nan"), (-5.0, "row 1 is -5.0"), ("lots", "row 1 is 'lots'")])
def test_a_bad_runs_cell_is_shown_as_typed(bad, shown):
    runs = pd.DataFrame({"N": [1e8, bad, 4e8], "D": [1e9, 2e9, 4e9], "loss": [3.0, 2.9, 2.8]})
    with pytest.raises(ValueError, match=shown) as info:
        sc.read_runs(runs)
    assert "np.float64" not in str(info.value)
