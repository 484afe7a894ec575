"""``clip_grad_norm_``: rescale gradients so that their global norm is at most ``max_norm``.

One implementation for every device, written over the backend's primitives (it lives in
``optim`` so that both ``minitrans.optim`` and ``minitrans.nn.utils`` can offer it without the
optimizers importing the layers). As in PyTorch, the total norm ``||all grads||_p`` is computed
(in float64), every gradient is multiplied by ``min(1, max_norm / (total + 1e-6))`` (a
multiplication by exactly 1 changes nothing), and the norm comes back as a 0-d tensor on the
gradients' device in their dtype; nothing is read back to the host unless
``error_if_nonfinite`` asks for a check.

When the gradients are exactly the slices of one flat gradient buffer of an Adam/AdamW
optimizer (see ``optim/adam.py``), the norm and the scaling run as one call of the backend's
``clip_grad_norm_flat`` over that buffer (one kernel launch on a GPU).
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from . import adam


def _flat_grads(params):
    """The optimizer buffer whose gradient slices are exactly these parameters' gradients, or None."""
    ps = [p for p in params if p.grad is not None]
    if not ps:
        return None
    ids = {id(p) for p in ps}
    for fl in list(adam._FLATS):
        if len(fl.params) == len(ids) and {id(p) for p in fl.params} == ids and \
                all(p.grad._data is v for p, v in zip(fl.params, fl.views[1])):
            return fl
    return None


def _total_norm(grads, backend, norm_type: float):
    """The norm of order ``norm_type`` of all the gradient arrays together, as a 0-d float64
    array of ``backend`` (the maximum of |g| for ``inf``)."""
    total = None
    for g in grads:
        if g.size == 0:
            continue
        a = backend.abs(g.astype(np.float64, copy=False))
        if math.isinf(norm_type):
            part = backend.max(a)
            total = part if total is None else backend.maximum(total, part)
        else:
            part = backend.sum(a * a if norm_type == 2.0 else a ** norm_type)
            total = part if total is None else total + part
    if total is None:
        return backend.zeros((), np.float64)
    return total if math.isinf(norm_type) else total ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all ``.grad`` in place by min(1, max_norm / (total_norm + 1e-6)); return total_norm
    (a 0-d tensor on the gradients' device, in their dtype)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor._wrap(np.zeros((), np.float32))
    norm_type = float(norm_type)
    device = grads[0].device
    backend = device.backend
    flat = None if error_if_nonfinite or not (norm_type > 0) else _flat_grads(parameters)
    if flat is not None:
        total = backend.clip_grad_norm_flat(flat.bufs[1], float(max_norm), norm_type)
    else:
        norm = _total_norm([g._data for g in grads], backend, norm_type)
        if error_if_nonfinite and not math.isfinite(float(norm)):
            raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} is non-finite "
                               f"({float(norm)})")
        coef = backend.minimum(max_norm / (norm + 1e-6), 1.0)
        for g in grads:
            g._data *= backend.asarray(coef, g._data.dtype)
        total = backend.asarray(norm, grads[0]._data.dtype)   # a 0-d array (NumPy reductions give scalars)
    for g in grads:
        g._version_counter[0] += 1
    return Tensor._wrap(total, device)
