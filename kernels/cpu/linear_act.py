"""A Linear layer followed by ReLU: the forward's bias and clamp in one pass, and the backward of
ReLU fused with the column sums the layer's bias gradient needs.

``bias_relu_inplace(y, bias)`` is NumPy's ``y += bias; np.maximum(y, 0, out=y)`` bit for bit (nan
stays nan, -0.0 becomes +0.0 as ``np.maximum(-0.0, 0)`` gives) in one pass over ``y`` instead of
two; ``matmul.addmm_relu`` calls it on each block of rows right after the block's product
(``add_bias_inplace``, the bias alone, serves ``matmul.addmm``).

For ``y = max(x @ w.T + b, 0)`` the gradient that reaches the product is ``gp = where(y > 0, g, 0)``
and the bias gradient is ``gp.sum(axis=0)``. Done apart, these are two passes over a (tokens,
features) array: one writing ``gp``, one reading it back. ``relu_backward_column_sums`` makes
one pass that writes ``gp`` and adds each of its rows into the sums while the row is in registers,
split by runs of columns over minitrans's worker threads (``minitrans.threads.worker_pool``, as the
matrix products of ``matmul.py``: a block no worker has started when the calling thread is done
with its own is taken back and done there, so a loaded machine does not make it wait).

Same values as the two passes, bit for bit: ``gp`` is 0 wherever ``y > 0`` is false (also where
``g`` is inf or nan, as ``where`` and PyTorch give), and each column is summed in row order, the
order of ``minitrans``'s compiled column sums (``kernels/cpu/reduce.py``) and of NumPy's
``sum(axis=0)`` of a C-contiguous array, whatever the thread count.
"""
from __future__ import annotations

import threading

import numpy as np
from numba import get_num_threads, njit

from minitrans.threads import worker_pool

MIN_SIZE = 1 << 15            # below ~32k elements one thread: a parallel region would not pay
MIN_COLUMNS_PER_TASK = 64


@njit(inline="always")
def _mask_and_sum(y, g, gp, sums, c0, c1):
    """gp[:, c0:c1] = where(y > 0, g, 0) and sums[c0:c1] = its column sums in row order."""
    acc = np.empty(c1 - c0, gp.dtype)      # a fresh array, so the inner loops vectorise
    for i in range(y.shape[0]):
        y_row, g_row, gp_row = y[i, c0:c1], g[i, c0:c1], gp[i, c0:c1]
        for j in range(c1 - c0):
            gp_row[j] = g_row[j] if y_row[j] > 0 else 0
        if i == 0:
            for j in range(c1 - c0):
                acc[j] = gp_row[j]
        else:
            for j in range(c1 - c0):
                acc[j] += gp_row[j]
    sums[c0:c1] = acc


@njit(cache=True, nogil=True)
def _mask_and_sum_columns(y, g, gp, sums, c0, c1):
    """``_mask_and_sum`` over columns [c0, c1), without the GIL: the blocks run on Python threads."""
    _mask_and_sum(y, g, gp, sums, c0, c1)


@njit(cache=True, nogil=True)
def _add_bias_and_clamp(y, bias):
    for i in range(y.shape[0]):
        row = y[i]
        for j in range(y.shape[1]):
            v = row[j] + bias[j]
            row[j] = v if v > 0 or v != v else 0


@njit(cache=True, nogil=True)
def _add_bias(y, bias):
    for i in range(y.shape[0]):
        row = y[i]
        for j in range(y.shape[1]):
            row[j] += bias[j]


def _compiled(y, bias) -> bool:
    return bias is not None and y.ndim == 2 and y.dtype in (np.float32, np.float64) and bias.dtype == y.dtype \
        and bias.shape == (y.shape[1],) and y.flags.c_contiguous


def add_bias_inplace(y, bias):
    """``y += bias`` for a 2-D ``y`` and a ``bias`` (n,), compiled where both are floats of one dtype
    and ``y`` is C-contiguous (NumPy's broadcast loop took ~1.6x as long on W1's outputs); the same
    bits. Returns ``y``."""
    if _compiled(y, bias):
        _add_bias(y, bias)
    else:
        y += bias
    return y


def bias_relu_inplace(y, bias):
    """``y += bias; np.maximum(y, 0, out=y)`` (``bias`` (n,) or None) in place, the same bits in one
    pass for a C-contiguous 2-D float ``y`` and a ``bias`` of its dtype; returns ``y``."""
    if _compiled(y, bias):
        _add_bias_and_clamp(y, bias)
        return y
    if bias is not None:
        y += bias
    np.maximum(y, 0, out=y)
    return y


def relu_backward_column_sums(y, g, needs_sums=True):
    """``(where(y > 0, g, 0), its sum over axis 0)`` for a ReLU output ``y`` (m, n) and the gradient
    ``g`` (m, n) of the same float dtype; the sums are None when ``needs_sums`` is false."""
    if not (y.ndim == 2 and y.shape == g.shape and y.dtype == g.dtype and y.dtype in (np.float32, np.float64)) \
            or y.shape[0] == 0:
        gp = np.where(y > 0, g, 0).astype(np.result_type(y, g), copy=False)
        return gp, np.sum(gp, axis=0) if needs_sums else None
    y, g = np.ascontiguousarray(y), np.ascontiguousarray(g)
    gp = np.empty(y.shape, y.dtype)
    sums = np.empty(y.shape[1], y.dtype)
    parts = min(get_num_threads(), y.shape[1] // MIN_COLUMNS_PER_TASK)
    if y.size < MIN_SIZE or parts < 2 or threading.current_thread().name.startswith("minitrans-"):
        _mask_and_sum_columns(y, g, gp, sums, 0, y.shape[1])
    else:
        step = -(-y.shape[1] // parts)
        blocks = [(c, min(y.shape[1], c + step)) for c in range(0, y.shape[1], step)]
        pool = worker_pool(len(blocks) - 1)
        futures = [pool.submit(_mask_and_sum_columns, y, g, gp, sums, c0, c1) for c0, c1 in blocks[1:]]
        _mask_and_sum_columns(y, g, gp, sums, *blocks[0])
        for f, (c0, c1) in zip(futures, blocks[1:]):
            if f.cancel():          # no worker has started it (none got a core yet): do it here
                _mask_and_sum_columns(y, g, gp, sums, c0, c1)
            else:
                f.result()
    return gp, sums if needs_sums else None
