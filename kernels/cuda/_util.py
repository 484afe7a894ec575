"""Shared helpers for the CUDA kernels: strided flat views, index metadata, block reductions.

Shapes and strides travel to kernels as by-value ``int64`` tuples padded to ``MAX_DIMS``
(kernel parameters: no device allocation, no host->device copy), and every input as a
1-D view of its memory plus element strides, so broadcasting (stride 0) and
non-contiguous views (transposes, slices) need no copy.

Block reductions (``block_sum``, ``block_max``) are tree reductions in a shared array of
``nthreads`` float64 slots; every thread of the block must call them (they synchronise).
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

MAX_DIMS = 6


def simulated() -> bool:
    """True under NUMBA_ENABLE_CUDASIM (device arrays are FakeCUDAArray wrappers)."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


@functools.lru_cache(maxsize=None)
def nb_dtype(dtype) -> numba.types.Type:
    return numba.from_dtype(np.dtype(dtype))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def elem_strides(x) -> tuple[int, ...]:
    """Strides of device array ``x`` in elements."""
    item = x.dtype.itemsize
    return tuple(int(s) // item for s in x.strides)


def flat_view(x):
    """A 1-D device array over the memory of ``x`` (any non-negative strides) and its strides.

    Element (i0, i1, ...) of ``x`` is ``flat[sum(i_k * strides[k])]``.
    """
    strides = elem_strides(x)
    if x.size == 0:
        return x.reshape(0) if x.ndim != 1 else x, strides
    if x.ndim == 0:
        return x.reshape(1), ()
    if x.is_c_contiguous():
        return x.reshape(x.size), strides
    if any(s < 0 for s in strides):
        raise ValueError("negative strides are not supported; pass a copy")
    span = 1 + sum((n - 1) * s for n, s in zip(x.shape, strides))
    if simulated():  # FakeCUDAArray wraps a NumPy view
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        base = np.lib.stride_tricks.as_strided(x._ary, shape=(span,), strides=(x.dtype.itemsize,))
        return FakeCUDAArray(base), strides
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    flat = DeviceNDArray(shape=(span,), strides=(x.dtype.itemsize,), dtype=x.dtype,
                         gpu_data=x.gpu_data)
    return flat, strides


def pad(t, fill: int = 0) -> tuple[int, ...]:
    """Left-pad a shape/stride tuple to MAX_DIMS (leading dims of size 1 / stride 0)."""
    t = tuple(int(v) for v in t)
    if len(t) > MAX_DIMS:
        raise ValueError(f"at most {MAX_DIMS} dimensions are supported, got {len(t)}")
    return (fill,) * (MAX_DIMS - len(t)) + t


def broadcast_strides(shape, strides, out_shape) -> tuple[int, ...]:
    """Strides of an input seen as ``out_shape``: 0 on broadcast (size-1 or missing) dims."""
    lead = len(out_shape) - len(shape)
    res = [0] * lead
    for n, s, o in zip(shape, strides, out_shape[lead:]):
        if n != o and n != 1:
            raise ValueError(f"shape {tuple(shape)} does not broadcast to {tuple(out_shape)}")
        res.append(0 if n == 1 else s)
    return tuple(res)


def pow2_at_least(n: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


@cuda.jit(device=True)
def offset_of(flat_idx, shape, strides):
    """Offset of the flat C-order index ``flat_idx`` of ``shape`` (MAX_DIMS tuple) under ``strides``."""
    off = 0
    rem = flat_idx
    for k in range(MAX_DIMS - 1, -1, -1):
        n = shape[k]
        off += (rem % n) * strides[k]
        rem //= n
    return off


@cuda.jit(device=True)
def block_sum(sh, val, tid, nthreads):
    """Sum of ``val`` over the block (nthreads a power of two). All threads must call it."""
    sh[tid] = val
    cuda.syncthreads()
    s = nthreads // 2
    while s > 0:
        if tid < s:
            sh[tid] += sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()  # sh may be reused right after
    return total


@cuda.jit(device=True)
def block_max(sh, val, tid, nthreads):
    """Max of ``val`` over the block (nthreads a power of two). All threads must call it."""
    sh[tid] = val
    cuda.syncthreads()
    s = nthreads // 2
    while s > 0:
        if tid < s:
            if sh[tid + s] > sh[tid]:
                sh[tid] = sh[tid + s]
        cuda.syncthreads()
        s //= 2
    total = sh[0]
    cuda.syncthreads()
    return total
