"""Gradient clipping over one flat gradient buffer in a single launch.

``clip_grad_norm(buf, max_norm, norm_type)`` computes ``norm = ||buf||_p`` (``p`` = inf: the
largest ``|x|``), multiplies the buffer in place by ``min(1, max_norm / (norm + 1e-6))`` and
returns ``norm`` as a 0-d device array — nothing is read back to the host.

Launch shape: ONE block of ``THREADS`` threads (the norm must be complete before any cell is
scaled, and a block is the largest group that can wait for itself). Memory plan: thread ``t``
folds cells ``t, t + THREADS, ...`` into a register (of the buffer dtype), a ``THREADS``-slot
shared tree combines them, then every thread scales its cells: the buffer is read twice and
written once. One block is enough for the parameter counts of this library's models (a few
million cells: a few hundred microseconds); a grid-wide version would need a second launch.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import MAX, SUM, block_reduce, device_array, launch, nb_dtype

THREADS = 1024  # power of two


@functools.lru_cache(maxsize=None)
def _clip_kernel(threads: int, dtype):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, one, two, tiny = in_dtype(0), in_dtype(1), in_dtype(2), in_dtype(1e-6)

    @cuda.jit
    def clip_kernel(norm_out, g, n, p, is_inf, max_norm):
        """norm_out[0] = ||g||_p, then g *= min(1, max_norm / (norm + 1e-6)). One block of ``threads``
        (THREADS): thread t folds t, t + threads, ... into a register, a ``threads``-slot shared tree of
        the buffer dtype combines them; g read twice, written once."""
        sh = cuda.shared.array(threads, numba_dtype)
        tid = cuda.threadIdx.x
        acc = zero
        i = tid
        while i < n:
            a = abs(g[i])
            if is_inf:
                acc = max(acc, a)
            else:
                acc += a * a if p == two else a ** p
            i += threads
        total = block_reduce(sh, acc, tid, threads, MAX if is_inf else SUM)
        if not is_inf:
            total = math.sqrt(total) if p == two else total ** (one / p)
        coef = min(max_norm / (total + tiny), one)
        if tid == 0:
            norm_out[0] = total
        i = tid
        while i < n:
            g[i] *= coef
            i += threads

    return clip_kernel


def clip_grad_norm(buf, max_norm: float, norm_type: float):
    """Clip the 1-D C-contiguous float buffer ``buf`` in place; returns the norm (0-d device array)."""
    if len(buf.shape) != 1 or not buf.is_c_contiguous():
        raise ValueError("clip_grad_norm expects a 1-D C-contiguous buffer")
    dt = np.dtype(buf.dtype)
    if dt.kind != "f":
        raise TypeError(f"clip_grad_norm expects a float buffer, got {dt.name}")
    out = device_array((1,), dt)
    is_inf = math.isinf(norm_type)
    launch(_clip_kernel(THREADS, dt), 1, THREADS, out, buf, int(buf.shape[0]), dt.type(1.0 if is_inf else norm_type),
           bool(is_inf), dt.type(max_norm))
    return out.reshape(())
