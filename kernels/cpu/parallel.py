"""``parallel_njit``: a ``prange`` kernel compiled twice, threaded and serial, picked per call.

Why: under Numba's ``workqueue`` threading layer (the one minitrans recommends: its threads sleep
instead of spinning, so they never take the cores from the BLAS products between kernels), a
``parallel=True`` kernel is handed to the pool and the calling thread waits for it — on one
thread too, where nothing runs in parallel and the hand-off is pure cost (the thread wakes up,
runs the kernel, the caller wakes up again). The serial twin is the same Python function compiled
with ``parallel=False``, where ``prange`` is ``range``: the caller runs it itself. Every kernel's
work is divided into the same tasks either way, and each task does the same operations in the
same order. LLVM compiles the two separately, though (the threaded one's loop body becomes a
function of its own), and under fastmath it may vectorise a reduction differently: a kernel whose
serial and threaded results must agree bit for bit keeps its row body in a function that is not
inlined, compiled once for both (``attention_small.py`` does), and its tests compare the two.

``kernel = parallel_njit(cache=True, fastmath=...)(fn)`` takes ``njit``'s options; ``kernel(*args)``
runs the serial twin when ``numba.get_num_threads() == 1`` and the threaded one otherwise.
``kernel.threaded`` and ``kernel.serial`` are the two dispatchers (for tests, and for callers
that know which they want). The twin is compiled under its own name (``<name>_serial``): Numba's
on-disk cache files are named after the function and do not record ``parallel``, so two
variants under one name would load each other's machine code.
"""
from __future__ import annotations

import functools
import types

from numba import get_num_threads, njit


def _renamed(fn, suffix: str):
    """A copy of the plain Python function ``fn`` under the name ``fn.__name__ + suffix``."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__,
                              fn.__closure__)
    twin.__qualname__ = fn.__qualname__ + suffix
    twin.__doc__ = fn.__doc__
    return twin


def parallel_njit(**options):
    """``njit(parallel=True, **options)`` with a serial twin run when Numba has one thread."""
    if "parallel" in options:
        raise TypeError("parallel_njit compiles both variants itself: do not pass parallel=")

    def wrap(fn):
        threaded = njit(parallel=True, **options)(fn)
        serial = njit(parallel=False, **options)(_renamed(fn, "_serial"))

        @functools.wraps(fn)
        def kernel(*args):
            return (serial if get_num_threads() == 1 else threaded)(*args)

        kernel.threaded, kernel.serial = threaded, serial
        return kernel

    return wrap


# ------------------------------------------------------------------ serial or threaded, by size
#: Below this many elements a kernel runs its serial version even with more than one Numba
#: thread: handing a call to Numba's pool wakes its threads, and on W1's 1 MB LayerNorm that
#: cost more than the split saved (see `row_tasks`).
THREADED_MIN_ELEMENTS = 1 << 20
#: runs of rows per thread in a threaded row kernel: a few, so that a thread slowed by other
#: work is caught up by the rest
TASKS_PER_THREAD = 4


def row_tasks(n_rows: int, n_elements: int) -> int:
    """How a row kernel over ``n_rows`` rows (``n_elements`` in all) should run: 0 for its serial
    version, otherwise the number of runs of rows its threaded (`prange`) version splits them into.

    Serial with one Numba thread (see the module docstring: measured in the W1 step, a (2048, 128)
    float32 LayerNorm forward took 0.27 ms handed to the pool and 0.08 ms serial). With more
    threads, serial below ``THREADED_MIN_ELEMENTS``: with two threads on a loaded 2-core machine
    the serial version was also the faster one at W1's sizes. The row kernels compute every row
    the same way in both versions, so the choice never changes a result bit."""
    if n_elements < THREADED_MIN_ELEMENTS:
        return 0
    threads = get_num_threads()
    return 0 if threads == 1 else min(n_rows, TASKS_PER_THREAD * threads)
