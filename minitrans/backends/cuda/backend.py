"""``CUDABackend``: the namespace of primitives (the same names and semantics as
``cpu.CPUBackend``, plus ``dropout_mask``), matmul, and the bindings of the fused kernels
(softmax, cross-entropy, layer norm, attention, Adam, dropout mask) from
``minitrans.kernels.cuda``: ``CudaArray`` in, the kernel on its device array, ``CudaArray`` out.
"""
from __future__ import annotations

import numpy as np

from ...kernels import cuda as K
from ...kernels.cuda import array as KA
from ..protocol import Backend
from . import reference as host_reference
from .array import CudaArray, from_numpy, to_numpy
from .indexing import add_at, broadcast_to, concatenate, moveaxis, reshape, split_at, sum_to, transpose
from .ops import (
    _dev, _shape_arg, _unary, all_, amax, amin, any_, arange, argmax, argmin, asarray,
    ascontiguousarray, astype, clip, copy, empty, errstate, full, isfinite, logical_not, maximum, minimum,
    ones, ones_like, power, sigmoid, sum_, where, zeros, zeros_like,
)


# ---------------------------------------------------------------- linear algebra
def matmul(a, b) -> CudaArray:
    a, b = _dev(a), _dev(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    A = a.reshape(1, -1) if a.ndim == 1 else a
    B = b.reshape(-1, 1) if b.ndim == 1 else b
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"matmul: mismatch in core dimension ({A.shape} @ {B.shape})")
    np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    rt = np.result_type(A.dtype, B.dtype)  # the kernel is compiled per dtype: one dtype in
    c = CudaArray(K.matmul(astype(A, rt, False)._d, astype(B, rt, False)._d))
    if a.ndim == 1 and b.ndim == 1:
        return c.reshape(())
    if a.ndim == 1:
        return c.reshape(c.shape[:-2] + c.shape[-1:])
    if b.ndim == 1:
        return c.reshape(c.shape[:-1])
    return c


# ---------------------------------------------------------------- fused kernels
def _u(x, dtype=None):
    """The C-contiguous device array of ``x`` (in ``dtype`` if given) for a fused kernel: the
    fused kernels are compiled for C-contiguous operands of one float dtype (no copy when
    ``x`` already is one)."""
    if x is None:
        return None
    x = ascontiguousarray(_dev(x))
    return (x if dtype is None else astype(x, dtype, False))._d


def _w(d):
    return None if d is None else CudaArray(d)


def softmax_forward(x):
    return _w(K.softmax_forward(_u(x)))


def softmax_backward(y, dy):
    return _w(K.softmax_backward(_u(y), _u(dy, _dev(y).dtype)))


def log_softmax_forward(x):
    return _w(K.log_softmax_forward(_u(x)))


def log_softmax_backward(y, dy):
    return _w(K.log_softmax_backward(_u(y), _u(dy, _dev(y).dtype)))


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    loss, lse = K.cross_entropy_forward(_u(logits), _u(target, np.int64), ignore_index, label_smoothing)
    return _w(loss), _w(lse)


def cross_entropy_backward(logits, target, lse, dloss, ignore_index, label_smoothing):
    dt = _dev(logits).dtype
    return _w(K.cross_entropy_backward(_u(logits), _u(target, np.int64), _u(lse, dt), _u(dloss, dt),
                                       ignore_index, label_smoothing))


def layer_norm_forward(x, weight, bias, eps):
    dt = _dev(x).dtype
    return tuple(_w(r) for r in K.layer_norm_forward(_u(x), _u(weight, dt), _u(bias, dt), eps))


def layer_norm_backward(dy, x, weight, mean, rstd):
    dt = _dev(x).dtype
    return tuple(_w(r) for r in K.layer_norm_backward(_u(dy, dt), _u(x), _u(weight, dt), _u(mean, dt),
                                                       _u(rstd, dt)))


def _bias(bias, dtype):
    """An attention bias in the kernel dtype, strides kept (a broadcast mask stays stride 0)."""
    if bias is None:
        return None
    b = _dev(bias)
    return (b if b.dtype == dtype else astype(b, dtype))._d


def attention_forward(q, k, v, bias, is_causal, scale):
    dt = _dev(q).dtype
    o, lse = K.attention_forward(_u(q), _u(k, dt), _u(v, dt), _bias(bias, dt), is_causal, scale)
    return _w(o), _w(lse)


def attention_backward(q, k, v, o, lse, do, bias, is_causal, scale):
    dt = _dev(q).dtype
    return tuple(_w(r) for r in K.attention_backward(_u(q), _u(k, dt), _u(v, dt), _u(o, dt), _u(lse, dt),
                                                      _u(do, dt), _bias(bias, dt), is_causal, scale))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    dt = _dev(param).dtype  # updated in place: the state arrays are used as they are
    K.adam_step(_dev(param)._d, _u(grad, dt), _dev(exp_avg)._d, _dev(exp_avg_sq)._d, lr, beta1, beta2, eps,
                weight_decay, step, decoupled)


def copy_many(dsts, srcs) -> None:
    """CUDA only: ``d[...] = s`` for every pair, up to ``MANY`` pairs per launch (pairs of one dtype
    together; a pair that is not two C-contiguous arrays of one shape and dtype is copied alone)."""
    groups: dict = {}
    for d, s in zip(dsts, srcs):
        d, s = _dev(d), _dev(s)
        if d._is_c() and s._is_c() and d.shape == s.shape and d.dtype == s.dtype and d.dtype.kind == "f":
            groups.setdefault(d.dtype, ([], []))
            groups[d.dtype][0].append(d._d)
            groups[d.dtype][1].append(s._d)
        else:
            d[...] = s
    for ds, ss in groups.values():
        KA.copy_many(ds, ss)


def clip_grad_norm_flat(buf, max_norm, norm_type):
    """CUDA only: clip the flat gradient buffer ``buf`` in place in one launch; the norm stays
    on the device (see kernels/cuda/clip.py)."""
    return _w(K.clip_grad_norm(_dev(buf)._d, max_norm, norm_type))


def dropout_mask(shape, p, seed, dtype):
    """CUDA only: the inverted-dropout multiplier (0 or 1/(1-p)) from a counter-based hash of
    (seed, element index); see kernels/cuda/array.py."""
    return _w(KA.dropout_mask(_shape_arg(shape), p, seed, np.dtype(dtype)))


def shares_storage(a, b) -> bool:
    if a is b:
        return True
    if not (isinstance(a, CudaArray) and isinstance(b, CudaArray)):
        return False
    return (a if a._base is None else a._base) is (b if b._base is None else b._base)


def is_contiguous(a) -> bool:
    return _dev(a)._is_c()


def check_index_range(idx, n, what) -> None:
    idx = _dev(idx)
    if idx.size:
        flat = idx.reshape(-1)
        lo, hi = (int(v) for v in to_numpy(concatenate([amin(flat, keepdims=True), amax(flat, keepdims=True)])))
        if lo < 0 or hi >= n:
            raise IndexError(f"{what}: index out of range: indices must be in [0, {n}), got min {lo}, max {hi}")


def from_numpy_copy(a, copy=False):
    """The host array ``a`` on the device: always a fresh device copy (``copy`` is accepted for the
    contract; device memory never aliases host memory)."""
    return from_numpy(a)


_KERNEL_CHOICE = {"name": "numba"}


def set_kernels(name: str) -> None:
    """Bind the fused ops of ``CUDABackend`` to the device kernels (``"numba"``) or to the NumPy
    oracle run on the host (``"reference"``, see ``reference.py``)."""
    if name not in ("numba", "reference"):
        raise ValueError(f"set_kernels: expected 'numba' or 'reference', got {name!r}")
    table = host_reference.FUNCTIONS if name == "reference" else _DEVICE_FUSED
    for fused, fn in table.items():
        setattr(CUDABackend, fused, staticmethod(fn))
    _KERNEL_CHOICE["name"] = name


def get_kernels() -> str:
    return _KERNEL_CHOICE["name"]


# ---------------------------------------------------------------- the namespace
class CUDABackend(Backend):
    """Primitive array functions on a CUDA device (arrays are ``CudaArray``); the same names
    and semantics as ``CPUBackend`` (plus ``dropout_mask``)."""

    name = "cuda"
    ndarray = CudaArray
    host_memory = False

    asarray = staticmethod(asarray)
    ascontiguousarray = staticmethod(ascontiguousarray)
    zeros = staticmethod(zeros)
    ones = staticmethod(ones)
    full = staticmethod(full)
    empty = staticmethod(empty)
    arange = staticmethod(arange)
    zeros_like = staticmethod(zeros_like)
    ones_like = staticmethod(ones_like)
    to_numpy = staticmethod(to_numpy)
    from_numpy = staticmethod(from_numpy_copy)
    shares_storage = staticmethod(shares_storage)
    is_contiguous = staticmethod(is_contiguous)
    check_index_range = staticmethod(check_index_range)
    set_kernels = staticmethod(set_kernels)
    get_kernels = staticmethod(get_kernels)

    exp = staticmethod(lambda x: _unary("exp", x))
    log = staticmethod(lambda x: _unary("log", x))
    sqrt = staticmethod(lambda x: _unary("sqrt", x))
    abs = staticmethod(lambda x: _unary("abs", x))
    tanh = staticmethod(lambda x: _unary("tanh", x))
    sign = staticmethod(lambda x: _unary("sign", x))
    maximum = staticmethod(maximum)
    minimum = staticmethod(minimum)
    where = staticmethod(where)
    clip = staticmethod(clip)
    power = staticmethod(power)
    isfinite = staticmethod(isfinite)
    logical_not = staticmethod(logical_not)
    errstate = staticmethod(errstate)

    sum = staticmethod(sum_)
    max = staticmethod(amax)
    min = staticmethod(amin)
    argmax = staticmethod(argmax)
    argmin = staticmethod(argmin)
    any = staticmethod(any_)
    all = staticmethod(all_)
    sum_to = staticmethod(sum_to)

    reshape = staticmethod(reshape)
    transpose = staticmethod(transpose)
    broadcast_to = staticmethod(broadcast_to)
    broadcast_shapes = staticmethod(np.broadcast_shapes)
    concatenate = staticmethod(concatenate)
    split_at = staticmethod(split_at)
    moveaxis = staticmethod(moveaxis)
    add_at = staticmethod(add_at)
    copy = staticmethod(copy)

    matmul = staticmethod(matmul)
    sigmoid = staticmethod(sigmoid)

    softmax_forward = staticmethod(softmax_forward)
    softmax_backward = staticmethod(softmax_backward)
    log_softmax_forward = staticmethod(log_softmax_forward)
    log_softmax_backward = staticmethod(log_softmax_backward)
    cross_entropy_forward = staticmethod(cross_entropy_forward)
    cross_entropy_backward = staticmethod(cross_entropy_backward)
    layer_norm_forward = staticmethod(layer_norm_forward)
    layer_norm_backward = staticmethod(layer_norm_backward)
    attention_forward = staticmethod(attention_forward)
    attention_backward = staticmethod(attention_backward)
    adam_step = staticmethod(adam_step)
    clip_grad_norm_flat = staticmethod(clip_grad_norm_flat)
    copy_many = staticmethod(copy_many)
    dropout_mask = staticmethod(dropout_mask)


#: the device-kernel binding of each fused op, restored by ``set_kernels("numba")``
_DEVICE_FUSED = {name: globals()[name] for name in host_reference.FUNCTIONS}
