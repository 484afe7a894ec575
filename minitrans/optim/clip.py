"""``clip_grad_norm_`` (the one ``minitrans.train`` calls): when the gradients are exactly the
slices of one flat gradient buffer of an Adam/AdamW optimizer on a device whose backend has
``clip_grad_norm_flat`` (``cuda``), the norm and the scaling run as ONE kernel launch over the
buffer, with the norm left on the device; otherwise ``minitrans.nn.utils.clip_grad_norm_``.
Both compute ``total = ||all grads||_p`` and scale by ``min(1, max_norm / (total + 1e-6))``.
"""
from __future__ import annotations

import math

from ..nn.utils import clip_grad_norm_ as _clip_each
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


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """Scale all ``.grad`` in place by min(1, max_norm / total_norm); return total_norm (a 0-d tensor)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    fl = None if error_if_nonfinite else _flat_grads(parameters)
    norm_type = float(norm_type)
    if fl is None or not hasattr(fl.xp, "clip_grad_norm_flat") or not (norm_type > 0 or math.isinf(norm_type)):
        return _clip_each(parameters, max_norm, norm_type, error_if_nonfinite)
    total = fl.xp.clip_grad_norm_flat(fl.bufs[1], float(max_norm), norm_type)
    for p in fl.params:
        p.grad._vc[0] += 1
    return Tensor._wrap(total, fl.params[0].device)
