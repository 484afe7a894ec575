"""Cross-entropy fused with log-softmax (ignore_index, label smoothing), forward and backward.

Launch shape: one block of ``THREADS`` threads per row of the (N, C) logits (grid = N).
Memory plan: forward does three block reductions in a ``THREADS``-slot shared array of the
logits dtype (kernels compiled per dtype, computing in it: no double precision in float32) (row max, sum of exp, sum of logits for the smoothing term), reads the row three
times and writes two scalars per row (``loss``, ``lse``); backward reads the row once and
writes ``dlogits`` once, p = exp(x - lse) recomputed from the saved ``lse``.
loss[i] = (1-ls) * (lse[i] - x[i, t]) + ls * (lse[i] - mean_c x[i, c]); 0 where t == ignore_index.
dlogits[i] = dloss[i] * (softmax(x[i]) - (1-ls) * onehot(t) - ls / C); 0 rows where ignored.
A target outside [0, C) (other than ignore_index) is never read through: its loss is NaN
(the CUDA backend does not validate targets on the host, see docs/kernels.md).
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
    zero, one, ninf, nan = in_dtype(0), in_dtype(1), in_dtype(-math.inf), in_dtype(math.nan)

    @cuda.jit
    def fwd(loss, lse, x, target, ignore_index, ls):
        """loss[row], lse[row] for row = blockIdx.x (NaN loss for a target outside [0, C)).
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; three
        block reductions (max, sum exp, sum x) in a ``threads``-slot shared array;
        the row is read three times, thread 0 writes the two scalars."""
        sh = cuda.shared.array(threads, numba_dtype)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = x.shape[1]
        m = row_max(sh, x, row, tid, threads, ninf)
        s = zero
        sx = zero
        for j in range(tid, C, threads):
            s += math.exp(x[row, j] - m)
            sx += x[row, j]
        s = block_sum(sh, s, tid, threads)
        sx = block_sum(sh, sx, tid, threads)
        if tid == 0:
            z = m + math.log(s)
            lse[row] = z
            t = target[row]
            if t == ignore_index:
                loss[row] = zero
            elif t < 0 or t >= C:  # no bounds fault: an invalid target gives a NaN loss
                loss[row] = nan
            else:
                loss[row] = (one - ls) * (z - x[row, t]) + ls * (z - sx / in_dtype(C))

    @cuda.jit
    def bwd(dx, x, target, lse, dloss, ignore_index, ls):
        """dx[row] = dloss[row] * (exp(x - lse) - ls / C - (1 - ls) * onehot(t)); 0 rows if ignored.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; the row is
        read once and dx written once; no shared memory."""
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        C = x.shape[1]
        t = target[row]
        g = dloss[row]
        z = lse[row]
        lsc = ls / in_dtype(C)
        for j in range(tid, C, threads):
            if t == ignore_index:
                dx[row, j] = zero
            else:
                v = math.exp(x[row, j] - z) - lsc
                if j == t:
                    v -= one - ls
                dx[row, j] = g * v

    return fwd, bwd


def cross_entropy_forward(logits, target, ignore_index: int, label_smoothing: float):
    """(loss (N,), lse (N,)) per docs/kernels.md."""
    N = logits.shape[0]
    dt = np.dtype(logits.dtype)
    loss = device_array(N, dt)
    lse = device_array(N, dt)
    if N:
        launch(_kernels(THREADS, dt)[0], N, THREADS, loss, lse, logits, target, int(ignore_index),
               dt.type(label_smoothing))
    return loss, lse


def cross_entropy_backward(logits, target, lse, dloss, ignore_index: int, label_smoothing: float):
    """dlogits (N, C) per docs/kernels.md."""
    dt = np.dtype(logits.dtype)
    dx = device_array(tuple(logits.shape), dt)
    if logits.shape[0]:
        launch(_kernels(THREADS, dt)[1], logits.shape[0], THREADS, dx, logits, target, lse, dloss,
               int(ignore_index), dt.type(label_smoothing))
    return dx
