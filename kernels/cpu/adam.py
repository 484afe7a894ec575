"""Adam / AdamW step, in place on flat parameter and state buffers.

Parallelisation: `prange` over elements (serial on one Numba thread: `parallel_njit`). Memory
plan: reads param, grad, exp_avg, exp_avg_sq once and writes param, exp_avg, exp_avg_sq once;
the scalar factors (bias corrections, step size, 1 - beta) are folded in Python before the call
and passed in the parameters' dtype, so a float32 step computes in float32 as the CUDA kernel
and PyTorch's do (with float64 scalars every element was promoted: the update ran about twice
as long, in double-precision square roots and divisions).
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from .parallel import parallel_njit
from .softmax import FASTMATH


@parallel_njit(cache=True, fastmath=FASTMATH)
def _adam(p, g, m, v, b1, c1, b2, c2, eps, wd, decay, step_size, inv_sqrt_bc2, decoupled):
    """Adam/AdamW update of every element, in place on p, m, v (scalars folded on the host, in p's
    dtype; c1 = 1 - b1, c2 = 1 - b2).
    `prange` over the flat elements (one element per iteration, no tiles). Memory: reads p, g,
    m, v once each and writes p, m, v once; no scratch."""
    for i in prange(p.shape[0]):
        gi = g[i]
        pi = p[i]
        if decoupled:
            pi = pi * decay
        else:
            gi = gi + wd * pi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps)


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay,
              step: int, decoupled: bool) -> None:
    arrays = (param, grad, exp_avg, exp_avg_sq)
    for a in arrays:
        if a.ndim != 1 or a.shape != param.shape or not a.flags.c_contiguous:
            raise ValueError("adam_step expects 1-D C-contiguous buffers of one shape")
        if a.dtype != param.dtype or a.dtype not in (np.float32, np.float64):
            raise TypeError("adam_step expects float32 or float64 buffers of one dtype")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    t = param.dtype.type
    _adam(param, grad, exp_avg, exp_avg_sq, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(eps),
          t(weight_decay), t(1.0 - lr * weight_decay), t(lr / bc1), t(1.0 / math.sqrt(bc2)),
          bool(decoupled))
