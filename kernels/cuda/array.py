"""Array-plumbing kernels for the CUDA array backend: fill, arange, strided copy, logical
maps, advanced-index gather / scatter, and the dropout mask.

Launch shape (all): 1-D grid-stride loop, ``THREADS`` threads per block,
``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks; thread ``i`` handles elements
``i, i + gridsize, ...`` of the (C-ordered) iteration space.
Memory plan: like ``elementwise``, every strided operand is a flat view of its memory
plus per-dim element strides (``_util.flat_view``; 0 on broadcast dims), shapes and
strides are by-value int64 tuples padded to ``MAX_DIMS``; each cell is read once and
written once. No shared memory.

Advanced indexing (``a[idx_0, ..., idx_k]`` with int index arrays) is split in two:
``index_linear`` folds each (broadcast) index array into one int64 array ``lin`` of
element offsets (negative indices wrap, an out-of-range index marks the cell ``-1``);
``gather`` then reads ``x[offset_of(i, shape, xs) + lin[offset_of(i, shape, ls)]]``
(0 where ``lin < 0``), and ``scatter`` writes / atomically adds into the same place
(cells with ``lin < 0`` are skipped): two kernels, a plain store and, for
``scatter(..., accumulate=True)`` (numeric dtypes), ``cuda.atomic.add``: repeated indices are summed in a hardware-dependent order, so
float results are not bit-deterministic.

``dropout_mask`` is counter-based: cell ``i`` keeps its value iff
``hash32(i, seed) / 2**32 >= p`` (two rounds of the murmur3 32-bit finaliser), so a
mask depends only on (seed, shape, p) — no RNG state lives on the device. All hash
arithmetic stays below 2**64 with explicit 32-bit masks, so the simulator (Python
ints) and the GPU (64-bit ints) compute the same bits.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from . import elementwise
from ._util import cdiv, device_array, flat_view, launch, nb_dtype, offset_of, pad
from .layout import broadcast_strides, element_count

THREADS = 256
MAX_BLOCKS = 4096
M32 = 0xFFFFFFFF


def _launch(n: int) -> tuple[int, int]:
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS)), THREADS


def _operand(x, shape):
    flat, st = flat_view(x)
    return flat, pad(broadcast_strides(tuple(x.shape), st, tuple(shape)))


# ------------------------------------------------------------------ fill / arange / copy
@cuda.jit
def _fill_kernel(out, value, n):
    """out[i] = value over the flat C-contiguous out. Launch `_launch(n)`: 1-D grid-stride loop,
    THREADS per block, <= MAX_BLOCKS blocks, thread i owns i, i + gridsize, ...; each cell is
    written once; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        out[i] = value
        i += cuda.gridsize(1)


@functools.lru_cache(maxsize=None)
def _arange_kernel(dtype):
    """The arange kernel of ``dtype``: the index is converted to ``dtype`` before the multiply,
    so float32 stays float32 (an int64 times a float32 is float64 in Numba)."""
    conv = nb_dtype(dtype)

    @cuda.jit
    def arange_kernel(out, start, step, n):
        """out[i] = start + i * step. Launch `_launch(n)` (1-D grid-stride, THREADS x <= MAX_BLOCKS);
        each cell written once, nothing read; no shared memory."""
        i = cuda.grid(1)
        while i < n:
            out[i] = start + conv(i) * step
            i += cuda.gridsize(1)

    return arange_kernel


@cuda.jit
def _copy_kernel(dst, src, n, shape, ds, ss):
    """dst[offset_of(i, shape, ds)] = src[offset_of(i, shape, ss)] (broadcast strided copy).
    Launch `_launch(n)` (1-D grid-stride over the C-ordered index space, THREADS x <= MAX_BLOCKS);
    each cell read once and written once; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        dst[offset_of(i, shape, ds)] = src[offset_of(i, shape, ss)]
        i += cuda.gridsize(1)


def full(shape, value, dtype):
    """A new C-contiguous device array of ``shape`` filled with ``value`` (on the device)."""
    out = device_array(tuple(shape), dtype)
    n = element_count(out.shape)
    if n:
        launch(_fill_kernel, *_launch(n), out.reshape(n), np.dtype(dtype).type(value), n)
    return out


def arange(n: int, start, step, dtype):
    """``start + step * [0, n)`` as a new 1-D device array of ``dtype``."""
    out = device_array((int(n),), dtype)
    if n:
        t = np.dtype(dtype).type
        launch(_arange_kernel(np.dtype(dtype)), *_launch(n), out, t(start), t(step), int(n))
    return out


def copy_into(dst, src):
    """``dst[...] = src`` (broadcast): ``dst`` is any non-negative strided view, written in place.
    A C-contiguous ``dst`` of ``src``'s shape and dtype is written by ``elementwise``'s identity
    map (its contiguous fast path when ``src`` is contiguous too, else one index decoding per
    element, for ``src`` only); other destinations take ``_copy_kernel`` (both decoded).

    ``dst`` must not overlap itself (no zero strides) nor ``src``.
    """
    shape = tuple(dst.shape)
    n = element_count(shape)
    if n and tuple(src.shape) == shape and src.dtype == dst.dtype and dst.is_c_contiguous():
        elementwise.unary("identity", src, out=dst)
    elif n:
        df, ds = flat_view(dst)
        sf, ss = _operand(src, shape)
        launch(_copy_kernel, *_launch(n), df, sf, n, pad(shape, 1), pad(ds), ss)
    return dst


# ------------------------------------------------------------------ logical maps (bool out)
LOGICAL_UNARY = {
    "not": cuda.jit(device=True)(lambda x: not x),
    "isfinite": cuda.jit(device=True)(lambda x: x == x and x != math.inf and x != -math.inf),
}
LOGICAL_BINARY = {
    "and": cuda.jit(device=True)(lambda a, b: a and b),
    "or": cuda.jit(device=True)(lambda a, b: a or b),
    "xor": cuda.jit(device=True)(lambda a, b: a != b),
}


@functools.lru_cache(maxsize=None)
def _lmap(op):
    f = LOGICAL_UNARY[op]

    @cuda.jit
    def k(out, x, n, shape, xs):
        """out[i] = f(x[offset_of(i, shape, xs)]) -> bool for the logical unary ``op``.
        Launch `_launch(n)` (1-D grid-stride, THREADS x <= MAX_BLOCKS); each input cell read once,
        the C-contiguous out written once; no shared memory."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(x[offset_of(i, shape, xs)])
            i += cuda.gridsize(1)

    return k


@functools.lru_cache(maxsize=None)
def _lzip(op):
    f = LOGICAL_BINARY[op]

    @cuda.jit
    def k(out, a, b, n, shape, as_, bs):
        """out[i] = f(a[...], b[...]) -> bool for the logical binary ``op`` (broadcast strides).
        Launch `_launch(n)` (1-D grid-stride, THREADS x <= MAX_BLOCKS); each input cell read once,
        the C-contiguous out written once; no shared memory."""
        i = cuda.grid(1)
        while i < n:
            out[i] = f(a[offset_of(i, shape, as_)], b[offset_of(i, shape, bs)])
            i += cuda.gridsize(1)

    return k


def logical_unary(op: str, x):
    """``not`` (of a bool array) or ``isfinite`` (of a float array) -> bool array."""
    shape = tuple(x.shape)
    out = device_array(shape, np.bool_)
    n = element_count(shape)
    if n:
        xf, xs = _operand(x, shape)
        launch(_lmap(op), *_launch(n), out.reshape(n), xf, n, pad(shape, 1), xs)
    return out


def logical_binary(op: str, a, b):
    """``and`` / ``or`` / ``xor`` of two bool arrays with NumPy broadcasting -> bool array."""
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    out = device_array(shape, np.bool_)
    n = element_count(shape)
    if n:
        af, as_ = _operand(a, shape)
        bf, bs = _operand(b, shape)
        launch(_lzip(op), *_launch(n), out.reshape(n), af, bf, n, pad(shape, 1), as_, bs)
    return out


# ------------------------------------------------------------------ advanced indexing
@cuda.jit
def _index_linear_kernel(lin, idx, size, stride, n, shape, ids):
    """lin[i] += wrap(idx[offset_of(i, shape, ids)]) * stride, in place; -1 if the index is out
    of [-size, size) or lin[i] is already -1. Launch `_launch(n)` (1-D grid-stride over lin,
    THREADS x <= MAX_BLOCKS); idx and lin read once, lin written once; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        v = idx[offset_of(i, shape, ids)]
        if v < 0:
            v += size
        if lin[i] < 0 or v < 0 or v >= size:
            lin[i] = -1
        else:
            lin[i] += v * stride
        i += cuda.gridsize(1)


@cuda.jit
def _gather_kernel(out, x, lin, n, shape, xs, ls, zero):
    """out[i] = x[offset_of(i, shape, xs) + lin[offset_of(i, shape, ls)]] (``zero`` where lin < 0).
    Launch `_launch(n)` (1-D grid-stride over the output, THREADS x <= MAX_BLOCKS); one lin and
    one x read per output cell, out written once; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        l = lin[offset_of(i, shape, ls)]
        if l < 0:
            out[i] = zero
        else:
            out[i] = x[offset_of(i, shape, xs) + l]
        i += cuda.gridsize(1)


@cuda.jit
def _scatter_set_kernel(dst, src, lin, n, shape, ds, ss, ls):
    """dst[offset_of(i, shape, ds) + lin[...]] = src[...] (a repeated target gets one of its values);
    cells with lin < 0 skipped. Launch `_launch(n)` (1-D grid-stride over the index space,
    THREADS x <= MAX_BLOCKS); src, lin read once; no shared memory. Any dtype, bool included."""
    i = cuda.grid(1)
    while i < n:
        l = lin[offset_of(i, shape, ls)]
        if l >= 0:
            dst[offset_of(i, shape, ds) + l] = src[offset_of(i, shape, ss)]
        i += cuda.gridsize(1)


@cuda.jit
def _scatter_add_kernel(dst, src, lin, n, shape, ds, ss, ls):
    """dst[offset_of(i, shape, ds) + lin[...]] += src[...] with `cuda.atomic.add` (repeats summed in
    hardware order); cells with lin < 0 skipped. Launch `_launch(n)` (1-D grid-stride over the
    index space, THREADS x <= MAX_BLOCKS); src, lin read once; no shared memory. Numeric
    dtypes only: atomics take no bool."""
    i = cuda.grid(1)
    while i < n:
        l = lin[offset_of(i, shape, ls)]
        if l >= 0:
            cuda.atomic.add(dst, offset_of(i, shape, ds) + l, src[offset_of(i, shape, ss)])
        i += cuda.gridsize(1)


def index_linear(lin, idx, size: int, stride: int):
    """In place on C-contiguous int64 ``lin``: ``lin += wrap(idx) * stride`` (idx broadcast to
    ``lin.shape``); cells whose index is outside ``[-size, size)`` (or already -1) become -1."""
    shape = tuple(lin.shape)
    n = element_count(shape)
    if n:
        idf, ids = _operand(idx, shape)
        launch(_index_linear_kernel, *_launch(n), lin.reshape(n), idf, int(size), int(stride), n,
                                         pad(shape, 1), ids)
    return lin


def gather(x_flat, lin, shape, xs, ls, dtype):
    """out[i] = x_flat[offset_of(i, shape, xs) + lin[offset_of(i, shape, ls)]] (0 where lin < 0)."""
    shape = tuple(shape)
    out = device_array(shape, dtype)
    n = element_count(shape)
    if n:
        lf, _ = flat_view(lin)
        launch(_gather_kernel, *_launch(n), out.reshape(n), x_flat, lf, n, pad(shape, 1), pad(xs), pad(ls),
                                   np.dtype(dtype).type(0))
    return out


def scatter(dst_flat, src, lin, shape, ds, ls, accumulate: bool):
    """dst_flat[offset_of(i, shape, ds) + lin[...]] (+)= src[i] with src broadcast to ``shape``."""
    shape = tuple(shape)
    n = element_count(shape)
    if n:
        sf, ss = _operand(src, shape)
        lf, _ = flat_view(lin)
        if accumulate and np.dtype(dst_flat.dtype) == np.bool_:
            raise TypeError("index_put_ with accumulate=True is not supported for bool arrays")
        kern = _scatter_add_kernel if accumulate else _scatter_set_kernel
        launch(kern, *_launch(n), dst_flat, sf, lf, n, pad(shape, 1), pad(ds), ss, pad(ls))


# ------------------------------------------------------------------ dropout mask
@cuda.jit(device=True)
def _fmix32(h):
    """murmur3 32-bit finaliser of h (< 2**32), masked to 32 bits after each multiply.
    Device function, run per thread; registers only."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


@cuda.jit
def _dropout_kernel(out, n, seed_lo, seed_hi, thresh, scale, zero):
    """out[i] = scale if hash32(i, seed) >= thresh else zero, thresh = ceil(p * 2**32): the same
    test as hash32 / 2**32 >= p in integer arithmetic (see the module docstring), so no float
    math at all; ``scale`` and ``zero`` come in the output dtype.
    Launch `_launch(n)` (1-D grid-stride, THREADS x <= MAX_BLOCKS), thread i owns i, i + gridsize,
    ...; each cell written once, nothing read; no shared memory."""
    i = cuda.grid(1)
    while i < n:
        h = _fmix32((i & M32) ^ seed_lo)
        h = _fmix32(h ^ (((i >> 32) + seed_hi) & M32))
        out[i] = scale if h >= thresh else zero
        i += cuda.gridsize(1)


def dropout_mask(shape, p: float, seed: int, dtype):
    """Inverted-dropout multiplier: ``1/(1-p)`` where kept, 0 where dropped (see module doc)."""
    shape = tuple(shape)
    out = device_array(shape, dtype)
    n = element_count(shape)
    if n:
        seed = int(seed)
        t = np.dtype(dtype).type
        thresh = math.ceil(float(p) * 2.0 ** 32)  # exact: p * 2**32 is a float64 product by a power of 2
        scale = t(1.0 / (1.0 - p)) if p < 1 else t(0)  # p = 1 drops every cell
        launch(_dropout_kernel, *_launch(n), out.reshape(n), n, seed & M32, (seed >> 32) & M32, thresh,
               scale, t(0))
    return out


# ------------------------------------------------------------------ many copies in one launch
MANY = 24  # arrays per launch of copy_many (a compile-time tuple length: one specialisation; 2 x 24
#           array arguments of 56 bytes each stay well inside the 4 KiB kernel-parameter limit)


@cuda.jit
def _copy_many_kernel(dsts, srcs, sizes, total):
    """dsts[a][e] = srcs[a][e] for up to MANY pairs of 1-D C-contiguous arrays (unused slots: size 0).
    Launch `_launch(total)`: 1-D grid-stride over the concatenated index space (total = sum of
    sizes); each thread finds its pair by walking the MANY sizes (registers only); each source
    cell read once, each destination cell written once; no shared memory."""
    i = cuda.grid(1)
    while i < total:
        a = 0
        e = i
        while e >= sizes[a]:
            e -= sizes[a]
            a += 1
        dsts[a][e] = srcs[a][e]
        i += cuda.gridsize(1)


def copy_many(dsts, srcs) -> None:
    """``dst[...] = src`` for every pair (C-contiguous, same shape and dtype within a pair, one
    dtype for all), MANY pairs per launch."""
    dsts, srcs = list(dsts), list(srcs)
    for k in range(0, len(dsts), MANY):
        d = [x.reshape(x.size) for x in dsts[k:k + MANY]]
        s = [x.reshape(x.size) for x in srcs[k:k + MANY]]
        sizes = [int(x.size) for x in d]
        total = sum(sizes)
        if not total:
            continue
        pad_d, pad_s = d[0], s[0]
        while len(d) < MANY:
            d.append(pad_d)
            s.append(pad_s)
            sizes.append(0)
        launch(_copy_many_kernel, *_launch(total), tuple(d), tuple(s), tuple(sizes), total)
