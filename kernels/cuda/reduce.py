"""Axis reductions: sum / mean / max / min over any set of axes (keepdims), argmax over one axis.

Launch shape: one block of ``THREADS`` threads per output element (grid = number of outputs).
Memory plan: the wrapper splits the input's dims into kept dims (indexed by the block) and
reduced dims (indexed by the thread loop), each with its own shape/stride tuple, so any
axis set of any strided view reduces without a transpose. Thread ``t`` folds reduced
elements ``t, t + THREADS, ...`` (each input cell read once) into a register of the
input dtype (float32 sums in float32, as PyTorch; int64 sums in int64, exact), then a
shared-memory tree (``THREADS`` slots of that dtype, plus ``THREADS`` int64 slots for
argmax) combines the block; thread 0 writes the single output. Deterministic (fixed order).
Kernels are compiled per (op, dtype).
Argmax ties resolve to the smallest index, as NumPy.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from ._util import MAX, MIN, SUM, block_reduce, combine, device_array, flat_view, launch, nb_dtype, offset_of, pad

THREADS = 128  # power of two

_OPS = {"sum": SUM, "mean": SUM, "max": MAX, "min": MIN}


def _lowest(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(-math.inf)
    if dtype == np.bool_:
        return np.False_
    return np.iinfo(dtype).min


def _highest(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(math.inf)
    if dtype == np.bool_:
        return np.True_
    return np.iinfo(dtype).max


@functools.lru_cache(maxsize=None)
def _reduce_kernel(code: int, threads: int, dtype):
    dtype = np.dtype(dtype)
    acct = nb_dtype(dtype)
    init = dtype.type(0) if code == SUM else (_lowest(dtype) if code == MAX else _highest(dtype))

    @cuda.jit
    def reduce_kernel(out, x, nred, scale, kshape, kstrides, rshape, rstrides):
        """out[blockIdx.x] = sum / max / min (``code``; * ``scale`` for mean) over the nred reduced cells
        of kept index blockIdx.x. Grid = number of outputs, ``threads`` (THREADS) per block; thread t
        folds t, t + threads, ... into a register of the input dtype, then a tree in a ``threads``-slot
        shared array of that dtype; each input cell read once, thread 0 writes the output."""
        sh = cuda.shared.array(threads, acct)
        tid = cuda.threadIdx.x
        base = offset_of(cuda.blockIdx.x, kshape, kstrides)
        acc = init
        r = tid
        while r < nred:
            acc = combine(acc, x[base + offset_of(r, rshape, rstrides)], code)
            r += threads
        total = block_reduce(sh, acc, tid, threads, code)
        if tid == 0:
            out[cuda.blockIdx.x] = total * scale

    return reduce_kernel


@functools.lru_cache(maxsize=None)
def _argmax_kernel(threads: int, dtype):
    numba_dtype = nb_dtype(dtype)
    lowest = _lowest(dtype)

    @cuda.jit
    def argmax_kernel(out, x, nred, kshape, kstrides, rstride):
        """out[blockIdx.x] = index of the first maximum along the reduced axis (stride rstride).
        Grid = number of outputs, ``threads`` (THREADS) per block, thread t scans t, t + threads, ...;
        (value, index) tree in ``threads``-slot shared arrays of the input dtype + int64 (ties ->
        smallest index); each input cell read once, thread 0 writes."""
        shv = cuda.shared.array(threads, numba_dtype)
        shi = cuda.shared.array(threads, numba.int64)
        tid = cuda.threadIdx.x
        base = offset_of(cuda.blockIdx.x, kshape, kstrides)
        best = lowest
        besti = nred  # sentinel: larger than any index
        r = tid
        while r < nred:
            v = x[base + r * rstride]
            if v > best or besti == nred:
                best = v
                besti = r
            r += threads
        shv[tid] = best
        shi[tid] = besti
        cuda.syncthreads()
        s = threads // 2
        while s > 0:
            if tid < s:
                v = shv[tid + s]
                j = shi[tid + s]
                if j < nred and (shi[tid] == nred or v > shv[tid] or (v == shv[tid] and j < shi[tid])):
                    shv[tid] = v
                    shi[tid] = j
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            out[cuda.blockIdx.x] = shi[0]

    return argmax_kernel


def _norm_axes(axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted({a % ndim for a in axes})) if ndim else ()


def _split(x, axes):
    flat, st = flat_view(x)
    kept = [d for d in range(x.ndim) if d not in axes]
    kshape = [x.shape[d] for d in kept]
    rshape = [x.shape[d] for d in axes]
    return (flat, kshape, [st[d] for d in kept], rshape, [st[d] for d in axes])


def reduce(op: str, x, axes=None, keepdims: bool = False):
    """``np.<op>(x, axis=axes, keepdims=keepdims)`` for op in sum, mean, max, min."""
    axes = _norm_axes(axes, x.ndim)
    flat, kshape, kst, rshape, rst = _split(x, axes)
    nout = int(np.prod(kshape, dtype=np.int64))
    nred = int(np.prod(rshape, dtype=np.int64))
    out_shape = tuple(1 if d in axes else x.shape[d] for d in range(x.ndim)) if keepdims else tuple(kshape)
    y = device_array(out_shape, x.dtype)
    if nout:
        dt = np.dtype(x.dtype)
        if op == "mean" and dt.kind != "f":
            raise TypeError(f"mean of {dt.name} on cuda: cast to a float dtype first")
        scale = dt.type(1.0 / nred if op == "mean" else 1)
        kern = _reduce_kernel(_OPS[op], THREADS, dt)
        launch(kern, nout, THREADS, y.reshape(nout), flat, nred, scale, pad(kshape, 1), pad(kst),
               pad(rshape, 1), pad(rst))
    return y


def argmax(x, axis: int = -1, keepdims: bool = False):
    """``np.argmax(x, axis=axis, keepdims=keepdims)`` (int64; first maximum wins)."""
    axis = axis % x.ndim
    flat, kshape, kst, rshape, rst = _split(x, (axis,))
    nout = int(np.prod(kshape, dtype=np.int64))
    out_shape = tuple(1 if d == axis else x.shape[d] for d in range(x.ndim)) if keepdims else tuple(kshape)
    y = device_array(out_shape, np.int64)
    if nout:
        launch(_argmax_kernel(THREADS, np.dtype(x.dtype)), nout, THREADS, y.reshape(nout), flat, rshape[0],
               pad(kshape, 1), pad(kst), rst[0])
    return y
