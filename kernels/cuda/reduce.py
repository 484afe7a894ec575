"""Axis reductions: sum / mean / max / min over any set of axes (keepdims), argmax over one axis.

Launch shape: blocks of ``THREADS`` threads. With many outputs, one block per output element
(grid = number of outputs). With few outputs and long rows (a full sum, a bias gradient's
column sums over many rows) one block per output cannot fill the GPU, so the reduction runs in
two stages: each output's row is cut into ``splits`` slices (``_splits``: enough blocks in all
to fill the device, at least ``ROW_CHUNK`` elements per block), stage 1 launches ``outputs x
splits`` blocks that each write one partial result, and stage 2 reduces each output's
``splits`` partials (contiguous) with one block per output, applying the mean's scale.
Memory plan: the wrapper splits the input's dims into kept dims (indexed by the block) and
reduced dims (indexed by the thread loop), each with its own shape/stride tuple, so any axis
set of any strided view reduces without a transpose; when the reduced dims are C-contiguous
(a row) the loop reads ``x[base + r]`` with no index decoding. Thread ``t`` of slice ``c``
folds reduced elements ``c * THREADS + t``, then every ``splits * THREADS`` (each input cell
read once) into a register of the accumulator dtype (float32 sums in float32, as PyTorch;
integer and bool sums in int64, exact), then a shared-memory tree (``THREADS`` slots of that
dtype, plus ``THREADS`` int64 slots for argmax) combines the block; thread 0 writes the block's
result. Stage 1's partials are ``outputs x splits`` accumulator cells of pooled device memory.
Deterministic (fixed order for given sizes). Kernels are compiled per (op, accumulator dtype,
input dtype). Argmax ties resolve to the smallest index, as NumPy (argmax is one stage).
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from ._util import (
    MAX, MIN, SUM, block_reduce, cdiv, combine, device_array, flat_view, launch, nb_dtype, offset_of, pad,
)
from .layout import is_c_contiguous

THREADS = 128  # power of two
TARGET_BLOCKS = 1024  # blocks a two-stage reduction aims at (several per SM of a large GPU)
ROW_CHUNK = 4096  # at least this many reduced cells per block of a two-stage reduction
MAX_SPLITS = 1024  # slices per output (stage 2 folds them with one block)

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
def _reduce_kernel(code: int, threads: int, dtype, in_dtype):
    """The reduction ``code`` accumulating in ``dtype`` over inputs of ``in_dtype``."""
    dtype = np.dtype(dtype)
    acct = nb_dtype(dtype)
    to_acc = dtype.type   # each input cell converted to the accumulator dtype (a no-op when they agree)
    init = dtype.type(0) if code == SUM else (_lowest(dtype) if code == MAX else _highest(dtype))

    @cuda.jit
    def reduce_kernel(out, x, nred, splits, scale, kshape, kstrides, rshape, rstrides, row):
        """out[b] = sum / max / min (``code``; * ``scale`` for mean) over slice b % splits of the nred
        reduced cells of kept index b // splits: cells c * threads + t, then every splits * threads.
        Grid = outputs x splits, ``threads`` (THREADS) per block; thread t folds its cells into a
        register of the accumulator dtype (``row``: the reduced cells are contiguous, read as
        x[base + r]), then a tree in a ``threads``-slot shared array of that dtype; each input cell
        read once, thread 0 writes the block's result."""
        sh = cuda.shared.array(threads, acct)
        tid = cuda.threadIdx.x
        b = cuda.blockIdx.x
        base = offset_of(b // splits, kshape, kstrides)
        step = splits * threads
        acc = init
        r = (b % splits) * threads + tid
        if row:
            while r < nred:
                acc = combine(acc, to_acc(x[base + r]), code)
                r += step
        else:
            while r < nred:
                acc = combine(acc, to_acc(x[base + offset_of(r, rshape, rstrides)]), code)
                r += step
        total = block_reduce(sh, acc, tid, threads, code)
        if tid == 0:
            out[b] = total * scale

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


def _splits(nout: int, nred: int) -> int:
    """How many slices each output's row is cut into (1: one stage, one block per output)."""
    if nout >= TARGET_BLOCKS // 2:
        return 1   # enough outputs to fill the device with one block each
    return max(1, min(cdiv(nred, ROW_CHUNK), cdiv(TARGET_BLOCKS, nout), MAX_SPLITS))


#: input dtypes whose sums accumulate in int64 inside the kernel (no cast launch first)
SUM_TO_INT64 = (np.dtype(np.bool_), np.dtype(np.int32))


def reduce(op: str, x, axes=None, keepdims: bool = False, dtype=None):
    """``np.<op>(x, axis=axes, keepdims=keepdims)`` for op in sum, mean, max, min, accumulated and
    returned in ``dtype`` (default x's; a sum of ``SUM_TO_INT64`` inputs may ask for int64)."""
    axes = _norm_axes(axes, x.ndim)
    flat, kshape, kst, rshape, rst = _split(x, axes)
    nout = int(np.prod(kshape, dtype=np.int64))
    nred = int(np.prod(rshape, dtype=np.int64))
    out_shape = tuple(1 if d in axes else x.shape[d] for d in range(x.ndim)) if keepdims else tuple(kshape)
    dt, in_dt = np.dtype(x.dtype if dtype is None else dtype), np.dtype(x.dtype)
    if in_dt != dt and not (op == "sum" and dt == np.int64 and in_dt in SUM_TO_INT64):
        raise TypeError(f"reduce: {op} of {in_dt.name} accumulated in {dt.name} is not compiled on cuda")
    y = device_array(out_shape, dt)
    if not nout:
        return y
    if op == "mean" and dt.kind != "f":
        raise TypeError(f"mean of {dt.name} on cuda: cast to a float dtype first")
    scale = dt.type(1.0 / nred if op == "mean" else 1)
    code, row = _OPS[op], is_c_contiguous(rshape, rst)
    kern = _reduce_kernel(code, THREADS, dt, in_dt)
    splits = _splits(nout, nred)
    if splits == 1:
        launch(kern, nout, THREADS, y.reshape(nout), flat, nred, 1, scale, pad(kshape, 1), pad(kst),
               pad(rshape, 1), pad(rst), row)
        return y
    partial = device_array((nout * splits,), dt)
    launch(kern, nout * splits, THREADS, partial, flat, nred, splits, dt.type(1), pad(kshape, 1), pad(kst),
           pad(rshape, 1), pad(rst), row)
    launch(_reduce_kernel(code, THREADS, dt, dt), nout, THREADS, y.reshape(nout), partial, splits, 1, scale,
           pad((nout,), 1), pad((splits,)), pad((splits,), 1), pad((1,)), True)
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
