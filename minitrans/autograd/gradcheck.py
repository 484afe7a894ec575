"""Gradient checks against float64 central differences.

``gradcheck`` compares the analytic Jacobian (one backward per output element) with the
numeric one (two forwards per input element), every element of every input; ``fast_mode``
compares the random projections vᵀ·J·u instead. On failure it names the input, the
element index and both values.
"""
from __future__ import annotations

import numpy as np

from .. import _dtype
from ..tensor import Tensor
from .grad_mode import enable_grad, no_grad


class GradcheckError(RuntimeError):
    """Raised by gradcheck when the analytic and numeric gradients disagree."""


def _outputs(fn, inputs):
    with enable_grad():
        out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors, got {type(o).__name__}")
    return [o for o in outs if o.dtype.is_floating_point]


def _flat_out(fn, inputs) -> np.ndarray:
    with no_grad():
        outs = _outputs(fn, inputs)
    if not outs:
        return np.zeros(0)
    return np.concatenate([o.numpy().astype(np.float64).ravel() for o in outs])


def _check_inputs(inputs):
    diff = []
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad:
            if t.dtype is not _dtype.float64:
                raise ValueError(f"gradcheck: input {i} has dtype {t.dtype}; gradcheck needs float64 inputs "
                                 "(float32 central differences are too coarse to judge a gradient)")
            diff.append(i)
    if not diff:
        raise ValueError("gradcheck: no input requires grad")
    return diff


def _perturb(t: Tensor, flat_index: int, delta: float):
    """Add ``delta`` to one element in place (on any device) and return the old array."""
    old = t._data
    host = t.numpy().copy()
    host.reshape(-1)[flat_index] += delta
    t._data = t._device.backend.from_numpy(host) if t._device.type != "cpu" else host
    return old


def _numeric_jacobian(fn, inputs, i, eps):
    t = inputs[i]
    n = t.numel()
    cols = []
    for k in range(n):
        old = _perturb(t, k, eps)
        plus = _flat_out(fn, inputs)
        t._data = old
        _perturb(t, k, -eps)
        minus = _flat_out(fn, inputs)
        t._data = old
        cols.append((plus - minus) / (2 * eps))
    return np.stack(cols, axis=1) if cols else np.zeros((_flat_out(fn, inputs).size, 0))


def _analytic_vjp(fn, inputs, diff, v: np.ndarray):
    """vᵀ·J for every differentiable input, by one backward pass."""
    for i in diff:
        inputs[i].grad = None
    outs = _outputs(fn, inputs)
    total = None
    off = 0
    for o in outs:
        m = o.numel()
        if not o.requires_grad:
            off += m
            continue
        w = Tensor._wrap(o._device.backend.from_numpy(v[off:off + m].reshape(o.shape).astype(o._data.dtype))
                         if o._device.type != "cpu" else v[off:off + m].reshape(o.shape).astype(o._data.dtype),
                         o._device)
        term = (o * w).sum()
        total = term if total is None else total + term
        off += m
    res = []
    if total is not None:
        total.backward()
    for i in diff:
        g = inputs[i].grad
        res.append(np.zeros(inputs[i].shape) if g is None else g.numpy().astype(np.float64))
        inputs[i].grad = None
    return res


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              fast_mode: bool = False, raise_exception: bool = True, seed: int = 0) -> bool:
    """True when fn's analytic gradients match float64 central differences for every input element."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = _check_inputs(inputs)
    n_out = _flat_out(fn, inputs).size
    saved_grads = [inputs[i].grad for i in diff]
    try:
        if fast_mode:
            ok, msg = _fast(fn, inputs, diff, n_out, eps, atol, rtol, seed)
        else:
            ok, msg = _slow(fn, inputs, diff, n_out, eps, atol, rtol)
    finally:
        for i, g in zip(diff, saved_grads):
            inputs[i].grad = g
    if not ok and raise_exception:
        raise GradcheckError(msg)
    return ok


def _slow(fn, inputs, diff, n_out, eps, atol, rtol):
    analytic = {i: np.zeros((n_out, inputs[i].numel())) for i in diff}
    for r in range(n_out):
        v = np.zeros(n_out)
        v[r] = 1.0
        for i, row in zip(diff, _analytic_vjp(fn, inputs, diff, v)):
            analytic[i][r] = row.ravel()
    for i in diff:
        num = _numeric_jacobian(fn, inputs, i, eps)
        ana = analytic[i]
        bad = np.abs(ana - num) > atol + rtol * np.abs(num)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            idx = np.unravel_index(c, inputs[i].shape) if inputs[i].ndim else ()
            return False, (
                f"Jacobian mismatch for output element {r} with respect to input {i} (shape "
                f"{tuple(inputs[i].shape)}), element {tuple(int(x) for x in idx)}:\n"
                f"  analytic: {ana[r, c]!r}\n  numeric:  {num[r, c]!r}\n"
                f"  ({int(bad.sum())} of {bad.size} entries differ; atol={atol}, rtol={rtol})")
    return True, ""


def _fast(fn, inputs, diff, n_out, eps, atol, rtol, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n_out)
    vjps = _analytic_vjp(fn, inputs, diff, v)
    for i, vj in zip(diff, vjps):
        t = inputs[i]
        u = rng.standard_normal(t.shape)
        analytic = float((vj * u).sum())
        old = t._data
        host = t.numpy().astype(np.float64)
        backend = t._device.backend

        def at(x):
            t._data = backend.from_numpy(x) if t._device.type != "cpu" else x
            return _flat_out(fn, inputs)

        numeric = float(v @ (at(host + eps * u) - at(host - eps * u)) / (2 * eps))
        t._data = old
        if abs(analytic - numeric) > atol + rtol * abs(numeric):
            return False, (f"fast-mode gradcheck mismatch for input {i} (shape {tuple(t.shape)}): "
                           f"vᵀJu analytic {analytic!r} vs numeric {numeric!r}; rerun with fast_mode=False "
                           "to find the element")
    return True, ""
