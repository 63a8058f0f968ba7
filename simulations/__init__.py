"""Models of what foundation models cost: scaling laws, data and electricity
bottlenecks, prefill-versus-decode inference cost and test-time compute.

Every published number used here carries its citation beside it.
"""
