"""Tiled (flash) attention, forward and backward, batch and heads flattened into B.

S = scale * Q Kᵀ + bias (+ causal mask), P = softmax(S), O = P V, lse = log Σ_j exp(S).
Signature (device arrays): ``attention_forward(q, k, v, bias, is_causal, scale)`` and
``attention_backward(q, k, v, o, lse, do, bias, is_causal, scale)``; q (B, Tq, d),
k (B, Tk, d), v (B, Tk, dv), all C-contiguous. ``bias`` is None or a device array of rank
<= 3 broadcastable to (B, Tq, Tk) — e.g. a key-padding mask (B, 1, Tk) or a shared
(1, Tq, Tk) mask — holding -inf at masked positions; the wrapper turns its size-1 dims
into stride 0 (``layout.broadcast_strides``), so it is never expanded in memory.

Tiles: ``BLOCK_Q`` query rows per block, ``BLOCK_K`` key rows per shared-memory tile
(32 / 32); head dims up to ``MAX_HEAD_DIM`` (256), padded to ``dpad`` = next power of two
>= max(d, dv, 16); the key/query tile shrinks so the two staged tiles fit in
``SHARED_BYTES`` (32 KiB).

Forward — grid (ceil(Tq / BLOCK_Q), B), ``BLOCK_Q`` threads, one query row per thread:
its q row and O accumulator (kernel dtype: float32 stays float32) live in per-thread local
arrays (dpad each); per key tile the
block stages K and V tiles (BLOCK_K x dpad each) in shared memory, each thread scores its
row against the tile, and folds it in with the online softmax (running max m, sum l).
K/V are read ceil(Tq / BLOCK_Q) times, Q once, O and lse written once; no (Tq, Tk) matrix.
Causal: key tiles entirely above the diagonal (first key > last query of the block) are skipped.
Backward — three kernels, deterministic (no atomics):
  1. ``D = rowsum(dO ⊙ O)``: one thread per (b, query row).
  2. dQ: grid (ceil(Tq / BLOCK_Q), B), one query row per thread; K/V tiles staged as in
     forward, P recomputed as exp(S - lse), dS = P (dO·vⱼ - D), dq += dS kⱼ.
  3. dK, dV: grid (ceil(Tk / BLOCK_K), B), one key row per thread; Q/dO tiles (plus lse
     and D of those rows) staged in shared memory, dv += P dO, dk += dS q. Causal: query
     tiles entirely before the key tile are skipped.
Fully masked rows (every S = -inf) give o = 0, lse = -inf and zero gradients.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda

from ._util import cdiv, device_array, flat_view, launch, nb_dtype, pow2_at_least
from .layout import broadcast_strides

BLOCK_Q = 32
BLOCK_K = 32
MAX_HEAD_DIM = 256
SHARED_BYTES = 32 * 1024
NEG_INF = -math.inf
ROWDOT_THREADS = 128  # threads per block of the rowsum(dO ⊙ O) kernel


@functools.lru_cache(maxsize=None)
def _kernels(dtype, bq: int, bk: int, dpad: int):
    numba_dtype = nb_dtype(dtype)
    in_dtype = np.dtype(dtype).type
    zero, ninf = in_dtype(0), in_dtype(NEG_INF)

    @cuda.jit(device=True)
    def stage_rows(xs, ys, x, y, b, r0, nrows_total, dx, dy, tid, rows, nthreads):
        """Stage ``rows`` rows from ``r0`` of batch ``b`` into shared memory: xs[r, :dx] = x[b, r0 + r]
        and ys[r, :dy] = y[b, r0 + r], zero past ``nrows_total``. The ``nthreads`` threads of the block
        share the cells (thread ``tid`` takes every ``nthreads``-th); the caller synchronises."""
        ncol = max(dx, dy)
        for e in range(tid, rows * ncol, nthreads):
            r = e // ncol
            c = e - r * ncol
            inside = r0 + r < nrows_total
            if c < dx:
                xs[r, c] = x[b, r0 + r, c] if inside else zero
            if c < dy:
                ys[r, c] = y[b, r0 + r, c] if inside else zero

    @cuda.jit(device=True)
    def _score(qrow, tile, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j):
        """scale * (qrow . tile[jj, :d]) + bias[b*bb + i*bi + j*bj] (stride 0 = broadcast dim), in
        the kernel dtype. Device function, per thread: reads one staged shared-memory row and at
        most one bias cell."""
        s = zero
        for c in range(d):
            s += qrow[c] * tile[jj, c]
        s *= scale
        if has_bias:
            s += bias[b * bb + i * bi + j * bj]
        return s

    @cuda.jit
    def fwd(o, lse, q, k, v, bias, bb, bi, bj, has_bias, causal, scale):
        """o[b, i], lse[b, i] for query row i = blockIdx.x * bq + threadIdx.x, batch b = blockIdx.y.
        Grid (ceil(Tq / bq), B), bq threads, one query row each; per key tile, K and V (bk x dpad)
        staged in shared memory; per thread local q row, accumulator of the kernel dtype (dpad) and bk scores;
        online softmax over the tiles; o and lse written once."""
        Ks = cuda.shared.array((bk, dpad), numba_dtype)
        Vs = cuda.shared.array((bk, dpad), numba_dtype)
        qr = cuda.local.array(dpad, numba_dtype)
        acc = cuda.local.array(dpad, numba_dtype)
        sc = cuda.local.array(bk, numba_dtype)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        b = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * bq
        tid = cuda.threadIdx.x
        i = q0 + tid
        valid = i < Tq
        for c in range(dv):
            acc[c] = zero
        if valid:
            for c in range(d):
                qr[c] = q[b, i, c]
        m = ninf
        l = zero
        k_end = min(Tk, q0 + bq) if causal else Tk
        for k0 in range(0, k_end, bk):
            stage_rows(Ks, Vs, k, v, b, k0, Tk, d, dv, tid, bk, bq)
            cuda.syncthreads()
            if valid:
                mt = ninf
                for jj in range(bk):
                    j = k0 + jj
                    s = ninf
                    if j < Tk and (not causal or j <= i):
                        s = _score(qr, Ks, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                    sc[jj] = s
                    mt = max(mt, s)
                m_new = max(m, mt)
                if m_new > ninf:  # otherwise every score so far is masked: nothing to add
                    alpha = math.exp(m - m_new)
                    l *= alpha
                    for c in range(dv):
                        acc[c] *= alpha
                    for jj in range(bk):
                        if sc[jj] > ninf:
                            p = math.exp(sc[jj] - m_new)
                            l += p
                            for c in range(dv):
                                acc[c] += p * Vs[jj, c]
                    m = m_new
            cuda.syncthreads()
        if valid:
            if l > zero:
                inv = in_dtype(1) / l
                for c in range(dv):
                    o[b, i, c] = acc[c] * inv
                lse[b, i] = m + math.log(l)
            else:
                for c in range(dv):
                    o[b, i, c] = zero
                lse[b, i] = ninf

    @cuda.jit
    def bwd_dq(dq, q, k, v, lse, do, delta, bias, bb, bi, bj, has_bias, causal, scale):
        """dq[b, i] = scale * sum_j P_ij (dO_i . v_j - D_i) k_j, with P = exp(S - lse) recomputed.
        Grid (ceil(Tq / bq), B), bq threads, one query row each; K and V tiles (bk x dpad) staged in
        shared memory as in `fwd`; per thread local q, dO rows and a accumulator of the kernel dtype; dq
        written once, no atomics."""
        Ks = cuda.shared.array((bk, dpad), numba_dtype)
        Vs = cuda.shared.array((bk, dpad), numba_dtype)
        qr = cuda.local.array(dpad, numba_dtype)
        dor = cuda.local.array(dpad, numba_dtype)
        acc = cuda.local.array(dpad, numba_dtype)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        b = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * bq
        tid = cuda.threadIdx.x
        i = q0 + tid
        valid = i < Tq
        L = ninf
        Di = zero
        for c in range(d):
            acc[c] = zero
        if valid:
            L = lse[b, i]
            Di = delta[b, i]
            for c in range(d):
                qr[c] = q[b, i, c]
            for c in range(dv):
                dor[c] = do[b, i, c]
        k_end = min(Tk, q0 + bq) if causal else Tk
        for k0 in range(0, k_end, bk):
            stage_rows(Ks, Vs, k, v, b, k0, Tk, d, dv, tid, bk, bq)
            cuda.syncthreads()
            if valid and L > ninf:
                for jj in range(bk):
                    j = k0 + jj
                    if j < Tk and (not causal or j <= i):
                        s = _score(qr, Ks, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                        if s > ninf:
                            p = math.exp(s - L)
                            dp = zero
                            for c in range(dv):
                                dp += dor[c] * Vs[jj, c]
                            ds = p * (dp - Di)
                            for c in range(d):
                                acc[c] += ds * Ks[jj, c]
            cuda.syncthreads()
        if valid:
            for c in range(d):
                dq[b, i, c] = acc[c] * scale

    @cuda.jit
    def bwd_dkv(dk, v_grad, q, k, v, lse, do, delta, bias, bb, bi, bj, has_bias, causal, scale):
        """dk[b, j], dv[b, j] for key row j = blockIdx.x * bk + threadIdx.x, batch b = blockIdx.y.
        Grid (ceil(Tk / bk), B), bk threads, one key row each; per query tile, Q and dO (bq x dpad)
        plus their lse and D (bq each) staged in shared memory; per thread local k, v rows
        and dk / dv accumulators of the kernel dtype; dk, dv written once, no atomics."""
        Qs = cuda.shared.array((bq, dpad), numba_dtype)
        dOs = cuda.shared.array((bq, dpad), numba_dtype)
        Ls = cuda.shared.array(bq, numba_dtype)
        Ds = cuda.shared.array(bq, numba_dtype)
        kr = cuda.local.array(dpad, numba_dtype)
        vr = cuda.local.array(dpad, numba_dtype)
        dka = cuda.local.array(dpad, numba_dtype)
        dva = cuda.local.array(dpad, numba_dtype)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        b = cuda.blockIdx.y
        k0 = cuda.blockIdx.x * bk
        tid = cuda.threadIdx.x
        j = k0 + tid
        valid = j < Tk
        for c in range(d):
            dka[c] = zero
        for c in range(dv):
            dva[c] = zero
        if valid:
            for c in range(d):
                kr[c] = k[b, j, c]
            for c in range(dv):
                vr[c] = v[b, j, c]
        q_start = (k0 // bq) * bq if causal else 0
        for q0 in range(q_start, Tq, bq):
            stage_rows(Qs, dOs, q, do, b, q0, Tq, d, dv, tid, bq, bk)
            for ii in range(tid, bq, bk):
                Ls[ii] = lse[b, q0 + ii] if q0 + ii < Tq else ninf
                Ds[ii] = delta[b, q0 + ii] if q0 + ii < Tq else zero
            cuda.syncthreads()
            if valid:
                for ii in range(bq):
                    i = q0 + ii
                    if i < Tq and (not causal or j <= i) and Ls[ii] > ninf:
                        s = _score(kr, Qs, ii, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                        if s > ninf:
                            p = math.exp(s - Ls[ii])
                            dp = zero
                            for c in range(dv):
                                dva[c] += p * dOs[ii, c]
                                dp += dOs[ii, c] * vr[c]
                            ds = p * (dp - Ds[ii])
                            for c in range(d):
                                dka[c] += ds * Qs[ii, c]
            cuda.syncthreads()
        if valid:
            for c in range(d):
                dk[b, j, c] = dka[c] * scale
            for c in range(dv):
                v_grad[b, j, c] = dva[c]

    @cuda.jit
    def rowdot(delta, do, o):
        """delta[b, i] = Σ_c do[b, i, c] * o[b, i, c]; one thread per (b, i): grid ceil(B * Tq /
        ROWDOT_THREADS) x ROWDOT_THREADS. do, o read once, delta written once; no shared memory."""
        t = cuda.grid(1)
        B, T, dv = o.shape
        if t < B * T:
            b = t // T
            i = t - b * T
            s = zero
            for c in range(dv):
                s += do[b, i, c] * o[b, i, c]
            delta[b, i] = s

    return fwd, bwd_dq, bwd_dkv, rowdot


def tiles(dpad: int, itemsize: int) -> tuple[int, int]:
    """(query rows, key rows) per tile for padded head dim ``dpad``: BLOCK_Q / BLOCK_K, shrunk
    so the two staged tiles fit in SHARED_BYTES."""
    fit = max(1, SHARED_BYTES // (2 * dpad * itemsize))
    return min(BLOCK_Q, fit), min(BLOCK_K, fit)


def _setup(q, k, v, bias):
    B, Tq, d = q.shape
    Tk, dv = k.shape[1], v.shape[2]
    if max(d, dv) > MAX_HEAD_DIM:
        raise ValueError(f"head dims up to {MAX_HEAD_DIM} are supported")
    dpad = pow2_at_least(max(d, dv), 16)
    bq, bk = tiles(dpad, np.dtype(q.dtype).itemsize)
    if bias is None:
        bflat, bst, has_bias = q.reshape(q.size), (0, 0, 0), False  # placeholder, never read
    else:
        bshape = (1,) * (3 - bias.ndim) + tuple(bias.shape)
        bflat, st = flat_view(bias)
        bst = broadcast_strides(bshape, (0,) * (3 - bias.ndim) + tuple(st), (B, Tq, Tk))
        has_bias = True
    return (B, Tq, Tk, d, dv, bq, bk, dpad), (bflat, *bst, has_bias)


def attention_forward(q, k, v, bias, is_causal: bool, scale: float):
    """(o (B, Tq, dv), lse (B, Tq))."""
    (B, Tq, Tk, d, dv, bq, bk, dpad), bargs = _setup(q, k, v, bias)
    dt = np.dtype(q.dtype)
    o = device_array((B, Tq, dv), dt)
    lse = device_array((B, Tq), dt)
    if B and Tq:
        fwd = _kernels(dt, bq, bk, dpad)[0]
        launch(fwd, (cdiv(Tq, bq), B), bq, o, lse, q, k, v, *bargs, bool(is_causal), dt.type(scale))
    return o, lse


def attention_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    """(dq, dk, dv) by recomputing P tile by tile from the saved lse."""
    (B, Tq, Tk, d, dv, bq, bk, dpad), bargs = _setup(q, k, v, bias)
    dt = np.dtype(q.dtype)
    dq = device_array((B, Tq, d), dt)
    dk = device_array((B, Tk, d), dt)
    v_grad = device_array((B, Tk, dv), dt)
    delta = device_array((B, Tq), dt)
    _, bwd_dq, bwd_dkv, rowdot = _kernels(dt, bq, bk, dpad)
    sc = dt.type(scale)
    if B and Tq:
        launch(rowdot, cdiv(B * Tq, ROWDOT_THREADS), ROWDOT_THREADS, delta, do, o)
        launch(bwd_dq, (cdiv(Tq, bq), B), bq, dq, q, k, v, lse, do, delta, *bargs, bool(is_causal), sc)
    if B and Tk:
        if not Tq:
            delta = device_array((B, 1), dt)
        launch(bwd_dkv, (cdiv(Tk, bk), B), bk, dk, v_grad, q, k, v, lse, do, delta, *bargs, bool(is_causal), sc)
    return dq, dk, v_grad
