"""Row softmax / log-softmax, forward and backward, on (N, C) arrays.

Launch shape: one block of ``THREADS`` threads per row (grid = N).
Memory plan: thread ``t`` handles columns ``t, t + THREADS, ...`` of its row; the row max
and the row sums are tree reductions in a ``THREADS``-slot shared array of the input dtype
(``_util.row_max`` / ``block_sum``). Forward reads the row three times (max, sum, write
pass: the row is hot in L1/L2) and writes it once; backward reads ``y``/``dy`` twice and
writes once. Kernels are compiled per dtype and compute in it (float32 rows in float32,
float32 ``exp``/``log``; the guard checks there is no double-precision instruction).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import block_sum, device_array, launch, nb_dtype, row_max

THREADS = 128  # power of two


@functools.lru_cache(maxsize=None)
def _kernels(threads: int, dtype):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, one, ninf = in_dtype(0), in_dtype(1), in_dtype(-math.inf)

    @cuda.jit
    def fwd(y, x, log):
        """y[row] = softmax (or, with ``log``, log-softmax) of x[row], row = blockIdx.x. Grid N,
        ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; row max and sum exp
        are block reductions in a ``threads``-slot shared array; x read three times, y
        written once."""
        sh = cuda.shared.array(threads, numba_dtype)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = x.shape[1]
        m = row_max(sh, x, row, tid, threads, ninf)
        s = zero
        for j in range(tid, C, threads):
            s += math.exp(x[row, j] - m)
        s = block_sum(sh, s, tid, threads)
        if log:
            shift = m + math.log(s)
            for j in range(tid, C, threads):
                y[row, j] = x[row, j] - shift
        else:
            inv = one / s
            for j in range(tid, C, threads):
                y[row, j] = math.exp(x[row, j] - m) * inv

    @cuda.jit
    def bwd(dx, y, dy, log):
        """dx[row] = y * (dy - sum(dy * y)), or with ``log`` dy - exp(y) * sum(dy); row = blockIdx.x.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; one
        block sum in a ``threads``-slot shared array; y, dy read twice, dx written once."""
        sh = cuda.shared.array(threads, numba_dtype)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = y.shape[1]
        s = zero
        for j in range(tid, C, threads):
            s += dy[row, j] if log else dy[row, j] * y[row, j]
        s = block_sum(sh, s, tid, threads)
        for j in range(tid, C, threads):
            if log:  # dx = dy - exp(y) * sum(dy)
                dx[row, j] = dy[row, j] - math.exp(y[row, j]) * s
            else:  # dx = y * (dy - sum(dy * y))
                dx[row, j] = y[row, j] * (dy[row, j] - s)

    return fwd, bwd


def _fwd(x, log: bool):
    y = device_array(tuple(x.shape), x.dtype)
    if x.shape[0]:
        launch(_kernels(THREADS, np.dtype(x.dtype))[0], x.shape[0], THREADS, y, x, log)
    return y


def _bwd(y, dy, log: bool):
    dx = device_array(tuple(y.shape), y.dtype)
    if y.shape[0]:
        launch(_kernels(THREADS, np.dtype(y.dtype))[1], y.shape[0], THREADS, dx, y, dy, log)
    return dx


def softmax_forward(x):
    """y = softmax(x, axis=-1) for x of shape (N, C)."""
    return _fwd(x, False)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y, -1))."""
    return _bwd(y, dy, False)


def log_softmax_forward(x):
    """y = x - logsumexp(x, -1)."""
    return _fwd(x, True)


def log_softmax_backward(y, dy):
    """dx = dy - exp(y) * sum(dy, -1)."""
    return _bwd(y, dy, True)
