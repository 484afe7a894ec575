"""Multi-head self-attention read straight from the packed in-projection, for short sequences.

``qkv`` is (B, T, 3·E) laid out [Q | K | V], each part [head 0 | head 1 | ...] of ``hd = E / H``
columns, as one in-projection GEMM makes it. The forward writes the heads' outputs side by side,
(B, T, E), and the row log-sum-exp (B·H, T); the backward takes the gradient of that (B, T, E)
output and writes the (B, T, 3·E) gradient of ``qkv``. There is no head split, merge or
concatenation copy: each (batch, head) unit reads its columns of ``qkv`` and writes its columns of
the result, so the units never write the same element.

Why: for T ≤ SMALL_T the composed path (three strided copies out of ``qkv``, batched GEMMs of
T×T scores, a row kernel per score row, a merge copy and a gradient concatenation) spends most of
its time on copies and per-row overhead, not arithmetic.

Parallelisation: `prange` over runs of the B·H units (a few runs per thread); each unit does the
whole sequence. Per run, scratch allocated once: Kᵀ and Vᵀ (hd, T), V or K (T, hd), a score row
and a probability row (T), and in the backward the dK, dV accumulators (T, hd) — a few KiB that
stay in L1/L2. The inner loops all run over contiguous scratch so that they vectorise:
score row  s[j] += q[i, c]·Kᵀ[c, j]  (over keys), output row  o[c] += p[j]·V[j, c]  (over head
columns), and in the backward dQ[i] += dS[j]·K[j], dK[j] += dS[j]·q[i], dV[j] += P[j]·dO[i]
(over head columns). Causal units never touch keys j > i. The exp is softmax.py's vectorised
exp, in the input's precision (float32 stays float32).

Forward (per unit and query row i): s = (scale·q_i)·Kᵀ + bias_i (causal: keys j ≤ i only),
P = exp(s − max)/Σ, o_i = P·V, lse_i = max + log Σ; a row with every key masked gives o_i = 0 and
lse_i = −inf. Backward: s recomputed the same way, P = exp(s − lse_i), dP = dO_i·Vᵀ,
D_i = dO_i·o_i, dS = P ⊙ (dP − D_i); dQ_i = scale·dS·K, dK += dSᵀ·(scale·q_i), dV += Pᵀ·dO_i.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from .attention_small import SMALL_T
from .softmax import FASTMATH, exp_inplace, int_scratch, recip, row_max, zero


@njit(inline="always")
def one(x):
    """1 in x's own float type."""
    return x - x + 1

__all__ = ["SMALL_T", "packed_attention_forward", "packed_attention_backward"]


ROWS = 4               # query rows per block: the block's rows share every load of K, V (and of dK, dV)
LANES = 8              # key counts are padded to a multiple of this (one float32 AVX2 vector)


@njit(inline="always")
def _unit_range(run, nruns, units):
    """Units [start, stop) of `prange` task ``run`` when ``units`` are cut into ``nruns`` equal runs."""
    per = (units + nruns - 1) // nruns
    return run * per, min(units, (run + 1) * per)


@njit(inline="always")
def _padded(n, to):
    return (n + to - 1) // to * to


@njit(inline="always", fastmath=FASTMATH)
def _load_rows(src, b, col, hd, T, dst, factor):
    """dst[:T] = factor · the head columns [col, col + hd) of sequence b; padding rows past T zeroed."""
    for j in range(T):
        srow, drow = src[b, j], dst[j]
        for c in range(hd):
            drow[c] = srow[col + c] * factor
    for j in range(T, dst.shape[0]):
        dst[j, :] = 0


@njit(inline="always")
def _load_transposed(src, b, col, hd, T, dst):
    """dst[:, :T] = the head columns [col, col + hd) of sequence b, transposed; padding columns zeroed."""
    for j in range(T):
        srow = src[b, j]
        for c in range(hd):
            dst[c, j] = srow[col + c]
    for c in range(hd):
        dst[c, T:] = 0


@njit(inline="always", fastmath=FASTMATH)
def _block_times_t(out, a, i0, mt, kp, hd):
    """out[r, :kp] = a[i0 + r, :hd]·mt[:hd, :kp] for the ROWS rows r: four rows share each mt row load,
    and the loop over keys is innermost and contiguous."""
    o0, o1, o2, o3 = out[0], out[1], out[2], out[3]
    for j in range(kp):
        o0[j] = 0
        o1[j] = 0
        o2[j] = 0
        o3[j] = 0
    for c in range(hd):
        x0, x1, x2, x3 = a[i0, c], a[i0 + 1, c], a[i0 + 2, c], a[i0 + 3, c]
        mrow = mt[c]
        for j in range(kp):
            m = mrow[j]
            o0[j] += x0 * m
            o1[j] += x1 * m
            o2[j] += x2 * m
            o3[j] += x3 * m


@njit(inline="always", fastmath=FASTMATH)
def _block_times(out, a, m, kp, hd):
    """out[r, :hd] = a[r, :kp]·m[:kp, :hd] for the ROWS rows r (P·V, dS·K): the loop over head columns
    is innermost; four rows share each m row load."""
    o0, o1, o2, o3 = out[0], out[1], out[2], out[3]
    for c in range(hd):
        o0[c] = 0
        o1[c] = 0
        o2[c] = 0
        o3[c] = 0
    for j in range(kp):
        x0, x1, x2, x3 = a[0, j], a[1, j], a[2, j], a[3, j]
        mrow = m[j]
        for c in range(hd):
            y = mrow[c]
            o0[c] += x0 * y
            o1[c] += x1 * y
            o2[c] += x2 * y
            o3[c] += x3 * y


@njit(inline="always", fastmath=FASTMATH)
def _add_block_t_times(acc, a, x, i0, kp, hd):
    """acc[j, :hd] += Σ_r a[r, j]·x[i0 + r, :hd] for j < kp (dK += dSᵀ·Q, dV += Pᵀ·dO): one load and
    one store of each acc row per four products."""
    x0, x1, x2, x3 = x[i0], x[i0 + 1], x[i0 + 2], x[i0 + 3]
    for j in range(kp):
        a0, a1, a2, a3 = a[0, j], a[1, j], a[2, j], a[3, j]
        arow = acc[j]
        for c in range(hd):
            arow[c] += a0 * x0[c] + a1 * x1[c] + a2 * x2[c] + a3 * x3[c]


@njit(inline="always", fastmath=FASTMATH)
def _shifted_rows(p, r, n, kp, brow, has_bias, shift, own_max):
    """Row r of the score block: + brow[:n] when has_bias, then minus the row's own max (own_max,
    forward) or ``shift`` (lse, backward), and -inf for the keys n..kp it must not see; returns the
    shift used (-inf when no key is visible: the row is then all -inf, and its exp all 0)."""
    row = p[r]
    if has_bias:
        for j in range(n):
            row[j] += brow[j]
    m = shift
    if own_max:
        m = row_max(row, n, row[0]) if n > 0 else -np.inf
    if m == -np.inf:
        n = 0
    for j in range(n):
        row[j] -= m
    for j in range(n, kp):
        row[j] = -np.inf
    return m


@njit(inline="always")
def _keys(i, T, causal):
    """How many keys query row i sees: i + 1 when causal, all T otherwise; 0 for a padding row."""
    if i >= T:
        return 0
    return i + 1 if causal else T


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _packed_forward(qkv, heads, bias, has_bias, causal, scale, out, lse, nruns):
    """out (B, T, E), lse (B·H, T) from qkv (B, T, 3E); bias (B·H or 1, T, T) when has_bias."""
    B, T, E3 = qkv.shape
    E = E3 // 3
    hd = E // heads
    Tp, Tr = _padded(T, LANES), _padded(T, ROWS)
    for run in prange(nruns):
        q = np.empty((Tr, hd), qkv.dtype)
        kt = np.empty((hd, Tp), qkv.dtype)
        v = np.empty((Tp, hd), qkv.dtype)
        p_flat = np.empty(ROWS * Tp, qkv.dtype)
        o = np.empty((ROWS, hd), qkv.dtype)
        inv = np.empty(ROWS, qkv.dtype)
        mx = np.empty(ROWS, qkv.dtype)
        ib = int_scratch(ROWS * Tp, q[0])
        start, stop = _unit_range(run, nruns, B * heads)
        for u in range(start, stop):
            b, h = u // heads, u % heads
            qcol, kcol, vcol = h * hd, E + h * hd, 2 * E + h * hd
            _load_rows(qkv, b, qcol, hd, T, q, scale)
            _load_transposed(qkv, b, kcol, hd, T, kt)
            _load_rows(qkv, b, vcol, hd, T, v, one(scale))
            bu = u if bias.shape[0] > 1 else 0
            for i0 in range(0, Tr, ROWS):
                kp = min(_padded(_keys(min(i0 + ROWS, T) - 1, T, causal), LANES), Tp)
                p = p_flat[:ROWS * kp].reshape((ROWS, kp))     # this block's scores, contiguous
                _block_times_t(p, q, i0, kt, kp, hd)
                for r in range(ROWS):
                    i = min(i0 + r, T - 1)
                    mx[r] = _shifted_rows(p, r, _keys(i0 + r, T, causal), kp, bias[bu, i] if has_bias
                                          else bias[0, 0], has_bias, zero(q[0]), True)
                exp_inplace(p_flat[:ROWS * kp], zero(q[0]), ib)      # one exp pass for the block
                for r in range(ROWS):
                    row = p[r]
                    tot = zero(q[0])
                    for j in range(kp):
                        tot += row[j]
                    i = i0 + r
                    inv[r] = recip(tot) if tot > 0 else zero(q[0])
                    if i < T:
                        lse[u, i] = mx[r] + np.log(tot) if tot > 0 else -np.inf
                _block_times(o, p, v, kp, hd)
                for r in range(min(ROWS, T - i0)):
                    f = inv[r]
                    for c in range(hd):
                        out[b, i0 + r, qcol + c] = o[r, c] * f


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def _packed_backward(qkv, out, lse, g, heads, bias, has_bias, causal, scale, dqkv, nruns):
    """dqkv (B, T, 3E), every element written once, from the output gradient g (B, T, E)."""
    B, T, E3 = qkv.shape
    E = E3 // 3
    hd = E // heads
    Tp, Tr = _padded(T, LANES), _padded(T, ROWS)
    for run in prange(nruns):
        q = np.empty((Tr, hd), qkv.dtype)
        go = np.empty((Tr, hd), qkv.dtype)
        k = np.empty((Tp, hd), qkv.dtype)
        kt = np.empty((hd, Tp), qkv.dtype)
        vt = np.empty((hd, Tp), qkv.dtype)
        dk = np.empty((Tp, hd), qkv.dtype)
        dv = np.empty((Tp, hd), qkv.dtype)
        p_flat = np.empty(ROWS * Tp, qkv.dtype)
        ds_flat = np.empty(ROWS * Tp, qkv.dtype)
        dq = np.empty((ROWS, hd), qkv.dtype)
        ib = int_scratch(ROWS * Tp, q[0])
        start, stop = _unit_range(run, nruns, B * heads)
        for u in range(start, stop):
            b, h = u // heads, u % heads
            qcol, kcol, vcol = h * hd, E + h * hd, 2 * E + h * hd
            _load_rows(qkv, b, qcol, hd, T, q, scale)
            _load_rows(g, b, qcol, hd, T, go, one(scale))
            _load_rows(qkv, b, kcol, hd, T, k, one(scale))
            _load_transposed(qkv, b, kcol, hd, T, kt)
            _load_transposed(qkv, b, vcol, hd, T, vt)
            dk[:, :] = 0
            dv[:, :] = 0
            bu = u if bias.shape[0] > 1 else 0
            for i0 in range(0, Tr, ROWS):
                kp = min(_padded(_keys(min(i0 + ROWS, T) - 1, T, causal), LANES), Tp)
                p = p_flat[:ROWS * kp].reshape((ROWS, kp))
                ds = ds_flat[:ROWS * kp].reshape((ROWS, kp))
                _block_times_t(p, q, i0, kt, kp, hd)           # scores again
                _block_times_t(ds, go, i0, vt, kp, hd)         # dP = dO·Vᵀ
                for r in range(ROWS):
                    i = min(i0 + r, T - 1)
                    _shifted_rows(p, r, _keys(i0 + r, T, causal), kp, bias[bu, i] if has_bias else bias[0, 0],
                                  has_bias, lse[u, i] if i0 + r < T else -np.inf, False)
                exp_inplace(p_flat[:ROWS * kp], zero(q[0]), ib)      # P, one exp pass for the block
                for r in range(ROWS):
                    i = min(i0 + r, T - 1)
                    d_i = zero(q[0])                          # D = dO_i·o_i
                    for c in range(hd):
                        d_i += go[i0 + r, c] * out[b, i, qcol + c]
                    row, drow = p[r], ds[r]
                    for j in range(kp):
                        drow[j] = row[j] * (drow[j] - d_i)
                _block_times(dq, ds, k, kp, hd)
                _add_block_t_times(dk, ds, q, i0, kp, hd)
                _add_block_t_times(dv, p, go, i0, kp, hd)
                for r in range(min(ROWS, T - i0)):
                    for c in range(hd):
                        dqkv[b, i0 + r, qcol + c] = dq[r, c] * scale
            for j in range(T):
                for c in range(hd):
                    dqkv[b, j, kcol + c] = dk[j, c]
                    dqkv[b, j, vcol + c] = dv[j, c]


# ---------------------------------------------------------------------------- wrappers
def _runs(units: int) -> int:
    """How many `prange` tasks: a few per thread (scratch allocated once per task), at most one per unit."""
    return max(1, min(units, 4 * get_num_threads()))


def _checked(qkv, heads, bias):
    """qkv as a C-contiguous array and the bias as (1 or B·H, T, T) C-contiguous (a bias broadcast
    over the units, stride 0, is read as its one (T, T) matrix); raises on a bad shape or dtype."""
    if not isinstance(qkv, np.ndarray) or qkv.dtype not in (np.float32, np.float64):
        raise TypeError(f"packed attention: qkv must be a float32 or float64 array, got "
                        f"{getattr(qkv, 'dtype', type(qkv).__name__)}")
    if qkv.ndim != 3:
        raise ValueError(f"packed attention: qkv must be (B, T, 3*E), got shape {qkv.shape}")
    B, T, E3 = qkv.shape
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1 or E3 % (3 * heads):
        raise ValueError(f"packed attention: the last axis of qkv ({E3}) must be 3 * heads * head_dim "
                         f"with heads a positive int, got heads={heads!r}")
    if bias is None:
        return np.ascontiguousarray(qkv), np.zeros((1, 1, 1), qkv.dtype), False
    units = B * heads
    if bias.ndim != 3 or bias.shape[0] not in (1, units) or bias.shape[1:] != (T, T):
        raise ValueError(f"packed attention: bias must be (1 or {units}, {T}, {T}), got shape {bias.shape}")
    if bias.shape[0] > 1 and bias.strides[0] == 0:
        bias = bias[:1]
    return np.ascontiguousarray(qkv), np.ascontiguousarray(bias, qkv.dtype), True


def packed_attention_forward(qkv, heads: int, bias, is_causal: bool, scale: float):
    """``(out, lse)``: out (B, T, E) the heads' attention outputs side by side, lse (B·H, T)."""
    qkv, bias, has_bias = _checked(qkv, heads, bias)
    B, T, E3 = qkv.shape
    out = np.empty((B, T, E3 // 3), qkv.dtype)
    lse = np.empty((B * heads, T), qkv.dtype)
    if out.size:
        _packed_forward(qkv, heads, bias, has_bias, bool(is_causal), qkv.dtype.type(scale), out, lse,
                        _runs(B * heads))
    return out, lse


def packed_attention_backward(qkv, out, lse, g, heads: int, bias, is_causal: bool, scale: float):
    """The (B, T, 3·E) gradient of ``qkv`` from the gradient ``g`` of the forward's ``out``."""
    qkv, bias, has_bias = _checked(qkv, heads, bias)
    B, T, E3 = qkv.shape
    for name, a, shape in (("out", out, (B, T, E3 // 3)), ("g", g, (B, T, E3 // 3)), ("lse", lse, (B * heads, T))):
        if a.shape != shape or a.dtype != qkv.dtype:
            raise ValueError(f"packed attention: {name} must be a {shape} {qkv.dtype} array, "
                             f"got {a.shape} {a.dtype}")
    dqkv = np.empty_like(qkv)
    if dqkv.size:
        _packed_backward(qkv, np.ascontiguousarray(out), np.ascontiguousarray(lse), np.ascontiguousarray(g),
                         heads, bias, has_bias, bool(is_causal), qkv.dtype.type(scale), dqkv, _runs(B * heads))
    return dqkv
