"""Layer norm over the last axis of (N, D), forward and backward.

Kernels are compiled per dtype and compute in it (no double precision in float32 kernels).
Forward and ``dx`` use the row groups of ``softmax`` (see there): a short row (D <=
``SHORT_BYTES / itemsize``, 1024 float32 elements) gets one warp (``LANES`` threads, ``ROWS`` rows
per block, shuffle reductions, no barrier); a longer row gets one block of ``THREADS`` threads.
  * forward: one global read of x, copied into a per-row shared cache while summing it; mean,
    then the two-pass variance from the cache (no cancellation), then y written from the cache;
    the group's lane 0 writes ``mean`` and ``rstd``;
  * ``dx``: one global read of dy and x (g = dy * w and x cached in shared memory, two arrays)
    folding both sums (of g and of g * xhat) at once, one reduction each, then
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) written from the caches.
A row longer than its cache (``LONG_BYTES``, 16 KiB per array) is re-read from global memory.
  * ``dweight`` / ``dbias``: one thread per column (grid = ceil(D / COL_THREADS) blocks of
    ``COL_THREADS``), each folding its column over the N rows in a fixed order; neighbouring
    threads read neighbouring columns, so every row read is coalesced. Deterministic (no atomics).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, launch, nb_dtype
from .softmax import group_reductions, row_config

LANES = 32          # threads per short row: one warp
ROWS = 4            # short rows per block
THREADS = 256       # threads per long row: one block
SHORT_BYTES = 4096  # shared cache per cached array and short row
LONG_BYTES = 16384  # shared cache per cached array and long row
COL_THREADS = 128


def config(ncols: int, itemsize: int):
    """``softmax.row_config`` under this module's constants, read at call time (tests shrink them)."""
    return row_config(ncols, itemsize, LANES, ROWS, THREADS, SHORT_BYTES, LONG_BYTES)


@functools.lru_cache(maxsize=None)
def _kernels(group: int, rows: int, cols: int, dtype):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, one = in_dtype(0), in_dtype(1)
    _, group_sum, _, scratch_cols = group_reductions(group, np.dtype(dtype))

    @cuda.jit
    def fwd(y, mean, rstd, x, w, b, has_w, has_b, eps):
        """y[row] = (x - mean) * rstd (* w) (+ b), saving mean[row], rstd[row]; ``group`` threads per
        row, ``rows`` rows per block (row = blockIdx.x * rows + threadIdx.x // group). x read once
        into the ``cols``-element shared cache, two group sums (mean, two-pass variance), y written
        once from the cache."""
        cache = cuda.shared.array((rows, cols), numba_dtype)
        scratch = cuda.shared.array((rows, scratch_cols), numba_dtype)
        tid = cuda.threadIdx.x
        slot = tid // group
        lane = tid % group
        row = cuda.blockIdx.x * rows + slot
        N, D = x.shape
        n = D if row < N else 0  # a group past the last row still takes part in the reductions
        cached = D <= cols
        Df = numba_dtype(D)
        s = zero
        for j in range(lane, n, group):
            v = x[row, j]
            if cached:
                cache[slot, j] = v
            s += v
        mu = group_sum(scratch, s, slot, lane) / Df
        s = zero
        for j in range(lane, n, group):
            d = (cache[slot, j] if cached else x[row, j]) - mu
            s += d * d
        r = one / math.sqrt(group_sum(scratch, s, slot, lane) / Df + eps)
        for j in range(lane, n, group):
            v = ((cache[slot, j] if cached else x[row, j]) - mu) * r
            if has_w:
                v *= w[j]
            if has_b:
                v += b[j]
            y[row, j] = v
        if lane == 0 and n > 0:
            mean[row] = mu
            rstd[row] = r

    @cuda.jit
    def bwd_dx(dx, dy, x, w, has_w, mean, rstd):
        """dx[row] = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; launch as ``fwd``.
        dy and x read once (g and x cached in two ``cols``-element shared arrays), two group sums,
        dx written once from the caches."""
        gcache = cuda.shared.array((rows, cols), numba_dtype)
        xcache = cuda.shared.array((rows, cols), numba_dtype)
        scratch = cuda.shared.array((rows, scratch_cols), numba_dtype)
        tid = cuda.threadIdx.x
        slot = tid // group
        lane = tid % group
        row = cuda.blockIdx.x * rows + slot
        N, D = x.shape
        n = D if row < N else 0
        cached = D <= cols
        Df = numba_dtype(D)
        mu = zero
        r = zero
        if n > 0:
            mu = mean[row]
            r = rstd[row]
        s1 = zero
        s2 = zero
        for j in range(lane, n, group):
            g = dy[row, j] * w[j] if has_w else dy[row, j]
            xv = x[row, j]
            if cached:
                gcache[slot, j] = g
                xcache[slot, j] = xv
            s1 += g
            s2 += g * (xv - mu) * r
        s1 = group_sum(scratch, s1, slot, lane) / Df
        s2 = group_sum(scratch, s2, slot, lane) / Df
        for j in range(lane, n, group):
            if cached:
                g = gcache[slot, j]
                xv = xcache[slot, j]
            else:
                g = dy[row, j] * w[j] if has_w else dy[row, j]
                xv = x[row, j]
            dx[row, j] = r * (g - s1 - (xv - mu) * r * s2)

    @cuda.jit
    def bwd_params(dw, db, dy, x, mean, rstd, has_w):
        """db[j] = sum_i dy[i, j], dw[j] = sum_i dy[i, j] * xhat[i, j] for column j = cuda.grid(1).
        Grid ceil(D / COL_THREADS) x COL_THREADS, one thread per column folding the N rows in order
        (deterministic, no atomics; neighbouring threads read neighbouring columns: coalesced);
        dy, x read once; no shared memory."""
        j = cuda.grid(1)
        N, D = x.shape
        if j < D:
            sw = zero
            sb = zero
            for i in range(N):
                g = dy[i, j]
                sb += g
                if has_w:
                    sw += g * (x[i, j] - mean[i]) * rstd[i]
            db[j] = sb
            if has_w:
                dw[j] = sw

    return fwd, bwd_dx, bwd_params


def layer_norm_forward(x, weight, bias, eps: float):
    """(y, mean, rstd) with y = (x - mean) * rstd * weight + bias over the last axis."""
    N, D = x.shape
    dt = np.dtype(x.dtype)
    y = device_array((N, D), dt)
    mean = device_array(N, dt)
    rstd = device_array(N, dt)
    dummy = mean if weight is None or bias is None else None  # 1-D placeholder, never read
    if N:
        group, rows, cols = config(D, dt.itemsize)
        launch(_kernels(group, rows, cols, dt)[0], cdiv(N, rows), group * rows, y, mean, rstd, x,
               weight if weight is not None else dummy, bias if bias is not None else dummy,
               weight is not None, bias is not None, dt.type(eps))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight or None, dbias)."""
    N, D = x.shape
    dt = np.dtype(x.dtype)
    group, rows, cols = config(D, dt.itemsize)
    _, bwd_dx, bwd_params = _kernels(group, rows, cols, dt)
    dx = device_array((N, D), dt)
    dw = device_array(D, dt) if weight is not None else None
    db = device_array(D, dt)
    w = weight if weight is not None else db  # unused placeholder
    if N:
        launch(bwd_dx, cdiv(N, rows), group * rows, dx, dy, x, w, weight is not None, mean, rstd)
    if D:
        launch(bwd_params, cdiv(D, COL_THREADS), COL_THREADS, dw if dw is not None else db, db, dy, x,
               mean, rstd, weight is not None)
    return dx, dw, db
