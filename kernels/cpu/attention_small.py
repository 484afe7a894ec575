"""Attention for many short sequences (training shapes: batch·heads ≫ 1, T ≤ SMALL_T).

The tiled path (attention.py) pays Python and thread-pool costs per (batch·head, tile)
unit, which dominate when each unit is a 17×17 score matrix. Here the tile *is* the
sequence: NumPy's batched `matmul` (one BLAS GEMM per sequence) forms S = Q·Kᵀ for the
whole batch, and one Numba `prange` kernel over the B·Tq rows turns it into P in place;
P·V is a second batched GEMM. Measured against scalar Numba loops on a quiet 2-core
machine: 2–3× faster forward, 1–2× backward (e.g. B=128, T=64, d=32: 2.4 vs 5.3 ms).
The row kernels use `exp_scalar` (below: softmax.py's polynomial, with 2^k made by a bit
cast, so exp and the row sum are one vectorised pass) in the input's precision and, when
causal, touch only the j ≤ i half of each row. At W2's n = 128 (8 heads, d = 64, one thread)
that took the forward row pass from ~163 to ~94 µs, the backward one from ~130 to ~76 µs,
and fwd+bwd from 1.20 to 1.06 ms (the previous max was unified with a float64 −inf, which ran
the exp loop in float64).

Forward: S = scale·Q·Kᵀ + bias (causal: key j > i is −inf), P = exp(S − max)/Σ, O = P·V,
lse = max + log Σ; a row with every key masked gives P = 0, O = 0, lse = −inf.
Backward: S recomputed, dP = dO·Vᵀ; one kernel makes P = exp(S − lse) and
dS·scale = scale·P ⊙ (dP − rowsum(dO ⊙ O)) in place; dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q.
Memory plan: one (B, Tq, Tk) score buffer forward, two backward — bounded by
SMALL_T² per sequence, never the long-sequence n² the tiled path avoids.
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from .matmul import matmul
from .parallel import parallel_njit, row_tasks
from .softmax import FASTMATH, exp_scalar, recip, row_max, zero

SMALL_T = 128          # use this path when Tq ≤ SMALL_T and Tk ≤ SMALL_T

def _row_kernel(kernel, s):
    """The version of a row kernel to run on the score stack s, and its number of `prange` tasks.
    Serial below `parallel.THREADED_MIN_ELEMENTS` scores or on one thread: handing a call to Numba's
    pool wakes an idle thread (~150 us measured here), more than W2's n = 128 forward row pass
    takes. Otherwise a few tasks per thread (`row_tasks`), so that each task allocates its int
    scratch row once and the causal rows (of unequal length) still balance. Every row is computed
    the same way in either version and any task, so the result does not depend on the choice."""
    tasks = row_tasks(s.shape[0] * s.shape[1], s.size)
    return (kernel.threaded if tasks else kernel.serial), max(tasks, 1)


@njit(inline="always")
def _chunk_rows(c, nchunks, n):
    """Rows [start, stop) of `prange` task c when n rows are cut into nchunks runs of equal length."""
    per = (n + nchunks - 1) // nchunks
    return c * per, min(n, (c + 1) * per)


@njit(inline="always", fastmath=FASTMATH)
def exp_row(sr, lim, raw, scale, shift):
    """sr[j] = exp(sr[j] * scale - shift) for j < lim, in place, or exp(sr[j] - shift) when not raw
    (sr already holds the scaled scores); returns their sum. One vectorised pass."""
    rs = shift - shift
    if raw:
        for j in range(lim):
            e = exp_scalar(sr[j] * scale - shift)
            sr[j] = e
            rs += e
    else:
        for j in range(lim):
            e = exp_scalar(sr[j] - shift)
            sr[j] = e
            rs += e
    return rs


@njit(inline="always", fastmath=FASTMATH)
def probs_and_dscores(sr, dr, brow, has_bias, lim, scale, shift, d):
    """One row of the backward in one vectorised pass, in place: sr[j] (raw q·kᵀ) becomes
    P = exp(scale·sr[j] (+ brow[j]) − shift) and dr[j] (dP) becomes scale·P·(dP − d) for j < lim;
    both 0 past lim. ``brow`` is read only when ``has_bias``."""
    if has_bias:
        for j in range(lim):
            p = exp_scalar(sr[j] * scale + brow[j] - shift)
            sr[j] = p
            dr[j] = p * (dr[j] - d) * scale
    else:
        for j in range(lim):
            p = exp_scalar(sr[j] * scale - shift)
            sr[j] = p
            dr[j] = p * (dr[j] - d) * scale
    sr[lim:] = 0.0
    dr[lim:] = 0.0


@njit(inline="always", fastmath=FASTMATH)
def _row_probs(row, brow, has_bias, kend, scale, ninf):
    """row[:kend] (raw q·kᵀ) -> exp(scale·row + brow - max), the rest 0; returns (max, sum) of the
    scaled row, max = -inf (and the row all 0) when kend = 0 or every kept key is -inf. Two
    vectorised passes: the max (of the raw row when there is no bias: scale > 0 keeps the order),
    then exp and sum. ninf: -inf in the row's dtype (a float64 one makes the loops scalar)."""
    if not has_bias and scale > 0:
        mx = row_max(row, kend, ninf) * scale
        if mx == -np.inf:
            row[:] = 0.0
            return mx, mx
        tot = exp_row(row, kend, True, scale, mx)
    else:
        for j in range(kend):
            row[j] = row[j] * scale + brow[j] if has_bias else row[j] * scale
        mx = row_max(row, kend, ninf)
        if mx == -np.inf:
            row[:] = 0.0
            return mx, mx
        tot = exp_row(row, kend, False, scale, mx)
    row[kend:] = 0.0
    return mx, tot


# The row kernels' bodies are functions of their own, compiled once and called by the serial and
# the threaded version alike: compiled inside each (the prange body is outlined into a separate
# function in the threaded one), LLVM vectorised the row sums differently and the two versions
# disagreed in the last bit of P and lse.
@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _probs_rows(s, bias, has_bias, causal, scale, ninf, lse, start, stop):
    """Rows [start, stop) of the B·Tq rows of `_probs`."""
    Tq, Tk = s.shape[1], s.shape[2]
    for r in range(start, stop):
        b, i = r // Tq, r % Tq
        row = s[b, i]
        kend = min(i + 1, Tk) if causal else Tk
        m, tot = _row_probs(row, bias[b, i] if has_bias else bias[0, 0], has_bias, kend, scale, ninf)
        if m == -np.inf:                     # every key masked: P = 0, lse = -inf
            lse[b, i] = -np.inf
            continue
        inv = recip(tot)
        for j in range(kend):
            row[j] *= inv
        lse[b, i] = m + np.log(tot)


@parallel_njit(cache=True, fastmath=FASTMATH)
def _probs(s, bias, has_bias, causal, scale, ninf, lse, nchunks):
    """In place: s (B, Tq, Tk) raw q·kᵀ -> P = softmax(scale·s + bias) by rows; lse saved.
    `prange` over ``nchunks`` runs of the B·Tq rows (the tile is the whole sequence, Tk <= SMALL_T);
    three vectorised passes per row, in place (max, exp and sum, 1/sum; causal: only the j <= i
    part is computed, the rest set to 0), lse written once; no scratch."""
    for c in prange(nchunks):
        start, stop = _chunk_rows(c, nchunks, s.shape[0] * s.shape[1])
        _probs_rows(s, bias, has_bias, causal, scale, ninf, lse, start, stop)


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _dscores_rows(s, dp, bias, has_bias, causal, scale, lse, o, do, start, stop):
    """Rows [start, stop) of the B·Tq rows of `_dscores`."""
    Tq, Tk = s.shape[1], s.shape[2]
    dv = o.shape[2]
    for r in range(start, stop):
        b, i = r // Tq, r % Tq
        row, drow = s[b, i], dp[b, i]
        li = lse[b, i]
        kend = min(i + 1, Tk) if causal else Tk
        if li == -np.inf:
            kend = 0
        D = zero(row)
        for ch in range(dv):
            D += do[b, i, ch] * o[b, i, ch]
        probs_and_dscores(row, drow, bias[b, i] if has_bias else bias[0, 0], has_bias, kend, scale, li, D)


@parallel_njit(cache=True, fastmath=FASTMATH)
def _dscores(s, dp, bias, has_bias, causal, scale, lse, o, do, nchunks):
    """In place: s (raw q·kᵀ) -> P = exp(scale·s + bias − lse); dp -> dS·scale = scale·P ⊙ (dP − rowsum(dO ⊙ O)).
    `prange` over ``nchunks`` runs of the B·Tq rows; ONE vectorised pass per row rewrites its s and
    dp entries in place (causal: only j <= i computed, the rest set to 0), the o / do rows read
    once (for D, summed in the rows' dtype), lse read once; no scratch."""
    for c in prange(nchunks):
        start, stop = _chunk_rows(c, nchunks, s.shape[0] * s.shape[1])
        _dscores_rows(s, dp, bias, has_bias, causal, scale, lse, o, do, start, stop)


def _bias_arg(bias, dt):
    if bias is None:
        return np.zeros((1, 1, 1), dt), False
    return bias, True


def _transposed(a):
    """A C-contiguous copy of each matrix's transpose: NumPy's batched matmul with a transposed
    right operand, q·kᵀ as a view, took 0.36 ms at B=128, T=64, d=32 on one core; the copy and a
    product of two C-contiguous stacks take 0.08 + 0.18 ms."""
    return np.ascontiguousarray(a.transpose(0, 2, 1))


def small_forward(q, k, v, bias, is_causal: bool, scale: float):
    B, Tq, _ = q.shape
    s = matmul(q, _transposed(k))                       # (B, Tq, Tk) raw scores
    lse = np.empty((B, Tq), q.dtype)
    b, has = _bias_arg(bias, q.dtype)
    kernel, tasks = _row_kernel(_probs, s)
    kernel(s, b, has, bool(is_causal), q.dtype.type(scale), q.dtype.type(-np.inf), lse, tasks)  # s -> P
    return matmul(s, v), lse


def small_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    s = matmul(q, _transposed(k))                       # scores again (not saved)
    dp = matmul(do, _transposed(v))                     # dP = dO·Vᵀ
    b, has = _bias_arg(bias, q.dtype)
    kernel, tasks = _row_kernel(_dscores, s)
    kernel(s, dp, b, has, bool(is_causal), q.dtype.type(scale), lse, o, do, tasks)  # s -> P, dp -> scale·dS
    return matmul(dp, k), matmul(dp.transpose(0, 2, 1), q), matmul(s.transpose(0, 2, 1), do)
