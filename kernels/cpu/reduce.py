"""``np.sum(a, axis=0)`` of a large 2-D float array as one compiled pass, split over columns.

A bias gradient is the column sum of the output gradient: ``sum(g, axis=0)`` of a (tokens,
features) array, once per Linear layer and step. NumPy adds the rows one after the other into the
result (0.13 ms for W1's (2048, 384) float32 gradient on one core); ``sum`` does the same additions
in the same order in one compiled pass (0.08 ms), with the columns split over Numba's threads, so
the result is the same bit for bit, whatever the thread count, and the work no longer waits for
the one thread that runs NumPy. It takes that path for exactly ``sum(a, axis=0)`` (or ``axis=-2``)
of a C-contiguous float32/float64 2-D array of at least ``MIN_SIZE`` elements; every other call is
``np.sum`` itself.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from .parallel import THREADED_MIN_ELEMENTS, parallel_njit

MIN_SIZE = 1 << 15
MIN_COLUMNS_PER_TASK = 64


@njit(inline="always")
def _add_rows(a, acc, c0, c1):
    """acc[:] = a[0, c0:c1] + a[1, c0:c1] + ... in row order (acc: a fresh array, so the loop vectorises)."""
    for j in range(c1 - c0):
        acc[j] = a[0, c0 + j]
    for i in range(1, a.shape[0]):
        row = a[i, c0:c1]
        for j in range(c1 - c0):
            acc[j] += row[j]


@parallel_njit(cache=True)
def _column_sums(a, out, ntasks):
    """out[j] = a[0, j] + a[1, j] + ... in row order; `prange` over ``ntasks`` runs of columns, each
    summed into its own scratch row and copied out once (``_column_sums.serial``: on the calling
    thread, the same sums)."""
    m = a.shape[1]
    per = (m + ntasks - 1) // ntasks
    for t in prange(ntasks):
        c0, c1 = t * per, min(m, (t + 1) * per)
        acc = np.empty(c1 - c0, a.dtype)
        _add_rows(a, acc, c0, c1)
        out[c0:c1] = acc


def _compiled(a) -> bool:
    return isinstance(a, np.ndarray) and a.ndim == 2 and a.size >= MIN_SIZE \
        and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous


def sum(a, axis=None, *args, **kwargs):  # noqa: A001 (NumPy's name)
    """``np.sum(a, axis, ...)``; column sums of large 2-D arrays compiled (see the module docstring)."""
    if not args and not kwargs and (axis == 0 or axis == -2) and type(axis) is int and _compiled(a):
        out = np.empty(a.shape[1], a.dtype)
        ntasks = min(get_num_threads(), a.shape[1] // MIN_COLUMNS_PER_TASK)
        if ntasks > 1 and a.size >= THREADED_MIN_ELEMENTS:
            _column_sums.threaded(a, out, ntasks)
        else:       # one task, or too small to pay for waking Numba's pool: on the calling thread
            _column_sums.serial(a, out, 1)
        return out
    return np.sum(a, axis, *args, **kwargs)


def column_sums_on_this_thread(a):
    """``sum(a, axis=0)`` of a 2-D array, the same bits, computed on the calling thread alone: for
    a caller whose other threads are busy (the concurrent products of a Linear layer's backward),
    where a parallel region would wait for them."""
    if _compiled(a):
        out = np.empty(a.shape[1], a.dtype)
        _column_sums.serial(a, out, 1)
        return out
    return np.sum(a, axis=0)
