"""The CPU backend: NumPy/BLAS arrays, with Numba kernels for the fused ops.

``set_kernels("numba")`` (default) routes the fused ops (softmax, cross-entropy, layer
norm, attention, Adam) to ``minitrans.kernels.cpu``; ``set_kernels("reference")`` or the
environment variable ``MINITRANS_KERNELS=reference`` routes them to the plain NumPy
oracle in ``minitrans.kernels.reference``.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ..kernels.cpu.matmul import matmul as _threaded_matmul
from .protocol import Backend

_MODE = {"name": os.environ.get("MINITRANS_KERNELS", "numba")}
_FUSED = ("softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
          "cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward",
          "layer_norm_backward", "attention_forward", "attention_backward", "adam_step")


def set_kernels(name: str) -> None:
    """Choose the CPU implementation of the fused ops: ``"numba"`` or ``"reference"``."""
    if name not in ("numba", "reference"):
        raise ValueError(f"set_kernels: expected 'numba' or 'reference', got {name!r}")
    _MODE["name"] = name
    _bind_fused()


def get_kernels() -> str:
    return _MODE["name"]


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3       # glibc's mallopt parameters
_MMAP_MAX = 32 << 20                                # glibc refuses larger mmap thresholds on 64-bit


def retain_freed_memory(limit: int = 256 << 20) -> bool:
    """Let the C allocator keep up to ``limit`` bytes of freed memory for reuse instead of handing it
    back to the operating system at once. Returns False (and changes nothing) where the C library
    has no glibc ``mallopt``.

    Why: a training step makes many short-lived arrays of a few MiB (activations, gradients, the
    temporaries of elementwise ops). glibc returns large freed blocks to the OS (munmap, or trimming
    the heap top), and every new array then page-faults its memory in again: on the W1 benchmark step
    that was ~20 ms of system time per step (a sixth of it) on one thread, where PyTorch spends ~1 ms.
    With this call the blocks are reused (arrays above 32 MiB are still mapped and unmapped each
    time). The cost is up to ``limit`` bytes of freed memory kept by the process. Process-wide, so
    importing minitrans does not do it; ``experiments/`` call it explicitly (see docs/performance.md).
    The environment variables ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` do the same."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"retain_freed_memory: limit must be a non-negative number of bytes, got {limit!r}")
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, min(limit, _MMAP_MAX))
    return bool(ok and mallopt(_M_TRIM_THRESHOLD, min(limit, 2**31 - 1)))


def _sum_to(g, shape):
    """Sum a broadcast gradient back down to ``shape`` (the engine calls this once per input)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _owner(a):
    b = getattr(a, "base", None)
    return a if b is None else b


def _shares_storage(a, b) -> bool:
    return a is b or _owner(a) is _owner(b)


def _from_numpy(a, copy=False):
    return np.array(a) if copy else np.asarray(a)


def _clip(a, lo, hi, out=None):
    if lo is None and hi is None:
        raise ValueError("clip: one of the bounds must be given")
    return np.clip(a, lo, hi, out=out)


def _check_index_range(idx, n, what):
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"{what}: index out of range: indices must be in [0, {n}), got "
                         f"min {int(idx.min())}, max {int(idx.max())}")


def _dropout_mask(shape, p, seed, dtype):
    keep = np.random.default_rng(seed).random(shape) >= p
    return (keep / (1.0 - p)).astype(dtype)


def _copy_many(dsts, srcs):
    for d, s in zip(dsts, srcs):
        d[...] = s


def _clip_grad_norm_flat(buf, max_norm, norm_type):
    a = np.abs(buf)
    total = float(a.max(initial=0.0)) if np.isinf(norm_type) else \
        float(np.sum(a.astype(np.float64) ** norm_type)) ** (1.0 / norm_type)
    buf *= buf.dtype.type(min(1.0, max_norm / (total + 1e-6)))
    return np.asarray(total, dtype=buf.dtype)


class _Lazy:
    """Bind the fused kernels on first use so that importing minitrans does not compile Numba code."""

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, owner):
        _bind_fused()
        return getattr(owner, self.name)



class CPUBackend(Backend):
    """Primitive array functions on the CPU (static methods; arrays are ``np.ndarray``)."""

    name = "cpu"
    ndarray = np.ndarray
    host_memory = True

    # creation / conversion
    asarray = staticmethod(np.asarray)
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    zeros = staticmethod(np.zeros)
    ones = staticmethod(np.ones)
    full = staticmethod(np.full)
    empty = staticmethod(np.empty)
    arange = staticmethod(np.arange)
    zeros_like = staticmethod(np.zeros_like)
    ones_like = staticmethod(np.ones_like)

    @staticmethod
    def to_numpy(a):
        return a

    from_numpy = staticmethod(_from_numpy)
    shares_storage = staticmethod(_shares_storage)
    is_contiguous = staticmethod(lambda a: a.flags.c_contiguous)
    check_index_range = staticmethod(_check_index_range)
    dropout_mask = staticmethod(_dropout_mask)
    copy_many = staticmethod(_copy_many)
    clip_grad_norm_flat = staticmethod(_clip_grad_norm_flat)
    set_kernels = staticmethod(lambda name: set_kernels(name))
    get_kernels = staticmethod(lambda: get_kernels())

    # elementwise
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    tanh = staticmethod(np.tanh)
    sign = staticmethod(np.sign)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    where = staticmethod(np.where)
    clip = staticmethod(_clip)
    power = staticmethod(np.power)
    isfinite = staticmethod(np.isfinite)
    logical_not = staticmethod(np.logical_not)
    errstate = staticmethod(np.errstate)

    # reductions
    sum = staticmethod(np.sum)
    max = staticmethod(np.max)
    min = staticmethod(np.min)
    argmax = staticmethod(np.argmax)
    argmin = staticmethod(np.argmin)
    any = staticmethod(np.any)
    all = staticmethod(np.all)
    sum_to = staticmethod(_sum_to)

    # shape
    reshape = staticmethod(np.reshape)
    transpose = staticmethod(np.transpose)
    broadcast_to = staticmethod(np.broadcast_to)
    broadcast_shapes = staticmethod(np.broadcast_shapes)
    concatenate = staticmethod(np.concatenate)
    split_at = staticmethod(np.split)
    moveaxis = staticmethod(np.moveaxis)
    add_at = staticmethod(np.add.at)
    copy = staticmethod(np.copy)

    # linear algebra
    matmul = staticmethod(_threaded_matmul)    # np.matmul, large products split over minitrans's threads

    # fused kernels: bound to kernels.cpu or kernels.reference on first use (set_kernels)
    softmax_forward = _Lazy("softmax_forward")
    softmax_backward = _Lazy("softmax_backward")
    log_softmax_forward = _Lazy("log_softmax_forward")
    log_softmax_backward = _Lazy("log_softmax_backward")
    cross_entropy_forward = _Lazy("cross_entropy_forward")
    cross_entropy_backward = _Lazy("cross_entropy_backward")
    layer_norm_forward = _Lazy("layer_norm_forward")
    layer_norm_backward = _Lazy("layer_norm_backward")
    attention_forward = _Lazy("attention_forward")
    attention_backward = _Lazy("attention_backward")
    adam_step = _Lazy("adam_step")

    @staticmethod
    def sigmoid(x):
        # exp of a non-positive number only: no overflow warnings for large |x|
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _bind_fused() -> None:
    if _MODE["name"] == "reference":
        from ..kernels import reference as mod
    else:
        from ..kernels import cpu as mod
    for name in _FUSED:
        setattr(CPUBackend, name, staticmethod(getattr(mod, name)))


