"""Cross-entropy fused with log-softmax (ignore_index, label smoothing), forward and backward.

Launch shape: the row groups of ``softmax`` (see there): a short row of the (N, C) logits (C <=
``SHORT_BYTES / itemsize``, 1024 float32 elements) gets one warp (``LANES`` threads, ``ROWS`` rows
per block, shuffle reductions, no barrier), a longer row one block of ``THREADS`` threads.
Memory plan: forward reads the row once, folding the online (max, sum of exp) pair and the sum of
the logits (for the smoothing term) in registers, reduces them over the group and writes two
scalars per row (``loss``, ``lse``); no row cache is needed. Backward reads the row once and writes
``dlogits`` once, p = exp(x - lse) recomputed from the saved ``lse``; no shared memory. Kernels
are compiled per dtype and compute in it (no double precision in float32).
loss[i] = (1-ls) * (lse[i] - x[i, t]) + ls * (lse[i] - mean_c x[i, c]); 0 where t == ignore_index.
dlogits[i] = dloss[i] * (softmax(x[i]) - (1-ls) * onehot(t) - ls / C); 0 rows where ignored.
A target outside [0, C) (other than ignore_index) is never read through: its loss is NaN
(the CUDA backend checks the targets' range on the device and raises at the next host read,
see minitrans/backends/cuda/pending_checks.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, launch, nb_dtype
from .softmax import group_reductions, row_config, row_constants

LANES = 32          # threads per short row: one warp
ROWS = 4            # short rows per block
THREADS = 256       # threads per long row: one block
SHORT_BYTES = 4096  # the row length (in bytes) up to which a row is short (nothing is cached)
LONG_BYTES = 0      # no row cache


def config(ncols: int, itemsize: int):
    """``softmax.row_config`` under this module's constants, read at call time (tests shrink them)."""
    return row_config(ncols, itemsize, LANES, ROWS, THREADS, SHORT_BYTES, LONG_BYTES)


@functools.lru_cache(maxsize=None)
def _kernels(group: int, rows: int, cols: int, dtype):
    numba_dtype = nb_dtype(dtype)
    zero, one, ninf, nan = row_constants(dtype)
    online, group_sum, group_max_sum, scratch_cols = group_reductions(group, np.dtype(dtype))

    @cuda.jit
    def fwd(loss, lse, x, target, ignore_index, ls):
        """loss[row], lse[row] (NaN loss for a target outside [0, C)); ``group`` threads per row,
        ``rows`` rows per block (row = blockIdx.x * rows + threadIdx.x // group). The row is read
        once (online max + sum of exp, sum of x, in registers), two group reductions, the group's
        lane 0 writes the two scalars."""
        scratch = cuda.shared.array((rows, scratch_cols), numba_dtype)
        tid = cuda.threadIdx.x
        slot = tid // group
        lane = tid % group
        row = cuda.blockIdx.x * rows + slot
        N, C = x.shape
        n = C if row < N else 0  # a group past the last row still takes part in the reductions
        m = ninf
        s = zero
        sx = zero
        for j in range(lane, n, group):
            v = x[row, j]
            m, s = online(m, s, v)
            sx += v
        m, s = group_max_sum(scratch, m, s, slot, lane)
        sx = group_sum(scratch, sx, slot, lane)
        if lane == 0 and n > 0:
            z = nan
            if s > zero:
                z = m + math.log(s)
            lse[row] = z
            t = target[row]
            if t == ignore_index:
                loss[row] = zero
            elif t < 0 or t >= C:  # no bounds fault: an invalid target gives a NaN loss
                loss[row] = nan
            else:
                loss[row] = (one - ls) * (z - x[row, t]) + ls * (z - sx / numba_dtype(C))

    @cuda.jit
    def bwd(dx, x, target, lse, dloss, ignore_index, ls):
        """dx[row] = dloss[row] * (exp(x - lse) - ls / C - (1 - ls) * onehot(t)); 0 rows if ignored.
        Launch as ``fwd``; the row is read once and dx written once; no shared memory."""
        tid = cuda.threadIdx.x
        lane = tid % group
        row = cuda.blockIdx.x * rows + tid // group
        N, C = x.shape
        if row < N:
            t = target[row]
            g = dloss[row]
            z = lse[row]
            lsc = ls / numba_dtype(C)
            for j in range(lane, C, group):
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
        group, rows, cols = config(logits.shape[1], dt.itemsize)
        launch(_kernels(group, rows, cols, dt)[0], cdiv(N, rows), group * rows, loss, lse, logits, target,
               int(ignore_index), dt.type(label_smoothing))
    return loss, lse


def cross_entropy_backward(logits, target, lse, dloss, ignore_index: int, label_smoothing: float):
    """dlogits (N, C) per docs/kernels.md."""
    dt = np.dtype(logits.dtype)
    dx = device_array(tuple(logits.shape), dt)
    N, C = logits.shape
    if N:
        group, rows, cols = config(C, dt.itemsize)
        launch(_kernels(group, rows, cols, dt)[1], cdiv(N, rows), group * rows, dx, logits, target, lse, dloss,
               int(ignore_index), dt.type(label_smoothing))
    return dx
