"""Fused scaled dot-product attention (flash-style), forward and backward, on the CPU.

Design: a hybrid. Python walks the tiles; NumPy `@` (OpenBLAS) does every product on a
tile (Q_t K_t^T, P V_t; backward also dO_t V_t^T, P^T dO_t, dS K_t, dS^T Q_t) into
preallocated buffers; Numba kernels do the fused elementwise part in place on the score
tile, in as few vectorised passes as they can: forward, scale, bias, causal mask, row max
(first key tile only, see `_fwd_tile`), then exp and row sum in one pass (the one-pass exp
of attention_small.py) and the online-softmax rescale; backward, P = exp(S - lse) and
dS = scale * P * (dP - D) in one pass.
Why not pure Numba: Numba cannot call BLAS without SciPy, and a hand-written tile matmul
reaches a fraction of OpenBLAS's ~180 GFLOP/s per core at these shapes; the matmuls are most
of the work (7 products of 2 n^2 d FLOPs each for forward + backward): at n = 2048 on one
thread they took 180 of 206 ms, the elementwise passes ~22 and Python ~6.

Parallelisation: tiles, not rows. Work units are (batch*head, query tile) in the forward
and (batch*head, key tile) in the backward; `get_num_threads()` Python threads pull
units dynamically (causal: longest first), each with its own buffers, running Numba
kernels compiled `nogil=True` (so no `parallel=True` here) and BLAS calls that release
the GIL. That needs OpenBLAS on one thread (`mt.threads.set_blas_num_threads(1)`, or
`limit_blas_threads(1)`): mixing its own worker threads with ours (or with Numba's prange
workers) oversubscribes the cores, and on the 2-core machine that measured 2-20x slower and
erratic. The kernel never changes OpenBLAS's count itself: while OpenBLAS runs on several
threads, the units run one after another on the calling thread and OpenBLAS parallelises
each product. Units write disjoint rows of o / dk / dv;
dQ rows are summed by key tiles of different threads, so thread 0 accumulates into dq and
each other thread into a private (B, Tq, d) buffer added at the end.

Tiles: BLOCK_Q = 512 query rows x BLOCK_K = 256 keys (S and dP tiles of 512 KiB in float32,
in a 2 MiB L2). Against 256x512 (8 heads, d = 64, fwd+bwd, paired): 0.98-0.99 full, 0.92-0.95
causal at n = 512-2048; 512x512 ties full and loses causal; 128-row tiles lose 5-14%.
Forward: per query tile, key tiles in order with the online softmax (running max m,
running sum l, output accumulated in place in o). Backward: per key tile, query tiles in
order; dK / dV accumulate in place. Causal (key j kept iff j <= i): tiles entirely above
the diagonal are never visited; only tiles crossing it are masked.

Memory plan: outputs (o, lse; dq, dk, dv, D = rowsum(dO*O)) plus, per thread,
O(BLOCK_Q * BLOCK_K) tile buffers (S, dP, a bias tile when there is a bias) and in the
backward one private dQ. Never a (Tq, Tk) matrix: peak memory above
the inputs is linear in n (W6: ~24 MiB at n = 16384, one head, d = 64). A bias view with
zero strides (a key-padding mask broadcast to (B, Tq, Tk)) is copied tile by tile into
the bias buffer, so it is never materialised either.
"""
from __future__ import annotations

import numpy as np
import threading

from numba import get_num_threads, njit, prange

from minitrans.threads import blas_is_single_threaded, worker_pool

from .attention_small import SMALL_T, exp_row, probs_and_dscores, small_backward, small_forward
from .parallel import parallel_njit
from .softmax import FASTMATH, row_max

BLOCK_Q = 512
BLOCK_K = 256


# ----------------------------------------------------------------------- njit kernels
#: largest row sum accepted from exp(x - m_old) with the stale running max m_old (see _fwd_tile):
#: every term is then below 2^64, far from float32's overflow, also after the P V product
STALE_SUM_LIMIT = 2.0 ** 64


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _fwd_tile(s, bias, has_bias, scale, ninf, causal, diag, m, l, acc, first, keep):
    """s (qn, kn) holds Q_t K_t^T; overwritten with P_t = exp(scale S + bias - m), 0 where key j is
    masked (causal and j > i + diag). Updates the running max m and sum l and rescales acc rows.
    One tile, serial over its rows in the calling worker thread (nogil); s, m, l, acc in place;
    keep: one row of scratch. A row with a running max (key tiles after the first) is shifted by
    it in ONE pass (exp and sum), and redone from keep with its own max only if the sum exceeds
    STALE_SUM_LIMIT (docs/attention.md, "Any shift works"). Otherwise two passes: the max (of
    the raw scores when there is no bias: scale > 0 keeps the order), then exp and sum. ninf:
    -inf in s's dtype (a float64 one turns the max into a scalar float64 loop)."""
    qn, kn = s.shape
    raw = not has_bias and scale > 0
    for i in range(qn):
        sr = s[i]
        lim = min(kn, max(0, i + diag + 1)) if causal else kn
        m_old = m[i]
        if not raw:
            br = bias[i] if has_bias else bias[0]
            for j in range(lim):
                sr[j] = sr[j] * scale + br[j] if has_bias else sr[j] * scale
        if m_old != -np.inf:
            for j in range(lim):
                keep[j] = sr[j]
            rs = exp_row(sr, lim, raw, scale, m_old)
            if rs <= STALE_SUM_LIMIT:
                sr[lim:] = 0.0
                l[i] += rs
                continue
            for j in range(lim):
                sr[j] = keep[j]
        mx = max(m_old, row_max(sr, lim, ninf) * scale) if raw else row_max(sr, lim, m_old)
        if mx == -np.inf:                      # nothing kept so far in this row
            sr[:] = 0.0
            continue
        rs = exp_row(sr, lim, raw, scale, mx)
        sr[lim:] = 0.0
        alpha = np.exp(m_old - mx)             # 0 when m_old = -inf
        l[i] = l[i] * alpha + rs
        m[i] = mx
        if not first and alpha != 1.0:         # a loop: `acc[i, :] *= alpha` allocated a temporary
            ar = acc[i]
            for c in range(ar.shape[0]):
                ar[c] *= alpha


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _fwd_finish(acc, m, l, lse):
    """Finish one query tile: o rows = acc / l (in place) and lse = m + log l; a fully masked
    row (l == 0) gets o = 0, lse = -inf. Serial over the tile's <= BLOCK_Q rows in the calling
    worker thread (nogil); reads m, l once, writes acc rows and lse once; no scratch."""
    for i in range(acc.shape[0]):
        if l[i] > 0.0:
            acc[i, :] *= 1.0 / l[i]
            lse[i] = m[i] + np.log(l[i])
        else:                                  # fully masked row: o = 0, lse = -inf
            acc[i, :] = 0.0
            lse[i] = -np.inf


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _bwd_tile(s, dp, bias, has_bias, scale, causal, diag, lse, dvec):
    """s: Q_t K_t^T -> P_t = exp(scale S + bias - lse); dp: dO_t V_t^T -> scale P (dP - D); both 0
    where key j is masked (causal and j > i + diag). One BLOCK_Q x BLOCK_K tile, serial over its
    rows in the calling worker thread (nogil), ONE vectorised pass per row that reads s and dp
    and writes both in place; no scratch."""
    qn, kn = s.shape
    for i in range(qn):
        sr, dr = s[i], dp[i]
        z = lse[i]
        lim = min(kn, max(0, i + diag + 1)) if causal else kn
        if z == -np.inf:                       # fully masked row: zero gradients
            lim = 0
        di = dvec[i]
        probs_and_dscores(sr, dr, bias[i] if has_bias else bias[0], has_bias, lim, scale, z, di)


@parallel_njit(cache=True, fastmath=FASTMATH)
def _row_dot(a, b, out):
    """out[i] = sum_j a[i, j] * b[i, j] (the backward's D = rowsum(dO * O) over B*Tq rows).
    `prange` over rows, one row per task; reads a and b once, writes out once; no scratch."""
    for i in prange(a.shape[0]):
        s = 0.0
        for j in range(a.shape[1]):
            s += a[i, j] * b[i, j]
        out[i] = s


# --------------------------------------------------------------------------- helpers
def _check(q, k, v, bias, dt_only=False):
    dt = q.dtype
    if dt not in (np.float32, np.float64):
        raise TypeError(f"expected float32 or float64, got {dt}")
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError("q, k, v must be (B, T, d) arrays")
    (B, Tq, d), Tk = q.shape, k.shape[1]
    if k.shape != (B, Tk, d) or v.shape[:2] != (B, Tk):
        raise ValueError(f"shape mismatch: q {q.shape}, k {k.shape}, v {v.shape}")
    for a in (q, k, v):
        if a.dtype != dt:
            raise TypeError(f"dtype mismatch: {a.dtype} vs {dt}")
        if not a.flags.c_contiguous:
            raise ValueError("q, k, v must be C-contiguous")
    if bias is not None and bias.shape != (B, Tq, Tk):
        raise ValueError(f"bias must be viewable as {(B, Tq, Tk)}, got {bias.shape}")


def _tile(buf: np.ndarray, r: int, c: int) -> np.ndarray:
    """A C-contiguous (r, c) view on the front of a flat buffer."""
    return buf[: r * c].reshape(r, c)


class _Bias:
    """Copies bias tiles (any strides, any float dtype) into one reusable C buffer."""

    def __init__(self, bias, bq: int, bk: int, dt):
        self.bias = bias
        self.buf = np.empty(bq * bk if bias is not None else 1, dt)
        self.none = np.zeros((1, 1), dt)

    def tile(self, b, q0, q1, k0, k1):
        if self.bias is None:
            return self.none
        t = _tile(self.buf, q1 - q0, k1 - k0)
        np.copyto(t, self.bias[b, q0:q1, k0:k1], casting="unsafe")
        return t


# --------------------------------------------------------------------------- threads
def _parallel(work, units: list, nthreads: int) -> None:
    """Run work(tid, unit) over units on nthreads threads, pulling units dynamically; on the
    calling thread alone unless OpenBLAS is on one thread (see the module docstring).
    The calling thread is thread 0 and starts at once; nthreads - 1 pool threads join it. A pool
    thread takes ~150 us to wake here: handing all the units to the pool and waiting made every
    call pay that, and on a loaded machine a worker that never gets a core now just finds the
    units gone."""
    nthreads = max(1, min(nthreads, len(units)))
    if nthreads == 1 or not blas_is_single_threaded():
        for u in units:
            work(0, u)
        return
    pool = worker_pool(nthreads - 1)
    it, lock = iter(units), threading.Lock()

    def loop(tid):
        while True:
            with lock:
                u = next(it, None)
            if u is None:
                return
            work(tid, u)

    helpers = [pool.submit(loop, t) for t in range(1, nthreads)]
    loop(0)
    for f in helpers:
        f.result()


def _tiling(dt, Tq: int, Tk: int, scale: float):
    """What the tiled forward and backward set up alike: the tile sizes (bq, bk), one empty slot per
    thread for its buffers, scale as a dt."""
    bq, bk = max(1, min(BLOCK_Q, Tq)), max(1, min(BLOCK_K, Tk))
    return bq, bk, [None] * get_num_threads(), dt.type(scale)


# --------------------------------------------------------------------------- public
def _given(name, a, shape, dt):
    """Check a caller's accumulation buffer: C-contiguous, of the result's shape and dtype."""
    if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dt or not a.flags.c_contiguous:
        got = f"{a.shape} {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{name} must be a C-contiguous {shape} {dt} array, got {got}")
    return a


def attention_forward(q, k, v, bias, is_causal: bool, scale: float, *, out=None, lse=None):
    """``(o, lse)``: softmax(q k^T scale + bias) v and its row log-sum-exp.

    With ``out`` and ``lse`` (both or neither) the keys k, v are merged into an earlier result
    over other keys, in place: ``out`` (B, Tq, dv) and ``lse`` (B, Tq) hold attention over the
    keys seen so far (lse = -inf and out = 0 for none), and on return attention over those keys
    and k, v together. The online softmax just continues from that state (running max = lse,
    running sum = 1, accumulator = out), so no block-sized temporary is made; this is how the
    blocks of a sequence split over ranks are merged. That path always uses the tiles."""
    _check(q, k, v, bias)
    (B, Tq, d), Tk, dim_v = q.shape, k.shape[1], v.shape[2]
    dt = q.dtype
    merge = out is not None or lse is not None
    if merge:
        o, lse = _given("out", out, (B, Tq, dim_v), dt), _given("lse", lse, (B, Tq), dt)
    elif Tq <= SMALL_T and Tk <= SMALL_T:       # many short sequences: one prange kernel
        return small_forward(q, k, v, bias, is_causal, scale)
    else:
        o = np.zeros((B, Tq, dim_v), dt)
        lse = np.empty((B, Tq), dt)
    bq, bk, bufs, sc = _tiling(dt, Tq, Tk, scale)
    ninf = dt.type(-np.inf)

    def work(tid, unit):
        if bufs[tid] is None:
            bufs[tid] = (np.empty(bq * bk, dt), np.empty(bq * dim_v, dt), np.empty(bq, dt),
                         np.empty(bq, np.float64), _Bias(bias, bq, bk, dt), np.empty(bk, dt))
        sbuf, pv, m, l, bias_tiles, keep = bufs[tid]
        b, q0 = unit
        q1 = min(q0 + bq, Tq)
        qn = q1 - q0
        acc = o[b, q0:q1]
        if merge:                              # continue from the earlier result: sum exp(S - lse) = 1
            m[:qn] = lse[b, q0:q1]
            l[:qn] = 1.0
        else:
            m[:qn] = -np.inf
            l[:qn] = 0.0
        kend = min(Tk, q1) if is_causal else Tk
        for k0 in range(0, kend, bk):
            k1 = min(k0 + bk, kend)
            s = _tile(sbuf, qn, k1 - k0)
            np.matmul(q[b, q0:q1], k[b, k0:k1].T, out=s)
            masked = is_causal and k1 - 1 > q0
            _fwd_tile(s, bias_tiles.tile(b, q0, q1, k0, k1), bias is not None, sc, ninf,
                      masked, q0 - k0, m[:qn], l[:qn], acc, k0 == 0 and not merge, keep)
            if k0 == 0 and not merge:
                np.matmul(s, v[b, k0:k1], out=acc)
            else:
                t = _tile(pv, qn, dim_v)
                np.matmul(s, v[b, k0:k1], out=t)
                acc += t
        _fwd_finish(acc, m[:qn], l[:qn], lse[b, q0:q1])

    # causal: the longest rows (last query tiles) first, for load balance
    units = [(b, q0) for q0 in range(0, Tq, bq) for b in range(B)]
    if is_causal:
        units.reverse()
    _parallel(work, units, len(bufs))
    return o, lse


def attention_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float, *, dq=None, dk=None,
                       dv=None):
    """``(dq, dk, dv)`` from the saved ``o`` and ``lse``. With ``dq``, ``dk`` and ``dv`` (all or
    none; shaped and typed like q, k, v) the gradients are added into them in place and they are
    returned: a sequence split over ranks sums its blocks' shares there without temporaries.
    ``o`` and ``lse`` may then be those of attention over more keys than k, v (the merged
    result), which gives each key block its exact share. That path always uses the tiles."""
    _check(q, k, v, bias)
    (B, Tq, d), Tk, dim_v = q.shape, k.shape[1], v.shape[2]
    dt = q.dtype
    for a in (o, do):
        if a.shape != (B, Tq, dim_v) or a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError("o and do must be C-contiguous (B, Tq, dv) arrays of q's dtype")
    lse = np.ascontiguousarray(lse, dt)
    if dq is None and dk is None and dv is None:
        if Tq <= SMALL_T and Tk <= SMALL_T:
            return small_backward(q, k, v, o, lse, do, bias, is_causal, scale)
        dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        fresh = True                             # dk, dv rows: the first query tile writes, not adds
    else:
        fresh = False
        dq, dk, dv = (_given(name, a, like.shape, dt) for name, a, like in (("dq", dq, q), ("dk", dk, k),
                                                                             ("dv", dv, v)))
    dvec = np.empty((B, Tq), dt)                 # D = rowsum(dO * O)
    if B * Tq:
        _row_dot(do.reshape(B * Tq, dim_v), o.reshape(B * Tq, dim_v), dvec.reshape(B * Tq))
    bq, bk, bufs, sc = _tiling(dt, Tq, Tk, scale)

    def work(tid, unit):
        if bufs[tid] is None:   # thread 0 accumulates dQ in place, the others privately
            bufs[tid] = (np.empty(bq * bk, dt), np.empty(bq * bk, dt),
                         np.empty(bq * d, dt), np.empty(bk * d, dt), np.empty(bk * dim_v, dt),
                         _Bias(bias, bq, bk, dt), dq if tid == 0 else np.zeros_like(q))
        sbuf, dpbuf, tq, tk, tv, bias_tiles, dq_acc = bufs[tid]
        b, k0 = unit
        k1 = min(k0 + bk, Tk)
        kn = k1 - k0
        kt, vt = k[b, k0:k1], v[b, k0:k1]
        dk_acc, dv_acc = dk[b, k0:k1], dv[b, k0:k1]
        q_first = min(k0, Tq) if is_causal else 0
        for q0 in range(q_first, Tq, bq):
            q1 = min(q0 + bq, Tq)
            qn = q1 - q0
            qt, dot = q[b, q0:q1], do[b, q0:q1]
            s, dp = _tile(sbuf, qn, kn), _tile(dpbuf, qn, kn)
            np.matmul(qt, kt.T, out=s)
            np.matmul(dot, vt.T, out=dp)
            masked = is_causal and k1 - 1 > q0
            _bwd_tile(s, dp, bias_tiles.tile(b, q0, q1, k0, k1), bias is not None, sc,
                      masked, q0 - k0, lse[b, q0:q1], dvec[b, q0:q1])
            t = _tile(tq, qn, d)
            np.matmul(dp, kt, out=t)
            dq_acc[b, q0:q1] += t
            if fresh and q0 == q_first:
                np.matmul(s.T, dot, out=dv_acc)
                np.matmul(dp.T, qt, out=dk_acc)
                continue
            t = _tile(tv, kn, dim_v)
            np.matmul(s.T, dot, out=t)
            dv_acc += t
            t = _tile(tk, kn, d)
            np.matmul(dp.T, qt, out=t)
            dk_acc += t

    units = [(b, k0) for k0 in range(0, Tk, bk) for b in range(B)]   # causal: first = longest
    _parallel(work, units, len(bufs))
    for extra in bufs[1:]:
        if extra is not None:
            dq += extra[-1]
    return dq, dk, dv
