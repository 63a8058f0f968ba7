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
