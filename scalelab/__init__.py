"""scalelab: measure and model what foundation models cost.

One import name for the whole distribution. The subpackages live in folders
at the repository root (mapped by ``package-dir`` in ``pyproject.toml``) or
here:

* :mod:`scalelab.kernels` (``kernels/``): Numba CPU kernels with NumPy references.
* :mod:`scalelab.simulations` (``simulations/``): analytic models and their measurement.
* :mod:`scalelab.report` (``reports/``): the plotted report.
* :mod:`scalelab.cli` (``scalelab/cli/``): the ``scalelab`` command line.
* :mod:`scalelab.bench` (``scalelab/bench/``): the regression gate and asv-results reading.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Idle OpenMP worker threads sleep instead of spinning (unless the user chose otherwise).
# Numba's parallel kernels run on GNU OpenMP here, whose workers spin-wait by default; on a
# machine where another process holds a core, the spinning threads take the CPU time the
# working ones need. Measured with the live engine (2 threads, load average 11): a 512-token
# prefill step took 880 ms with spinning workers and 83 ms with sleeping ones, in fresh
# processes one after the other (kernels/_threads.py has the numbers). It must be set before
# libgomp loads, at Numba's first parallel call, so here, at the package's first import.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

try:
    __version__ = version("scalelab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
