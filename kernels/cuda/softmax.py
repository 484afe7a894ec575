"""Row softmax / log-softmax, forward and backward, on (N, C) arrays.

Launch shape: one block of ``THREADS`` threads per row (grid = N).
Memory plan: thread ``t`` handles columns ``t, t + THREADS, ...`` of its row; the row max
and the row sums are tree reductions in a ``THREADS``-slot float64 shared array
(``_util.block_max`` / ``block_sum``). Forward reads the row three times (max, sum, write
pass: the row is hot in L1/L2) and writes it once; backward reads ``y``/``dy`` twice and
writes once. Reductions accumulate in float64; results are stored in the input dtype.
"""
from __future__ import annotations

import functools
import math

import numba
from numba import cuda

from ._util import block_max, block_sum

THREADS = 128  # power of two


@functools.lru_cache(maxsize=None)
def _kernels(threads: int):
    @cuda.jit
    def fwd(y, x, log):
        """y[row] = softmax (or, with ``log``, log-softmax) of x[row], row = blockIdx.x. Grid N,
        ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; row max and sum exp
        are float64 block reductions in a ``threads``-slot shared array; x read three times, y
        written once."""
        sh = cuda.shared.array(threads, numba.float64)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = x.shape[1]
        m = -math.inf
        for j in range(tid, C, threads):
            m = max(m, x[row, j])
        m = block_max(sh, m, tid, threads)
        s = 0.0
        for j in range(tid, C, threads):
            s += math.exp(x[row, j] - m)
        s = block_sum(sh, s, tid, threads)
        if log:
            shift = m + math.log(s)
            for j in range(tid, C, threads):
                y[row, j] = x[row, j] - shift
        else:
            inv = 1.0 / s
            for j in range(tid, C, threads):
                y[row, j] = math.exp(x[row, j] - m) * inv

    @cuda.jit
    def bwd(dx, y, dy, log):
        """dx[row] = y * (dy - sum(dy * y)), or with ``log`` dy - exp(y) * sum(dy); row = blockIdx.x.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; one float64
        block sum in a ``threads``-slot shared array; y, dy read twice, dx written once."""
        sh = cuda.shared.array(threads, numba.float64)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = y.shape[1]
        s = 0.0
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
    y = cuda.device_array(tuple(x.shape), dtype=x.dtype)
    if x.shape[0]:
        _kernels(THREADS)[0][x.shape[0], THREADS](y, x, log)
    return y


def _bwd(y, dy, log: bool):
    dx = cuda.device_array(tuple(y.shape), dtype=y.dtype)
    if y.shape[0]:
        _kernels(THREADS)[1][y.shape[0], THREADS](dx, y, dy, log)
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
