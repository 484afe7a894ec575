"""Layer norm over the last axis of (N, D), forward and backward.

Forward: one block of ``THREADS`` threads per row (grid = N); mean and variance are two
float64 block reductions in shared memory (``THREADS`` slots; two-pass variance, no
cancellation); the row is read three times (hot in cache) and ``y`` written once, with
``mean`` and ``rstd`` saved per row.
Backward, two kernels, both deterministic (no atomics):
  * ``dx``: one block per row, two block sums (mean of g = dy*w and of g*xhat),
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat));
  * ``dweight`` / ``dbias``: one thread per column (grid = ceil(D / COL_THREADS) blocks of
    ``COL_THREADS``), each folding its column over the N rows in a fixed order; neighbouring
    threads read neighbouring columns, so every row read is coalesced.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from ._util import block_sum, cdiv

THREADS = 128  # power of two
COL_THREADS = 128


@functools.lru_cache(maxsize=None)
def _kernels(threads: int):
    @cuda.jit
    def fwd(y, mean, rstd, x, w, b, has_w, has_b, eps):
        """y[row] = (x - mean) * rstd (* w) (+ b), saving mean[row], rstd[row]; row = blockIdx.x.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; two float64
        block sums (mean, two-pass variance) in a ``threads``-slot shared array; x read three
        times, y written once, thread 0 writes mean / rstd."""
        sh = cuda.shared.array(threads, numba.float64)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        D = x.shape[1]
        s = 0.0
        for j in range(tid, D, threads):
            s += x[row, j]
        mu = block_sum(sh, s, tid, threads) / D
        s = 0.0
        for j in range(tid, D, threads):
            d = x[row, j] - mu
            s += d * d
        r = 1.0 / math.sqrt(block_sum(sh, s, tid, threads) / D + eps)
        for j in range(tid, D, threads):
            v = (x[row, j] - mu) * r
            if has_w:
                v *= w[j]
            if has_b:
                v += b[j]
            y[row, j] = v
        if tid == 0:
            mean[row] = mu
            rstd[row] = r

    @cuda.jit
    def bwd_dx(dx, dy, x, w, has_w, mean, rstd):
        """dx[row] = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; row = blockIdx.x.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; two float64
        block sums in a ``threads``-slot shared array; dy, x read twice, dx written once."""
        sh = cuda.shared.array(threads, numba.float64)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        D = x.shape[1]
        mu = mean[row]
        r = rstd[row]
        s1 = 0.0
        s2 = 0.0
        for j in range(tid, D, threads):
            g = dy[row, j] * w[j] if has_w else dy[row, j] * 1.0
            s1 += g
            s2 += g * (x[row, j] - mu) * r
        s1 = block_sum(sh, s1, tid, threads) / D
        s2 = block_sum(sh, s2, tid, threads) / D
        for j in range(tid, D, threads):
            g = dy[row, j] * w[j] if has_w else dy[row, j] * 1.0
            dx[row, j] = r * (g - s1 - (x[row, j] - mu) * r * s2)

    return fwd, bwd_dx


@cuda.jit
def _bwd_params(dw, db, dy, x, mean, rstd, has_w):
    """db[j] = sum_i dy[i, j], dw[j] = sum_i dy[i, j] * xhat[i, j] for column j = cuda.grid(1).
    Grid ceil(D / COL_THREADS) x COL_THREADS, one thread per column folding the N rows in order
    (deterministic, no atomics; neighbouring threads read neighbouring columns: coalesced);
    dy, x read once; no shared memory."""
    j = cuda.grid(1)
    N, D = x.shape
    if j < D:
        sw = 0.0
        sb = 0.0
        for i in range(N):
            g = dy[i, j]
            sb += g
            if has_w:
                sw += g * (x[i, j] - mean[i]) * rstd[i]
        db[j] = sb
        if has_w:
            dw[j] = sw


def layer_norm_forward(x, weight, bias, eps: float):
    """(y, mean, rstd) with y = (x - mean) * rstd * weight + bias over the last axis."""
    N, D = x.shape
    y = cuda.device_array((N, D), dtype=x.dtype)
    mean = cuda.device_array(N, dtype=x.dtype)
    rstd = cuda.device_array(N, dtype=x.dtype)
    dummy = y.reshape(N * D) if weight is None or bias is None else None
    if N:
        _kernels(THREADS)[0][N, THREADS](y, mean, rstd, x, weight if weight is not None else dummy,
                                        bias if bias is not None else dummy,
                                        weight is not None, bias is not None, float(eps))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight or None, dbias)."""
    N, D = x.shape
    dx = cuda.device_array((N, D), dtype=x.dtype)
    dw = cuda.device_array(D, dtype=x.dtype) if weight is not None else None
    db = cuda.device_array(D, dtype=x.dtype)
    w = weight if weight is not None else db  # unused placeholder
    if N:
        _kernels(THREADS)[1][N, THREADS](dx, dy, x, w, weight is not None, mean, rstd)
    if D:
        _bwd_params[cdiv(D, COL_THREADS), COL_THREADS](dw if dw is not None else db, db, dy, x,
                                                      mean, rstd, weight is not None)
    return dx, dw, db
