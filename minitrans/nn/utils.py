"""``clip_grad_norm_``: rescale gradients so that their global norm is at most ``max_norm``."""
from __future__ import annotations

import math

from ..tensor import Tensor


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all ``.grad`` in place by min(1, max_norm / total_norm); return total_norm (a 0-d tensor)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor._wrap(__import__("numpy").zeros((), "float32"))
    xp = grads[0].device.backend
    if grads[0].device.type != "cpu":
        return _clip_on_device(grads, xp, max_norm, norm_type, error_if_nonfinite)
    if norm_type == math.inf:
        total = max(float(xp.max(xp.abs(g._data))) for g in grads)
    else:
        total = sum(float(xp.sum(xp.abs(g._data) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} is non-finite ({total})")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g._data *= g._data.dtype.type(coef)
            g._vc[0] += 1
    import numpy as np

    return Tensor._wrap(np.asarray(total, dtype=grads[0]._data.dtype))


def _clip_on_device(grads, xp, max_norm, norm_type, error_if_nonfinite):
    """The same computation with the norm kept on the device: no host read unless
    ``error_if_nonfinite`` asks for one. Gradients are always multiplied by
    min(1, max_norm / (norm + 1e-6)) (a multiplication by exactly 1 changes nothing)."""
    dt = grads[0]._data.dtype
    if norm_type == math.inf:
        parts = [xp.max(xp.abs(g._data)).astype("float64") for g in grads]
        total = parts[0]
        for p in parts[1:]:
            total = xp.maximum(total, p)
    else:
        total = None
        for g in grads:
            s = xp.sum(xp.abs(g._data) ** norm_type).astype("float64")  # summed in float64, as on CPU
            total = s if total is None else total + s
        total = total ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(float(total)):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} is non-finite ({float(total)})")
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g._data *= coef.astype(g._data.dtype, copy=False)
        g._vc[0] += 1
    return Tensor._wrap(total.astype(dt, copy=False), grads[0].device)
