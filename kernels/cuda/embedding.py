"""Embedding gather (forward) and scatter-add (backward).

Forward: ``out[i, :] = weight[idx[i], :]`` for the flattened indices; 1-D grid-stride loop
over the ``n * D`` output cells, ``THREADS`` threads per block, consecutive threads on
consecutive columns of one row (coalesced reads and writes); each cell read and written once.
Backward: ``dweight`` (V, D) is zeroed by a kernel, then every cell of ``dout`` is added into
its row with ``cuda.atomic.add``. NOTE: the order in which repeated indices are summed
is up to the hardware, so float results may differ in the last bits from run to run
(not bit-deterministic). Indices outside [0, V) are skipped (no bounds fault).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, launch

THREADS = 256
MAX_BLOCKS = 4096


@cuda.jit
def _gather(out, weight, idx, n, D, zero):
    """out[r, c] = weight[idx[r], c] (0 for idx outside [0, V)) over the n * D cells. Launch:
    1-D grid-stride, min(ceil(n * D / THREADS), MAX_BLOCKS) blocks x THREADS, consecutive
    threads on consecutive columns (coalesced); each cell read and written once; no shared memory."""
    i = cuda.grid(1)
    V = weight.shape[0]
    while i < n * D:
        r = i // D
        c = i - r * D
        t = idx[r]
        out[r, c] = weight[t, c] if 0 <= t < V else zero
        i += cuda.gridsize(1)


@cuda.jit
def _zero(a):
    """a[i] = 0 over the flat a. Launch: 1-D grid-stride, min(ceil(n / THREADS), MAX_BLOCKS)
    blocks x THREADS; each cell written once; no shared memory."""
    i = cuda.grid(1)
    while i < a.size:
        a[i] = 0
        i += cuda.gridsize(1)


@cuda.jit
def _scatter_add(dw, dout, idx, n, D):
    """dw[idx[r], c] += dout[r, c] by `cuda.atomic.add` (idx outside [0, V) skipped; repeats
    summed in hardware order). Launch: 1-D grid-stride over the n * D cells of dout, THREADS x
    <= MAX_BLOCKS, coalesced by column; dout read once; no shared memory."""
    i = cuda.grid(1)
    V = dw.shape[0]
    while i < n * D:
        r = i // D
        c = i - r * D
        t = idx[r]
        if 0 <= t < V:
            cuda.atomic.add(dw, (t, c), dout[r, c])
        i += cuda.gridsize(1)


def _grid(n: int) -> int:
    return max(1, min(cdiv(n, THREADS), MAX_BLOCKS))


def zeros(shape, dtype):
    """A zero-filled device array (filled on the device)."""
    a = device_array(shape, dtype)
    if a.size:
        launch(_zero, _grid(a.size), THREADS, a.reshape(a.size))
    return a


def embedding_forward(weight, idx):
    """``weight[idx]``: weight (V, D), idx int array of any shape -> (*idx.shape, D)."""
    D = weight.shape[1]
    n = idx.size
    out = device_array((n, D), weight.dtype)
    if n * D:
        launch(_gather, _grid(n * D), THREADS, out, weight, idx.reshape(n), n, D, np.dtype(weight.dtype).type(0))
    return out.reshape(tuple(idx.shape) + (D,))


def embedding_backward(dout, idx, num_embeddings: int):
    """dweight (V, D) with dweight[v] = sum of dout rows whose index is v (atomic adds)."""
    D = tuple(dout.shape)[-1]
    n = idx.size
    dw = zeros((num_embeddings, D), dout.dtype)
    if n * D:
        launch(_scatter_add, _grid(n * D), THREADS, dw, dout.reshape((n, D)), idx.reshape(n), n, D)
    return dw
