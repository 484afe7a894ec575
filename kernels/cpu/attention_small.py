"""Attention for many short sequences (training shapes: batch·heads ≫ 1, T ≤ SMALL_T).

The tiled path (attention.py) pays Python and thread-pool costs per (batch·head, tile)
unit, which dominate when each unit is a 17×17 score matrix. Here the tile *is* the
sequence: NumPy's batched `matmul` (one BLAS GEMM per sequence) forms S = Q·Kᵀ for the
whole batch, and one Numba `prange` kernel over the B·Tq rows turns it into P in place;
P·V is a second batched GEMM. Measured against scalar Numba loops on a quiet 2-core
machine: 2–3× faster forward, 1–2× backward (e.g. B=128, T=64, d=32: 2.4 vs 5.3 ms).

Forward: S = scale·Q·Kᵀ + bias (causal: key j > i is −inf), P = exp(S − max)/Σ, O = P·V,
lse = max + log Σ; a row with every key masked gives P = 0, O = 0, lse = −inf.
Backward: S recomputed, dP = dO·Vᵀ; one kernel makes P = exp(S − lse) and
dS·scale = scale·P ⊙ (dP − rowsum(dO ⊙ O)) in place; dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q.
Memory plan: one (B, Tq, Tk) score buffer forward, two backward — bounded by
SMALL_T² per sequence, never the long-sequence n² the tiled path avoids.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

SMALL_T = 128          # use this path when Tq ≤ SMALL_T and Tk ≤ SMALL_T

@njit(parallel=True, cache=True)
def _probs(s, bias, has_bias, causal, scale, lse):
    """In place: s (B, Tq, Tk) raw q·kᵀ -> P = softmax(scale·s + bias) by rows; lse saved.
    `prange` over the B·Tq rows, one row per task (the tile is the whole sequence, Tk <= SMALL_T);
    each s row read and rewritten in place, lse written once; no scratch."""
    B, Tq, Tk = s.shape
    for r in prange(B * Tq):
        b, i = r // Tq, r % Tq
        row = s[b, i]
        m = -np.inf
        for j in range(Tk):
            val = row[j] * scale
            if has_bias:
                val += bias[b, i, j]
            if causal and j > i:
                val = -np.inf
            row[j] = val
            if val > m:
                m = val
        if m == -np.inf:
            lse[b, i] = -np.inf
            row[:] = 0.0
            continue
        tot = 0.0
        for j in range(Tk):
            p = math.exp(row[j] - m)
            row[j] = p
            tot += p
        inv = 1.0 / tot
        for j in range(Tk):
            row[j] *= inv
        lse[b, i] = m + math.log(tot)


@njit(parallel=True, cache=True)
def _dscores(s, dp, bias, has_bias, causal, scale, lse, o, do):
    """In place: s (raw q·kᵀ) -> P = exp(scale·s + bias − lse); dp -> dS·scale = scale·P ⊙ (dP − rowsum(dO ⊙ O)).
    `prange` over the B·Tq rows, one row per task; s and dp rows rewritten in place, the o / do
    rows read once (for D), lse read once; no scratch."""
    B, Tq, Tk = s.shape
    dv = o.shape[2]
    for r in prange(B * Tq):
        b, i = r // Tq, r % Tq
        li = lse[b, i]
        D = 0.0
        for c in range(dv):
            D += do[b, i, c] * o[b, i, c]
        for j in range(Tk):
            if li == -np.inf or (causal and j > i):
                p = 0.0
            else:
                val = s[b, i, j] * scale
                if has_bias:
                    val += bias[b, i, j]
                p = math.exp(val - li) if val != -np.inf else 0.0
            s[b, i, j] = p
            dp[b, i, j] = p * (dp[b, i, j] - D) * scale


def _bias_arg(bias, dt):
    if bias is None:
        return np.zeros((1, 1, 1), dt), False
    return bias, True


def small_forward(q, k, v, bias, is_causal: bool, scale: float):
    B, Tq, _ = q.shape
    s = np.matmul(q, k.transpose(0, 2, 1))                 # (B, Tq, Tk) raw scores
    lse = np.empty((B, Tq), q.dtype)
    b, has = _bias_arg(bias, q.dtype)
    _probs(s, b, has, bool(is_causal), float(scale), lse)  # s -> P in place
    return np.matmul(s, v), lse


def small_backward(q, k, v, o, lse, do, bias, is_causal: bool, scale: float):
    s = np.matmul(q, k.transpose(0, 2, 1))                 # scores again (not saved)
    dp = np.matmul(do, v.transpose(0, 2, 1))               # dP = dO·Vᵀ
    b, has = _bias_arg(bias, q.dtype)
    _dscores(s, dp, b, has, bool(is_causal), float(scale), lse, o, do)   # s -> P, dp -> scale·dS
    return np.matmul(dp, k), np.matmul(dp.transpose(0, 2, 1), q), np.matmul(s.transpose(0, 2, 1), do)
