"""Numba-JIT CPU kernels for the hot paths of LLM inference.

Every optimized kernel has a plain NumPy reference beside it (``*_ref``) with
the same semantics; the tests check the kernels against the references and
the asv suite times both.
"""

from scalelab.kernels import _cache_stamp

# Before any kernel module is decorated: cached machine code is keyed by the kernel
# modules compiled into it too, not only by its own file (see _cache_stamp).
_cache_stamp.install()
