"""Row softmax / log-softmax, forward and backward, on (N, C) arrays, and the row-group machinery
the other row kernels (``layer_norm``, ``cross_entropy``) share.

Launch shape: each row is handled by a *group* of threads, chosen on the host from the row length:
  * a short row (C <= ``SHORT_BYTES / itemsize``, 1024 float32 elements by default) gets one warp
    (``LANES`` = 32 threads, never more than ``THREADS``), ``ROWS`` rows per block: grid
    ceil(N / ROWS), block ``LANES * ROWS``; every reduction is a warp butterfly of
    ``shfl_xor_sync`` (no shared memory, no ``syncthreads``);
  * a longer row gets one block of ``THREADS`` threads (grid N): warp butterflies, then one partial
    per warp in shared memory folded by every thread in warp order (two ``syncthreads`` a reduction).
Memory plan: lane ``l`` of a group handles columns l, l + group, ... (consecutive lanes read
consecutive addresses: coalesced). Forward reads the row once from global memory, folding an online
(max, sum-of-exp) pair while it copies the row into a per-row shared cache (``SHORT_BYTES`` /
``LONG_BYTES``, 4 KiB / 16 KiB), then writes y from the cache; backward caches ``y`` and ``dy`` the
same way (two arrays: 32 KiB of shared memory per block in both configurations). Each lane reads
back only the cells it wrote, so the cache needs no barrier. A row longer than its cache is
re-read from global memory in the write pass. Kernels are compiled per dtype and compute in it
(float32 ``exp`` / ``log`` and float32 constants in float32 kernels).
"""
from __future__ import annotations

import functools
import math
import threading

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, launch, nb_dtype, simulated

WARP = 32
FULL_MASK = 0xFFFFFFFF
LANES = 32          # threads per short row: one warp (power of two, at most 32)
ROWS = 4            # short rows per block
THREADS = 256       # threads per long row: one block (power of two)
SHORT_BYTES = 4096  # shared cache per cached array and short row
LONG_BYTES = 16384  # shared cache per cached array and long row


# ---------------------------------------------------------------- row groups (shared by the row kernels)
if simulated():
    def shfl_xor(value, lane_mask):
        """The simulator's stand-in for ``cuda.shfl_xor_sync`` (which it lacks): every thread of the
        block posts its value, waits at the block barrier and takes its partner's. Like the real
        instruction it must be reached by every thread of the block together."""
        me = threading.current_thread()
        board = me._manager.__dict__.setdefault("shuffle_board", {})
        board[me.thread_id] = value
        me.syncthreads()
        got = board.get(me.thread_id ^ lane_mask, value)
        me.syncthreads()
        return got
else:
    @cuda.jit(device=True)
    def shfl_xor(value, lane_mask):
        """``value`` of lane ``laneid ^ lane_mask`` (all 32 lanes of the warp take part)."""
        return cuda.shfl_xor_sync(FULL_MASK, value, lane_mask)


def row_config(ncols: int, itemsize: int, lanes: int, rows: int, threads: int, short_bytes: int,
               long_bytes: int):
    """``(group, rows, cache)`` for rows of ``ncols`` elements of ``itemsize`` bytes: threads per row,
    rows per block, cached elements per row and array. A short row (its cache of ``short_bytes``
    holds it) gets ``min(lanes, threads)`` threads and shares its block with ``rows - 1`` others; a
    longer row gets a block of ``threads`` and a cache of ``long_bytes``. On a GPU a block holds whole
    warps: groups narrower than a warp get rows enough to fill one (only shrunken test sizes have
    such groups)."""
    short = short_bytes // itemsize
    if ncols <= short:
        group, cache = min(lanes, threads), short
    else:
        group, rows, cache = threads, 1, long_bytes // itemsize
    if not simulated():  # a GPU runs whole warps (the shuffles name all 32 lanes): fill them with rows
        rows = max(rows, WARP // group)
    return group, rows, cache


def both_configs(config, dtype):
    """The short-row and the long-row configuration ``config(ncols, itemsize)`` gives for ``dtype``
    (the compile guard compiles both)."""
    item = np.dtype(dtype).itemsize
    short = config(1, item)
    return [short, config(short[2] + 1, item)]


@functools.lru_cache(maxsize=None)
def group_reductions(group: int, dtype):
    """Device functions over a row's ``group`` threads — ``online`` (fold one element into a running
    (max, sum of exp) pair), ``group_sum`` and ``group_max_sum`` (results returned to every thread of
    the group) — and the width of the ``scratch`` these need: a (rows, 2 * nwarps) shared array,
    used only when a group spans several warps (one partial per warp, folded in warp order:
    deterministic); then every thread of the block must call them (they synchronise)."""
    in_dtype = np.dtype(dtype).type
    zero, one, ninf = in_dtype(0), in_dtype(1), in_dtype(-math.inf)
    width = min(group, WARP)
    nwarps = max(1, group // WARP)

    @cuda.jit(device=True)
    def merge(m1, s1, m2, s2):
        """The (max, sum of exp(x - max)) pair of two disjoint sets from theirs (an empty set is
        (-inf, 0))."""
        m = max(m1, m2)
        if m == ninf:
            return m, zero
        return m, s1 * math.exp(m1 - m) + s2 * math.exp(m2 - m)

    @cuda.jit(device=True)
    def online(m, s, v):
        """Fold element ``v`` into the running (max, sum of exp(x - max)) pair."""
        if v > m:
            return v, s * math.exp(m - v) + one
        if v != ninf:  # -inf adds exp(-inf) = 0 (and -inf - -inf would be NaN)
            s += math.exp(v - m)
        return m, s

    @cuda.jit(device=True)
    def group_sum(scratch, val, slot, lane):
        off = width // 2
        while off > 0:
            val += shfl_xor(val, off)
            off //= 2
        if nwarps > 1:
            cuda.syncthreads()  # earlier readers of scratch are done
            if lane % WARP == 0:
                scratch[slot, lane // WARP] = val
            cuda.syncthreads()
            val = scratch[slot, 0]
            for w in range(1, nwarps):
                val += scratch[slot, w]
        return val

    @cuda.jit(device=True)
    def group_max_sum(scratch, m, s, slot, lane):
        off = width // 2
        while off > 0:
            m, s = merge(m, s, shfl_xor(m, off), shfl_xor(s, off))
            off //= 2
        if nwarps > 1:
            cuda.syncthreads()
            if lane % WARP == 0:
                scratch[slot, lane // WARP] = m
                scratch[slot, nwarps + lane // WARP] = s
            cuda.syncthreads()
            m, s = scratch[slot, 0], scratch[slot, nwarps]
            for w in range(1, nwarps):
                m, s = merge(m, s, scratch[slot, w], scratch[slot, nwarps + w])
        return m, s

    return online, group_sum, group_max_sum, 2 * nwarps


def row_constants(dtype) -> tuple:
    """(0, 1, -inf, nan) as scalars of ``dtype``: constants a row kernel closes over stay in its
    precision (a Python float would make float32 kernels compute in double)."""
    scalar = np.dtype(dtype).type
    return scalar(0), scalar(1), scalar(-math.inf), scalar(math.nan)


# ---------------------------------------------------------------- softmax kernels
@functools.lru_cache(maxsize=None)
def _kernels(group: int, rows: int, cols: int, dtype):
    numba_dtype = nb_dtype(dtype)
    zero, one, ninf, nan = row_constants(dtype)
    online, group_sum, group_max_sum, scratch_cols = group_reductions(group, np.dtype(dtype))

    @cuda.jit
    def fwd(y, x, log):
        """y[row] = softmax (or, with ``log``, log-softmax) of x[row]; ``group`` threads per row,
        ``rows`` rows per block (row = blockIdx.x * rows + threadIdx.x // group). One global read
        of x folding the online (max, sum exp) pair into registers and copying the row into the
        ``cols``-element shared cache, one group reduction of the pair, one write of y from the
        cache (from x again when C > cols)."""
        cache = cuda.shared.array((rows, cols), numba_dtype)
        scratch = cuda.shared.array((rows, scratch_cols), numba_dtype)
        tid = cuda.threadIdx.x
        slot = tid // group
        lane = tid % group
        row = cuda.blockIdx.x * rows + slot
        N, C = x.shape
        n = C if row < N else 0  # a group past the last row still takes part in the shuffles
        cached = C <= cols
        m = ninf
        s = zero
        for j in range(lane, n, group):
            v = x[row, j]
            if cached:
                cache[slot, j] = v
            m, s = online(m, s, v)
        m, s = group_max_sum(scratch, m, s, slot, lane)
        shift = nan  # no finite element (an all -inf row, or no row): NaN, as NumPy gives
        inv = nan
        if s > zero:
            shift = m + math.log(s)
            inv = one / s
        for j in range(lane, n, group):
            v = cache[slot, j] if cached else x[row, j]
            y[row, j] = v - shift if log else math.exp(v - m) * inv

    @cuda.jit
    def bwd(dx, y, dy, log):
        """dx[row] = y * (dy - sum(dy * y)), or with ``log`` dy - exp(y) * sum(dy); launch as ``fwd``.
        One global read of y and dy into two ``cols``-element shared caches, one group sum, one
        write of dx from the caches (from global memory again when C > cols)."""
        ycache = cuda.shared.array((rows, cols), numba_dtype)
        dycache = cuda.shared.array((rows, cols), numba_dtype)
        scratch = cuda.shared.array((rows, scratch_cols), numba_dtype)
        tid = cuda.threadIdx.x
        slot = tid // group
        lane = tid % group
        row = cuda.blockIdx.x * rows + slot
        N, C = y.shape
        n = C if row < N else 0
        cached = C <= cols
        s = zero
        for j in range(lane, n, group):
            yv = y[row, j]
            g = dy[row, j]
            if cached:
                ycache[slot, j] = yv
                dycache[slot, j] = g
            s += g if log else g * yv
        s = group_sum(scratch, s, slot, lane)
        for j in range(lane, n, group):
            yv = ycache[slot, j] if cached else y[row, j]
            g = dycache[slot, j] if cached else dy[row, j]
            dx[row, j] = g - math.exp(yv) * s if log else yv * (g - s)

    return fwd, bwd


def config(ncols: int, itemsize: int):
    """``row_config`` under this module's constants, read at call time (tests shrink them)."""
    return row_config(ncols, itemsize, LANES, ROWS, THREADS, SHORT_BYTES, LONG_BYTES)


def _run(which: int, out, first, *rest):
    N, C = first.shape
    if N:
        dt = np.dtype(first.dtype)
        group, rows, cols = config(C, dt.itemsize)
        launch(_kernels(group, rows, cols, dt)[which], cdiv(N, rows), group * rows, out, first, *rest)
    return out


def softmax_forward(x):
    """y = softmax(x, axis=-1) for x of shape (N, C)."""
    return _run(0, device_array(tuple(x.shape), x.dtype), x, False)


def softmax_backward(y, dy):
    """dx = y * (dy - sum(dy * y, -1))."""
    return _run(1, device_array(tuple(y.shape), y.dtype), y, dy, False)


def log_softmax_forward(x):
    """y = x - logsumexp(x, -1)."""
    return _run(0, device_array(tuple(x.shape), x.dtype), x, True)


def log_softmax_backward(y, dy):
    """dx = dy - exp(y) * sum(dy, -1)."""
    return _run(1, device_array(tuple(y.shape), y.dtype), y, dy, True)
