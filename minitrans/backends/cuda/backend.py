"""``CUDABackend``: the primitives of ``protocol.Backend`` on a CUDA device (the same names and
semantics as ``cpu.CPUBackend``), matmul, and the bindings of the fused kernels (softmax,
cross-entropy, layer norm, attention, Adam, dropout mask) from ``minitrans.kernels.cuda``:
``CudaArray`` in, the kernel on its device array, ``CudaArray`` out. ``set_kernels("reference")``
rebinds the fused ops to the NumPy oracle (``reference.py``).
"""
from __future__ import annotations

import numpy as np

from ...kernels import cuda as kernels
from ...kernels.cuda import array as array_kernels
from ...kernels.cuda.index_range import index_extremes as device_index_extremes
from .. import check_kernel_choice
from ..protocol import Backend
from . import reference as host_reference
from .array import CudaArray, from_numpy, shares_storage, to_numpy
from .pending_checks import PENDING
from .indexing import (
    add_at, broadcast_to, concatenate, index_grad, moveaxis, reshape, split_at, sum_to, transpose,
)
from .ops import (
    _as_cuda, _shape_arg, _unary, all_, amax, amin, any_, arange, argmax, argmin, asarray,
    ascontiguousarray, astype, clip, copy, empty, errstate, full, isfinite, logical_not, maximum, minimum,
    ones, ones_like, power, sigmoid, sum_, where, zeros, zeros_like,
)


# ---------------------------------------------------------------- linear algebra
_GUFUNC = "(n?,k),(k,m?)->(n?,m?)"  # NumPy's matmul signature, named in its errors (same text as the CPU)


def matmul(a, b) -> CudaArray:
    a, b = _as_cuda(a), _as_cuda(b)
    for i, x in enumerate((a, b)):
        if x.ndim == 0:
            raise ValueError(f"matmul: Input operand {i} does not have enough dimensions (has 0, gufunc core "
                             f"with signature {_GUFUNC} requires 1)")
    lhs = a.reshape(1, -1) if a.ndim == 1 else a
    rhs = b.reshape(-1, 1) if b.ndim == 1 else b
    if lhs.shape[-1] != rhs.shape[-2]:
        raise ValueError(f"matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc "
                         f"signature {_GUFUNC} (size {rhs.shape[-2]} is different from {lhs.shape[-1]})")
    np.broadcast_shapes(lhs.shape[:-2], rhs.shape[:-2])
    dtype = np.result_type(lhs.dtype, rhs.dtype)  # the kernel is compiled per dtype: one dtype in
    c = CudaArray(kernels.matmul(astype(lhs, dtype, False)._device_array, astype(rhs, dtype, False)._device_array))
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


def _in_dtype_of(first, *rest):
    """``_kernel_operand`` of ``first`` and of each of ``rest`` cast to ``first``'s dtype."""
    dtype = _as_cuda(first).dtype
    return (_kernel_operand(first),) + tuple(_kernel_operand(x, dtype) for x in rest)


def _wrap(result):
    """A kernel's device array (or tuple of them; None stays None) as ``CudaArray``."""
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return None if result is None else CudaArray(result)


def softmax_forward(x):
    return _wrap(kernels.softmax_forward(_kernel_operand(x)))


def softmax_backward(y, dy):
    return _wrap(kernels.softmax_backward(*_in_dtype_of(y, dy)))


def log_softmax_forward(x):
    return _wrap(kernels.log_softmax_forward(_kernel_operand(x)))


def log_softmax_backward(y, dy):
    return _wrap(kernels.log_softmax_backward(*_in_dtype_of(y, dy)))


def cross_entropy_forward(logits, target, ignore_index, label_smoothing):
    return _wrap(kernels.cross_entropy_forward(_kernel_operand(logits), _kernel_operand(target, np.int64),
                                               ignore_index, label_smoothing))


def cross_entropy_backward(logits, target, lse, dloss, ignore_index, label_smoothing):
    logits, lse, dloss = _in_dtype_of(logits, lse, dloss)
    return _wrap(kernels.cross_entropy_backward(logits, _kernel_operand(target, np.int64), lse, dloss,
                                                ignore_index, label_smoothing))


def layer_norm_forward(x, weight, bias, eps):
    return _wrap(kernels.layer_norm_forward(*_in_dtype_of(x, weight, bias), eps))


def layer_norm_backward(dy, x, weight, mean, rstd):
    x, dy, weight, mean, rstd = _in_dtype_of(x, dy, weight, mean, rstd)
    return _wrap(kernels.layer_norm_backward(dy, x, weight, mean, rstd))


def _bias(bias, dtype):
    """An attention bias in the kernel dtype, strides kept (a broadcast mask stays stride 0)."""
    if bias is None:
        return None
    b = _as_cuda(bias)
    return (b if b.dtype == dtype else astype(b, dtype))._device_array


def attention_forward(q, k, v, bias, is_causal, scale):
    return _wrap(kernels.attention_forward(*_in_dtype_of(q, k, v), _bias(bias, _as_cuda(q).dtype), is_causal,
                                           scale))


def attention_backward(q, k, v, o, lse, do, bias, is_causal, scale):
    return _wrap(kernels.attention_backward(*_in_dtype_of(q, k, v, o, lse, do), _bias(bias, _as_cuda(q).dtype),
                                            is_causal, scale))


def adam_step(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    dt = _as_cuda(param).dtype  # updated in place: the state arrays are used as they are
    state = [_as_cuda(x)._device_array for x in (param, exp_avg, exp_avg_sq)]
    kernels.adam_step(state[0], _kernel_operand(grad, dt), state[1], state[2], lr, beta1, beta2, eps,
                      weight_decay, step, decoupled)


def copy_many(dsts, srcs) -> None:
    """``d[...] = s`` for every pair, up to ``MANY`` pairs per launch (pairs of one float dtype
    together; a pair that is not two C-contiguous arrays of one shape and dtype is copied alone)."""
    groups: dict = {}
    for d, s in zip(dsts, srcs):
        d, s = _as_cuda(d), _as_cuda(s)
        same = d.shape == s.shape and d.dtype == s.dtype
        if same and d.dtype.kind == "f" and d._is_contiguous() and s._is_contiguous():
            groups.setdefault(d.dtype, ([], []))
            groups[d.dtype][0].append(d._device_array)
            groups[d.dtype][1].append(s._device_array)
        else:
            d[...] = s
    for ds, ss in groups.values():
        array_kernels.copy_many(ds, ss)


def clip_grad_norm_flat(buf, max_norm, norm_type):
    """Clip the flat gradient buffer ``buf`` in place in one launch; the norm stays on the device
    (see kernels/cuda/clip.py)."""
    return _wrap(kernels.clip_grad_norm(_as_cuda(buf)._device_array, max_norm, norm_type))


def dropout_mask(shape, p, seed, dtype):
    """The inverted-dropout multiplier (0 or 1/(1-p)) from a counter-based hash of (seed, element
    index), drawn on the device; see kernels/cuda/array.py."""
    return _wrap(array_kernels.dropout_mask(_shape_arg(shape), p, seed, np.dtype(dtype)))


def is_contiguous(a) -> bool:
    return _as_cuda(a)._is_contiguous()


def index_extremes(idx, ignore=None):
    idx = _as_cuda(idx)
    if not idx.size:
        return None
    flat = ascontiguousarray(astype(idx.reshape(-1), np.int64, False))
    lo, hi = (int(v) for v in to_numpy(CudaArray(device_index_extremes(flat._device_array, ignore))))
    return None if lo > hi else (lo, hi)   # lo > hi: every entry was ``ignore``


def check_index_range(idx, n, what, ignore=None) -> None:
    """The contract's check without a host wait: one launch now, and the CPU's IndexError at the
    next host read if an index (other than ``ignore``) is outside [0, n) (``pending_checks.py``)."""
    idx = _as_cuda(idx)
    if idx.size:
        flat = ascontiguousarray(astype(idx.reshape(-1), np.int64, False))
        PENDING.add(flat._device_array, n, what, ignore)


_KERNEL_CHOICE = {"name": "numba"}


def set_kernels(name: str) -> None:
    """Bind the fused ops of ``CUDABackend`` to the device kernels (``"numba"``) or to the NumPy
    oracle run on the host (``"reference"``, see ``reference.py``)."""
    check_kernel_choice(name)
    table = host_reference.FUNCTIONS if name == "reference" else _DEVICE_FUSED
    for fused, fn in table.items():
        setattr(CUDABackend, fused, staticmethod(fn))
    _KERNEL_CHOICE["name"] = name


def get_kernels() -> str:
    return _KERNEL_CHOICE["name"]


# ---------------------------------------------------------------- the namespace
class CUDABackend(Backend):
    """Primitive array functions on a CUDA device (arrays are ``CudaArray``); the same names
    and semantics as ``CPUBackend``."""

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
    from_numpy = staticmethod(from_numpy)
    shares_storage = staticmethod(shares_storage)
    is_contiguous = staticmethod(is_contiguous)
    index_extremes = staticmethod(index_extremes)
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
    index_grad = staticmethod(index_grad)
    copy = staticmethod(copy)

    matmul = staticmethod(matmul)

    @staticmethod
    def addmm(bias, a, b):
        y = matmul(a, b)
        y += bias
        return y

    @staticmethod
    def addmm_relu(bias, a, b):
        y = matmul(a, b)
        if bias is not None:
            y += bias
        return maximum(y, 0)

    @staticmethod
    def linear_backward(g, x, w, needs=(True, True, True), relu_out=None):
        if relu_out is not None:
            g = where(relu_out > 0, g, 0)
        return (matmul(g, w) if needs[0] else None, matmul(transpose(g), x) if needs[1] else None,
                sum_(g, axis=0) if needs[2] else None)

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
    # no kernel on the packed projection: PackedSelfAttention composes the head split, attention_forward
    # / attention_backward above and the merge, with the same results
    packed_attention_forward = staticmethod(lambda qkv, heads, bias, is_causal, scale: None)
    packed_attention_backward = staticmethod(lambda qkv, out, state, g, heads, bias, is_causal, scale: None)
    adam_step = staticmethod(adam_step)
    clip_grad_norm_flat = staticmethod(clip_grad_norm_flat)
    copy_many = staticmethod(copy_many)
    dropout_mask = staticmethod(dropout_mask)


#: the device-kernel binding of each fused op, restored by ``set_kernels("numba")``
_DEVICE_FUSED = {name: globals()[name] for name in host_reference.FUNCTIONS}
