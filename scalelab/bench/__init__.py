"""Benchmark tooling: the CI regression gate and reading asv results."""
