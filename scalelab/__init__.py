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

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scalelab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
