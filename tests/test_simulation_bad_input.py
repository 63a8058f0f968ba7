"""Simulation functions at extreme and malformed inputs: a named error or a right answer, never a wrong one."""

import math
import warnings

import pytest

from scalelab.simulations import data_supply as ds
from scalelab.simulations import energy as en
from scalelab.simulations import scaling as sc


@pytest.mark.parametrize("call, error, words", [
    (lambda: sc.LAWS["besiroglu2024"].compute_optimal(True), TypeError, "bool"),
    (lambda: sc.LAWS["besiroglu2024"].compute_optimal(float("nan")), ValueError, "finite, got nan"),
    (lambda: ds.effective_tokens("4e11", 1e11), TypeError, "total_tokens"),
    (lambda: ds.effective_tokens(4e11, [1e11, -5.0]), ValueError, "got -5.0"),
    (lambda: en.data_centre_twh([float("nan")]), ValueError, "years must be finite"),
    (lambda: en.training_energy(flops=1e24, hardware=en.get_hardware("h100"), mfu=1e-300), ValueError, "overflow"),
    (lambda: ds.exhaustion_year(n_samples=10**12), ValueError, "n_samples"),
    (lambda: ds.exhaustion_year(seed=-1), ValueError, "seed"),
    (lambda: en.frontier_power_projection(n_samples=10**12), ValueError, "n_samples"),
    (lambda: en.frontier_power_projection([2024, 99999999]), ValueError, "years"),
    (lambda: ds.exhaustion_year(growth_per_year=1e300, growth_interval=None), ValueError, "float64 range"),
])
def test_bad_values_get_named_errors(call, error, words):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning on the way to the error
        with pytest.raises(error, match=words) as info:
            call()
    assert "np.float64" not in str(info.value)


@pytest.mark.parametrize("kwargs", [dict(overtrain=1e308), dict(stock_tokens=1e-300, stock_interval=None)])
def test_demand_above_the_stock_today_is_exhausted_at_the_base_year(kwargs):
    res = ds.exhaustion_year(n_samples=2000, **kwargs)
    assert res.median_year == ds.BASE_YEAR and res.interval == (ds.BASE_YEAR, ds.BASE_YEAR)
    assert math.isfinite(res.sample_years.min()) and res.sample_years.min() >= ds.BASE_YEAR
