"""Adam / AdamW step, in place on flat (1-D) device buffers, PyTorch's formulas.

Launch shape: 1-D grid-stride loop, ``THREADS`` threads per block,
``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks. Memory plan: each element of param, grad,
exp_avg, exp_avg_sq read once and param / exp_avg / exp_avg_sq written once; the bias
corrections are computed on the host and passed as scalars.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import cdiv, launch

THREADS = 256
MAX_BLOCKS = 4096


@functools.lru_cache(maxsize=None)
def _adam_kernel(dtype):
    """The Adam kernel for parameters of ``dtype``; its scalars come in that dtype too, so a
    float32 step has no double-precision instruction."""
    one = np.dtype(dtype).type(1)

    @cuda.jit
    def adam_kernel(p, g, m, v, lr, b1, b2, eps, wd, bc1, sqrt_bc2, decoupled):
        """Adam/AdamW update of element i in place (bias corrections bc1, sqrt_bc2 from the host).
        Launch: 1-D grid-stride loop, min(ceil(n / THREADS), MAX_BLOCKS) blocks x THREADS; thread i
        owns elements i, i + gridsize, ... Reads p, g, m, v once, writes p, m, v once; no shared memory."""
        i = cuda.grid(1)
        while i < p.size:
            gi = g[i]
            pi = p[i]
            if decoupled:
                pi = pi * (one - lr * wd)
            else:
                gi = gi + wd * pi
            mi = b1 * m[i] + (one - b1) * gi
            vi = b2 * v[i] + (one - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - (lr / bc1) * mi / (math.sqrt(vi) / sqrt_bc2 + eps)
            i += cuda.gridsize(1)

    return adam_kernel


def adam_step(param, grad, exp_avg, exp_avg_sq, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float, step: int, decoupled: bool) -> None:
    """One Adam (decoupled=False) or AdamW (decoupled=True) step, in place."""
    n = param.size
    if n == 0:
        return
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    grid = max(1, min(cdiv(n, THREADS), MAX_BLOCKS))
    t = np.dtype(param.dtype).type
    launch(_adam_kernel(np.dtype(param.dtype)), grid, THREADS, param, grad, exp_avg, exp_avg_sq, t(lr),
           t(beta1), t(beta2), t(eps), t(weight_decay), t(bc1), t(math.sqrt(bc2)), bool(decoupled))
