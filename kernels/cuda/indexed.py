"""Indexing kernels that need no intermediate array: the gradient of a basic index (``a[2:5, 1]``)
written in one pass, and gather / scatter through one integer index array read in place.

``index_pad``: the gradient of ``a[idx]`` for a basic ``idx`` is zeros of ``a``'s shape with
the output gradient in the selected cells. One kernel writes every cell: the selected ones from
``g``, the others zero (instead of a fill and then a strided copy into the selection).

``take`` / ``put``: ``x[..., idx, ...]`` with one int64 index array (an embedding lookup and its
backward) reads ``idx`` directly: each cell wraps its index and checks it against the axis
size in registers (an out-of-range index reads 0 / is skipped, as ``array.gather`` /
``array.scatter`` do), instead of first folding the index into an offset array (a fill and an
``index_linear`` launch).

Launch shape (all): 1-D grid-stride loop, ``THREADS`` threads per block,
``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks over the C-ordered iteration space (the output
for ``index_pad`` / ``take``, the indexed cells for ``put``); thread ``i`` handles ``i, i +
gridsize, ...``. Memory plan: operands are flat views plus per-dim element strides (``_util``),
shapes / strides / selections by-value int64 tuples padded to ``MAX_DIMS``; each output cell is
written once, each input cell read at most once; registers only, no shared memory.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._util import MAX_DIMS, cdiv, device_array, flat_view, launch, offset_of, offsets_of, pad
from .layout import broadcast_strides, element_count

THREADS = 256
MAX_BLOCKS = 4096


def _launch(n: int) -> tuple[int, int]:
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS)), THREADS


@cuda.jit(device=True)
def _index_offset(idx, i, shape, idx_strides, size, stride, base):
    """The storage offset that cell ``i`` of the index space selects (``base`` plus the wrapped
    index times ``stride``), or -1 when its index is outside ``[-size, size)``."""
    v = idx[offset_of(i, shape, idx_strides)]
    if v < 0:
        v += size
    if v < 0 or v >= size:
        return -1
    return base + v * stride


@cuda.jit
def _pad_kernel(out, g, n, shape, starts, steps, counts, gs, zero):
    """out[i] = g[...] where cell i of ``out`` (C-contiguous, ``shape``) is selected (on every axis
    k: index = starts[k] + steps[k] * t with 0 <= t < counts[k], read at g + t * gs[k]), else
    ``zero``. Launch `_launch(n)` over out; each out cell written once, each g cell read once."""
    i = cuda.grid(1)
    while i < n:
        rem = i
        off = 0
        inside = True
        for k in range(MAX_DIMS - 1, -1, -1):
            m = shape[k]
            t = rem % m - starts[k]
            rem //= m
            if t < 0 or t % steps[k] != 0 or t // steps[k] >= counts[k]:
                inside = False
            else:
                off += (t // steps[k]) * gs[k]
        out[i] = g[off] if inside else zero
        i += cuda.gridsize(1)


@cuda.jit
def _take_kernel(out, x, idx, n, shape, xs, idx_strides, size, stride, base, zero):
    """out[i] = x[offset_of(i, shape, xs) + index offset of cell i] (``zero`` for an index out of
    range). Launch `_launch(n)` over out; one idx and one x read per cell, out written once."""
    i = cuda.grid(1)
    while i < n:
        at = _index_offset(idx, i, shape, idx_strides, size, stride, base)
        if at < 0:
            out[i] = zero
        else:
            rem = i
            for k in range(MAX_DIMS - 1, -1, -1):
                m = shape[k]
                at += (rem % m) * xs[k]
                rem //= m
            out[i] = x[at]
        i += cuda.gridsize(1)


@cuda.jit
def _put_kernel(dst, src, idx, n, shape, ds, ss, idx_strides, size, stride, base):
    """dst[offset_of(i, shape, ds) + index offset] = src[offset_of(i, shape, ss)] (a repeated target
    gets one of its values; out-of-range indices skipped). Launch `_launch(n)` over the indexed
    cells; src and idx read once per cell."""
    i = cuda.grid(1)
    while i < n:
        at = _index_offset(idx, i, shape, idx_strides, size, stride, base)
        if at >= 0:
            d, s = offsets_of(i, shape, ds, ss)
            at += d
            dst[at] = src[s]
        i += cuda.gridsize(1)


@cuda.jit
def _put_add_kernel(dst, src, idx, n, shape, ds, ss, idx_strides, size, stride, base):
    """dst[offset_of(i, shape, ds) + index offset] += src[offset_of(i, shape, ss)] with
    ``cuda.atomic.add`` (repeats summed in hardware order; out-of-range indices skipped). Launch
    `_launch(n)` over the indexed cells; src and idx read once per cell. Numeric dtypes only."""
    i = cuda.grid(1)
    while i < n:
        at = _index_offset(idx, i, shape, idx_strides, size, stride, base)
        if at >= 0:
            d, s = offsets_of(i, shape, ds, ss)
            at += d
            cuda.atomic.add(dst, at, src[s])
        i += cuda.gridsize(1)


def index_pad(shape, dtype, g, selection):
    """Zeros of ``shape`` / ``dtype`` with ``g`` (broadcast to the selection) in the cells of the
    basic selection ``(starts, steps, counts, result_axes, result_ndim)`` of
    ``layout.basic_selection``: ``out = zeros; out[idx] = g`` in one launch."""
    starts, steps, counts, axes, result_ndim = selection
    shape = tuple(int(s) for s in shape)
    out = device_array(shape, dtype)
    n = element_count(shape)
    if not n:
        return out
    view_shape = [1] * result_ndim
    for k, r in enumerate(axes):
        if r >= 0:
            view_shape[r] = counts[k]
    flat, st = flat_view(g)
    gst = broadcast_strides(tuple(g.shape), st, tuple(view_shape))
    if element_count(view_shape) == 0:   # nothing selected: all zeros, g is never read
        flat, gst = out.reshape(n), (0,) * result_ndim
    gs = [gst[r] if r >= 0 else 0 for r in axes]
    launch(_pad_kernel, *_launch(n), out.reshape(n), flat, n, pad(shape, 1), pad(starts), pad(steps, 1),
           pad(counts, 1), pad(gs), np.dtype(dtype).type(0))
    return out


def take(x_flat, where, dtype):
    """out[i] = x_flat[offset_of(i, shape, xs) + base + wrap(idx[offset_of(i, shape, idx_strides)]) *
    stride] (0 where the index is outside ``[-size, size)``), ``where`` = ``(idx, size, stride, base,
    shape, xs, idx_strides)`` with ``idx`` an int64 device array."""
    idx, size, stride, base, shape, xs, idx_strides = where
    shape = tuple(shape)
    out = device_array(shape, dtype)
    n = element_count(shape)
    if n:
        idf, _ = flat_view(idx)
        launch(_take_kernel, *_launch(n), out.reshape(n), x_flat, idf, n, pad(shape, 1), pad(xs),
               pad(idx_strides), int(size), int(stride), int(base), np.dtype(dtype).type(0))
    return out


def put(dst_flat, where, src, accumulate: bool):
    """dst_flat[offset_of(i, shape, ds) + base + wrap(idx[...]) * stride] (+)= src[i] with ``src``
    broadcast to ``shape``, ``where`` = ``(idx, size, stride, base, shape, ds, idx_strides)`` (cells
    whose index is out of range skipped)."""
    idx, size, stride, base, shape, ds, idx_strides = where
    shape = tuple(shape)
    n = element_count(shape)
    if not n:
        return
    if accumulate and np.dtype(dst_flat.dtype) == np.bool_:
        raise TypeError("index_put_ with accumulate=True is not supported for bool arrays")
    sf, st = flat_view(src)
    ss = broadcast_strides(tuple(src.shape), st, shape)
    idf, _ = flat_view(idx)
    launch(_put_add_kernel if accumulate else _put_kernel, *_launch(n), dst_flat, sf, idf, n, pad(shape, 1),
           pad(ds), pad(ss), pad(idx_strides), int(size), int(stride), int(base))
