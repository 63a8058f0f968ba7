"""Numba-JIT CPU kernels for the hot paths of LLM inference.

Every optimized kernel has a plain NumPy reference beside it (``*_ref``) with
the same semantics; the tests check the kernels against the references and
the asv suite times both.
"""
