"""Thread budgets: run small work on one thread, so a busy core cannot stall it.

A parallel region (a Numba ``prange`` loop or a multi-threaded BLAS call) ends
when its slowest thread ends. When another process holds one of the two cores,
the operating system deschedules one of our threads for a whole time slice and
the region waits for it: measured here with the live engine's tiny model
(a decode step is about a millisecond of work), a step took 22x longer with 2
Numba and 2 BLAS threads than with 1 of each on a loaded machine (load average
12; 212 ms against 9.5 ms per step, same process). Small work gains little
from a second thread anyway, so below a work threshold the kernels run on one
thread, where no other thread can hold them up.

The second half of the fix is in ``scalelab/__init__.py``: Numba's parallel
regions run on GNU OpenMP here, whose idle workers spin by default and so
take the CPU time a descheduled working thread needs. With
``OMP_WAIT_POLICY=passive`` (set there unless the user set it) a 512-token
prefill step of the same engine took 83 ms instead of 880 ms with 2 Numba
threads and 1 BLAS thread (load average 11, fresh processes one after
another); decode steps were about alike.

The Numba kernels' results do not depend on this choice: each is bitwise
independent of its thread count (the tests check it). OpenBLAS's ``sgemm`` is
not: with 1 and 2 threads its float32 products differ in the last bit on
some elements (measured here: 68% of a model's logits, by at most 2.4e-6),
as they do between batch sizes. That is why the model's products with its
weights go through :func:`~scalelab.kernels.linear.linear` (one summation
order per row), so its logits depend neither on this budget nor on which
requests share a step (``kernels/model.py``, "Determinism", names the one exception). BLAS remains in :func:`~scalelab.kernels.moe.moe_layer`
and ``swiglu_ffn`` (kernels timed on their own) and in the NumPy peers.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

import numba

from scalelab.kernels._common import numba_threads

__all__ = ["SINGLE_THREAD_BELOW_FLOPS", "threads_for", "thread_budget"]

#: Work (floating-point operations) below which a whole model step runs on one thread.
#: About 1 ms of one core at the 20-40 GFLOP/s our float32 kernels reach, i.e. well above
#: the tens of microseconds a parallel region costs to start on a quiet machine.
SINGLE_THREAD_BELOW_FLOPS = 2e7

_LOCK = threading.Lock()
_BLAS = None  # (threadpoolctl controller of the loaded BLAS libraries, their thread count), made once


def _blas():
    global _BLAS
    with _LOCK:
        if _BLAS is None:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _BLAS = (ctl, max([lib.num_threads for lib in ctl.lib_controllers], default=1))
    return _BLAS


def threads_for(flops: float, *, below: float = SINGLE_THREAD_BELOW_FLOPS) -> int:
    """Threads for ``flops`` of work: 1 below ``below``, else every thread Numba may use."""
    return 1 if flops < below else numba.config.NUMBA_NUM_THREADS


@contextmanager
def thread_budget(n: int):
    """Run the enclosed Numba kernels and BLAS calls of this Python thread on at most ``n`` threads.

    Only ever lowers the thread counts (never raises them past what the user set); restores both
    on exit. Free when ``n`` is not below either count.
    """
    n = max(1, int(n))
    numba_before = numba.get_num_threads()
    ctl, blas_threads = _blas()
    with ExitStack() as stack:
        if n < numba_before:
            stack.enter_context(numba_threads(n))
        if n < blas_threads:
            stack.enter_context(ctl.limit(limits=n))
        yield
