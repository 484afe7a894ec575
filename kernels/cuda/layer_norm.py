"""Layer norm over the last axis of (N, D), forward and backward.

Kernels are compiled per dtype and compute in it (no double precision in float32 kernels).
Forward: one block of ``THREADS`` threads per row (grid = N); mean and variance are two
block reductions in shared memory (``THREADS`` slots; two-pass variance, no
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

import numpy as np
from numba import cuda

from ._util import block_sum, cdiv, device_array, launch, nb_dtype

THREADS = 128  # power of two
COL_THREADS = 128


@functools.lru_cache(maxsize=None)
def _kernels(threads: int, dtype):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, one = in_dtype(0), in_dtype(1)

    @cuda.jit
    def fwd(y, mean, rstd, x, w, b, has_w, has_b, eps):
        """y[row] = (x - mean) * rstd (* w) (+ b), saving mean[row], rstd[row]; row = blockIdx.x.
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; two block
        sums (mean, two-pass variance) in a ``threads``-slot shared array; x read three
        times, y written once, thread 0 writes mean / rstd."""
        sh = cuda.shared.array(threads, numba_dtype)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        D = x.shape[1]
        Df = numba_dtype(D)
        s = zero
        for j in range(tid, D, threads):
            s += x[row, j]
        mu = block_sum(sh, s, tid, threads) / Df
        s = zero
        for j in range(tid, D, threads):
            d = x[row, j] - mu
            s += d * d
        r = one / math.sqrt(block_sum(sh, s, tid, threads) / Df + eps)
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
        Grid N, ``threads`` (THREADS) per block, thread t on columns t, t + threads, ...; two block
        sums in a ``threads``-slot shared array; dy, x read twice, dx written once."""
        sh = cuda.shared.array(threads, numba_dtype)
        row = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        D = x.shape[1]
        Df = numba_dtype(D)
        mu = mean[row]
        r = rstd[row]
        s1 = zero
        s2 = zero
        for j in range(tid, D, threads):
            g = dy[row, j] * w[j] if has_w else dy[row, j]
            s1 += g
            s2 += g * (x[row, j] - mu) * r
        s1 = block_sum(sh, s1, tid, threads) / Df
        s2 = block_sum(sh, s2, tid, threads) / Df
        for j in range(tid, D, threads):
            g = dy[row, j] * w[j] if has_w else dy[row, j]
            dx[row, j] = r * (g - s1 - (x[row, j] - mu) * r * s2)

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
        launch(_kernels(THREADS, dt)[0], N, THREADS, y, mean, rstd, x,
               weight if weight is not None else dummy, bias if bias is not None else dummy,
               weight is not None, bias is not None, dt.type(eps))
    return y, mean, rstd


def layer_norm_backward(dy, x, weight, mean, rstd):
    """(dx, dweight or None, dbias)."""
    N, D = x.shape
    dt = np.dtype(x.dtype)
    _, bwd_dx, bwd_params = _kernels(THREADS, dt)
    dx = device_array((N, D), dt)
    dw = device_array(D, dt) if weight is not None else None
    db = device_array(D, dt)
    w = weight if weight is not None else db  # unused placeholder
    if N:
        launch(bwd_dx, N, THREADS, dx, dy, x, w, weight is not None, mean, rstd)
    if D:
        launch(bwd_params, cdiv(D, COL_THREADS), COL_THREADS, dw if dw is not None else db, db, dy, x,
               mean, rstd, weight is not None)
    return dx, dw, db
