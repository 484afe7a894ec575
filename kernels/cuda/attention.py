"""Tiled (flash) attention, forward and backward, batch and heads flattened into B.

S = scale * Q Kᵀ + bias (+ causal mask), P = softmax(S), O = P V, lse = log Σ_j exp(S).
Signature (device arrays): ``attention_forward(q, k, v, bias, is_causal, scale)`` and
``attention_backward(q, k, v, o, lse, do, bias, is_causal, scale)``; q (B, Tq, d),
k (B, Tk, d), v (B, Tk, dv), all C-contiguous. ``bias`` is None or a device array of rank
<= 3 broadcastable to (B, Tq, Tk) — e.g. a key-padding mask (B, 1, Tk) or a shared
(1, Tq, Tk) mask — holding -inf at masked positions; the wrapper turns its size-1 dims
into stride 0 (``layout.broadcast_strides``), so it is never expanded in memory.

Head dim: kernels are compiled for ``dpad`` = the power of two >= max(d, dv, 16), up to
``MAX_HEAD_DIM`` (256); other head dims run padded (zero columns staged, never written).
A query (forward) or key (backward) row is served by ``groups`` = dpad / cols threads,
thread g owning columns g * cols ... (g + 1) * cols - 1, ``cols`` = ``FWD_ROW_BYTES``
(backward ``BWD_ROW_BYTES``) / itemsize. Its row slices and accumulators are local arrays
of that constant size indexed only by unrolled loops: registers (the compile guard checks
zero local memory). A row's partial dot products are summed through shared memory
(``part``), not warp shuffles, so the same code runs in Numba's CUDA simulator. Staged
rows are (groups, cols + skew), 16-byte aligned: 128-bit shared loads (one per four
float32 FMAs), the 16-byte skew putting a row's slices in different banks. Scores are in
base 2 (q or k pre-multiplied by scale * log2(e), the bias by log2(e)): float32 ``exp2``;
the saved lse is natural log. Tile loops run over the rows that exist (runtime trip
counts), which keeps NVVM from unrolling them past the 255 registers a thread has.

Forward — grid (ceil(Tq / bq), B), bq * groups threads. Per key tile (bk rows) the block
stages K and V in shared memory; each thread writes its partial scores to ``part``
(bk x threads), then folds the tile into its row with the online softmax (tile max, one
rescale per tile). K/V read ceil(Tq / bq) times, Q once, O and lse written once; no
(Tq, Tk) matrix. Causal: key tiles entirely above the diagonal are skipped.
Backward — ``prepare`` (D = rowsum(dO ⊙ O), one thread per (b, query row), also zeroing
dq), then one fused kernel, grid (ceil(Tk / bk), B), bk * groups threads, k / v slices
and dk / dv accumulators in registers, the block's K rows staged once for dq. Per query
tile it stages Q, dO, lse and D; P is computed once per (query, key) pair: dv += P dO,
dS = P (dO·vⱼ - D), dk += dS q, and dS (bq x bk, shared) gives the tile's dq share dS K,
added with atomics (its last bits depend on the order of the key tiles). Causal: query
tiles entirely before the key tile are skipped. Fully masked rows (every S = -inf) give
o = 0, lse = -inf and zero gradients. Tiles: ``BLOCK_Q`` / ``BLOCK_K`` (32 / 32), halved
until a kernel's shared arrays fit ``SHARED_BYTES`` (48 KiB, the static limit).
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, flat_view, launch, nb_dtype, pow2_at_least, simulated
from .layout import broadcast_strides

BLOCK_Q = 32
BLOCK_K = 32
# Bytes of a row one thread owns: 32 float32 columns forward (q, O), 16 backward (k, v, dk, dv).
# Chosen with ``ptxas -v`` for sm_90: no specialisation spills (wider slices do, backward and d >= 128).
FWD_ROW_BYTES = 128
BWD_ROW_BYTES = 64
MAX_HEAD_DIM = 256
SHARED_BYTES = 48 * 1024
NEG_INF = -math.inf
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
ROWDOT_THREADS = 128  # threads per block of the D = rowsum(dO ⊙ O) kernel


def skew_of(groups: int, itemsize: int) -> int:
    """Padding (elements) after each slice of a staged row: 16 bytes when a row is split."""
    return 16 // itemsize if groups > 1 else 0


def vec_of(itemsize: int) -> int:
    return 16 // itemsize  # elements in one 16-byte shared-memory vector load


def _stagers(numba_dtype, zero, dpad: int, nthreads: int, cols: int, skew: int, vec: int):
    """Device functions staging ``rows`` rows from ``r0`` of batch ``b`` in shared memory:
    ``stage_two``: xs[r, c] = x[b, r0 + r, c], ys[r, c] = y[b, r0 + r, c], rows stored as (slice,
    column), zero past the real rows (``nrows``) and columns (``dx``, ``dy``); ``stage_one``: one
    array, rows stored as (slice, vector, element). The ``nthreads`` threads share the cells
    (consecutive threads, consecutive columns); the caller synchronises."""

    @cuda.jit(device=True)
    def stage_one(xs, x, b, r0, nrows, dx, rows, tid):
        for e in range(tid, rows * dpad, nthreads):
            r = e // dpad
            c = e - r * dpad
            c_in = c % cols
            xs[r, c // cols, c_in // vec, c_in % vec] = x[b, r0 + r, c] if r0 + r < nrows and c < dx else zero

    @cuda.jit(device=True)
    def stage_two(xs, ys, x, y, b, r0, nrows, dx, dy, rows, tid):
        for e in range(tid, rows * dpad, nthreads):
            r = e // dpad
            c = e - r * dpad
            inside = r0 + r < nrows
            xs[r, c // cols, c % cols] = x[b, r0 + r, c] if inside and c < dx else zero
            ys[r, c // cols, c % cols] = y[b, r0 + r, c] if inside and c < dy else zero

    return stage_one, stage_two


@functools.lru_cache(maxsize=None)
def _forward_kernel(dtype, bq: int, bk: int, dpad: int, groups: int):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, one, ninf, log2e, ln2 = in_dtype(0), in_dtype(1), in_dtype(NEG_INF), in_dtype(LOG2E), in_dtype(LN2)
    cols = dpad // groups
    nthreads = bq * groups
    skew = skew_of(groups, np.dtype(dtype).itemsize)
    kv_shape = (bk, groups, cols + skew)  # staged rows: one padded slice per thread of a row
    align = None if simulated() else 16  # 16-byte shared rows: vector loads (the simulator takes no alignment)
    stage = _stagers(numba_dtype, zero, dpad, nthreads, cols, skew, vec_of(np.dtype(dtype).itemsize))[1]

    @cuda.jit
    def fwd(o, lse, q, k, v, bias, bb, bi, bj, has_bias, causal, scale):
        """o[b, i], lse[b, i] for query row i = blockIdx.x * bq + threadIdx.x // groups, batch
        b = blockIdx.y. Shared: K, V tiles (bk x dpad) and ``part`` (bk x threads); registers:
        the thread's q slice and O accumulator (``cols`` each), running max m and sum l."""
        Ks = cuda.shared.array(kv_shape, numba_dtype, alignment=align)
        Vs = cuda.shared.array(kv_shape, numba_dtype, alignment=align)
        part = cuda.shared.array((bk, nthreads), numba_dtype)
        q_slice = cuda.local.array(cols, numba_dtype)
        acc = cuda.local.array(cols, numba_dtype)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        b = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * bq
        tid = cuda.threadIdx.x
        row = tid // groups
        g = tid - row * groups
        first = row * groups  # the row's first thread: its slot in ``part``
        i = q0 + row
        valid = i < Tq
        q_scale = scale * log2e
        for c in range(cols):
            col = g * cols + c
            acc[c] = zero
            q_slice[c] = q[b, i, col] * q_scale if valid and col < d else zero
        m, l = ninf, zero  # running max and sum of the row (base 2)
        k_end = min(Tk, q0 + bq) if causal else Tk
        for k0 in range(0, k_end, bk):
            stage(Ks, Vs, k, v, b, k0, Tk, d, dv, bk, tid)
            cuda.syncthreads()
            k_rows = min(bk, Tk - k0)  # a runtime trip count: the loops over the tile stay loops
            for jj in range(k_rows):
                s = zero
                for c in range(cols):
                    s += q_slice[c] * Ks[jj, g, c]
                if g == 0:  # the row's first thread adds the bias and the mask
                    j = k0 + jj
                    if valid and (not causal or j <= i):
                        if has_bias:
                            s += bias[b * bb + i * bi + j * bj] * log2e
                    else:
                        s = ninf
                part[jj, tid] = s
            if groups > 1:
                cuda.syncthreads()
            m_tile = ninf
            for jj in range(k_rows):
                s = zero
                for h in range(groups):
                    s += part[jj, first + h]
                m_tile = max(m_tile, s)
            m_new = max(m, m_tile)
            if m_new > ninf:  # otherwise every score so far is masked: nothing to add
                alpha = math.exp2(m - m_new)
                l *= alpha
                for c in range(cols):
                    acc[c] *= alpha
                for jj in range(k_rows):
                    s = zero
                    for h in range(groups):
                        s += part[jj, first + h]
                    p = math.exp2(s - m_new)  # 0 for a masked score
                    l += p
                    for c in range(cols):
                        acc[c] += p * Vs[jj, g, c]
                m = m_new
            cuda.syncthreads()
        if valid:
            inv = one / l if l > zero else zero
            for c in range(cols):
                col = g * cols + c
                if col < dv:
                    o[b, i, col] = acc[c] * inv
            if g == 0:
                lse[b, i] = (m + math.log2(l)) * ln2 if l > zero else ninf

    return fwd


@functools.lru_cache(maxsize=None)
def _prepare_kernel(dtype):
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def prepare(delta, dq, do, o):
        """delta[b, i] = Σ_c do[b, i, c] * o[b, i, c] and dq[b, i, :] = 0; one thread per (b, i):
        grid ceil(B * Tq / ROWDOT_THREADS) x ROWDOT_THREADS. do, o read once; no shared memory."""
        t = cuda.grid(1)
        B, T, dv = o.shape
        if t < B * T:
            b = t // T
            i = t - b * T
            s = zero
            for c in range(dv):
                s += do[b, i, c] * o[b, i, c]
            delta[b, i] = s
            for c in range(dq.shape[2]):
                dq[b, i, c] = zero

    return prepare


@functools.lru_cache(maxsize=None)
def _backward_kernel(dtype, bq: int, bk: int, dpad: int, groups: int):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, ninf, log2e = in_dtype(0), in_dtype(NEG_INF), in_dtype(LOG2E)
    cols = dpad // groups
    nthreads = bk * groups
    skew = skew_of(groups, np.dtype(dtype).itemsize)
    q_shape = (bq, groups, cols + skew)  # staged rows: one padded slice per thread of a row
    vec = vec_of(np.dtype(dtype).itemsize)
    k_shape = (bk, groups, (cols + skew) // vec, vec)  # a vector (4 float32) per innermost row
    align = None if simulated() else 16  # 16-byte shared rows: vector loads (the simulator takes no alignment)
    stage_one, stage = _stagers(numba_dtype, zero, dpad, nthreads, cols, skew, vec)

    @cuda.jit
    def bwd(dq, dk, v_grad, q, k, v, lse, do, delta, bias, bb, bi, bj, has_bias, causal, scale):
        """dk[b, j], dv[b, j] for key row j = blockIdx.x * bk + threadIdx.x // groups, and the
        block's share of dq[b] (atomics; ``prepare`` zeroed it). Shared: Q, dO tiles (bq x dpad),
        the block's K rows (bk x dpad), the tile's lse (base 2) and D, partial scores and dO·v (bq x threads each), dS (bq x bk);
        registers: the thread's k (pre-scaled), v, dk and dv slices (``cols`` each)."""
        Qs = cuda.shared.array(q_shape, numba_dtype, alignment=align)
        dOs = cuda.shared.array(q_shape, numba_dtype, alignment=align)
        Ks = cuda.shared.array(k_shape, numba_dtype, alignment=align)  # the block's k rows, unscaled, for dq
        part_s = cuda.shared.array((bq, nthreads), numba_dtype)
        part_dp = cuda.shared.array((bq, nthreads), numba_dtype)
        dS = cuda.shared.array((bq, bk), numba_dtype)
        Ls = cuda.shared.array(bq, numba_dtype)
        Ds = cuda.shared.array(bq, numba_dtype)
        k_slice = cuda.local.array(cols, numba_dtype)
        v_slice = cuda.local.array(cols, numba_dtype)
        dk_acc = cuda.local.array(cols, numba_dtype)
        dv_acc = cuda.local.array(cols, numba_dtype)
        dq_acc = cuda.local.array(vec, numba_dtype)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        b = cuda.blockIdx.y
        k0 = cuda.blockIdx.x * bk
        tid = cuda.threadIdx.x
        row = tid // groups
        g = tid - row * groups
        first = row * groups
        j = k0 + row
        valid = j < Tk
        k_scale = scale * log2e
        for c in range(cols):
            col = g * cols + c
            k_slice[c] = k[b, j, col] * k_scale if valid and col < d else zero
            v_slice[c] = v[b, j, col] if valid and col < dv else zero
            dk_acc[c] = zero
            dv_acc[c] = zero
        k_rows = min(bk, Tk - k0)
        stage_one(Ks, k, b, k0, Tk, d, bk, tid)  # read by the dq step after the first sync
        q_start = (k0 // bq) * bq if causal else 0
        for q0 in range(q_start, Tq, bq):
            stage(Qs, dOs, q, do, b, q0, Tq, d, dv, bq, tid)
            for ii in range(tid, bq, nthreads):
                inside = q0 + ii < Tq
                Ls[ii] = lse[b, q0 + ii] * log2e if inside else ninf
                Ds[ii] = delta[b, q0 + ii] if inside else zero
            cuda.syncthreads()
            q_rows = min(bq, Tq - q0)  # a runtime trip count: the loops over the tile stay loops
            for ii in range(q_rows):
                s, dp = zero, zero
                for c in range(cols):
                    s += k_slice[c] * Qs[ii, g, c]
                    dp += v_slice[c] * dOs[ii, g, c]
                if g == 0:  # the row's first thread adds the bias and the mask
                    i = q0 + ii
                    if valid and (not causal or j <= i):
                        if has_bias:
                            s += bias[b * bb + i * bi + j * bj] * log2e
                    else:
                        s = ninf
                part_s[ii, tid] = s
                part_dp[ii, tid] = dp
            if groups > 1:
                cuda.syncthreads()
            for ii in range(q_rows):
                s, dp = zero, zero
                for h in range(groups):
                    s += part_s[ii, first + h]
                    dp += part_dp[ii, first + h]
                p = math.exp2(s - Ls[ii]) if s > ninf else zero
                ds = p * (dp - Ds[ii])
                for c in range(cols):
                    dv_acc[c] += p * dOs[ii, g, c]
                    dk_acc[c] += ds * Qs[ii, g, c]
                if g == 0:
                    dS[ii, row] = ds
            cuda.syncthreads()
            # dq[q0 + ii, col] += scale * Σ_jj dS[ii, jj] k[jj, col], ``vec`` columns per thread
            for e in range(tid, q_rows * (dpad // vec), nthreads):
                ii = e // (dpad // vec)
                col0 = (e - ii * (dpad // vec)) * vec
                if col0 < d:
                    slice_, v_in = col0 // cols, (col0 % cols) // vec
                    for u in range(vec):
                        dq_acc[u] = zero
                    for jj in range(k_rows):
                        w = dS[ii, jj]
                        for u in range(vec):
                            dq_acc[u] += w * Ks[jj, slice_, v_in, u]
                    for u in range(vec):
                        if col0 + u < d:
                            cuda.atomic.add(dq, (b, q0 + ii, col0 + u), dq_acc[u] * scale)
            cuda.syncthreads()
        if valid:
            for c in range(cols):
                col = g * cols + c
                if col < d:
                    dk[b, j, col] = dk_acc[c] * scale
                if col < dv:
                    v_grad[b, j, col] = dv_acc[c]

    return bwd


def layout(d: int, dv: int, itemsize: int, backward: bool) -> tuple[int, int, int, int]:
    """(bq, bk, dpad, groups) of the forward or backward kernel for head dims d, dv."""
    dpad = pow2_at_least(max(d, dv), 16)
    cols = min(dpad, max(vec_of(itemsize), (BWD_ROW_BYTES if backward else FWD_ROW_BYTES) // itemsize))
    groups = dpad // cols
    bq, bk = BLOCK_Q, BLOCK_K
    while bq * bk > 1 and _shared_bytes(bq, bk, dpad, groups, itemsize, backward) > SHARED_BYTES:
        bq, bk = (bq // 2, bk) if bq >= bk else (bq, bk // 2)
    return bq, bk, dpad, groups


def _shared_bytes(bq, bk, dpad, groups, itemsize, backward) -> int:
    width = dpad + groups * skew_of(groups, itemsize)  # a staged row
    if backward:  # Q, dO, K tiles; part_s, part_dp; dS; lse, D
        cells = 2 * bq * width + bk * width + 2 * bq * bk * groups + bq * bk + 2 * bq
    else:  # K, V tiles; part
        cells = 2 * bk * width + bk * bq * groups
    return cells * itemsize


def _setup(q, k, v, bias):
    B, Tq, d = q.shape
    Tk, dv = k.shape[1], v.shape[2]
    if max(d, dv) > MAX_HEAD_DIM:
        raise ValueError(f"head dims up to {MAX_HEAD_DIM} are supported")
    if bias is None:
        bflat, bst, has_bias = q.reshape(q.size), (0, 0, 0), False  # placeholder, never read
    else:
        bshape = (1,) * (3 - bias.ndim) + tuple(bias.shape)
        bflat, st = flat_view(bias)
        bst = broadcast_strides(bshape, (0,) * (3 - bias.ndim) + tuple(st), (B, Tq, Tk))
        has_bias = True
    return (B, Tq, Tk, d, dv), (bflat, *bst, has_bias)


def attention_forward(q, k, v, bias, is_causal: bool, scale: float):
    """(o (B, Tq, dv), lse (B, Tq))."""
    (B, Tq, Tk, d, dv), bargs = _setup(q, k, v, bias)
    dt = np.dtype(q.dtype)
    o = device_array((B, Tq, dv), dt)
    lse = device_array((B, Tq), dt)
    if B and Tq:
        bq, bk, dpad, groups = layout(d, dv, dt.itemsize, backward=False)
        fwd = _forward_kernel(dt, bq, bk, dpad, groups)
        launch(fwd, (cdiv(Tq, bq), B), bq * groups, o, lse, q, k, v, *bargs, bool(is_causal), dt.type(scale))
    return o, lse


def attention_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    """(dq, dk, dv) from the saved lse: P is computed once per (query, key) pair."""
    (B, Tq, Tk, d, dv), bargs = _setup(q, k, v, bias)
    dt = np.dtype(q.dtype)
    dq = device_array((B, Tq, d), dt)
    dk = device_array((B, Tk, d), dt)
    v_grad = device_array((B, Tk, dv), dt)
    delta = device_array((B, max(Tq, 1)), dt)
    if B and Tq:
        launch(_prepare_kernel(dt), cdiv(B * Tq, ROWDOT_THREADS), ROWDOT_THREADS, delta, dq, do, o)
    if B and Tk:
        bq, bk, dpad, groups = layout(d, dv, dt.itemsize, backward=True)
        bwd = _backward_kernel(dt, bq, bk, dpad, groups)
        launch(bwd, (cdiv(Tk, bk), B), bk * groups, dq, dk, v_grad, q, k, v, lse, do, delta, *bargs,
               bool(is_causal), dt.type(scale))
    return dq, dk, v_grad
