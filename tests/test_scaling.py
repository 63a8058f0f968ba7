"""Tests of scalelab.simulations.scaling / scalelab.simulations.scaling_fit.

Published numbers are read from the module constants and the data tables, never re-typed.
Each comparison with a publication names the paper, table and tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalelab.simulations import scaling as sc
from scalelab.simulations import scaling_fit as sf

FIXTURE = sc.DATA_DIR / "chinchilla_fig4_extracted.csv"
CHINCHILLA_LAWS = [k for k, v in sc.LAWS.items() if isinstance(v, sc.ScalingLaw)]


def _gopher_budget() -> float:
    t3 = sc.load_hoffmann_table3()
    return float(t3.loc[t3["flops_gopher_units"] == 1.0, "flops"].iloc[0])


def _model(name: str) -> pd.Series:
    models = sc.load_published_models()
    return models.loc[models["model"] == name].iloc[0]


@pytest.fixture(scope="module")
def fig4_runs() -> pd.DataFrame:
    """The 240 runs Besiroglu et al. 2024 fitted: the fixture minus its 5 highest losses."""
    return sc.drop_highest_loss(sc.read_runs(FIXTURE), sc.BESIROGLU2024_DROPPED_RUNS)


@pytest.fixture(scope="module")
def fig4_log(fig4_runs):
    return tuple(np.log(fig4_runs[c].to_numpy()) for c in ("N", "D", "loss"))


@pytest.fixture(scope="module")
def real_fit(fig4_runs) -> sc.ScalingFit:
    """Full published procedure: 4,500 starts and 4,000 bootstrap refits."""
    return sc.fit_scaling_law(fig4_runs, n_bootstrap=sc.BESIROGLU2024_N_BOOTSTRAP, seed=0)


# ------------------------------------------------------------------------------ tables


def test_table3_tokens_follow_from_6nd():
    """Hoffmann et al. 2022 Table 3: printed tokens agree with C / (6N) within 5 %, and the
    implied tokens per parameter C / (6 N^2) lies in [20, 22] on every row."""
    t3 = sc.load_hoffmann_table3()
    assert len(t3) == 9
    implied = t3["flops"] / (sc.TRAINING_FLOPS_PER_PARAM_TOKEN * t3["params"])
    np.testing.assert_allclose(t3["tokens"], implied, rtol=0.05)
    ratio = implied / t3["params"]
    assert ratio.between(20.0, 22.0).all(), ratio.to_list()
    # Gopher units: FLOPs / 5.76e23 as printed (1 decimal, or 1/x for the small rows): within 2 %.
    np.testing.assert_allclose(t3["flops"] / _gopher_budget(), t3["flops_gopher_units"], rtol=0.02)


def test_table_a3_tokens_follow_from_6nd():
    """Hoffmann et al. 2022 Table A3 (Approaches 2 and 3): tokens agree with C / (6N) within 5 %."""
    a3 = sc.load_hoffmann_table_a3()
    for approach in ("approach2", "approach3"):
        implied = a3[f"{approach}_flops"] / (sc.TRAINING_FLOPS_PER_PARAM_TOKEN * a3["params"])
        np.testing.assert_allclose(a3[f"{approach}_tokens"], implied, rtol=0.05, err_msg=approach)
    # Approach 3 spends more tokens per parameter than Approach 2 at every size (Hoffmann et al. Sec. 3.4).
    assert (a3["approach3_tokens"] > a3["approach2_tokens"]).all()


def test_published_models_table():
    """Published FLOPs agree with 6 N D within 5 % for GPT-3 (Brown et al. 2020 Table D.1: 3.14e23),
    Chinchilla (Hoffmann et al. 2022) and Llama 3 405B (3.8e25). Gopher's 5.76e23 is Rae et al.'s fuller
    count, 14 % above 6ND, so it is left out."""
    models = sc.load_published_models()
    assert list(models.columns) == ["model", "params", "active_params", "training_tokens", "training_flops",
                                    "flops_basis", "year", "source"]
    assert models["source"].str.len().gt(20).all()
    for name in ("GPT-3", "Chinchilla", "Llama 3 405B"):
        row = _model(name)
        assert row["flops_basis"] == "published"
        six_nd = sc.training_flops(row["active_params"], row["training_tokens"])
        assert row["training_flops"] == pytest.approx(six_nd, rel=0.05), name
    mixtral = _model("Mixtral 8x7B")
    assert math.isnan(mixtral["training_tokens"]) and math.isnan(mixtral["training_flops"])
    assert mixtral["flops_basis"] == "not published"
    assert mixtral["active_params"] < mixtral["params"]
    ds = _model("DeepSeek-V3")
    assert ds["flops_basis"] == "6ND estimate"
    assert ds["training_flops"] == pytest.approx(6 * ds["active_params"] * ds["training_tokens"])


# ------------------------------------------------------------------------------ the laws


@pytest.mark.parametrize("name", CHINCHILLA_LAWS)
def test_exponent_matches_closed_form(name):
    """a = beta / (alpha + beta) (Hoffmann et al. 2022 Eq. 4): log-slope of N_opt(C) over 1e18..1e28."""
    law = sc.LAWS[name]
    c = np.geomspace(1e18, 1e28, 11)
    n, d = law.compute_optimal(c)
    slope_n = np.polyfit(np.log(c), np.log(n), 1)[0]
    slope_d = np.polyfit(np.log(c), np.log(d), 1)[0]
    a, b = law.exponents
    assert a == pytest.approx(law.beta / (law.alpha + law.beta), rel=1e-12)
    assert slope_n == pytest.approx(a, rel=1e-9)
    assert slope_d == pytest.approx(b, rel=1e-9)
    np.testing.assert_allclose(6 * n * d, c, rtol=1e-12)


@pytest.mark.parametrize("name", CHINCHILLA_LAWS)
@pytest.mark.parametrize("budget", [1e19, 5.76e23, 1e27])
def test_closed_form_optimum_minimises_isoflop_loss(name, budget):
    """The closed-form N_opt is the minimiser of the loss along the iso-FLOP curve (brute force, 1e-4)."""
    law = sc.LAWS[name]
    n_opt, _ = law.compute_optimal(budget)
    n = n_opt * np.exp(np.linspace(-3, 3, 600001))
    loss = law.isoflop(budget, n)
    assert n[np.argmin(loss)] == pytest.approx(n_opt, rel=1e-4)


def test_kaplan_allocation_exponent():
    """Kaplan et al. 2020: N_opt ~ C^0.73 (Hoffmann et al. 2022 Table 2); 4.68e9 parameters at 1e21 FLOPs
    (Hoffmann et al. 2022 App. D.4). Checked on the preset's outputs to 1e-9."""
    law = sc.LAWS["kaplan2020"]
    c = np.geomspace(1e18, 1e26, 9)
    n, d = law.compute_optimal(c)
    slope = np.polyfit(np.log(c), np.log(n), 1)[0]
    assert slope == pytest.approx(sc.KAPLAN2020_ALLOCATION_EXPONENT, rel=1e-9)
    assert law.exponents == pytest.approx((sc.KAPLAN2020_ALLOCATION_EXPONENT, 1 - sc.KAPLAN2020_ALLOCATION_EXPONENT))
    anchor = sc.KAPLAN2020_ALLOCATION_ANCHOR
    assert law.compute_optimal(anchor["flops"])[0] == pytest.approx(anchor["params"], rel=1e-9)
    np.testing.assert_allclose(6 * n * d, c, rtol=1e-12)
    # Kaplan's allocation gives far fewer tokens per parameter than Chinchilla's ~20 at 1e24 FLOPs.
    assert law.tokens_per_parameter(1e24) < 1.0 < 20 < sc.LAWS["besiroglu2024"].tokens_per_parameter(1e24) + 5


def test_kaplan_loss_formula():
    """Kaplan et al. 2020 Eq. (1.5): with D -> inf the law reduces to (N_c / N)^alpha_N (their Eq. 1.1)."""
    law = sc.LAWS["kaplan2020"]
    n = np.array([1e8, 1e10, 1e12])
    np.testing.assert_allclose(law.loss(n, 1e300), (law.N_c / n) ** law.alpha_N, rtol=1e-12)
    d = law.tokens_for_loss(n, 3.0)
    np.testing.assert_allclose(law.loss(n, d), 3.0, rtol=1e-12)
    assert law.tokens_for_loss(1e8, 2.5) == math.inf  # (N_c/1e8)^alpha_N = 2.76 > 2.5: unreachable


@pytest.mark.parametrize("name", CHINCHILLA_LAWS)
def test_chinchilla_predicted_below_gopher(name):
    """Hoffmann et al. 2022 Sec. 4: Chinchilla (70B, 1.4T tokens) beats Gopher (280B, 300B) at Gopher's
    budget (Table 3: 5.76e23 FLOPs); both Chinchilla-form presets agree."""
    law = sc.LAWS[name]
    chin, gopher = _model("Chinchilla"), _model("Gopher")
    budget = _gopher_budget()
    assert law.isoflop(budget, chin["params"]) < law.isoflop(budget, gopher["params"])
    assert law.loss(chin["params"], chin["training_tokens"]) < law.loss(gopher["params"], gopher["training_tokens"])


def test_hoffmann2022_rounded_constants_give_about_32b():
    """Hoffmann et al. 2022's printed Approach-3 constants (Eq. 10) put the optimum at Gopher's budget
    (5.76e23 FLOPs, Table 3) near 32B parameters (within 3 %), not the 40B of their Figure 4; the docstring
    and the preset's note say so."""
    law = sc.LAWS["hoffmann2022"]
    n, _ = law.compute_optimal(_gopher_budget())
    assert n == pytest.approx(32e9, rel=0.03)
    assert abs(n / 40e9 - 1) > 0.15
    assert "32B" in sc.hoffmann2022_law.__doc__ and "40B" in sc.hoffmann2022_law.__doc__
    assert "40B" in law.note
    for key, value in sc.HOFFMANN2022_APPROACH3.items():
        assert getattr(law, key) == value


def test_besiroglu_preset_is_the_published_fit():
    law = sc.LAWS["besiroglu2024"]
    for key, value in sc.BESIROGLU2024_ESTIMATES.items():
        assert getattr(law, key) == value
    assert "2404.10102" in law.source


def test_vectorized_and_scalar_interfaces_agree():
    law = sc.LAWS["besiroglu2024"]
    n = np.array([1e9, 1e10])
    d = np.array([2e10, 2e11])
    vec = law.loss(n, d)
    assert isinstance(vec, np.ndarray) and vec.shape == (2,)
    assert isinstance(law.loss(1e9, 2e10), float)
    assert law.loss(1e9, 2e10) == vec[0]
    grid = law.loss(n[:, None], d[None, :])
    assert grid.shape == (2, 2)
    assert sc.training_flops(1e9, 2e10) == pytest.approx(1.2e20)
    assert sc.training_tokens(1e12, 2.5) == pytest.approx(2.5e12)
    assert law.optimal_loss(1e24) == pytest.approx(law.loss(*law.compute_optimal(1e24)))


# -------------------------------------------------------------------------- fitting kernels


_THETA = st.tuples(
    st.floats(-5, 40), st.floats(-5, 40), st.floats(-3, 3), st.floats(0, 3), st.floats(0, 3)
)


@settings(max_examples=40)
@given(theta=_THETA, n=st.integers(1, 60), seed=st.integers(0, 2**31 - 1), weighted=st.booleans())
def test_kernel_objective_and_gradient_match_numpy_reference(theta, n, seed, weighted):
    """The vectorized Numba objective/gradient (own exp/log) against the NumPy float64 reference."""
    rng = np.random.default_rng(seed)
    log_n = np.log(rng.uniform(1e7, 1e11, n))
    log_d = np.log(rng.uniform(1e8, 1e12, n))
    log_loss = np.log(rng.uniform(1.8, 5.0, n))
    w = rng.integers(0, 4, n).astype(np.float64) if weighted else np.ones(n)
    th = np.array(theta)
    grad = np.empty(5)
    f = sf._objective_grad(th, log_n, log_d, log_loss, w, sf.HUBER_DELTA, 1.0, grad)
    f_ref = sf.huber_lse_objective(th, log_n, log_d, log_loss, w)
    g_ref = sf.huber_lse_gradient(th, log_n, log_d, log_loss, w)
    assert f == pytest.approx(f_ref, rel=1e-11, abs=1e-300)
    scale = np.abs(g_ref).max() + 1e-300
    np.testing.assert_allclose(grad, g_ref, rtol=1e-9, atol=1e-11 * scale)


def test_reference_gradient_matches_finite_differences(fig4_log):
    """The analytic gradient of the published objective against central differences (1e-6 relative)."""
    log_n, log_d, log_loss = fig4_log
    for theta in ([6.0, 7.5, 0.6, 0.35, 0.37], [2.0, 12.0, -0.5, 0.2, 0.6]):
        theta = np.array(theta)
        g = sf.huber_lse_gradient(theta, log_n, log_d, log_loss)
        h = 1e-6
        fd = np.array([(sf.huber_lse_objective(theta + h * e, log_n, log_d, log_loss)
                        - sf.huber_lse_objective(theta - h * e, log_n, log_d, log_loss)) / (2 * h)
                       for e in np.eye(5)])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


def test_same_optimum_as_published_scipy_procedure(fig4_log):
    """Same starts, same objective: the compiled L-BFGS reaches an objective no worse than scipy's
    L-BFGS-B with numerical gradients (the published procedure) beyond 1e-6 relative, and the same
    (E, A, B, alpha, beta) within 1e-2 relative. Starts: a published-grid point from which scipy
    reaches the global basin, and three seeded perturbations of the optimum (the full 4,500-start
    comparison takes minutes for scipy and lives in the asv benchmark / tools/compare_scaling_fit.py)."""
    log_n, log_d, log_loss = fig4_log
    grid = sf.besiroglu_grid()
    pick = np.flatnonzero((grid == [10, 15, -0.5, 0, 1]).all(axis=1))
    centre = np.array([6.2, 7.7, 0.6, 0.35, 0.37])
    starts = np.vstack([grid[pick], centre + np.random.default_rng(0).normal(0, 0.1, (3, 5))])
    s_theta, s_obj = sf.scipy_grid_search(log_n, log_d, log_loss, starts)
    theta, obj = sc.minimize_over_grid(log_n, log_d, log_loss, starts)
    best = int(np.nanargmin(s_obj))
    assert obj <= s_obj[best] * (1 + 1e-6)
    np.testing.assert_allclose(sc._theta_to_params(theta), sc._theta_to_params(s_theta[best]), rtol=1e-2)
    # From each of these starts the compiled optimiser ends no worse than scipy (scipy's default
    # tolerances often stop it early on this nearly piecewise-linear objective).
    _, per_start, _ = sf.grid_search_lbfgs(log_n, log_d, log_loss, starts)
    assert np.all(per_start <= s_obj * (1 + 1e-6))


def test_results_do_not_depend_on_thread_count(fig4_log):
    """Seeded bootstrap and grid give bit-identical results on 1 and 2 Numba threads."""
    log_n, log_d, log_loss = fig4_log
    grid = sf.besiroglu_grid()[::97]
    r1 = sf.grid_search_lbfgs(log_n, log_d, log_loss, grid, threads=1)
    r2 = sf.grid_search_lbfgs(log_n, log_d, log_loss, grid, threads=2)
    np.testing.assert_array_equal(r1[0], r2[0])
    np.testing.assert_array_equal(r1[1], r2[1])
    counts = sf.bootstrap_counts(log_n.size, 64, seed=3)
    theta0 = r1[0][np.argmin(r1[1])]
    b1 = sf.bootstrap_lbfgs(log_n, log_d, log_loss, theta0, counts, threads=1)
    b2 = sf.bootstrap_lbfgs(log_n, log_d, log_loss, theta0, counts, threads=2)
    np.testing.assert_array_equal(b1[0], b2[0])


def test_bootstrap_counts_are_resamples():
    counts = sf.bootstrap_counts(37, 500, seed=1)
    assert counts.shape == (500, 37)
    assert (counts.sum(axis=1) == 37).all()
    np.testing.assert_array_equal(counts, sf.bootstrap_counts(37, 500, seed=1))
    assert not np.array_equal(counts, sf.bootstrap_counts(37, 500, seed=2))
    # Each run appears in a resample with probability 1 - (1 - 1/n)^n ~ 0.64.
    assert (counts > 0).mean() == pytest.approx(1 - (1 - 1 / 37) ** 37, abs=0.02)


def test_besiroglu_grid_is_the_published_one():
    """Hoffmann et al. 2022 App. D.2 / Besiroglu et al. 2024: 6 x 6 x 5 x 5 x 5 = 4,500 starts."""
    grid = sf.besiroglu_grid()
    assert grid.shape == (4500, 5)
    for j, name in enumerate(sf.PARAM_ORDER):
        np.testing.assert_array_equal(np.unique(grid[:, j]), sf.BESIROGLU_GRID_VALUES[name])


# ---------------------------------------------------------------------------- real data


def test_real_data_reproduces_besiroglu2024(real_fit, fig4_log):
    """Besiroglu et al. 2024 (arXiv 2404.10102) on the 240 runs from Hoffmann et al. 2022 Fig. 4:
    every estimate within one published standard error, every bootstrap standard error (4,000 resamples)
    within a factor 1.5 of the published one."""
    assert real_fit.n_runs == 240 and real_fit.n_starts == 4500
    assert real_fit.bootstrap.shape[0] + real_fit.n_bootstrap_failed == sc.BESIROGLU2024_N_BOOTSTRAP
    assert real_fit.n_bootstrap_failed <= 40
    for name, published in sc.BESIROGLU2024_ESTIMATES.items():
        se = sc.BESIROGLU2024_STANDARD_ERRORS[name]
        assert abs(real_fit.estimates[name] - published) <= se, name
        ours = real_fit.standard_error(name)
        assert se / 1.5 <= ours <= se * 1.5, (name, ours, se)
    # Our optimum is at least as good as the published parameters under the published objective.
    log_n, log_d, log_loss = fig4_log
    pub = sc.BESIROGLU2024_ESTIMATES
    pub_theta = [math.log(pub["A"]), math.log(pub["B"]), math.log(pub["E"]), pub["alpha"], pub["beta"]]
    assert real_fit.objective <= sf.huber_lse_objective(np.array(pub_theta), log_n, log_d, log_loss)
    assert real_fit.objective == pytest.approx(sf.huber_lse_objective(real_fit.theta, log_n, log_d, log_loss), rel=1e-12)


def test_real_data_intervals(real_fit):
    """Percentile intervals contain the estimate, and the allocation exponent a stays near 0.5
    (Besiroglu et al. 2024 report tokens-per-parameter consistent with ~20, unlike the printed fit)."""
    summary = real_fit.summary()
    assert (summary["lo"] <= summary["estimate"]).all() and (summary["estimate"] <= summary["hi"]).all()
    lo, hi = real_fit.interval("a")
    assert lo < 0.5 < hi
    est, tlo, thi = real_fit.tokens_per_parameter(_gopher_budget())
    assert tlo < 20.0 < thi and tlo < est < thi


def test_quick_grid_reaches_the_full_grid_optimum(real_fit, fig4_runs):
    """The report's quick-mode 243-start grid finds the same optimum as the published 4,500 starts."""
    from scalelab.report.sections.scaling import QUICK_GRID

    quick = sc.fit_scaling_law(fig4_runs, n_bootstrap=0, init_grid=QUICK_GRID)
    assert quick.objective <= real_fit.objective * (1 + 1e-9)
    np.testing.assert_allclose(quick.theta, real_fit.theta, rtol=1e-5)


def test_fig4_column_names_are_read(fig4_runs):
    raw = pd.read_csv(FIXTURE)
    assert len(raw) == 245
    runs = sc.read_runs(FIXTURE)
    np.testing.assert_allclose(runs["D"], raw["Training FLOP"] / (6 * raw["Model Size"]))
    np.testing.assert_allclose(runs["C"], raw["Training FLOP"])
    assert len(fig4_runs) == 240
    assert fig4_runs["loss"].max() <= np.sort(raw["loss"].to_numpy())[-6]


# --------------------------------------------------------------------- simulated recovery


def test_law_recovered_from_simulated_runs():
    """simulate_runs -> fit_scaling_law: the true parameters lie inside the 99 % bootstrap intervals
    (99 % per parameter keeps the joint check near 95 %), and the estimates within 3 bootstrap SEs."""
    truth = sc.ScalingLaw(E=1.9, A=350.0, B=1200.0, alpha=0.33, beta=0.31, name="truth")
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 7), points=9, span=6.0)
    runs = sc.simulate_runs(truth, n, d, noise=0.01, seed=7)
    fit = sc.fit_scaling_law(runs, n_bootstrap=300, seed=1, level=0.99)
    for name in ("E", "A", "B", "alpha", "beta"):
        lo, hi = fit.interval(name)
        true = getattr(truth, name)
        assert lo <= true <= hi, (name, lo, true, hi)
        assert abs(fit.estimates[name] - true) <= 3 * fit.standard_error(name), name
    lo, hi = fit.interval("a")
    assert lo <= truth.exponents[0] <= hi


def test_noise_free_runs_are_fitted_exactly():
    truth = sc.LAWS["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e22, 5), points=7)
    fit = sc.fit_scaling_law(sc.simulate_runs(truth, n, d, noise=0.0), n_bootstrap=0)
    for name in ("E", "A", "B", "alpha", "beta"):
        assert fit.estimates[name] == pytest.approx(getattr(truth, name), rel=1e-4), name
    assert fit.objective < 1e-12


def test_simulate_runs_is_seeded():
    law = sc.LAWS["hoffmann2022"]
    a = sc.simulate_runs(law, [1e9, 2e9], [2e10, 4e10], noise=0.02, seed=5)
    b = sc.simulate_runs(law, [1e9, 2e9], [2e10, 4e10], noise=0.02, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["N", "D", "C", "loss"]
    clean = sc.simulate_runs(law, [1e9, 2e9], [2e10, 4e10], noise=0.0)
    np.testing.assert_allclose(clean["loss"], law.loss(np.array([1e9, 2e9]), np.array([2e10, 4e10])))


def test_fit_isoflop_recovers_exponent():
    """Approach 2 on noise-light IsoFLOP sweeps of a known law: a within 0.02 of beta/(alpha+beta)
    (the parabola is only an approximation of the iso-FLOP curve), b = 1 - a, intervals ordered."""
    truth = sc.LAWS["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e22, 9), points=15, span=4.0)
    runs = sc.simulate_runs(truth, n, d, noise=0.002, seed=3)
    iso = sc.fit_isoflop(runs, n_bootstrap=100, seed=0)
    assert iso.a == pytest.approx(truth.exponents[0], abs=0.02)
    assert iso.b == pytest.approx(1 - iso.a)
    assert iso.a_interval[0] <= iso.a <= iso.a_interval[1]
    assert len(iso.minima) == 9
    n_opt, _ = iso.compute_optimal(1e20)
    assert n_opt == pytest.approx(truth.compute_optimal(1e20)[0], rel=0.15)


def test_extrapolation_band_covers_truth():
    """Fit on simulated runs below 1e20 FLOPs; the true compute-optimal loss up to 1e23 lies in the 95 % band."""
    truth = sc.ScalingLaw(E=1.8, A=480.0, B=2000.0, alpha=0.35, beta=0.36)
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 7), points=9)
    runs = sc.simulate_runs(truth, n, d, noise=0.01, seed=11)
    budgets = np.geomspace(1e20, 1e23, 7)
    ext = sc.extrapolate(runs, cutoff_flops=1e20, budgets=budgets, n_bootstrap=200, seed=0)
    assert (ext.used["C"] <= 1e20 * (1 + 1e-12)).all() and (ext.held_out["C"] > 1e20).all()
    true = truth.optimal_loss(budgets)
    assert ((ext.frontier["loss_lo"] <= true) & (true <= ext.frontier["loss_hi"])).all()
    widths = ext.frontier["loss_hi"] - ext.frontier["loss_lo"]
    assert widths.iloc[-1] > widths.iloc[0]  # the band widens with distance from the data


# ------------------------------------------------------------------ inference-aware optimum


@pytest.mark.parametrize("name", CHINCHILLA_LAWS)
def test_inference_aware_reduces_to_compute_optimal_without_demand(name):
    """Sardana et al. 2023: with no inference demand the optimum is the compute-optimal point (1e-5)."""
    law = sc.LAWS[name]
    target = law.optimal_loss(1e23)
    opt = sc.inference_aware_optimum(law, target, 0.0)
    n_ref, d_ref = law.compute_optimal(1e23)
    assert opt.N[0] == pytest.approx(n_ref, rel=1e-5)
    assert opt.D[0] == pytest.approx(d_ref, rel=1e-5)
    assert opt.training_flops[0] == pytest.approx(1e23, rel=1e-8)
    assert opt.inference_flops[0] == 0.0


def test_inference_aware_moves_to_smaller_models_as_demand_grows():
    """Sardana et al. 2023: larger lifetime demand -> smaller N, more tokens, target loss still met,
    and never more total compute than the compute-optimal model serving the same demand."""
    law = sc.LAWS["besiroglu2024"]
    target = law.optimal_loss(_gopher_budget())
    demand = np.array([0.0, 1e10, 1e12, 1e13, 1e14, 1e15])
    opt = sc.inference_aware_optimum(law, target, demand)
    assert np.all(np.diff(opt.N) < 0) and np.all(np.diff(opt.D) > 0)
    np.testing.assert_allclose(law.loss(opt.N, opt.D), target, rtol=1e-10)
    baseline = opt.training_flops[0] + sc.INFERENCE_FLOPS_PER_PARAM_TOKEN * opt.N[0] * demand
    assert np.all(opt.total_flops <= baseline * (1 + 1e-9))
    # Brute force at one demand: no model size on a fine grid is cheaper (1e-6).
    t = demand[3]
    n = opt.N[0] * np.geomspace(0.05, 2.0, 200001)
    d = law.tokens_for_loss(n, target)
    cost = 6 * n * d + 2 * n * t
    assert opt.total_flops[3] <= cost.min() * (1 + 1e-6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_law_inputs_name_the_argument(bad):
    law = sc.LAWS["besiroglu2024"]
    with pytest.raises(ValueError, match="N"):
        law.loss(bad, 1e10)
    with pytest.raises(ValueError, match="D"):
        law.loss(1e9, [1e10, bad])
    with pytest.raises(ValueError, match="C"):
        law.compute_optimal(bad)
    with pytest.raises(ValueError, match="C"):
        sc.LAWS["kaplan2020"].compute_optimal(bad)
    with pytest.raises(ValueError, match="epochs"):
        sc.training_tokens(1e12, bad)
    with pytest.raises(ValueError, match="N"):
        sc.training_flops(bad, 1e10)


def test_bad_types_and_presets():
    with pytest.raises(TypeError, match="N"):
        sc.LAWS["besiroglu2024"].loss("big", 1e10)
    with pytest.raises(ValueError, match="unknown law"):
        sc.get_law("chinchilla")
    with pytest.raises(ValueError, match="alpha"):
        sc.ScalingLaw(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3)


def test_bad_runs(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        sc.read_runs(pd.DataFrame({"N": [1e9], "tokens": [1e10], "loss": [3.0]}))
    with pytest.raises(ValueError, match="loss"):
        sc.read_runs(pd.DataFrame({"N": [1e9, 2e9], "D": [1e10, 1e10], "loss": [3.0, -1.0]}))
    with pytest.raises(ValueError, match="'D'"):
        sc.read_runs(pd.DataFrame({"N": [1e9], "D": ["lots"], "loss": [3.0]}))
    with pytest.raises(FileNotFoundError):
        sc.read_runs(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="runs"):
        sc.read_runs([1, 2, 3])
    few = sc.simulate_runs(sc.LAWS["hoffmann2022"], [1e9, 2e9, 3e9, 4e9], 1e11)
    with pytest.raises(ValueError, match="at least 5 runs"):
        sc.fit_scaling_law(few)
    runs = sc.simulate_runs(sc.LAWS["hoffmann2022"], np.geomspace(1e8, 1e10, 8), 1e11)
    with pytest.raises(ValueError, match="n_bootstrap"):
        sc.fit_scaling_law(runs, n_bootstrap=-1)
    with pytest.raises(ValueError, match="init_grid"):
        sc.fit_scaling_law(runs, init_grid=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="level"):
        sc.fit_scaling_law(runs, level=1.5)
    n = np.geomspace(1e8, 1e10, 6)[:, None] * np.ones(4)
    d = np.geomspace(1e9, 1e11, 4)[None, :] * np.ones((6, 1))
    rising = pd.DataFrame({"N": n.ravel(), "D": d.ravel(), "loss": (2 + 1e3 / n**0.3 + 1e-3 * d**0.2).ravel()})
    with pytest.raises(ValueError, match="vary both N and D"):
        sc.fit_scaling_law(rising, n_bootstrap=0)  # loss rising with D: the best beta is negative
    n, d = sc.isoflop_design(sc.LAWS["hoffmann2022"], [1e19, 1e20], points=5)
    good = sc.simulate_runs(sc.LAWS["hoffmann2022"], n, d)
    with pytest.raises(ValueError, match="intervals need a bootstrap"):
        sc.fit_scaling_law(good, n_bootstrap=0).interval("E")


def test_bad_simulation_and_optimum_inputs():
    law = sc.LAWS["besiroglu2024"]
    with pytest.raises(ValueError, match="noise"):
        sc.simulate_runs(law, 1e9, 1e10, noise=-0.01)
    with pytest.raises(ValueError, match="noise"):
        sc.simulate_runs(law, 1e9, 1e10, noise=float("nan"))
    with pytest.raises(ValueError, match="target_loss"):
        sc.inference_aware_optimum(law, law.E * 0.99, 0.0)
    with pytest.raises(ValueError, match="inference_tokens"):
        sc.inference_aware_optimum(law, 2.2, -1.0)
    runs = sc.simulate_runs(law, np.geomspace(1e8, 1e10, 8), 1e11)
    with pytest.raises(ValueError, match="cutoff_flops"):
        sc.extrapolate(runs, cutoff_flops=1.0, budgets=[1e24])
    with pytest.raises(ValueError, match="budgets"):
        sc.extrapolate(runs, cutoff_flops=1e30, budgets=[0.0])
    with pytest.raises(ValueError, match="compute budgets"):
        sc.fit_isoflop(runs)


def test_tokens_for_loss_unreachable_is_inf():
    law = sc.LAWS["besiroglu2024"]
    n_min = law.min_params_for_loss(2.0)
    assert law.tokens_for_loss(n_min * 0.5, 2.0) == math.inf
    assert math.isfinite(law.tokens_for_loss(n_min * 2.0, 2.0))


# -------------------------------------------------------------------------------- CLI


def test_cli_optimal(capsys):
    from scalelab.cli.cli import main

    assert main(["scaling", "optimal", "--compute", "1e24", "--law", "besiroglu2024"]) == 0
    out = capsys.readouterr().out
    n, d = sc.LAWS["besiroglu2024"].compute_optimal(1e24)
    assert f"{n:.4g}" in out and f"{d:.4g}" in out and f"{d / n:.4g}" in out
    assert f"{sc.LAWS['besiroglu2024'].loss(n, d):.4f}" in out


@pytest.mark.parametrize("argv", [
    ["scaling", "optimal", "--compute", "-5"],
    ["scaling", "optimal", "--compute", "lots"],
    ["scaling", "optimal", "--compute", "1e24", "--law", "nope"],
    ["scaling", "fit", "/no/such/file.csv"],
    ["scaling", "fit", "RUNS", "--bootstrap", "-3"],
])
def test_cli_bad_input_is_one_line_exit_2(argv, capsys, tmp_path):
    from scalelab.cli.cli import main

    argv = [str(FIXTURE) if a == "RUNS" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_fit_malformed_csv(capsys, tmp_path):
    from scalelab.cli.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("N,tokens,loss\n1e9,1e10,3.0\n")
    assert main(["scaling", "fit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "columns" in err


def test_cli_fit_with_plot(capsys, tmp_path):
    from scalelab.cli.cli import main

    truth = sc.LAWS["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 4), points=6)
    path = tmp_path / "runs.csv"
    sc.simulate_runs(truth, n, d, noise=0.01, seed=0)[["N", "D", "loss"]].to_csv(path, index=False)
    png = tmp_path / "fit.png"
    assert main(["scaling", "fit", str(path), "--bootstrap", "50", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "95% interval" in out and png.stat().st_size > 1000


def test_cli_fit_reads_fig4_columns(capsys):
    from scalelab.cli.cli import main

    assert main(["scaling", "fit", str(FIXTURE), "--bootstrap", "0", "--drop-highest", "5"]) == 0
    out = capsys.readouterr().out
    assert "240 runs" in out and "1.817" in out


# ---------------------------------------------------------------------- figures, section


def test_figures_build():
    from matplotlib.figure import Figure

    from scalelab.report.figures import scaling as figs

    laws = sc.LAWS
    fig = figs.loss_contour_figure(laws["besiroglu2024"], laws, sc.load_published_models())
    assert isinstance(fig, Figure) and fig.axes[0].get_xlabel() and fig.axes[0].get_xscale() == "log"
    assert isinstance(figs.tokens_per_parameter_figure(figs.tokens_per_parameter_table(laws)), Figure)
    truth = laws["besiroglu2024"]
    n, d = sc.isoflop_design(truth, np.geomspace(1e18, 1e21, 5), points=7)
    runs = sc.simulate_runs(truth, n, d, noise=0.01)
    fit = sc.fit_scaling_law(runs, n_bootstrap=50, init_grid=sf.besiroglu_grid()[::9])
    assert isinstance(figs.fitted_law_figure(fit, runs), Figure)
    ext = sc.extrapolate(runs, cutoff_flops=2e19, budgets=np.geomspace(1e19, 1e23, 9), n_bootstrap=50,
                         init_grid=sf.besiroglu_grid()[::9])
    assert isinstance(figs.extrapolation_figure(ext), Figure)
    opt = sc.inference_aware_optimum(truth, 2.1, np.geomspace(1e9, 1e14, 6)).to_frame()
    opt = opt.assign(N_compute_optimal=opt["N"].iloc[0], D_compute_optimal=opt["D"].iloc[0],
                     total_flops_compute_optimal=opt["total_flops"] * 1.1)
    assert isinstance(figs.inference_allocation_figure(opt, 2.1, truth.name), Figure)


def test_section_quick_build():
    from scalelab.report.section import FigureItem, SectionContext
    from scalelab.report.sections import scaling as section

    sec = section.build(SectionContext(quick=True, seed=0))
    assert sec.title == section.TITLE
    figures = [it for it in sec.items if isinstance(it, FigureItem)]
    assert {f.name for f in figures} == {"loss_contours", "tokens_per_parameter", "fitted_law", "extrapolation",
                                         "inference_allocation"}
    assert all(isinstance(f.data, pd.DataFrame) and len(f.data) for f in figures)
