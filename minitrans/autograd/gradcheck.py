"""Gradient checks against float64 central differences.

``gradcheck`` compares the analytic Jacobian (one backward per output element) with the
numeric one (two forwards per input element), every element of every input; ``fast_mode``
compares the random projections vᵀ·J·u instead. On failure it names the input, the
element index and both values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _dtype
from .._tensor_core import TensorBase
from .grad_mode import enable_grad, no_grad


class GradcheckError(RuntimeError):
    """Raised by gradcheck when the analytic and numeric gradients disagree."""


def _outputs(fn, inputs):
    with enable_grad():
        out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, TensorBase):
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
        if isinstance(t, TensorBase) and t.requires_grad:
            if t.dtype is not _dtype.float64:
                raise ValueError(f"gradcheck: input {i} has dtype {t.dtype}; gradcheck needs float64 inputs "
                                 "(float32 central differences are too coarse to judge a gradient)")
            diff.append(i)
    if not diff:
        raise ValueError("gradcheck: no input requires grad")
    return diff


def _perturb(t: TensorBase, flat_index: int, delta: float):
    """Add ``delta`` to one element in place (on any device) and return the old array."""
    old = t._data
    host = t.numpy().copy()
    host.reshape(-1)[flat_index] += delta
    t._data = t._device.backend.from_numpy(host)   # host is a fresh copy: the CPU may share it
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
        weights = v[off:off + m].reshape(o.shape).astype(o._data.dtype)
        w = TensorBase._wrap(o._device.backend.from_numpy(weights), o._device)
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


@dataclass
class InputCheck:
    """How one differentiable input fared: the largest errors over its Jacobian and the first bad entry."""

    index: int                      # position in ``inputs``
    shape: tuple
    max_abs: float                  # max |analytic − numeric| over the entries compared
    max_rel: float                  # max |analytic − numeric| / |numeric| over entries with |numeric| > atol
    n_bad: int                      # entries outside atol + rtol·|numeric|
    n_compared: int
    output_element: int | None = None   # first bad entry: flat output index (None in fast mode)
    element: tuple | None = None        # ... and the input element
    analytic: float = 0.0
    numeric: float = 0.0

    @property
    def ok(self) -> bool:
        return self.n_bad == 0


def check_gradients(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                    fast_mode: bool = False, seed: int = 0) -> list[InputCheck]:
    """Compare fn's analytic gradients with float64 central differences; one ``InputCheck`` per input needing grad.

    ``gradcheck`` turns the first failure into an error; ``python -m minitrans.gradcheck_report``
    prints the errors of every op and layer.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = _check_inputs(inputs)
    n_out = _flat_out(fn, inputs).size
    saved_grads = [inputs[i].grad for i in diff]
    try:
        return (_fast if fast_mode else _slow)(fn, inputs, diff, n_out, eps, atol, rtol, seed)
    finally:
        for i, g in zip(diff, saved_grads):
            inputs[i].grad = g


def gradcheck(fn, inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              fast_mode: bool = False, raise_exception: bool = True, seed: int = 0) -> bool:
    """True when fn's analytic gradients match float64 central differences for every input element."""
    for r in check_gradients(fn, inputs, eps, atol, rtol, fast_mode, seed):
        if not r.ok:
            if raise_exception:
                raise GradcheckError(_message(r, atol, rtol, fast_mode))
            return False
    return True


def _message(r: InputCheck, atol: float, rtol: float, fast_mode: bool) -> str:
    if fast_mode:
        return (f"fast-mode gradcheck mismatch for input {r.index} (shape {r.shape}): "
                f"vᵀJu analytic {r.analytic!r} vs numeric {r.numeric!r}; rerun with fast_mode=False "
                "to find the element")
    return (f"Jacobian mismatch for output element {r.output_element} with respect to input {r.index} (shape "
            f"{r.shape}), element {r.element}:\n"
            f"  analytic: {r.analytic!r}\n  numeric:  {r.numeric!r}\n"
            f"  ({r.n_bad} of {r.n_compared} entries differ; atol={atol}, rtol={rtol})")


def _stats(i, t, ana: np.ndarray, num: np.ndarray, atol, rtol) -> InputCheck:
    err = np.abs(ana - num)
    bad = ~(err <= atol + rtol * np.abs(num))          # NaN counts as bad
    big = np.abs(num) > atol
    res = InputCheck(i, tuple(t.shape), float(err.max()) if err.size else 0.0,       # max() keeps a NaN
                     float((err[big] / np.abs(num[big])).max()) if big.any() else 0.0, int(bad.sum()), int(bad.size))
    if bad.any() and ana.ndim == 2:
        r, c = np.argwhere(bad)[0]
        res.output_element = int(r)
        res.element = tuple(int(x) for x in np.unravel_index(c, t.shape)) if t.ndim else ()
        res.analytic, res.numeric = float(ana[r, c]), float(num[r, c])
    elif ana.ndim < 2:
        res.analytic, res.numeric = float(ana.reshape(-1)[0]), float(num.reshape(-1)[0])
    return res


def _slow(fn, inputs, diff, n_out, eps, atol, rtol, seed):
    analytic = {i: np.zeros((n_out, inputs[i].numel())) for i in diff}
    for r in range(n_out):
        v = np.zeros(n_out)
        v[r] = 1.0
        for i, row in zip(diff, _analytic_vjp(fn, inputs, diff, v)):
            analytic[i][r] = row.ravel()
    return [_stats(i, inputs[i], analytic[i], _numeric_jacobian(fn, inputs, i, eps), atol, rtol) for i in diff]


def _fast(fn, inputs, diff, n_out, eps, atol, rtol, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n_out)
    vjps = _analytic_vjp(fn, inputs, diff, v)
    out = []
    for i, vj in zip(diff, vjps):
        t = inputs[i]
        u = rng.standard_normal(t.shape)
        analytic = float((vj * u).sum())
        old = t._data
        host = t.numpy().astype(np.float64)
        backend = t._device.backend

        def at(x):
            t._data = backend.from_numpy(x)
            return _flat_out(fn, inputs)

        numeric = float(v @ (at(host + eps * u) - at(host - eps * u)) / (2 * eps))
        t._data = old
        out.append(_stats(i, t, np.array([analytic]), np.array([numeric]), atol, rtol))
    return out
