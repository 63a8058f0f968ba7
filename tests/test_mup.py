"""The muP transfer experiment: what Tensor Programs V shows, reproduced on small MLPs on this CPU.

Yang et al. 2022 (Tensor Programs V, arXiv 2203.03466), Fig. 1 and Sec. 3: under the standard
parametrisation the best learning rate shifts as width grows, under muP it stays put and wider is
better at the transferred learning rate; the coordinate check (their Sec. on verifying a muP
implementation) shows activations that keep their size with width under muP and grow under SP.
Seeded: every number here is the same on every run.
"""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.simulations.mup import DEFAULT_LRS, MLPTask, best_lr_table, coord_check, layer_rules, mup_experiment

WIDTHS_8X = (64, 128, 256, 512)  # an 8x width range


@pytest.fixture(scope="module")
def sweeps():
    return {p: mup_experiment(widths=WIDTHS_8X, parametrization=p) for p in ("sp", "mup")}


def test_best_lr_stays_put_under_mup_and_drifts_under_sp(sweeps):
    """Across 8x width: muP's best grid learning rate moves at most one grid step (factor 2), SP's at least two."""
    mup_best = best_lr_table(sweeps["mup"])["grid_index"]
    sp_best = best_lr_table(sweeps["sp"])["grid_index"]
    assert mup_best.max() - mup_best.min() <= 1, best_lr_table(sweeps["mup"])
    assert sp_best.max() - sp_best.min() >= 2, best_lr_table(sweeps["sp"])
    # SP's drift is toward smaller learning rates as width grows (Adam's output step grows like width)
    assert sp_best.iloc[-1] < sp_best.iloc[0]


def test_wider_is_never_worse_at_the_transferred_learning_rate_under_mup(sweeps):
    df = sweeps["mup"]
    best_lr = best_lr_table(df).set_index("width").loc[WIDTHS_8X[0], "best_lr"]
    at = df[df["lr"] == best_lr].groupby("width")["loss"].mean().loc[list(WIDTHS_8X)].to_numpy()
    assert np.all(np.diff(at) <= 0), at


def test_sweep_table_shape(sweeps):
    df = sweeps["mup"]
    assert list(df.columns[:4]) == ["width", "lr", "seed", "loss"]
    assert len(df) == len(WIDTHS_8X) * len(DEFAULT_LRS) * 3
    assert np.all(np.isfinite(df["loss"])) and (df["loss"] > 0).all()


@pytest.fixture(scope="module")
def coords():
    widths = (64, 128, 256, 512, 1024)
    return {p: coord_check(parametrization=p, widths=widths) for p in ("sp", "mup")}


def _scale_by_width(df, layer):
    last = df[(df["step"] == df["step"].max()) & (df["layer"] == layer)]
    return last.groupby("width")["mean_abs"].mean().to_numpy()


def test_coordinate_check_flat_under_mup(coords):
    for layer in ("hidden1", "hidden2", "output"):
        s = _scale_by_width(coords["mup"], layer)
        assert s.max() / s.min() < 2.0, (layer, s)


def test_coordinate_check_grows_under_sp(coords):
    s = _scale_by_width(coords["sp"], "hidden2")  # fed by the n x n weights Adam moves entry by entry
    assert np.all(np.diff(s) > 0) and s[-1] / s[0] > 4.0, s
    out = _scale_by_width(coords["sp"], "output")
    assert out[-1] / out[0] > 2.0, out
    # the first layer's fan-in is fixed, so it keeps its size under both
    s1 = _scale_by_width(coords["sp"], "hidden1")
    assert s1.max() / s1.min() < 2.0


def test_a_run_does_not_depend_on_the_other_learning_rates_in_its_batch():
    full = mup_experiment(widths=(64,), lrs=DEFAULT_LRS, seeds=(1,), steps=20)
    one = mup_experiment(widths=(64,), lrs=(DEFAULT_LRS[3],), seeds=(1,), steps=20)
    assert full.loc[full["lr"] == DEFAULT_LRS[3], "loss"].iloc[0] == one["loss"].iloc[0]
    again = mup_experiment(widths=(64,), lrs=DEFAULT_LRS, seeds=(1,), steps=20)
    assert np.array_equal(full["loss"].to_numpy(), again["loss"].to_numpy())


def test_diverged_runs_report_inf():
    df = mup_experiment(widths=(64,), lrs=(1e-3, 1e36), parametrization="sp", seeds=(0,), steps=3)
    assert np.isfinite(df["loss"].iloc[0]) and df["loss"].iloc[1] == np.inf


def test_layer_rules_follow_tensor_programs_v_table_3():
    """muP (Adam): hidden and output LR scale 1/m, hidden init var 1/fan_in, output init 0; SP: all LRs eta."""
    hidden, out_std, out_lr = layer_rules("mup", 256, 64, 32, 2)
    assert hidden[0] == (32, 256, pytest.approx(32**-0.5), 1.0)
    assert hidden[1] == (256, 256, pytest.approx(256**-0.5), 0.25)
    assert out_std == 0.0 and out_lr == 0.25
    hidden, out_std, out_lr = layer_rules("sp", 256, 64, 32, 2)
    assert [h[3] for h in hidden] == [1.0, 1.0] and out_lr == 1.0 and out_std == pytest.approx(256**-0.5)


@pytest.mark.parametrize("kwargs, exc", [
    ({"parametrization": "ntk"}, ValueError), ({"widths": ()}, ValueError), ({"widths": (64, 64)}, ValueError),
    ({"widths": (0,)}, ValueError), ({"widths": (64.5,)}, TypeError), ({"lrs": (-1e-3,)}, ValueError),
    ({"lrs": (float("nan"),)}, ValueError), ({"lrs": "0.1"}, TypeError), ({"steps": 0}, ValueError),
    ({"seeds": (-1,)}, ValueError), ({"depth": 0}, ValueError), ({"task": "mlp"}, TypeError),
])
def test_bad_arguments(kwargs, exc):
    args = {"widths": (64,), "lrs": (1e-3,), "seeds": (0,), "steps": 1} | kwargs
    with pytest.raises(exc):
        mup_experiment(**args)


def test_bad_task():
    with pytest.raises(ValueError, match="batch_size"):
        MLPTask(batch_size=0)
    with pytest.raises(ValueError, match="'loss' column"):
        best_lr_table(mup_experiment(widths=(64,), lrs=(1e-3,), seeds=(0,), steps=1).drop(columns="loss"))
