"""Tiled (flash) attention, forward and backward, batch and heads flattened into B.

S = scale * Q Kᵀ + bias (+ causal mask), P = softmax(S), O = P V, lse = log Σ_j exp(S).
Signature (device arrays): ``attention_forward(q, k, v, bias, is_causal, scale)`` and
``attention_backward(q, k, v, o, lse, do, bias, is_causal, scale)``; q (B, Tq, d),
k (B, Tk, d), v (B, Tk, dv), all C-contiguous. ``bias`` is None or a device array of rank
<= 3 broadcastable to (B, Tq, Tk) — e.g. a key-padding mask (B, 1, Tk) or a shared
(1, Tq, Tk) mask — holding -inf at masked positions; the wrapper turns its size-1 dims
into stride 0 (``_util.broadcast_strides``), so it is never expanded in memory.

Tiles: ``BLOCK_Q`` query rows per block, ``BLOCK_K`` key rows per shared-memory tile
(32 / 32); head dims up to ``MAX_HEAD_DIM`` (256), padded to ``dpad`` = next power of two
>= max(d, dv, 16); the key/query tile shrinks so the two staged tiles fit in
``SHARED_BYTES`` (32 KiB).

Forward — grid (ceil(Tq / BLOCK_Q), B), ``BLOCK_Q`` threads, one query row per thread:
its q row and O accumulator live in per-thread local arrays (dpad each); per key tile the
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

import numba
import numpy as np
from numba import cuda

from ._util import broadcast_strides, cdiv, flat_view, nb_dtype, pow2_at_least

BLOCK_Q = 32
BLOCK_K = 32
MAX_HEAD_DIM = 256
SHARED_BYTES = 32 * 1024
NEG_INF = -math.inf
ROWDOT_THREADS = 128  # threads per block of the rowsum(dO ⊙ O) kernel


@cuda.jit(device=True)
def _score(qrow, tile, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j):
    """scale * (qrow . tile[jj, :d]) + bias[b*bb + i*bi + j*bj] (stride 0 = broadcast dim).
    Device function, per thread: reads one staged shared-memory row and at most one bias cell."""
    s = 0.0
    for c in range(d):
        s += qrow[c] * tile[jj, c]
    s *= scale
    if has_bias:
        s += bias[b * bb + i * bi + j * bj]
    return s


@functools.lru_cache(maxsize=None)
def _kernels(dtype, bq: int, bk: int, dpad: int):
    nbt = nb_dtype(dtype)

    @cuda.jit
    def fwd(o, lse, q, k, v, bias, bb, bi, bj, has_bias, causal, scale):
        """o[b, i], lse[b, i] for query row i = blockIdx.x * bq + threadIdx.x, batch b = blockIdx.y.
        Grid (ceil(Tq / bq), B), bq threads, one query row each; per key tile, K and V (bk x dpad)
        staged in shared memory; per thread local q row, float64 accumulator (dpad) and bk scores;
        online softmax over the tiles; o and lse written once."""
        Ks = cuda.shared.array((bk, dpad), nbt)
        Vs = cuda.shared.array((bk, dpad), nbt)
        qr = cuda.local.array(dpad, nbt)
        acc = cuda.local.array(dpad, numba.float64)
        sc = cuda.local.array(bk, numba.float64)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        ncol = max(d, dv)
        b = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * bq
        tid = cuda.threadIdx.x
        i = q0 + tid
        valid = i < Tq
        for c in range(dv):
            acc[c] = 0.0
        if valid:
            for c in range(d):
                qr[c] = q[b, i, c]
        m = NEG_INF
        l = 0.0
        k_end = min(Tk, q0 + bq) if causal else Tk
        for k0 in range(0, k_end, bk):
            for e in range(tid, bk * ncol, bq):
                jj = e // ncol
                c = e - jj * ncol
                inside = k0 + jj < Tk
                if c < d:
                    Ks[jj, c] = k[b, k0 + jj, c] if inside else 0
                if c < dv:
                    Vs[jj, c] = v[b, k0 + jj, c] if inside else 0
            cuda.syncthreads()
            if valid:
                mt = NEG_INF
                for jj in range(bk):
                    j = k0 + jj
                    s = NEG_INF
                    if j < Tk and (not causal or j <= i):
                        s = _score(qr, Ks, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                    sc[jj] = s
                    mt = max(mt, s)
                m_new = max(m, mt)
                if m_new > NEG_INF:  # otherwise every score so far is masked: nothing to add
                    alpha = math.exp(m - m_new)
                    l *= alpha
                    for c in range(dv):
                        acc[c] *= alpha
                    for jj in range(bk):
                        if sc[jj] > NEG_INF:
                            p = math.exp(sc[jj] - m_new)
                            l += p
                            for c in range(dv):
                                acc[c] += p * Vs[jj, c]
                    m = m_new
            cuda.syncthreads()
        if valid:
            if l > 0.0:
                inv = 1.0 / l
                for c in range(dv):
                    o[b, i, c] = acc[c] * inv
                lse[b, i] = m + math.log(l)
            else:
                for c in range(dv):
                    o[b, i, c] = 0.0
                lse[b, i] = NEG_INF

    @cuda.jit
    def bwd_dq(dq, q, k, v, lse, do, Dr, bias, bb, bi, bj, has_bias, causal, scale):
        """dq[b, i] = scale * sum_j P_ij (dO_i . v_j - D_i) k_j, with P = exp(S - lse) recomputed.
        Grid (ceil(Tq / bq), B), bq threads, one query row each; K and V tiles (bk x dpad) staged in
        shared memory as in `fwd`; per thread local q, dO rows and a float64 accumulator; dq
        written once, no atomics."""
        Ks = cuda.shared.array((bk, dpad), nbt)
        Vs = cuda.shared.array((bk, dpad), nbt)
        qr = cuda.local.array(dpad, nbt)
        dor = cuda.local.array(dpad, nbt)
        acc = cuda.local.array(dpad, numba.float64)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        ncol = max(d, dv)
        b = cuda.blockIdx.y
        q0 = cuda.blockIdx.x * bq
        tid = cuda.threadIdx.x
        i = q0 + tid
        valid = i < Tq
        L = NEG_INF
        Di = 0.0
        for c in range(d):
            acc[c] = 0.0
        if valid:
            L = lse[b, i]
            Di = Dr[b, i]
            for c in range(d):
                qr[c] = q[b, i, c]
            for c in range(dv):
                dor[c] = do[b, i, c]
        k_end = min(Tk, q0 + bq) if causal else Tk
        for k0 in range(0, k_end, bk):
            for e in range(tid, bk * ncol, bq):
                jj = e // ncol
                c = e - jj * ncol
                inside = k0 + jj < Tk
                if c < d:
                    Ks[jj, c] = k[b, k0 + jj, c] if inside else 0
                if c < dv:
                    Vs[jj, c] = v[b, k0 + jj, c] if inside else 0
            cuda.syncthreads()
            if valid and L > NEG_INF:
                for jj in range(bk):
                    j = k0 + jj
                    if j < Tk and (not causal or j <= i):
                        s = _score(qr, Ks, jj, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                        if s > NEG_INF:
                            p = math.exp(s - L)
                            dp = 0.0
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
    def bwd_dkv(dk, dvv, q, k, v, lse, do, Dr, bias, bb, bi, bj, has_bias, causal, scale):
        """dk[b, j], dv[b, j] for key row j = blockIdx.x * bk + threadIdx.x, batch b = blockIdx.y.
        Grid (ceil(Tk / bk), B), bk threads, one key row each; per query tile, Q and dO (bq x dpad)
        plus their lse and D (float64, bq each) staged in shared memory; per thread local k, v rows
        and float64 dk / dv accumulators; dk, dv written once, no atomics."""
        Qs = cuda.shared.array((bq, dpad), nbt)
        dOs = cuda.shared.array((bq, dpad), nbt)
        Ls = cuda.shared.array(bq, numba.float64)
        Ds = cuda.shared.array(bq, numba.float64)
        kr = cuda.local.array(dpad, nbt)
        vr = cuda.local.array(dpad, nbt)
        dka = cuda.local.array(dpad, numba.float64)
        dva = cuda.local.array(dpad, numba.float64)
        Tq, d = q.shape[1], q.shape[2]
        Tk, dv = k.shape[1], v.shape[2]
        ncol = max(d, dv)
        b = cuda.blockIdx.y
        k0 = cuda.blockIdx.x * bk
        tid = cuda.threadIdx.x
        j = k0 + tid
        valid = j < Tk
        for c in range(d):
            dka[c] = 0.0
        for c in range(dv):
            dva[c] = 0.0
        if valid:
            for c in range(d):
                kr[c] = k[b, j, c]
            for c in range(dv):
                vr[c] = v[b, j, c]
        q_start = (k0 // bq) * bq if causal else 0
        for q0 in range(q_start, Tq, bq):
            for e in range(tid, bq * ncol, bk):
                ii = e // ncol
                c = e - ii * ncol
                inside = q0 + ii < Tq
                if c < d:
                    Qs[ii, c] = q[b, q0 + ii, c] if inside else 0
                if c < dv:
                    dOs[ii, c] = do[b, q0 + ii, c] if inside else 0
            for ii in range(tid, bq, bk):
                Ls[ii] = lse[b, q0 + ii] if q0 + ii < Tq else NEG_INF
                Ds[ii] = Dr[b, q0 + ii] if q0 + ii < Tq else 0.0
            cuda.syncthreads()
            if valid:
                for ii in range(bq):
                    i = q0 + ii
                    if i < Tq and (not causal or j <= i) and Ls[ii] > NEG_INF:
                        s = _score(kr, Qs, ii, d, scale, bias, bb, bi, bj, has_bias, b, i, j)
                        if s > NEG_INF:
                            p = math.exp(s - Ls[ii])
                            dp = 0.0
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
                dvv[b, j, c] = dva[c]

    return fwd, bwd_dq, bwd_dkv


@cuda.jit
def _rowdot(Dr, do, o):
    """Dr[b, i] = Σ_c do[b, i, c] * o[b, i, c]; one thread per (b, i): grid ceil(B * Tq /
    ROWDOT_THREADS) x ROWDOT_THREADS. do, o read once, Dr (float64) written once; no shared memory."""
    t = cuda.grid(1)
    B, T, dv = o.shape
    if t < B * T:
        b = t // T
        i = t - b * T
        s = 0.0
        for c in range(dv):
            s += do[b, i, c] * o[b, i, c]
        Dr[b, i] = s


def _setup(q, k, v, bias):
    B, Tq, d = q.shape
    Tk, dv = k.shape[1], v.shape[2]
    if max(d, dv) > MAX_HEAD_DIM:
        raise ValueError(f"head dims up to {MAX_HEAD_DIM} are supported")
    dpad = pow2_at_least(max(d, dv), 16)
    fit = max(1, SHARED_BYTES // (2 * dpad * np.dtype(q.dtype).itemsize))
    bq, bk = min(BLOCK_Q, fit), min(BLOCK_K, fit)
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
    o = cuda.device_array((B, Tq, dv), dtype=q.dtype)
    lse = cuda.device_array((B, Tq), dtype=q.dtype)
    if B and Tq:
        fwd = _kernels(np.dtype(q.dtype), bq, bk, dpad)[0]
        fwd[(cdiv(Tq, bq), B), bq](o, lse, q, k, v, *bargs, bool(is_causal), float(scale))
    return o, lse


def attention_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    """(dq, dk, dv) by recomputing P tile by tile from the saved lse."""
    (B, Tq, Tk, d, dv, bq, bk, dpad), bargs = _setup(q, k, v, bias)
    dq = cuda.device_array((B, Tq, d), dtype=q.dtype)
    dk = cuda.device_array((B, Tk, d), dtype=q.dtype)
    dvv = cuda.device_array((B, Tk, dv), dtype=q.dtype)
    Dr = cuda.device_array((B, Tq), dtype=np.float64)
    _, bwd_dq, bwd_dkv = _kernels(np.dtype(q.dtype), bq, bk, dpad)
    if B and Tq:
        _rowdot[cdiv(B * Tq, ROWDOT_THREADS), ROWDOT_THREADS](Dr, do, o)
        bwd_dq[(cdiv(Tq, bq), B), bq](dq, q, k, v, lse, do, Dr, *bargs, bool(is_causal), float(scale))
    if B and Tk:
        if not Tq:
            Dr = cuda.device_array((B, 1), dtype=np.float64)
        bwd_dkv[(cdiv(Tk, bk), B), bk](dk, dvv, q, k, v, lse, do, Dr, *bargs, bool(is_causal),
                                       float(scale))
    return dq, dk, dvv
