"""Elementwise, creation and reduction primitives of the CUDA backend, and the operand
plumbing they share: ``_as_cuda`` (host data becomes a device array: an explicit upload),
``_const`` (cached 0-d device constants for Python scalars, filled by a kernel: no copy),
NumPy 2 dtype rules through ``np.result_type``. Every computation is one or more kernels
of ``minitrans.kernels.cuda``.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
from ...kernels import cuda as kernels
from ...kernels.cuda import array as array_kernels
from ...kernels.cuda.reduce import SUM_TO_INT64
from ...kernels.cuda._util import device_array
from .array import CudaArray, _Scalar, from_numpy, shares_storage

_FLOAT_FUNCS = frozenset({"exp", "log", "sqrt", "tanh", "sigmoid"})
_COMPARE = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})


# ---------------------------------------------------------------- operands
def _as_cuda(x) -> CudaArray:
    """``x`` as a CudaArray; host arrays are uploaded (an explicit host->device copy)."""
    if isinstance(x, CudaArray):
        return x
    if isinstance(x, _Scalar):
        return asarray(x)
    return from_numpy(x)


_CONSTS: dict = {}


def _const(v, dtype):
    """A cached 0-d device array holding ``v`` as ``dtype`` (internal operands only: never
    handed out, never written)."""
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"):
        cv = dtype.type(v)
    key = (dtype.str, cv.tobytes())
    d = _CONSTS.get(key)
    if d is None:
        if len(_CONSTS) > 1024:
            _CONSTS.clear()
        d = _CONSTS[key] = array_kernels.full((), cv, dtype)
    return d


def _promotion_operand(x):
    """What np.result_type should see for an operand (a dtype, or the scalar itself)."""
    if isinstance(x, CudaArray):
        return x.dtype
    if isinstance(x, np.ndarray):
        return x.dtype
    return x


def _operand(x, dtype):
    """Device array for an operand: CudaArray -> its device array, scalar -> cached constant."""
    if isinstance(x, CudaArray):
        return x._device_array
    if isinstance(x, _Scalar):
        return _const(x, dtype)
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return _const(x[()], dtype)
    return _as_cuda(x)._device_array


def _norm_scalar(x):
    if isinstance(x, np.ndarray) and x.ndim == 0:
        return x[()]
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    return x


def _shape_of(x):
    return tuple(getattr(x, "shape", ()))


# ---------------------------------------------------------------- elementwise
def _unary(op, x) -> CudaArray:
    x = _as_cuda(x)
    if op in _FLOAT_FUNCS and x.dtype.kind in "biu":
        x = astype(x, np.float64)
    return CudaArray(kernels.unary(op, x._device_array))


def _binary(op, a, b) -> CudaArray:
    a, b = _norm_scalar(a), _norm_scalar(b)
    if not isinstance(a, (CudaArray, np.ndarray) + _Scalar) or not isinstance(b, (CudaArray, np.ndarray) + _Scalar):
        return NotImplemented
    rt = np.result_type(_promotion_operand(a), _promotion_operand(b))
    shape = np.broadcast_shapes(_shape_of(a), _shape_of(b))
    if op in _COMPARE:
        dtype = np.dtype(np.bool_)
    elif op == "div" and rt.kind in "biu":
        dtype, rt = np.dtype(np.float64), np.dtype(np.float64)
    else:
        dtype = rt
    da, db = _operand(a, rt), _operand(b, rt)
    out = device_array(shape, dtype)
    kernels.binary(op, da, db, out=out)
    return CudaArray(out)


def _logical(op, a, b) -> CudaArray:
    a, b = _norm_scalar(a), _norm_scalar(b)
    for x in (a, b):
        if np.result_type(_promotion_operand(x)) != np.bool_:
            raise TypeError(f"'{op}' is only supported between bool arrays on cuda")
    return CudaArray(array_kernels.logical_binary(op, _operand(a, np.bool_), _operand(b, np.bool_)))


def _inplace(op, self: CudaArray, o) -> CudaArray:
    o = _norm_scalar(o)
    if self._is_contiguous() and isinstance(o, (CudaArray,) + _Scalar) and op not in _COMPARE and \
            not (isinstance(o, CudaArray) and shares_storage(self, o)):
        rt = np.result_type(self.dtype, _promotion_operand(o))
        if rt == self.dtype and not (op == "div" and rt.kind in "biu") and \
                np.broadcast_shapes(self.shape, _shape_of(o)) == self.shape:
            # one launch writing straight into self (each cell read, then written, by one thread)
            kernels.binary(op, self._device_array, _operand(o, rt), out=self._device_array)
            return self
    r = _binary(op, self, o)
    if r.shape != self.shape:
        raise ValueError(f"non-broadcastable output operand with shape {self.shape} doesn't match the "
                         f"broadcast shape {r.shape}")
    array_kernels.copy_into(self._device_array, r._device_array)
    return self


def logical_not(a, _invert: bool = False) -> CudaArray:
    a = _as_cuda(a)
    if a.dtype == np.bool_:
        return CudaArray(array_kernels.logical_unary("not", a._device_array))
    if _invert:
        raise TypeError("~ on cuda is only supported for bool arrays")
    return _binary("eq", a, 0)


def isfinite(a) -> CudaArray:
    a = _as_cuda(a)
    if a.dtype.kind != "f":
        return full(a.shape, True, np.bool_)
    return CudaArray(array_kernels.logical_unary("isfinite", a._device_array))


def where(cond, a, b) -> CudaArray:
    cond, a, b = _norm_scalar(cond), _norm_scalar(a), _norm_scalar(b)
    rt = np.result_type(_promotion_operand(a), _promotion_operand(b))
    shape = np.broadcast_shapes(_shape_of(cond), _shape_of(a), _shape_of(b))
    dc = _operand(cond, np.bool_)
    if np.dtype(dc.dtype) != np.bool_:
        dc = _binary("ne", CudaArray(dc), 0)._device_array
    out = device_array(shape, rt)
    kernels.where(dc, _operand(a, rt), _operand(b, rt), out=out)
    return CudaArray(out)


def maximum(a, b) -> CudaArray:
    return _binary("maximum", a, b)


def minimum(a, b) -> CudaArray:
    return _binary("minimum", a, b)


def power(a, b) -> CudaArray:
    return _binary("pow", a, b)


def clip(a, lo=None, hi=None, out=None) -> CudaArray:
    """NumPy's ``clip`` (result dtype by NumPy's rules), written into ``out`` if given (``out`` may
    be ``a``). Scalar bounds in ``a``'s dtype take one kernel launch, writing straight into ``out``."""
    if lo is None and hi is None:
        raise ValueError("clip: one of the bounds must be given")
    a, lo, hi = _as_cuda(a), _norm_scalar(lo), _norm_scalar(hi)
    bounds = [b for b in (lo, hi) if b is not None]
    dtype = np.result_type(a.dtype, *(_promotion_operand(b) for b in bounds))
    dst = out
    if dtype == a.dtype and a.dtype.kind in "iuf" and all(isinstance(b, _Scalar) for b in bounds) and \
            (dst is None or (isinstance(dst, CudaArray) and dst.shape == a.shape and dst.dtype == a.dtype)):
        dst = empty(a.shape, a.dtype) if dst is None else dst
        kernels.clamp(a._device_array, lo, hi, dst._device_array)
        return dst
    r = a if lo is None else maximum(a, lo)
    r = r if hi is None else minimum(r, hi)
    if out is None:
        return r
    out[...] = r
    return out


def sigmoid(x) -> CudaArray:
    return _unary("sigmoid", x)


def astype(a, dtype, copy_: bool = True) -> CudaArray:
    a = _as_cuda(a)
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return copy(a) if copy_ else a
    if dtype == np.bool_:
        return _binary("ne", a, 0)
    out = device_array(a.shape, dtype)
    kernels.unary("identity", a._device_array, out=out)
    return CudaArray(out)


def copy(a) -> CudaArray:
    """A fresh C-contiguous copy (on the device)."""
    a = _as_cuda(a)
    out = device_array(a.shape, a.dtype)
    if a.size:
        array_kernels.copy_into(out, a._device_array)
    return CudaArray(out)


def ascontiguousarray(a) -> CudaArray:
    if isinstance(a, CudaArray):
        return a if a._is_contiguous() else copy(a)
    return asarray(a)


def asarray(a, dtype=None) -> CudaArray:
    if isinstance(a, CudaArray):
        return a if dtype is None else astype(a, dtype, False)
    if isinstance(a, _Scalar):
        dt = np.dtype(dtype) if dtype is not None else np.asarray(a).dtype
        return CudaArray(array_kernels.full((), a, dt))  # filled on the device, no copy
    return from_numpy(np.asarray(a, dtype=dtype))


def errstate(**kwargs):
    """Device kernels raise no floating-point warnings: a no-op context."""
    return contextlib.nullcontext()


# ---------------------------------------------------------------- creation
def _shape_arg(shape):
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)


def full(shape, fill_value, dtype=None) -> CudaArray:
    dtype = np.asarray(fill_value).dtype if dtype is None else np.dtype(dtype)
    return CudaArray(array_kernels.full(_shape_arg(shape), fill_value, dtype))


def zeros(shape, dtype=float) -> CudaArray:
    return full(shape, 0, dtype)


def ones(shape, dtype=float) -> CudaArray:
    return full(shape, 1, dtype)


def empty(shape, dtype=float) -> CudaArray:
    return CudaArray(device_array(_shape_arg(shape), np.dtype(dtype)))


def zeros_like(a, dtype=None) -> CudaArray:
    return zeros(a.shape, a.dtype if dtype is None else dtype)


def ones_like(a, dtype=None) -> CudaArray:
    return ones(a.shape, a.dtype if dtype is None else dtype)


def arange(start, stop=None, step=1, dtype=None) -> CudaArray:
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    dt = np.result_type(start, stop, step) if dtype is None else np.dtype(dtype)
    n = max(0, int(math.ceil((stop - start) / step)))
    return CudaArray(array_kernels.arange(n, start, step, dt))


# ---------------------------------------------------------------- reductions
def _axes(axis, ndim):
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(int(a) % max(ndim, 1))
    return tuple(out)


def sum_(a, axis=None, keepdims=False, dtype=None) -> CudaArray:
    a = _as_cuda(a)
    acc = None
    if dtype is not None:
        a = astype(a, dtype, False)    # summed in the asked dtype, as NumPy's dtype= does
    elif a.dtype in SUM_TO_INT64:
        acc = np.int64                 # accumulated in int64 by the kernel itself: no cast launch
    elif a.dtype.kind in "biu":
        a = astype(a, np.int64, False)
    return CudaArray(kernels.reduce("sum", a._device_array, _axes(axis, a.ndim), bool(keepdims), acc))


def mean(a, axis=None, keepdims=False) -> CudaArray:
    a = _as_cuda(a)
    if a.dtype.kind in "biu":
        a = astype(a, np.float64)
    return CudaArray(kernels.reduce("mean", a._device_array, _axes(axis, a.ndim), bool(keepdims)))


def _extreme(op, a, axis, keepdims):
    a = _as_cuda(a)
    if a.size == 0:
        raise ValueError(f"zero-size array to reduction operation {op}imum which has no identity")
    if a.dtype == np.bool_:
        return astype(_extreme(op, astype(a, np.int64), axis, keepdims), np.bool_)
    return CudaArray(kernels.reduce(op, a._device_array, _axes(axis, a.ndim), bool(keepdims)))


def amax(a, axis=None, keepdims=False) -> CudaArray:
    return _extreme("max", a, axis, keepdims)


def amin(a, axis=None, keepdims=False) -> CudaArray:
    return _extreme("min", a, axis, keepdims)


def _truth_reduce(a, axis, keepdims, extreme, empty_value) -> CudaArray:
    """``any`` (``extreme`` = "max" of the truth values) or ``all`` ("min"); ``empty_value`` for
    an empty input."""
    a = _as_cuda(a)
    if a.size == 0:
        return full(_reduced_shape(a.shape, axis, keepdims), empty_value, np.bool_)
    truth = astype(a if a.dtype == np.bool_ else _binary("ne", a, 0), np.int64)
    reduced = kernels.reduce(extreme, truth._device_array, _axes(axis, a.ndim), bool(keepdims))
    return _binary("gt", CudaArray(reduced), 0)


def any_(a, axis=None, keepdims=False) -> CudaArray:
    return _truth_reduce(a, axis, keepdims, "max", False)


def all_(a, axis=None, keepdims=False) -> CudaArray:
    return _truth_reduce(a, axis, keepdims, "min", True)


def _reduced_shape(shape, axis, keepdims):
    axes = _axes(axis, len(shape))
    axes = range(len(shape)) if axes is None else axes
    return tuple(1 if i in axes else n for i, n in enumerate(shape)) if keepdims else tuple(
        n for i, n in enumerate(shape) if i not in axes)


def argmax(a, axis=None, keepdims=False) -> CudaArray:
    a = _as_cuda(a)
    if a.size == 0:
        raise ValueError("attempt to get argmax of an empty sequence")
    if axis is None:
        r = CudaArray(kernels.argmax(a.reshape(-1)._device_array, 0, False))
        return r.reshape((1,) * a.ndim) if keepdims else r
    return CudaArray(kernels.argmax(a._device_array, int(axis) % max(a.ndim, 1), bool(keepdims)))


def argmin(a, axis=None, keepdims=False) -> CudaArray:
    a = _as_cuda(a)
    neg = logical_not(a) if a.dtype == np.bool_ else -(astype(a, np.float64) if a.dtype.kind in "iu" else a)
    return argmax(neg, axis, keepdims)
