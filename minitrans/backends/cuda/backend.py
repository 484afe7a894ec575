"""``CUDABackend``: the namespace of primitives (the same names and semantics as
``cpu.CPUBackend``, plus ``dropout_mask``), matmul, and the bindings of the fused kernels
(softmax, cross-entropy, layer norm, attention, Adam, dropout mask) from
``minitrans.kernels.cuda``: ``CudaArray`` in, the kernel on its device array, ``CudaArray`` out.
"""
from __future__ import annotations

import numpy as np

from ...kernels import cuda as kernels
from ...kernels.cuda import array as array_kernels
from ..protocol import Backend
from . import reference as host_reference
from .array import CudaArray, from_numpy, to_numpy
from .indexing import add_at, broadcast_to, concatenate, moveaxis, reshape, split_at, sum_to, transpose
from .ops import (
    _as_cuda, _shape_arg, _unary, all_, amax, amin, any_, arange, argmax, argmin, asarray,
    ascontiguousarray, astype, clip, copy, empty, errstate, full, isfinite, logical_not, maximum, minimum,
    ones, ones_like, power, sigmoid, sum_, where, zeros, zeros_like,
)


# ---------------------------------------------------------------- linear algebra
def matmul(a, b) -> CudaArray:
    a, b = _as_cuda(a), _as_cuda(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: Input operand does not have enough dimensions")
    A = a.reshape(1, -1) if a.ndim == 1 else a
    B = b.reshape(-1, 1) if b.ndim == 1 else b
    if A.shape[-1] != B.shape[-2]:
        raise ValueError(f"matmul: mismatch in core dimension ({A.shape} @ {B.shape})")
    np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    rt = np.result_type(A.dtype, B.dtype)  # the kernel is compiled per dtype: one dtype in
    c = CudaArray(kernels.matmul(astype(A, rt, False)._device_array, astype(B, rt, False)._device_array))
    if a.ndim == 1 and b.ndim == 1:
        return c.reshape(())
    if a.ndim == 1:
        return c.reshape(c.shape[:-2] + c.shape[-1:])
    if b.ndim == 1:
        return c.reshape(c.shape[:-1])
    return c


# ---------------------------------------------------------------- fused kernels
def _kernel_operand(x, dtype=None):
    """The C-contiguous device array of ``x`` (in ``dtype`` if given) for a fused kernel: the
    fused kernels are compiled for C-contiguous operands of one float dtype (no copy when
    ``x`` already is one)."""
    if x is None:
        return None
    x = ascontiguousarray(_as_cuda(x))
    return (x if dtype is None else astype(x, dtype, False))._device_array


def _wrap(d):
    return None if d is None else CudaArray(d)


def softmax_forward(x):
    return _wrap(kernels.softmax_forward(_kernel_operand(x)))


def softmax_backward(y, dy):
    return _wrap(kernels.softmax_backward(_kernel_operand(y), _kernel_operand(dy, _as_cuda(y).dtype)))


def log_softmax_forward(x):
    return _wrap(kernels.log_softmax_forward(_kernel_operand(x)))


def log_softmax_backward(y, dy):
    return _wrap(kernels.log_softmax_backward(_kernel_operand(y), _kernel_operand(dy, _as_cuda(y).dtype)))


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    loss, lse = kernels.cross_entropy_forward(_kernel_operand(logits), _kernel_operand(target, np.int64), ignore_index, label_smoothing)
    return _wrap(loss), _wrap(lse)


def cross_entropy_backward(logits, target, lse, dloss, ignore_index, label_smoothing):
    dt = _as_cuda(logits).dtype
    return _wrap(kernels.cross_entropy_backward(_kernel_operand(logits), _kernel_operand(target, np.int64), _kernel_operand(lse, dt), _kernel_operand(dloss, dt),
                                       ignore_index, label_smoothing))


def layer_norm_forward(x, weight, bias, eps):
    dt = _as_cuda(x).dtype
    return tuple(_wrap(r) for r in kernels.layer_norm_forward(_kernel_operand(x), _kernel_operand(weight, dt), _kernel_operand(bias, dt), eps))


def layer_norm_backward(dy, x, weight, mean, rstd):
    dt = _as_cuda(x).dtype
    return tuple(_wrap(r) for r in kernels.layer_norm_backward(_kernel_operand(dy, dt), _kernel_operand(x), _kernel_operand(weight, dt), _kernel_operand(mean, dt),
                                                       _kernel_operand(rstd, dt)))


def _bias(bias, dtype):
    """An attention bias in the kernel dtype, strides kept (a broadcast mask stays stride 0)."""
    if bias is None:
        return None
    b = _as_cuda(bias)
    return (b if b.dtype == dtype else astype(b, dtype))._device_array


def attention_forward(q, k, v, bias, is_causal, scale):
    dt = _as_cuda(q).dtype
    o, lse = kernels.attention_forward(_kernel_operand(q), _kernel_operand(k, dt), _kernel_operand(v, dt), _bias(bias, dt), is_causal, scale)
    return _wrap(o), _wrap(lse)


def attention_backward(q, k, v, o, lse, do, bias, is_causal, scale):
    dt = _as_cuda(q).dtype
    return tuple(_wrap(r) for r in kernels.attention_backward(_kernel_operand(q), _kernel_operand(k, dt), _kernel_operand(v, dt), _kernel_operand(o, dt), _kernel_operand(lse, dt),
                                                      _kernel_operand(do, dt), _bias(bias, dt), is_causal, scale))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    dt = _as_cuda(param).dtype  # updated in place: the state arrays are used as they are
    kernels.adam_step(_as_cuda(param)._device_array, _kernel_operand(grad, dt), _as_cuda(exp_avg)._device_array, _as_cuda(exp_avg_sq)._device_array, lr, beta1, beta2, eps,
                weight_decay, step, decoupled)


def copy_many(dsts, srcs) -> None:
    """CUDA only: ``d[...] = s`` for every pair, up to ``MANY`` pairs per launch (pairs of one dtype
    together; a pair that is not two C-contiguous arrays of one shape and dtype is copied alone)."""
    groups: dict = {}
    for d, s in zip(dsts, srcs):
        d, s = _as_cuda(d), _as_cuda(s)
        if d._is_contiguous() and s._is_contiguous() and d.shape == s.shape and d.dtype == s.dtype and d.dtype.kind == "f":
            groups.setdefault(d.dtype, ([], []))
            groups[d.dtype][0].append(d._device_array)
            groups[d.dtype][1].append(s._device_array)
        else:
            d[...] = s
    for ds, ss in groups.values():
        array_kernels.copy_many(ds, ss)


def clip_grad_norm_flat(buf, max_norm, norm_type):
    """CUDA only: clip the flat gradient buffer ``buf`` in place in one launch; the norm stays
    on the device (see kernels/cuda/clip.py)."""
    return _wrap(kernels.clip_grad_norm(_as_cuda(buf)._device_array, max_norm, norm_type))


def dropout_mask(shape, p, seed, dtype):
    """CUDA only: the inverted-dropout multiplier (0 or 1/(1-p)) from a counter-based hash of
    (seed, element index); see kernels/cuda/array.py."""
    return _wrap(array_kernels.dropout_mask(_shape_arg(shape), p, seed, np.dtype(dtype)))


def shares_storage(a, b) -> bool:
    if a is b:
        return True
    if not (isinstance(a, CudaArray) and isinstance(b, CudaArray)):
        return False
    return (a if a._base is None else a._base) is (b if b._base is None else b._base)


def is_contiguous(a) -> bool:
    return _as_cuda(a)._is_contiguous()


def check_index_range(idx, n, what) -> None:
    idx = _as_cuda(idx)
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
