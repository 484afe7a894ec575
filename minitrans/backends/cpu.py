"""The CPU backend: NumPy/BLAS arrays, with Numba kernels for the fused ops.

The fused ops (softmax, cross-entropy, layer norm, attention, Adam) run ``minitrans.kernels.cpu``
while the kernel choice (``minitrans.backends.set_kernels``) is ``"numba"``, the default, and the
plain NumPy oracle ``minitrans.kernels.reference`` while it is ``"reference"``.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..kernels import cpu as numba_kernels
from ..kernels import reference as reference_kernels
from ..kernels.cpu.matmul import addmm as threaded_addmm
from ..kernels.cpu.matmul import addmm_relu as threaded_addmm_relu
from ..kernels.cpu.matmul import linear_backward as threaded_linear_backward
from ..kernels.cpu.matmul import matmul as threaded_matmul
from ..kernels.cpu.reduce import sum as compiled_sum
from ..kernels.cpu.scatter import add_at as row_scatter_add_at
from ..kernels.cpu.where import where as compiled_where
from . import check_kernel_choice, get_kernels as chosen_kernels
from .protocol import Backend

FUSED = ("softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
         "cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward",
         "layer_norm_backward", "attention_forward", "attention_backward", "adam_step")
KERNEL_MODULES = {"numba": numba_kernels, "reference": reference_kernels}

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
    """Sum a broadcast gradient back down to ``shape`` (the engine calls this once per input; the
    CUDA backend's indexing reuses it on host index arrays)."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


_MASK_BITS = threading.local()


def _seeded_generator(seed: int) -> np.random.Generator:
    """A generator whose PCG64 state is ``seed``: the bit generator of this thread re-seeded in
    place (about 1.5 µs, where ``default_rng(seed)`` hashes the seed through a SeedSequence in
    about 12 µs — once per dropout call). The seed is itself a 63-bit draw of the global
    generator, so the states are spread over PCG64's period."""
    gen = getattr(_MASK_BITS, "generator", None)
    if gen is None:
        gen = _MASK_BITS.generator = np.random.Generator(np.random.PCG64())
    gen.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": int(seed), "inc": 1},
                               "has_uint32": 0, "uinteger": 0}
    return gen


def _owner(a):
    """The array whose memory ``a`` uses: its base for a view, itself otherwise."""
    base = getattr(a, "base", None)
    return a if base is None else base


# primitives that are the NumPy function of the same name, with NumPy's semantics
NUMPY_PRIMITIVES = ("asarray", "ascontiguousarray", "zeros", "ones", "full", "empty", "arange", "zeros_like",
                    "ones_like",
                    "exp", "log", "sqrt", "abs", "tanh", "sign", "maximum", "minimum", "power",
                    "isfinite", "logical_not", "errstate",
                    "max", "min", "argmax", "argmin", "any", "all",
                    "reshape", "transpose", "broadcast_to", "broadcast_shapes", "concatenate", "moveaxis")
NumpyPrimitives = type("NumpyPrimitives", (), {name: staticmethod(getattr(np, name)) for name in NUMPY_PRIMITIVES})


def fused_kernels(choice: str) -> dict:
    """The fused kernels of ``choice`` (``"numba"`` or ``"reference"``) by primitive name, as static methods."""
    return {name: staticmethod(getattr(KERNEL_MODULES[choice], name)) for name in FUSED}


# the fused kernels as the class is made; CPUBackend.set_kernels binds a choice on the class itself
NumbaFusedKernels = type("NumbaFusedKernels", (), fused_kernels("numba"))


class CPUBackend(NumpyPrimitives, NumbaFusedKernels, Backend):
    """Primitive array functions on the CPU (static methods; arrays are ``np.ndarray``). The
    primitives NumPy has under the same name come from ``NumpyPrimitives``, the fused kernels from
    the module of the kernel choice; the others are here."""

    name = "cpu"
    ndarray = np.ndarray
    host_memory = True
    #: the kernel choice the fused ops are bound to (set_kernels)
    _kernels = "numba"

    sum_to = staticmethod(_sum_to)
    split_at = staticmethod(np.split)
    add_at = staticmethod(row_scatter_add_at)   # np.add.at; row scatters (embedding backward) compiled
    where = staticmethod(compiled_where)        # np.where; array-or-constant selections compiled
    sum = staticmethod(compiled_sum)            # np.sum; column sums (bias gradients) compiled, split over threads
    matmul = staticmethod(threaded_matmul)    # np.matmul, large products split over minitrans's threads
    addmm = staticmethod(threaded_addmm)      # a @ b + bias, the addition inside each thread's block
    addmm_relu = staticmethod(threaded_addmm_relu)    # and max(., 0), in the same blocks
    linear_backward = staticmethod(threaded_linear_backward)    # the two products on two threads at once

    @staticmethod
    def to_numpy(a):
        return a

    @staticmethod
    def copy(a):
        return np.array(a, order="C")    # C order whatever a's layout (np.copy keeps a transpose's)

    @staticmethod
    def from_numpy(a, copy=False):
        return np.array(a) if copy else np.asarray(a)

    @staticmethod
    def shares_storage(a, b) -> bool:
        return a is b or _owner(a) is _owner(b)

    @staticmethod
    def is_contiguous(a) -> bool:
        return a.flags.c_contiguous

    @staticmethod
    def clip(a, lo, hi, out=None):
        if lo is None and hi is None:
            raise ValueError("clip: one of the bounds must be given")
        return np.clip(a, lo, hi, out=out)

    @staticmethod
    def index_extremes(idx, ignore=None):
        kept = idx if ignore is None else idx[idx != ignore]
        return (int(kept.min()), int(kept.max())) if kept.size else None

    @staticmethod
    def dropout_mask(shape, p, seed, dtype):
        if p >= 1.0:
            return np.zeros(shape, dtype)   # everything dropped (no 0/0)
        keep = _seeded_generator(seed).random(shape) >= p
        return (keep / (1.0 - p)).astype(dtype)

    @staticmethod
    def copy_many(dsts, srcs):
        for dst, src in zip(dsts, srcs):
            dst[...] = src

    @staticmethod
    def clip_grad_norm_flat(buf, max_norm, norm_type):
        magnitudes = np.abs(buf)
        total = float(magnitudes.max(initial=0.0)) if np.isinf(norm_type) else \
            float(np.sum(magnitudes.astype(np.float64) ** norm_type)) ** (1.0 / norm_type)
        buf *= buf.dtype.type(min(1.0, max_norm / (total + 1e-6)))
        return np.asarray(total, dtype=buf.dtype)

    @staticmethod
    def set_kernels(name: str) -> None:
        CPUBackend._kernels = check_kernel_choice(name)
        for fused, kernel in fused_kernels(name).items():
            setattr(CPUBackend, fused, kernel)

    @staticmethod
    def get_kernels() -> str:
        return CPUBackend._kernels

    @staticmethod
    def sigmoid(x):
        # exp of a non-positive number only: no overflow warnings for large |x|
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)

    @staticmethod
    def packed_attention_forward(qkv, heads, bias, is_causal, scale):
        # lazy: a Numba kernel module, loaded on the first packed attention, not with every minitrans import
        from ..kernels.cpu import attention_packed
        if CPUBackend._kernels == "numba" and qkv.ndim == 3 and qkv.shape[1] <= attention_packed.PACKED_MAX_T:
            out, lse, pt = attention_packed.packed_attention_forward(qkv, heads, bias, is_causal, scale)
            return out, (lse, pt)
        return None                 # the reference kernels, or a long sequence: the caller composes

    @staticmethod
    def packed_attention_backward(qkv, out, state, g, heads, bias, is_causal, scale):
        # lazy: a Numba kernel module, loaded on the first packed attention, not with every minitrans import
        from ..kernels.cpu import attention_packed
        lse, pt = state
        return attention_packed.packed_attention_backward(qkv, out, lse, g, heads, bias, is_causal, scale, pt)
